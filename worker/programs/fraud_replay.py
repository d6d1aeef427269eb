"""``fraud-replay``: produce transactions to Kafka from a CSV or the synthetic generator.

For demos and load tests. Rows become transaction events (DESIGN.md): a ``transaction_id``,
one number per numeric column, and ``event_time`` (epoch ms, stamped when the event is sent; with
``--event-time data``, the row's own, as a feature spec's windows need it).
With ``--labels-topic``, each row's label goes to that topic too (``Labels``): ``--label-delay-seconds``
after its event on the wall clock; with ``--event-time data``, in the data's time, at the row's
``label_time`` (a column of the data, never an event field), once the replay has passed that time.
Records are keyed by the account id column where the data has one (``account_id`` by default),
so one account's events stay in order on one partition. The topic (the worker's input topic), the
bootstrap servers and the passed-through Kafka settings come from ``worker.edges.config`` (flags,
``FRAUD_*`` variables, defaults), as the worker's do. Needs only the base install (numpy,
kafka-python, msgspec): no TensorFlow, no ``training`` package (it runs in the worker image).
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import heapq
import io
import itertools
import logging
import math
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from worker.edges.config import SETTINGS_EPILOG, SettingsParser, WorkerConfig, add_settings, client_options
from worker.feedback.records import encode_label
from worker.offline.synthetic import generate, generate_behavioural
from worker.programs.settings import TOOL_BOOTSTRAP_TIMEOUT_MS, failure, parse_settings, require_access

logger = logging.getLogger(__name__)
DEFAULT_LABEL = "Class"
DEFAULT_LABEL_TIME = "label_time"  # the synthetic v3 generator's label time column, and --label-time-column's default
PROG = "fraud-replay"


class DataFileError(RuntimeError):
    """The ``--data`` file cannot be read as a CSV with a header row: one line naming the file (exit 1)."""


def rows_from_csv(
    path: Path, key_column: str, with_label: bool, label_column: str = DEFAULT_LABEL, key_in_event: bool = False
) -> Iterator[tuple[bytes | None, dict]]:
    """Stream (key, event fields) from a CSV, plain or gzip; numeric text becomes numbers.

    The header is read at once: an empty file, or one that is not UTF-8 text, a valid gzip stream or
    CSV, raises ``DataFileError`` (here, or where the bad row is reached) naming the file and the line.
    """
    try:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
        fh = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    reader = csv.reader(fh)
    try:
        first = _read_row(path, reader)
    except BaseException:
        fh.close()
        raise
    if first is None:
        fh.close()
        raise DataFileError(f"{path}: empty, no header row")
    return _csv_rows(path, fh, reader, [h.strip() for h in first], key_column, with_label, label_column,
                     key_in_event)  # fmt: skip


def _read_row(path: Path, reader: Any) -> list[str] | None:
    try:
        return next(reader, None)
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: not UTF-8 text") from None
    except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt gzip stream, a read error
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DataFileError(f"{path}: cannot read: {why}") from None
    except csv.Error as exc:
        raise DataFileError(f"{path}: line {reader.line_num}: not a CSV row ({exc})") from None


def _csv_rows(
    path: Path, fh: io.TextIOWrapper, reader: Any, header: list[str], key_column: str, with_label: bool,
    label_column: str, key_in_event: bool = False,
) -> Iterator[tuple[bytes | None, dict]]:  # fmt: skip
    with fh:
        while (row := _read_row(path, reader)) is not None:
            key = None
            fields: dict = {}
            for name, value in zip(header, row, strict=False):  # a row may be shorter or longer than the header
                if name == key_column:
                    key = value.encode()
                    if key_in_event:
                        fields[name] = value
                elif name == label_column and not with_label:
                    continue
                else:
                    try:
                        fields[name] = float(value)
                    except ValueError:
                        fields[name] = value
            yield key, fields


def rows_from_synthetic(
    n: int,
    seed: int,
    key_column: str,
    with_label: bool,
    label_column: str = DEFAULT_LABEL,
    generator: str = "v2",
    key_in_event: bool = False,
) -> Iterator[tuple[bytes | None, dict]]:
    """Stream (key, row) from the synthetic generator: every column but the key (unless ``key_in_event``) and
    the label (unless ``with_label``). A v3 row holds ``label_time``, which ``replay`` takes out of the event."""
    columns = generate_behavioural(n, seed) if generator == "v3" else generate(n, seed=seed)
    names = [c for c in columns if (key_in_event or c != key_column) and (with_label or c != label_column)]
    keys = columns.get(key_column)
    values = [columns[c].tolist() for c in names]
    for i, row in enumerate(zip(*values, strict=True)):
        yield (None if keys is None else str(keys[i]).encode()), dict(zip(names, row, strict=True))


class Progress:
    """One self-overwriting status line on stderr, at most a few times a second."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and sys.stderr.isatty()
        self.start = self.last = time.monotonic()

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.25):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        sys.stderr.write(f"\rreplay: {done:,}{of} events, {rate:,.0f}/s   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def producer_options(config: WorkerConfig, paced: bool) -> dict[str, Any]:
    """The producer's settings: replay's own defaults, then the config's Kafka settings; always acks=all."""
    options = client_options(
        config,
        "producer",
        linger_ms=5 if paced else 20,
        batch_size=256 * 1024,
        client_id="fraud-replay",
        max_block_ms=15_000,
        bootstrap_timeout_ms=TOOL_BOOTSTRAP_TIMEOUT_MS,
    )
    return {**options, "acks": "all"}


def replay(args: argparse.Namespace, config: WorkerConfig) -> dict:
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    keep_time = args.event_time == "data"
    labels = None
    if args.labels_topic:
        labels = Labels(args.labels_topic, args.label_delay_seconds, args.label_column, data_time=keep_time)
    keep_label = args.with_label or labels is not None  # read it; sent in the event only with --with-label
    if args.data:
        rows = rows_from_csv(Path(args.data), args.key_column, keep_label, args.label_column, args.key_in_event)
        label_time_column = args.label_time_column
        total = args.count
    else:
        rows = rows_from_synthetic(args.synthetic, args.seed, args.key_column, keep_label, generator=args.generator,
                                   key_in_event=args.key_in_event)  # fmt: skip
        if labels is not None:
            labels.column = DEFAULT_LABEL  # the generator's label column
        label_time_column = DEFAULT_LABEL_TIME  # the v3 generator's (v2 has none)
        total = min(args.count or args.synthetic, args.synthetic)
    if args.count:
        rows = itertools.islice(rows, args.count)
    topic = config.input_topic
    require_access(config, write=[topic, *([labels.topic] if labels else [])])
    options = producer_options(config, paced=bool(args.rate))
    producer = KafkaProducer(**options)
    try:
        producer.partitions_for(topic)
    except KafkaTimeoutError:
        producer.close(timeout=1)
        raise RuntimeError(
            f"topic {topic!r} not found at {config.bootstrap_servers} within {options['max_block_ms'] / 1000:g} s "
            "(is the broker up, and the topic created?)"
        ) from None
    encode = msgspec.json.Encoder().encode
    progress = Progress(total, not args.quiet)
    start = time.monotonic()
    sent = 0
    failures: list[BaseException] = []
    try:
        for key, fields in rows:
            if args.rate:
                # Pace against the wall clock so rounding never accumulates.
                ahead = start + sent / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            transaction_id = f"{args.id_prefix}-{sent:09d}"
            fields["transaction_id"] = transaction_id
            if not keep_time or "event_time" not in fields:
                fields["event_time"] = time.time_ns() // 1_000_000
            elif isinstance(fields["event_time"], float) and fields["event_time"].is_integer():
                fields["event_time"] = int(fields["event_time"])  # a CSV's number, as the epoch ms it is
            label_time = fields.pop(label_time_column, None)  # the label's, not an event field
            if labels is not None:
                labels.due(producer, failures)
                labels.add(transaction_id, fields, keep=args.with_label, label_time=label_time)
            future = producer.send(topic, key=key, value=encode(fields))
            if len(failures) < 1:
                future.add_errback(failures.append)
            if labels is not None and keep_time:
                labels.passed(producer, failures, fields["event_time"])
            sent += 1
            progress.update(sent)
        if labels is not None:
            labels.finish(producer, failures)
        producer.flush()
    finally:
        producer.close(timeout=10)
        progress.update(sent, force=True)
        progress.close()
    if failures:
        raise RuntimeError(f"broker refused an event: {failures[0]}")
    elapsed = time.monotonic() - start
    summary = {"events": sent, "seconds": round(elapsed, 3), "rate": round(sent / max(elapsed, 1e-9), 1)}
    if labels is not None:
        summary.update(labels=labels.sent, frauds=labels.frauds, unlabelled=labels.missing)
    return summary


class Labels:
    """Each replayed row's label, sent to the labels topic after its event.

    On the wall clock (the default): ``delay`` seconds after the event, with ``label_time`` the time of
    sending. In the data's time (``data_time``, for ``--event-time data``): ``label_time`` is the row's
    label time (``add``'s ``label_time``, epoch ms; a label time before the event counts as the event's
    time), or without one the event's ``event_time`` plus ``delay``; the labels wait in a heap keyed by
    label time and each is sent once the replay has sent an event whose ``event_time`` is at or past it
    (``passed``), the rest at the end (``finish``), so that a label-derived feature sees a label exactly
    from its label time on.

    Keyed by ``transaction_id`` (as the worker keys its score records), so a label lands in the
    same partition number as the score record it belongs to. The value is the label contract
    (``worker.feedback.records``): ``transaction_id``, ``is_fraud``, ``label_time``, ``source``.
    """

    def __init__(self, topic: str, delay: float, column: str, data_time: bool = False) -> None:
        self.topic, self.delay, self.column, self.data_time = topic, delay, column, data_time
        # on the wall clock: (monotonic time due, transaction id, is fraud), in the order added
        self.pending: collections.deque[tuple[float, str, bool]] = collections.deque()
        # in the data's time: a heap of (label time ms, transaction id, is fraud)
        self.waiting: list[tuple[int, str, bool]] = []
        self.sent = self.frauds = self.missing = 0

    def add(self, transaction_id: str, fields: dict, keep: bool, label_time: Any = None) -> None:
        """Queue the row's label (``fields``' label column; taken out of ``fields`` unless ``keep``);
        ``label_time``: the row's label time in epoch ms, read in the data's time only."""
        value = fields.get(self.column) if keep else fields.pop(self.column, None)
        try:
            number = float(value) if value is not None and value != "" else None
        except (TypeError, ValueError):
            number = None
        # 0 or 1 (1.0, "1"); anything else (inf, NaN, 2, text) is a row without a label
        is_fraud = bool(number) if number in (0.0, 1.0) else None
        if is_fraud is None:
            self.missing += 1
            return
        if self.data_time:
            heapq.heappush(self.waiting, (self._data_label_time(fields.get("event_time"), label_time),
                                          transaction_id, is_fraud))  # fmt: skip
        else:
            self.pending.append((time.monotonic() + self.delay, transaction_id, is_fraud))

    def _data_label_time(self, event_time: Any, label_time: Any) -> int:
        event_ms = _epoch_ms(event_time)
        label_ms = _epoch_ms(label_time)
        if label_ms is not None:
            return label_ms if event_ms is None else max(label_ms, event_ms)
        if event_ms is None:  # an event time that is no number: the wall clock's
            event_ms = time.time_ns() // 1_000_000
        return event_ms + round(self.delay * 1000)

    def due(self, producer, failures: list, until: float | None = None) -> None:
        """On the wall clock: send the labels due by ``until`` (monotonic; now by default)."""
        now = time.monotonic() if until is None else until
        while self.pending and self.pending[0][0] <= now:
            _, transaction_id, is_fraud = self.pending.popleft()
            self._send(producer, failures, transaction_id, is_fraud, time.time_ns() // 1_000_000)

    def passed(self, producer, failures: list, event_time: Any) -> None:
        """In the data's time: an event of ``event_time`` was sent; send the labels timed at or before it."""
        now = _epoch_ms(event_time)
        if now is None:
            return
        while self.waiting and self.waiting[0][0] <= now:
            label_time, transaction_id, is_fraud = heapq.heappop(self.waiting)
            self._send(producer, failures, transaction_id, is_fraud, label_time)

    def finish(self, producer, failures: list) -> None:
        """Send the labels still queued: on the wall clock each at its time (waited for), in the data's time
        all of them now, in label time order."""
        while self.waiting:
            label_time, transaction_id, is_fraud = heapq.heappop(self.waiting)
            self._send(producer, failures, transaction_id, is_fraud, label_time)
        while self.pending:
            wait = self.pending[0][0] - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.5))
            self.due(producer, failures)

    def _send(self, producer, failures: list, transaction_id: str, is_fraud: bool, label_time: int) -> None:
        value = encode_label(transaction_id, is_fraud, label_time, "fraud-replay")
        future = producer.send(self.topic, key=transaction_id.encode(), value=value)
        if len(failures) < 1:
            future.add_errback(failures.append)
        self.sent += 1
        self.frauds += is_fraud


