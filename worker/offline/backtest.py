"""The backtest: a file of transactions scored offline through the worker's own code, minus Kafka.

A file of events (JSON lines, one event per line, the worker's input format; or a CSV with the
feature columns), plain or gzip, goes through what the worker does to a polled batch:
``worker.core.decode.Decoder.decode_batch`` (the same validation and reason codes), then the
worker's ``score_decoded`` (worker/core/batch_scoring.py: ``Scorer.admit``, transforms, scaling, one
LiteRT call, with the ``Scorer`` of ``load_scorer``) and ``score_payloads`` (worker/core/outputs.py),
so each output line is the JSON a score record would carry. ``fraud-worker backtest``
(worker/programs/subcommands/backtest.py) is its command line.

- A CSV row becomes the document fraud-replay would send: each column of ``feature_names`` (the
  event fields the model reads, and with rule sets those their fields, the amount and the segment
  thresholds read: ``event_columns``) as a number (text that is not one stays text),
  ``transaction_id`` (``line-<N>`` when the file has no such column) and ``event_time`` when the
  file has the column and the cell is not empty.
- ``event_time`` of an event without one is 0 in its output line (the worker would take the Kafka
  record timestamp, which a file does not have).
- A bad record gets a reject line ``{"line": N, "error": code, "error_detail": text}``: the reason
  code and detail the DLQ headers would carry, N the record's 1-based line in the file (a CSV's
  header is line 1). A blank line is a record too (``empty_value``); the end of the last line is not.
  A valid event with a feature beyond the model's range is rejected ``out_of_range``, as the worker
  dead-letters it (``Scorer.admit``). A valid event whose label is not finite or out of range
  (``1e999``, NaN, inf) is rejected with ``bad_label`` (``BAD_LABEL``) rather than given a score
  line: no metric could use it.
- ``scored_at`` is the clock when the batch was scored, as in the worker.
- With rule sets (``ScorerArgs.rules``, ``candidate_rules``) or a bundle's segment thresholds, each
  batch is decided by the worker loop's ``Judge.decide`` over each valid event's JSON: the output
  lines carry the decision record (the candidate's as ``shadow_decision``), an alert is an action
  other than allow, and ``Result.decided`` holds what worker/offline/rule_backtest.py adds up.

Batches (``batch_size`` lines) are scored by ``jobs`` processes, each with its own scorer, and
written in input order; the reading and writing stay in the calling process (``backtest``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, NamedTuple

import msgspec
import numpy as np

from worker.core.batch_decisions import Judge
from worker.core.batch_features import BatchFeatures
from worker.core.batch_scoring import score_decoded
from worker.core.decode import Decoder
from worker.core.features import FeatureSpec, valid_time
from worker.core.outputs import score_payloads
from worker.core.risk import FraudHistory
from worker.core.rules import RuleSet
from worker.core.scoring import load_scorer
from worker.core.signing import load_trusted_keys
from worker.offline import backtest_metrics as metrics
from worker.offline.rule_backtest import Amounts, DecidedRows, RuleFile, decided_rows

LABEL_CANDIDATES = ("Class", "is_fraud")
BAD_LABEL = "bad_label"  # a reject line's code for a label that is not finite or not readable
_NON_FINITE_TEXT = ("inf", "infinity", "nan")
BLOCK_BYTES = 4 << 20
_encode = msgspec.json.Encoder().encode


class ScorerArgs(NamedTuple):
    """What each scoring process builds its ``BatchScorer`` from (picklable: sent to spawned processes)."""

    models_dir: str
    version: str | None
    reasons: int
    max_bytes: int
    label_columns: tuple[str, ...]
    trusted_keys: str | None = None  # comma-separated public key files; None: signatures not checked
    features: bool = False  # scores_include_features
    # For a spec reading labels: (input file, its format, label column, label-time column) read first for the
    # fraud entries (``file_history``); None: no labels, fraud_count 0 and fraud_rate the prior.
    labelled_file: tuple[str, str, str, str] | None = None
    # Rule sets deciding each batch as the worker's do (worker/offline/rule_backtest.py): the serving one, a
    # candidate decided beside it (its records' ``shadow_decision``), and the event field the amounts come from.
    rules: RuleFile | None = None
    candidate_rules: RuleFile | None = None
    amount_field: str = "amount"


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
    decided: DecidedRows | None = None  # with rule sets: what the rule figures need of the valid rows


class BatchScorer:
    """Decode, admit, transform, scale, score and encode one chunk: the worker's steps for one batch."""

    def __init__(self, models_dir: str, version: str | None, reasons: int, max_bytes: int,
                 label_columns: Sequence[str], trusted_keys: str | None = None,
                 features: bool = False, labelled_file: tuple[str, str, str, str] | None = None,
                 rules: RuleFile | None = None, candidate_rules: RuleFile | None = None,
                 amount_field: str = "amount") -> None:  # fmt: skip
        keys = load_trusted_keys(trusted_keys, "--trusted-keys") if trusted_keys else None
        self.scorer = load_scorer(models_dir, version, trusted_keys=keys)
        self.features = features
        self.decoder = Decoder(self.scorer.input_names, max_bytes)
        spec = self.scorer.spec
        risk = file_history(spec, *labelled_file) if spec is not None and spec.risk_fields and labelled_file else None
        self.behaviour = BatchFeatures(spec, risk=risk) if spec is not None else None  # state across the chunks
        self.reasons = reasons
        self.label_columns = tuple(label_columns)
        fields = [(f"l{i}", Any, msgspec.field(name=c, default=None)) for i, c in enumerate(self.label_columns)]
        struct = msgspec.defstruct("Labels", fields)
        self._labels = msgspec.json.Decoder(list[struct]).decode  # type: ignore[valid-type]
        self._keys = [json.dumps(c).encode() for c in self.label_columns]
        self.rules = rules.serving() if rules is not None else None
        self.candidate = candidate_rules.serving() if candidate_rules is not None else None
        self.judge = Judge()
        self.amounts = Amounts(amount_field)

    def run(self, chunk: Chunk) -> Result:
        scorer = self.scorer
        # The worker's own scoring of a decoded batch: out_of_range rows become reject lines.
        decoded = self.decoder.decode_batch(chunk.lines)
        if self.behaviour is not None:
            decoded = self.behaviour.extend(decoded, [chunk.lines[i] for i in decoded.index])
        scored = score_decoded(scorer, decoded)
        decoded = scored.decoded
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
                scored = scored.take(keep)  # a row's score does not depend on the others in its batch
                decoded = scored.decoded
                labels = {c: [values[j] for j in keep] for c, values in labels.items()}
        if scored.scaled is None or scored.scores is None or not decoded.index:
            return Result(len(chunk.lines), b"", rejects, b"")
        scores = scored.scores
        times = {j: t if t is not None else 0 for j, t in enumerate(decoded.event_times)}
        decisions = candidate = None
        events: list[bytes] = []
        if self.rules is not None or self.candidate is not None or scorer.segments is not None:
            # The worker's decisions (its loop's Judge.decide): rules, segment thresholds, each event's JSON.
            events = [chunk.lines[i] for i in decoded.index]
            decisions, candidate = self.judge.decide(scorer, decoded, events, scores, self.rules, self.candidate)
        payloads = score_payloads(scorer, decoded, scored.scaled, scores, times, int(time.time() * 1000),
                                  self.reasons, self.features, decisions=decisions,
                                  shadow_decisions=candidate)  # fmt: skip
        result = Result(len(chunk.lines), b"\n".join(payloads) + b"\n", rejects, scores.astype(np.float32).tobytes())
        if decisions is not None:
            result.alerts = len(decisions.alerts)
            if self.rules is not None or self.candidate is not None:
                result.decided = decided_rows(decisions, candidate, scores, self.amounts.read(events))
        else:
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


