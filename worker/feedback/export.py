"""``fraud-feedback export``: the labelled examples of the stores as a CSV that ``fraud-train`` reads.

One row per resolved transaction whose score record carried its features (the worker's
``--scores-include-features``): the feature columns, ``is_fraud`` (0/1: its latest label, or 0
once it is older than the label window without one), ``event_time`` (epoch ms),
``transaction_id``, ``label_time`` (epoch ms: when its label was given; empty without one) and, when
the score records carried the raw fields the model's feature spec reads (``inputs``), one column per
such field (the union over the rows, in the order first seen; a name already a column is left out;
an empty cell for a value the row lacks, or a null or boolean the spec reads as missing).
``fraud-train --data FILE --label-column is_fraud`` never takes ``transaction_id``, ``event_time``
or ``label_time`` as a feature, and ``--split time`` orders by ``event_time``; with
``--feature-spec`` it computes the spec's features, the label-derived ones from ``is_fraud`` and
``label_time``, from the input columns.
Rows are in event-time order; the file is written under a temporary name and renamed into place.

``--state-dir``: the stores of a fraud-feedback instance, opened read-only (``Store(readonly=True)``:
nothing is written to them or beside them, so a read-only volume or a live instance's stores do).
``--from-topics`` (``export_from_topics``): no store of any instance. The scores and labels topics
are read (every partition, no consumer group, nothing committed) up to their end offsets at start:
the scores from the first record stamped a day before ``--since`` (an event scored up to a day
ahead of its time is still found), the labels from the beginning. They are joined in temporary
stores (``$TMPDIR``) by the live service's join code, and written as ``--state-dir`` writes them.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from worker.core.errors import AccessError, ConfigError
from worker.feedback.records import FUTURE_MS, BadRecord, decode_label, decode_score
from worker.feedback.store import Store, StoreError, now_ms, store_path

logger = logging.getLogger(__name__)
STALL_SECONDS = 60.0  # --from-topics: no record for this long while short of the end offsets is an error

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([dhm])$")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000}


def parse_time(text: str, now_ms: int | None = None) -> int:
    """Epoch ms from ``1700000000000`` (epoch ms), ``2026-11-01`` / ``2026-11-01T12:00:00`` (UTC), or ``30d`` ago."""
    text = text.strip()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if text.isdigit():
        return int(text)
    m = _RELATIVE.match(text)
    if m:
        return now - int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time: give epoch ms, an ISO date (2026-11-01) or an age (30d, 12h)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def parse_duration_ms(text: str) -> int:
    """``120d``, ``12h``, ``30m`` or a number of seconds, in ms."""
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        return int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration: give 120d, 12h, 30m or seconds") from None
    if not seconds > 0:
        raise ConfigError(f"a duration must be > 0 (got {text!r})")
    return int(seconds * 1000)


@dataclass
class ExportSummary:
    rows: int
    frauds: int
    skipped_other_features: int
    partitions: int
    feature_names: tuple[str, ...]


_STORE_NAME = re.compile(r"^partition-(\d+)\.sqlite$")


def store_files(state_dir: str | os.PathLike[str]) -> list[Path]:
    directory = Path(state_dir)
    if not directory.is_dir():
        raise ConfigError(f"{state_dir}: not a directory (give fraud-feedback's --state-dir)")
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STORE_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _read_examples(path: Path, label_window_ms: int, since_ms: int | None, until_ms: int | None) -> list[tuple]:
    """The examples of one store, opened read-only; StoreError naming the file if it cannot be read."""
    try:
        store = Store(path, label_window_ms, readonly=True)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot read this store: {exc}") from None
    try:
        return list(store.examples(since_ms, until_ms))
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read this store: {exc}") from None
    finally:
        store.close()


def export(
    state_dir: str | os.PathLike[str], out: str | os.PathLike[str], label_window_ms: int,
    since_ms: int | None = None, until_ms: int | None = None,
) -> ExportSummary:  # fmt: skip
    files = store_files(state_dir)
    if not files:
        raise ConfigError(f"{state_dir}: no partition-*.sqlite stores (is it fraud-feedback's --state-dir?)")
    rows = [row for f in files for row in _read_examples(f, label_window_ms, since_ms, until_ms)]
    seen: set[str] = set()
    unique = []
    for row in sorted(rows, key=lambda r: (r[1], r[0])):
        if row[0] not in seen:
            seen.add(row[0])
            unique.append(row)
    sets = Counter(tuple(r[3]) for r in unique)
    if not sets:
        raise ConfigError(
            f"{state_dir}: no labelled transaction with features in that range (does the worker run with "
            "--scores-include-features?)"
        )
    names = sets.most_common(1)[0][0]
    kept = [r for r in unique if tuple(r[3]) == names]
    _write(Path(out), names, kept)
    return ExportSummary(len(kept), sum(1 for r in kept if r[2]), len(unique) - len(kept), len(files), names)


FIXED_COLUMNS = ("is_fraud", "event_time", "transaction_id", "label_time")


def input_columns(names: Iterable[str], rows: Iterable[tuple]) -> list[str]:
    """The input fields of the rows (their ``inputs``), first seen first, less those already a column."""
    taken = {*names, *FIXED_COLUMNS}
    seen: dict[str, None] = {}
    for row in rows:
        if row[6]:
            for name in row[6]:
                if name not in taken:
                    seen.setdefault(name)
    return list(seen)


def cell(value: object) -> str:
    """An input value as a CSV cell that ``fraud-train`` reads as the worker's feature engine does: a string
    as it is, a number in decimal (an integral float as an integer, as an entity key is written), and an
    empty cell for a null or a boolean (the engine reads either as missing)."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _write(out: Path, names: tuple[str, ...], rows: list[tuple]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = input_columns(names, rows)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        opener = gzip.open if out.suffix == ".gz" else open
        with opener(tmp, "wt", newline="", encoding="utf-8") as fh:  # type: ignore[operator]
            writer = csv.writer(fh)
            writer.writerow([*names, *FIXED_COLUMNS, *inputs])
            for txn, event_time, is_fraud, _names, vals, label_time, raw in rows:
                values = np.frombuffer(vals, "<f8").tolist()
                held = raw or {}
                fixed = [int(is_fraud), event_time, txn, "" if label_time is None else label_time]
                writer.writerow([*(repr(v) for v in values), *fixed, *(cell(held.get(n)) for n in inputs)])
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class TopicsRead:
    """What ``export_from_topics`` read: records per topic, and those skipped by reason."""

    records: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    partitions: int = 0