def _epoch_ms(value: Any) -> int | None:
    """A time in epoch ms as an int: a finite number (or numeric text) within 64 bits, else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**62 else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number) if math.isfinite(number) and abs(number) < 2**62 else None


def build_parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog=PROG,
        description="Produce transactions to a Kafka topic (the worker's input topic unless --topic names another) "
        "from a CSV (plain or .gz) or from the synthetic generator.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 every event acknowledged, 1 error (no such file, a file that "
        "is not a CSV with a header row, no such topic or broker), 2 bad settings, 130 interrupted.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="PATH", help="CSV with a header row, e.g. the ULB creditcard.csv.gz")
    src.add_argument("--synthetic", metavar="N", type=int, help="generate N synthetic transactions instead")
    add_settings(p, ("bootstrap_servers", "input_topic"), aliases={"input_topic": ("--topic",)})
    p.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible (default)")
    p.add_argument("--count", type=int, default=0, help="stop after this many events; 0 = all (default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator (default: %(default)s)")
    p.add_argument(
        "--generator", choices=("v2", "v3"), default="v2",
        help="with --synthetic: v2 (one account's numeric fields) or v3 (customers and terminals over 60 days, "
        "with behavioural fraud: docs/features.md) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--event-time", choices=("now", "data"), default="now",
        help="each event's event_time: stamped when it is sent (now), or the row's own event_time column, in "
        "epoch ms (data: a feature spec's windows follow the data's clock; the worker's event-to-alert latency "
        "then measures the data's age) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--key-in-event",
        action="store_true",
        help="also keep the key column in the event (an entity of the model's feature spec)",
    )
    p.add_argument(
        "--key-column", default="account_id", help="column used as the record key, when present (default: %(default)s)"
    )
    p.add_argument("--id-prefix", default=None, help="transaction id prefix (default: r<start time>)")
    p.add_argument(
        "--with-label",
        action="store_true",
        help="keep the Class column in the events (extra fields are ignored by the worker)",
    )
    p.add_argument(
        "--labels-topic", default=None,
        help="also send each row's label (from --label-column) to this topic, e.g. fraud-labels, for fraud-feedback",
    )  # fmt: skip
    p.add_argument(
        "--label-delay-seconds", type=float, default=0.0,
        help="send each label this long after its event (default: %(default)s), as analyst labels arrive later; "
        "with --event-time data in the data's time instead: a label's label_time is then its row's label time "
        "(--label-time-column, or the v3 generator's), or without one the row's event_time plus this, and each "
        "label is sent once an event at or past its label_time has been sent (the rest at the end), so that "
        "label-derived features see it from then on",
    )  # fmt: skip
    p.add_argument("--label-column", default=DEFAULT_LABEL, help="the label column (default: %(default)s)")
    p.add_argument(
        "--label-time-column", default=DEFAULT_LABEL_TIME,
        help="with --data: the column of the time each row's label became known, in epoch ms, when the file has "
        "it; never sent in the event, read for the labels with --labels-topic and --event-time data (the "
        "synthetic v3 generator's is label_time) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _problem(args: argparse.Namespace) -> str | None:
    if args.rate < 0 or args.count < 0 or (args.synthetic is not None and args.synthetic <= 0):
        return "--rate and --count must be >= 0, --synthetic > 0"
    if args.label_delay_seconds < 0:
        return f"--label-delay-seconds must be >= 0 (got {args.label_delay_seconds})"
    if args.label_delay_seconds and not args.labels_topic:
        return "--label-delay-seconds needs --labels-topic"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse_settings(PROG, build_parser(), argv, _problem)
    if isinstance(parsed, int):
        return parsed
    args, config = parsed
    if args.data and not Path(args.data).is_file():
        print(f"{PROG}: {args.data}: no such file", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A missing topic is reported once, below; kafka-python would log it on every metadata retry.
    logging.getLogger("kafka.cluster").setLevel(logging.CRITICAL)
    args.id_prefix = args.id_prefix or time.strftime("r%Y%m%dT%H%M%S", time.gmtime())
    try:
        summary = replay(args, config)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
        line, code = failure(exc, config) if not isinstance(exc, RuntimeError) else (str(exc), 1)
        print(f"{PROG}: {line}", file=sys.stderr)
        return code
    labelled = ""
    if "labels" in summary:
        labelled = f"; {summary['labels']:,} labels ({summary['frauds']:,} fraud) to {args.labels_topic}"
        labelled += f", {summary['unlabelled']:,} rows without one" if summary["unlabelled"] else ""
    print(
        f"{PROG}: {summary['events']:,} events to {config.input_topic} in {summary['seconds']} s "
        f"({summary['rate']:,.0f}/s){labelled}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