def event_columns(event_fields: Sequence[str], rule_sets: Sequence[RuleSet], amount_field: str | None,
                  segment_field: str | None) -> tuple[str, ...]:
    """The event fields a CSV row's document holds: the model's, then each rule set field's source, the amount
    field and the segment field (a source no column has, such as a feature's name, adds nothing)."""
    extra = [f.source for rs in rule_sets for f in rs.fields]
    extra += [name for name in (amount_field, segment_field) if name]
    return tuple(dict.fromkeys((*event_fields, *extra)))


def file_history(spec: FeatureSpec, path: str, fmt: str, label_column: str, label_time_column: str) -> FraudHistory:
    """The fraud entries of a labelled file for the spec's label-derived features, by the rule fraud-train
    follows (``FraudHistory.from_rows``: each fraud row at its label time, or its own time without the
    column). Read before the backtest scores it: an event sees only the entries its rule lets count."""
    names = (spec.time_field, *spec.risk_fields, label_column, label_time_column)
    fields = [(f"f{j}", Any, msgspec.field(name=n, default=None)) for j, n in enumerate(names)]
    decode = msgspec.json.Decoder(msgspec.defstruct("LabelledRow", fields)).decode  # type: ignore[arg-type]
    to_ms = 1000 if spec.time_unit == "s" else 1
    columns: dict[str, list[Any]] = {f: [] for f in spec.risk_fields}
    times: list[int] = []
    frauds: list[int] = []
    label_times: list[int] = []
    source = Source(Path(path), fmt)
    try:
        for chunk in source.chunks(10_000, names, label_column):
            for k, line in enumerate(chunk.lines):
                try:
                    row = decode(line)
                except msgspec.MsgspecError:
                    continue  # not an event: the backtest rejects it
                t = valid_time(row.f0, spec.time_unit)  # type: ignore[attr-defined]
                label = chunk.labels[k] if chunk.labels is not None else getattr(row, f"f{len(names) - 2}")
                if t is None or not _is_one(label):
                    continue
                tx = round(t * to_ms)
                at = valid_time(getattr(row, f"f{len(names) - 1}"), "ms")
                times.append(tx)
                frauds.append(1)
                label_times.append(max(tx, round(at)) if at is not None else tx)  # epoch ms
                for j, f in enumerate(spec.risk_fields, start=1):
                    columns[f].append(getattr(row, f"f{j}"))
    finally:
        source.close()
    return FraudHistory.from_rows(spec.risk_fields, columns, times, frauds, label_times)