def read_topics(
    bootstrap: str, options: dict, scores_topic: str, labels_topic: str, state_dir: Path, label_window_ms: int,
    since_ms: int | None, clock: Callable[[], int] = now_ms, stall_seconds: float = STALL_SECONDS,
) -> TopicsRead:  # fmt: skip
    """Join both topics, up to their end offsets at start, into stores under ``state_dir`` (as the service does)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from worker.edges.access import diagnose, refusal
    from worker.feedback.consumer import partition_count
    from worker.kafka_compat import KafkaCompat
    from worker.kafka_compat.inflate import DEFAULT_CAP

    read = TopicsRead()
    consumer = None
    stores: dict[int, Store] = {}
    try:
        try:
            consumer = KafkaConsumer(
                **{"client_id": "fraud-feedback-export", "bootstrap_timeout_ms": 10_000, **options},
                bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                isolation_level="read_committed", auto_offset_reset="earliest",
            )  # fmt: skip
            # A compressed batch inflates to at most DEFAULT_CAP bytes; its records are then invalid (inflate.py).
            KafkaCompat.install(consumer, frozenset({"inflate_cap"}), DEFAULT_CAP)
            n = partition_count(consumer, [scores_topic, labels_topic], bootstrap)
            tps = [TopicPartition(t, p) for t in (scores_topic, labels_topic) for p in range(n)]
            consumer.assign(tps)
            ends = consumer.end_offsets(tps)
            starts = {}
            if since_ms is not None:
                found = consumer.offsets_for_times({tp: max(0, since_ms - FUTURE_MS) for tp in tps[:n]})
                starts = {tp: (ends[tp] if found.get(tp) is None else found[tp].offset) for tp in tps[:n]}
            for tp in tps:
                if tp in starts:
                    consumer.seek(tp, starts[tp])
                else:
                    consumer.seek_to_beginning(tp)
            remaining = {tp for tp in tps if consumer.position(tp) < ends[tp]}
            for tp in set(tps) - remaining:
                consumer.pause(tp)
            read.partitions = n
            stores = {p: Store(store_path(state_dir, p), label_window_ms, clock=clock) for p in range(n)}
            last_progress, positions = time.monotonic(), {tp: consumer.position(tp) for tp in remaining}
            while remaining:
                polled = consumer.poll(timeout_ms=1000, max_records=5000)
                if polled:
                    _apply(polled, ends, stores, labels_topic, clock, read)
                now = {tp: consumer.position(tp) for tp in remaining}
                if now != positions:  # records, or only transaction markers and aborted records passed over
                    last_progress, positions = time.monotonic(), now
                for tp in list(remaining):
                    if consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                        consumer.pause(tp)
                if remaining and time.monotonic() - last_progress > stall_seconds:
                    tp = min(remaining)
                    raise StoreError(
                        f"no record from {tp.topic}[{tp.partition}] for {stall_seconds:.0f} s at offset "
                        f"{consumer.position(tp)} of {ends[tp]}"
                    )
        except KafkaError as exc:
            problem = refusal(exc) or diagnose(bootstrap, options)
            if problem:
                raise AccessError(problem) from None
            raise StoreError(f"reading {scores_topic} and {labels_topic} at {bootstrap} failed: {exc}") from None
    finally:
        if consumer is not None:
            consumer.close(autocommit=False)
        for store in stores.values():
            store.close()
    return read


def _apply(polled: dict, ends: dict, stores: dict[int, Store], labels_topic: str, clock: Callable[[], int],
           read: TopicsRead) -> None:  # fmt: skip
    now = clock()
    batches: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))
    for tp, records in polled.items():
        scores, labels = batches[tp.partition]
        kind = "labels" if tp.topic == labels_topic else "scores"
        for r in records:
            if r.offset >= ends[tp]:
                break  # written after the export started
            read.records[kind] = read.records.get(kind, 0) + 1
            try:
                if kind == "scores":
                    scores.append(decode_score(r.value, now))
                else:
                    labels.append(decode_label(r.value, now))
            except BadRecord as exc:
                key = f"{kind}:{exc.reason}"
                read.invalid[key] = read.invalid.get(key, 0) + 1
    for p, (scores, labels) in batches.items():
        stores[p].apply(scores, labels, {})


def export_from_topics(
    bootstrap: str, options: dict, scores_topic: str, labels_topic: str, out: str | os.PathLike[str],
    label_window_ms: int, since_ms: int | None = None, until_ms: int | None = None,
) -> tuple[ExportSummary, TopicsRead]:  # fmt: skip
    """The same CSV as ``export`` of a service's stores, from the topics alone (a temporary store per partition)."""
    with tempfile.TemporaryDirectory(prefix="fraud-feedback-export-") as tmp:
        read = read_topics(bootstrap, options, scores_topic, labels_topic, Path(tmp), label_window_ms, since_ms)
        try:
            summary = export(tmp, out, label_window_ms, since_ms, until_ms)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(f"{tmp}: ", f"{scores_topic} and {labels_topic}: ")) from None
    return summary, read
