"""``fraud-worker backtest``: score a file of transactions offline, through the worker's own code path.

A file of events (JSON lines, one event per line, the worker's input format; or a CSV with the
feature columns), plain or gzip, goes through what the worker does to a polled batch, minus
Kafka: ``worker.core.decode.Decoder.decode_batch`` (the same validation and reason codes), the
``Scorer`` of ``load_scorer`` (transforms, scaling, one LiteRT call) and
``worker.core.outputs.encode_results``, so each output line is the JSON a score record would carry.

- A CSV row becomes the document fraud-replay would send: each model feature column as a number
  (text that is not one stays text), ``transaction_id`` (``line-<N>`` when the file has no such
  column) and ``event_time`` when the file has the column and the cell is not empty.
- ``event_time`` of an event without one is 0 in its output line (the worker would take the Kafka
  record timestamp, which a file does not have).
- A bad record gets a reject line ``{"line": N, "error": code, "error_detail": text}``: the reason
  code and detail the DLQ headers would carry, N the record's 1-based line in the file (a CSV's
  header is line 1). A blank line is a record too (``empty_value``); the end of the last line is not.
  A valid event whose label is not finite or out of range (``1e999``, NaN, inf) is rejected with
  ``bad_label`` (``BAD_LABEL``) rather than scored: no metric could use it. A valid event with a
  feature beyond the model's range is rejected ``out_of_range``, as the worker dead-letters it
  (``Scorer.admit``).
- ``scored_at`` is the clock when the batch was scored, as in the worker.

Batches (``--batch-size``, 10,000 lines) are scored by ``--jobs`` processes (one per core by
default), each with its own scorer, and written in input order; the reading and writing stay here.

Exit codes: 0 done, 1 the input cannot be read, 2 bad settings (one line naming the flag or
file), 3 no servable model (with ``--trusted-keys``: none signed by a trusted key), 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import msgspec
import numpy as np

from worker.core.decode import Decoder, take_rows
from worker.core.errors import BundleError, ConfigError
from worker.core.outputs import encode_results
from worker.core.scoring import load_scorer
from worker.core.signing import load_trusted_keys
from worker.edges.config import WorkerConfig
from worker.offline import backtest_metrics as metrics

PROG = "fraud-worker backtest"
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_STARTUP = 0, 1, 2, 3
LABEL_CANDIDATES = ("Class", "is_fraud")
BAD_LABEL = "bad_label"  # a reject line's code for a label that is not finite or not readable
_NON_FINITE_TEXT = ("inf", "infinity", "nan")
BLOCK_BYTES = 4 << 20
_DEFAULTS = WorkerConfig()
_encode = msgspec.json.Encoder().encode


@dataclass
class Chunk:
    """One batch of records as the worker would receive their values."""

    first_line: int  # 1-based line of lines[0] in the file
    lines: list[bytes]
    line_numbers: list[int] | None = None  # each record's line where they are not consecutive (CSV)
    labels: list[Any] | None = None  # each record's label cell (CSV)


@dataclass
class Result:
    events: int
    output: bytes  # the score-record lines, newline-terminated
    rejects: list[tuple[int, str, str]]  # (line, reason code, detail)
    scores: bytes  # float32 scores of the valid rows, in order
    labels: dict[str, list[Any]] = field(default_factory=dict)  # label column -> values of the valid rows
    alerts: int = 0


class BatchScorer:
    """Decode, transform, scale, score and encode one chunk: the worker's steps for one batch."""

    def __init__(self, models_dir: str, version: str | None, reasons: int, max_bytes: int,
                 label_columns: Sequence[str], trusted_keys: str | None = None,
                 features: bool = False) -> None:  # fmt: skip
        keys = load_trusted_keys(trusted_keys, "--trusted-keys") if trusted_keys else None
        self.scorer = load_scorer(models_dir, version, trusted_keys=keys)
        self.features = features
        self.decoder = Decoder(self.scorer.feature_names, max_bytes)
        self.reasons = reasons
        self.label_columns = tuple(label_columns)
        fields = [(f"l{i}", Any, msgspec.field(name=c, default=None)) for i, c in enumerate(self.label_columns)]
        struct = msgspec.defstruct("Labels", fields)
        self._labels = msgspec.json.Decoder(list[struct]).decode  # type: ignore[valid-type]
        self._keys = [json.dumps(c).encode() for c in self.label_columns]

    def run(self, chunk: Chunk) -> Result:
        scorer = self.scorer
        decoded = scorer.admit(self.decoder.decode_batch(chunk.lines))  # out_of_range rows: reject lines
        numbers = chunk.line_numbers
        rejects = [
            (numbers[i] if numbers is not None else chunk.first_line + i, e.reason,
             e.detail.encode("utf-8", "backslashreplace").decode())  # the DLQ header's text
            for i, e in decoded.errors
        ]  # fmt: skip
        labels: dict[str, list[Any]] = {}
        if decoded.index and self.label_columns:
            if chunk.labels is not None:
                labels = {self.label_columns[0]: [chunk.labels[i] for i in decoded.index]}
            else:
                labels = self._json_labels([chunk.lines[i] for i in decoded.index])
            bad = _bad_labels(labels)
            if bad:  # a label no metric can use (not finite, out of range): a reject line, not a score
                for j, why in sorted(bad.items()):
                    i = decoded.index[j]
                    rejects.append((numbers[i] if numbers is not None else chunk.first_line + i, BAD_LABEL, why))
                rejects.sort(key=lambda r: r[0])
                keep = [j for j in range(len(decoded.index)) if j not in bad]
                decoded = take_rows(decoded, keep)
                labels = {c: [values[j] for j in keep] for c, values in labels.items()}
        if not decoded.index:
            return Result(len(chunk.lines), b"", rejects, b"")
        scaled = scorer.scale(decoded.features)
        scores = scorer.score_scaled(scaled)
        times = {j: t if t is not None else 0 for j, t in enumerate(decoded.event_times)}
        payloads = encode_results(
            scorer, range(len(scores)), decoded.transaction_ids, times, scaled, decoded.features, scores,
            int(time.time() * 1000), self.reasons, features=self.features,
        )  # fmt: skip
        result = Result(len(chunk.lines), b"\n".join(payloads) + b"\n", rejects, scores.astype(np.float32).tobytes())
        result.alerts = int(np.count_nonzero(scores >= scorer.threshold))
        result.labels = labels
        return result

    def _json_labels(self, valid: list[bytes]) -> dict[str, list[Any]]:
        """Each label column's values in the valid events (None where absent), in one msgspec call.

        A value msgspec cannot hold (``1e999``, an integer beyond 64 bits) is ``UNREADABLE``."""
        joined = b",".join(valid)
        present = [k for k, key in enumerate(self._keys) if key in joined]
        if not present:  # the common case, events without labels: no second parse
            return {}
        try:
            rows = self._labels(b"[" + joined + b"]")  # valid events are JSON objects: the array parses
        except msgspec.MsgspecError:  # some label is out of range: each event on its own
            rows = [self._one_label(line) for line in valid]
        return {self.label_columns[k]: [getattr(r, f"l{k}") for r in rows] for k in present}

    def _one_label(self, line: bytes) -> Any:
        try:
            return self._labels(b"[" + line + b"]")[0]
        except msgspec.MsgspecError:
            return SimpleNamespace(**{f"l{k}": UNREADABLE for k in range(len(self.label_columns))})