def _is_one(label: Any) -> bool:
    """A label cell or field that says fraud: 1 (1.0, "1", true)."""
    if isinstance(label, bool):
        return label
    try:
        return float(label) == 1.0
    except (TypeError, ValueError):
        return False


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


def run_chunks(chunks: Iterator[Chunk], jobs: int, scorer_args: ScorerArgs) -> Iterator[Result]:
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


def label_columns_of(source: Source, label_column: str | None) -> tuple[str, ...]:
    """The label columns to read: ``label_column``, else each of ``LABEL_CANDIDATES``; of a CSV only the
    first of them it has (a CSV's rows carry one label cell)."""
    wanted = [label_column] if label_column else list(LABEL_CANDIDATES)
    if source.format == "csv":
        return tuple([c for c in wanted if c in source.header][:1])
    return tuple(wanted)


@dataclass
class Totals:
    """What a backtest found: counts, every score in input order, and the label values beside them."""

    events: int = 0
    scored: int = 0
    rejected: int = 0
    alerts: int = 0
    seconds: float = 0.0
    scores: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    labels: dict[str, list[Any]] = field(default_factory=dict)  # label column -> values of the scored events
    decided: list[DecidedRows] = field(default_factory=list)  # with rule sets: each batch's, in order


def backtest(source: Source, output: str | Path, rejects: str | Path, scorer_args: ScorerArgs,
             feature_names: Sequence[str], batch_size: int, jobs: int,
             progress: Callable[[int], None] | None = None) -> Totals:  # fmt: skip
    """Score ``source`` in batches of ``batch_size`` records with ``jobs`` processes: a score line per valid event
    in ``output``, a reject line per other record in ``rejects``, in input order; ``feature_names`` are the
    model's (a CSV's columns to read); ``progress`` is told the events read so far after each batch."""
    label_columns = scorer_args.label_columns
    chunks = source.chunks(batch_size, feature_names, label_columns[0] if label_columns else None)
    totals = Totals(labels={c: [] for c in label_columns})
    scores: list[np.ndarray] = []
    encode = msgspec.json.Encoder().encode
    start = time.monotonic()
    with open(output, "wb") as out, open(rejects, "wb") as rej:
        for r in run_chunks(chunks, jobs, scorer_args):
            out.write(r.output)
            if r.rejects:
                rej.write(b"".join(encode({"line": n, "error": code, "error_detail": detail}) + b"\n"
                                   for n, code, detail in r.rejects))  # fmt: skip
            batch_scores = np.frombuffer(r.scores, dtype=np.float32)
            scores.append(batch_scores)
            for c, values in r.labels.items():
                totals.labels[c] += values
            totals.events += r.events
            totals.scored += batch_scores.size
            totals.rejected += len(r.rejects)
            totals.alerts += r.alerts
            if r.decided is not None:
                totals.decided.append(r.decided)
            if progress is not None:
                progress(totals.events)
    totals.seconds = time.monotonic() - start
    if scores:
        totals.scores = np.concatenate(scores)
    return totals


@dataclass(frozen=True)
class Labelled:
    """The scores of the events with a known label, and those labels, for the metrics."""

    column: str
    y: np.ndarray  # bool: fraud
    scores: np.ndarray
    unlabelled: int  # scored events whose label is missing or not 0/1
    known: np.ndarray | None = None  # bool per scored event: its label is known (the rows of y)


def labelled(totals: Totals) -> Labelled | None:
    """The first label column with any value, its known labels and their events' scores; None without labels."""
    column = next((c for c, values in totals.labels.items() if any(v is not None for v in values)), None)
    if column is None:
        return None
    values = [metrics.label_value(v) for v in totals.labels[column]]
    known = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    y = np.fromiter((v or 0 for v in values), dtype=np.int8, count=len(values)).astype(bool)[known]
    return Labelled(column, y, totals.scores[known], int(known.size - known.sum()), known)