UNREADABLE = object()  # a label value the JSON decoder cannot hold (1e999, an integer beyond 64 bits)


def _bad_labels(labels: dict[str, list[Any]]) -> dict[int, str]:
    """Row -> why, for each valid row whose label is not finite or not readable as a number."""
    bad: dict[int, str] = {}
    for column, values in labels.items():
        for j, v in enumerate(values):
            if j in bad:
                continue
            if v is UNREADABLE:
                bad[j] = f"{column}: a number out of range"
            elif isinstance(v, float) and not math.isfinite(v):
                bad[j] = f"{column}: not a finite number"
            elif isinstance(v, str) and v.strip().lower().lstrip("+-") in _NON_FINITE_TEXT:
                bad[j] = f"{column}: not a finite number"
    return bad


_process_scorer: BatchScorer | None = None


def _start_process(*args: Any) -> None:
    global _process_scorer
    _process_scorer = BatchScorer(*args)


def _run_in_process(chunk: Chunk) -> Result:
    assert _process_scorer is not None, "the pool's initializer builds the scorer"
    return _process_scorer.run(chunk)


class Source:
    """The input file, plain or gzip; ``position`` is how far into the file (bytes on disk) it has read."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.size = path, path.stat().st_size
        self._raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        # Both have peek(), for the format sniff.
        self.binary: Any = gzip.GzipFile(fileobj=self._raw) if _is_gzip(self._raw) else self._raw
        self.format = fmt if fmt != "auto" else self._sniff()
        self.header: list[str] = []
        self._reader: Any = None
        if self.format == "csv":
            self._text = io.TextIOWrapper(self.binary, encoding="utf-8", errors="surrogateescape", newline="")
            self._reader = csv.reader(self._text)
            self.header = [h.strip().lstrip("\ufeff") for h in next(self._reader, [])]

    @property
    def position(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()

    def _sniff(self) -> str:
        name = self.path.name.lower().removesuffix(".gz")
        if name.endswith(".csv"):
            return "csv"
        if name.endswith((".jsonl", ".ndjson", ".json")):
            return "jsonl"
        return "jsonl" if self.binary.peek(64).lstrip()[:1] in (b"{", b"[") else "csv"

    def chunks(self, batch_size: int, feature_names: Sequence[str], label_column: str | None) -> Iterator[Chunk]:
        if self.format == "jsonl":
            return self._jsonl_chunks(batch_size)
        return self._csv_chunks(batch_size, feature_names, label_column)

    def _jsonl_chunks(self, batch_size: int) -> Iterator[Chunk]:
        tail, line, pending = b"", 1, []
        while block := self.binary.read(BLOCK_BYTES):
            parts = (tail + block).split(b"\n")
            tail = parts.pop()
            pending += parts
            while len(pending) >= batch_size:
                yield Chunk(line, pending[:batch_size])
                line, pending = line + batch_size, pending[batch_size:]
        if tail:  # a last line without its newline
            pending.append(tail)
        if pending:
            yield Chunk(line, pending)

    def _csv_chunks(self, batch_size: int, feature_names: Sequence[str], label_column: str | None) -> Iterator[Chunk]:
        header = self.header
        wanted = set(feature_names)
        cols = [(i, name) for i, name in enumerate(header) if name in wanted]
        tid = header.index("transaction_id") if "transaction_id" in header else None
        etime = header.index("event_time") if "event_time" in header else None
        label = header.index(label_column) if label_column in header else None
        lines: list[bytes] = []
        numbers: list[int] = []
        labels: list[Any] = []
        last = 1  # the header's line
        for row in self._reader:
            number, last = last + 1, self._reader.line_num
            doc: dict[str, Any] = {name: _number(row[i]) for i, name in cols if i < len(row)}
            if tid is None:
                doc["transaction_id"] = f"line-{number}"
            elif tid < len(row):
                doc["transaction_id"] = row[tid]
            if etime is not None and etime < len(row) and row[etime].strip():
                doc["event_time"] = _integer(row[etime])
            lines.append(_encode_doc(doc))
            numbers.append(number)
            labels.append(row[label] if label is not None and label < len(row) else None)
            if len(lines) == batch_size:
                yield Chunk(numbers[0], lines, numbers, labels)
                lines, numbers, labels = [], [], []
        if lines:
            yield Chunk(numbers[0], lines, numbers, labels)


def _is_gzip(raw: IO[bytes]) -> bool:
    magic = raw.read(2)
    raw.seek(0)
    return magic == b"\x1f\x8b"


def _number(text: str) -> Any:
    """A CSV cell as fraud-replay sends it: a number where it reads as one, else the text."""
    try:
        return float(text)
    except ValueError:
        return text


def _integer(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return _number(text)


def _encode_doc(doc: dict[str, Any]) -> bytes:
    try:
        return _encode(doc)
    except UnicodeEncodeError:  # a cell that was not UTF-8: its bytes as they were, for the decoder to judge
        return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape")


class Progress:
    """One self-overwriting line on stderr, only at a terminal and only once a run takes over 2 s."""

    def __init__(self, source: Source, enabled: bool) -> None:
        self.source, self.enabled = source, enabled and sys.stderr.isatty()
        self.start = self.last = time.monotonic()
        self.shown = False

    def update(self, events: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.start < 2.0 or now - self.last < 0.25:
            return
        self.last, self.shown = now, True
        share = self.source.position / max(self.source.size, 1)
        rate = events / (now - self.start)
        sys.stderr.write(f"\rbacktest: {events:,} events ({share:.0%} of the file), {rate:,.0f}/s   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def run_chunks(chunks: Iterator[Chunk], jobs: int, scorer_args: tuple) -> Iterator[Result]:
    """Each chunk's result, in input order; ``jobs`` > 1 scores that many chunks at once in child processes."""
    if jobs <= 1:
        batch = BatchScorer(*scorer_args)
        yield from map(batch.run, chunks)
        return
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    # spawn, not fork: a forked child would inherit this process's LiteRT interpreter and threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_process, initargs=scorer_args) as pool:
        pending: deque[Future[Result]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(_run_in_process, chunk))
            if len(pending) >= 2 * jobs:  # a bounded read-ahead: memory stays a few batches whatever the file
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score a file of transactions (JSON lines or CSV, plain or .gz) offline with a model bundle, "
        "through the worker's own decode, validation, transforms, scaling, scoring and output code.",
        epilog="Exit codes: 0 done, 1 the input cannot be read, 2 bad settings, 3 no servable model, 130 interrupted.",
    )
    p.add_argument("--input", required=True, metavar="FILE", help="events: JSON lines or a CSV, plain or .gz")
    p.add_argument("--models-dir", required=True, metavar="DIR", help="the models directory (as the worker's)")
    p.add_argument("--version", default=None, help="the bundle version to score with (default: the one CURRENT names)")
    p.add_argument("--output", required=True, metavar="OUT.jsonl", help="one score record (JSON) per valid event")
    p.add_argument("--rejects", default=None, metavar="REJECTS.jsonl",
                   help="one line per bad record (default: OUT's name with .rejects.jsonl)")  # fmt: skip
    p.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                   help="input format (default: by the file name, else by its first byte)")  # fmt: skip
    p.add_argument("--label-column", default=None, metavar="COL",
                   help=f"label for the metrics (default: {' or '.join(LABEL_CANDIDATES)} if present)")  # fmt: skip
    p.add_argument("--thresholds", default=",".join(map(str, metrics.DEFAULT_THRESHOLDS)),
                   help="thresholds for the metrics besides the model's own (default: %(default)s)")  # fmt: skip
    p.add_argument("--cost-missed-fraud", type=float, default=metrics.COST_MISSED_FRAUD,
                   help="cost of a fraud not flagged, as fraud-train's cost policy (default: %(default)g)")  # fmt: skip
    p.add_argument("--cost-false-alarm", type=float, default=metrics.COST_FALSE_ALARM,
                   help="cost of a genuine event flagged (default: %(default)g)")  # fmt: skip
    p.add_argument("--pr-curve", default=None, metavar="PLOT.png", help="write the PR curve (needs matplotlib)")
    p.add_argument("--batch-size", type=int, default=10_000, help="records per batch (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=0, help="scoring processes; 0 = one per core (default), 1 = this one")
    p.add_argument("--reasons", type=int, default=_DEFAULTS.reasons,
                   help="reasons per score record, as the worker's setting (default: %(default)s)")  # fmt: skip
    p.add_argument("--max-message-bytes", type=int, default=_DEFAULTS.max_message_bytes,
                   help="longest valid record, as the worker's setting (default: %(default)s)")  # fmt: skip
    p.add_argument("--trusted-keys", default=os.environ.get("FRAUD_TRUSTED_KEYS") or None, metavar="FILE[,FILE...]",
                   help="score only with a bundle signed by one of these Ed25519 public keys, as the worker's "
                   "setting (default: $FRAUD_TRUSTED_KEYS; unset: signatures not checked)")  # fmt: skip
    p.add_argument("--scores-include-features", action="store_true",
                   help="each output line also holds the event's feature values, as the worker's setting")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _problem(args: argparse.Namespace) -> str | None:
    """The first bad setting, in one line naming its flag or file; None when all are usable."""
    try:
        args.threshold_list = [float(x) for x in args.thresholds.split(",") if x.strip()]
    except ValueError:
        return f"--thresholds: not a comma-separated list of numbers: {args.thresholds!r}"
    args.rejects = args.rejects or str(Path(args.output).with_suffix("")) + ".rejects.jsonl"
    checks = [
        (args.batch_size < 1, f"--batch-size must be >= 1 (got {args.batch_size})"),
        (args.jobs < 0, f"--jobs must be >= 0 (got {args.jobs})"),
        (args.reasons < 0, f"--reasons must be >= 0 (got {args.reasons})"),
        (args.max_message_bytes < 1, f"--max-message-bytes must be >= 1 (got {args.max_message_bytes})"),
        (min(args.cost_missed_fraud, args.cost_false_alarm) < 0,
         "--cost-missed-fraud and --cost-false-alarm must be >= 0"),
        (any(not 0 <= t <= 1 for t in args.threshold_list), f"--thresholds must lie in [0, 1]: {args.thresholds}"),
        (len({_same(args.input), _same(args.output), _same(args.rejects)}) < 3,
         "--input, --output and --rejects must be three different files"),
    ]  # fmt: skip
    for flag, path in (("--output", args.output), ("--rejects", args.rejects), ("--pr-curve", args.pr_curve)):
        if path is not None and not Path(path).resolve().parent.is_dir():
            checks.append((True, f"{flag} {path}: no such directory {Path(path).resolve().parent}"))
    if args.pr_curve is not None:
        import importlib.util

        missing = importlib.util.find_spec("matplotlib") is None
        checks.append((missing, f"--pr-curve needs matplotlib: {metrics.PLOT_HINT}"))
    return next((why for bad, why in checks if bad), None)


def _same(path: str) -> str:
    return os.path.realpath(path)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a malformed command line (2)
        return int(exc.code or 0)
    why = _problem(args)
    if why is not None:
        print(f"{PROG}: bad setting: {why}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        keys = load_trusted_keys(args.trusted_keys, "--trusted-keys") if args.trusted_keys else None
    except ConfigError as exc:
        print(f"{PROG}: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        scorer = load_scorer(args.models_dir, args.version, trusted_keys=keys)
    except BundleError as exc:
        print(f"{PROG}: no servable model in {args.models_dir}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    try:
        source = Source(Path(args.input), args.format)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        print(f"{PROG}: cannot read {args.input}: {_reason(exc)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return _backtest(args, scorer, source)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        print(f"{PROG}: cannot read {args.input}: {_reason(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        source.close()


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _backtest(args: argparse.Namespace, scorer: Any, source: Source) -> int:
    if source.format == "csv":
        if args.label_column is not None and args.label_column not in source.header:
            print(f"{PROG}: bad setting: --label-column {args.label_column}: not a column of {args.input}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_CONFIG
        found = [c for c in ([args.label_column] if args.label_column else LABEL_CANDIDATES) if c in source.header]
        label_columns: tuple[str, ...] = tuple(found[:1])
    else:
        label_columns = (args.label_column,) if args.label_column else LABEL_CANDIDATES
    jobs = args.jobs or os.cpu_count() or 1
    scorer_args = (args.models_dir, scorer.version, args.reasons, args.max_message_bytes, label_columns,
                   args.trusted_keys, args.scores_include_features)  # fmt: skip
    chunks = source.chunks(args.batch_size, scorer.feature_names, label_columns[0] if label_columns else None)
    progress = Progress(source, not args.quiet)
    events = scored = alerts = rejected = 0
    scores: list[np.ndarray] = []
    labels: dict[str, list[Any]] = {c: [] for c in label_columns}
    encode = msgspec.json.Encoder().encode
    start = time.monotonic()
    with open(args.output, "wb") as out, open(args.rejects, "wb") as rej:
        try:
            for r in run_chunks(chunks, jobs, scorer_args):
                out.write(r.output)
                if r.rejects:
                    rej.write(b"".join(encode({"line": n, "error": code, "error_detail": detail}) + b"\n"
                                       for n, code, detail in r.rejects))  # fmt: skip
                batch_scores = np.frombuffer(r.scores, dtype=np.float32)
                scores.append(batch_scores)
                for c, values in r.labels.items():
                    labels[c] += values
                events += r.events
                scored += batch_scores.size
                rejected += len(r.rejects)
                alerts += r.alerts
                progress.update(events)
        finally:
            progress.close()
    seconds = time.monotonic() - start
    print(
        f"backtest: {events:,} events, {scored:,} scored, {rejected:,} rejected, {alerts:,} alerts "
        f"(model {scorer.version}, threshold {scorer.threshold:.4f}) in {seconds:.2f} s, "
        f"{events / max(seconds, 1e-9):,.0f} events/s; scores in {args.output}, rejects in {args.rejects}"
    )
    return _label_report(args, scorer, np.concatenate(scores) if scores else np.empty(0, np.float32), labels)


def _label_report(args: argparse.Namespace, scorer: Any, scores: np.ndarray, labels: dict[str, list[Any]]) -> int:
    column = next((c for c, values in labels.items() if any(v is not None for v in values)), None)
    if column is None:
        wanted = args.label_column or " or ".join(LABEL_CANDIDATES)
        print(f"no label column ({wanted}) in {args.input}: no precision or recall")
        if args.pr_curve is not None:
            print(f"{PROG}: bad setting: --pr-curve needs labels, and {args.input} has none", file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_OK
    values = [metrics.label_value(v) for v in labels[column]]
    known = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    y = np.fromiter((v or 0 for v in values), dtype=np.int8, count=len(values)).astype(bool)[known]
    s = scores[known]
    print(metrics.report(column, y, s, scorer.threshold, args.threshold_list, args.cost_missed_fraud,
                         args.cost_false_alarm, unlabelled=int(known.size - known.sum())))  # fmt: skip
    if args.pr_curve is not None:
        metrics.plot_pr_curve(args.pr_curve, y, s, scorer.threshold, f"{Path(args.input).name}, model {scorer.version}")
        print(f"PR curve in {args.pr_curve}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
