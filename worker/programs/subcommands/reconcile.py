"""``fraud-worker reconcile``: prove that every transaction was scored (or dead-lettered).

Reads, over an offset range of the input topic, the input itself, the all-scores topic, the
dead-letter topic and the alert topic, and reports:

- lost:       input records with neither a score nor a DLQ entry;
- duplicates: input records scored more than once (allowed under at-least-once, but counted);
- wrong:      alerts whose score is below their threshold, and scores at or above their
              threshold that have no alert.

The range ends, by default, at the worker group's committed offsets: everything the worker has
committed it promises to have scored, so that is what must be accounted for. ``--end latest``
checks up to the topic's end instead (use it once the stream has stopped and been drained).
Exit 0 when nothing is lost or wrong, 1 otherwise, 2 for bad settings.

Needs the worker to run with ``--scores-topic`` (each score record names its source record in
``source_topic``/``source_partition``/``source_offset`` headers, as DLQ records do). The topics,
group, bootstrap servers and passed-through Kafka settings are the worker's (``worker.edges.config``).
Every topic is read with isolation level ``read_committed`` unless ``--isolation-level
read_uncommitted`` says otherwise: records of aborted transactions (an exactly-once worker's
retried batches) then count too, as duplicates.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from worker.core.errors import ConfigError
from worker.edges.config import SETTINGS_EPILOG, SettingsParser, WorkerConfig, add_settings, client_options
from worker.programs.settings import (
    DEFAULT_ISOLATION_LEVEL,
    TOOL_BOOTSTRAP_TIMEOUT_MS,
    add_isolation_level,
    failure,
    parse_settings,
    require_access,
)

logger = logging.getLogger(__name__)
SAMPLE = 20
PROG = "fraud-worker reconcile"
# The worker settings this tool reads: where the broker is, the worker's group and its four topics.
USES = ("bootstrap_servers", "group_id", "input_topic", "alert_topic", "dlq_topic", "scores_topic")


class _Result(msgspec.Struct):
    transaction_id: str
    score: float
    threshold: float


@dataclass
class Report:
    input_topic: str
    ranges: dict[int, tuple[int, int]]
    isolation_level: str = DEFAULT_ISOLATION_LEVEL
    records: int = 0
    scored: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicates: int = 0
    wrong_alerts: int = 0
    missing_alerts: int = 0
    alerts: int = 0
    samples: dict[str, list] = field(default_factory=lambda: {"lost": [], "duplicates": [], "wrong": [], "missing": []})

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.wrong_alerts == 0 and self.missing_alerts == 0

    def as_dict(self) -> dict:
        names = ("input_topic", "isolation_level", "records", "scored", "dead_lettered", "lost", "duplicates",
                 "wrong_alerts", "missing_alerts", "alerts")  # fmt: skip
        d = {k: getattr(self, k) for k in names}
        d["ranges"] = {str(p): list(r) for p, r in sorted(self.ranges.items())}
        d["samples"] = self.samples
        d["ok"] = self.ok
        return d


def _source(headers) -> tuple[str, int, int] | None:
    h = dict(headers or ())
    try:
        return h["source_topic"].decode(), int(h["source_partition"]), int(h["source_offset"])
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def _read_topic(consumer, topic: str, handle: Callable[[object], None], timeout: float) -> int:
    """Feed every record now in ``topic`` (up to its end offsets taken at the start) to ``handle``."""
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise ConfigError(f"topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    ends = consumer.end_offsets(tps)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    remaining = {tp for tp in tps if ends[tp] > 0}
    n = 0
    deadline = time.monotonic() + timeout
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {topic} took longer than {timeout:.0f}s")
        for tp, records in consumer.poll(timeout_ms=500, max_records=5000).items():
            for r in records:
                if r.offset < ends[tp]:
                    handle(r)
                    n += 1
        remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
    return n


def consumer_options(config: WorkerConfig, isolation_level: str = DEFAULT_ISOLATION_LEVEL) -> dict[str, Any]:
    """The reading consumer's settings: the config's bootstrap servers and Kafka settings, no group."""
    options = client_options(
        config, "consumer", client_id="fraud-reconcile", bootstrap_timeout_ms=TOOL_BOOTSTRAP_TIMEOUT_MS
    )
    return {**options, "group_id": None, "enable_auto_commit": False, "isolation_level": isolation_level}


def admin_options(config: WorkerConfig) -> dict[str, Any]:
    """The admin client's settings (it reads the worker group's committed offsets)."""
    return client_options(config, "admin", client_id="fraud-reconcile", bootstrap_timeout_ms=TOOL_BOOTSTRAP_TIMEOUT_MS)


def reconcile(
    config: WorkerConfig,
    end: str = "committed",
    timeout: float = 300.0,
    isolation_level: str = DEFAULT_ISOLATION_LEVEL,
) -> Report:
    """Account for every input record in the range; see the module docstring.

    Under read_committed every end offset read (``--end latest``, each topic's end) is the last
    stable offset, so a transaction still open is left out rather than waited for.
    """
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    if not config.scores_topic:
        raise ConfigError("reconcile needs the all-scores topic: set --scores-topic / FRAUD_SCORES_TOPIC")
    require_access(config, read=[config.input_topic, config.alert_topic, config.dlq_topic, config.scores_topic])
    consumer = KafkaConsumer(**consumer_options(config, isolation_level))
    admin = KafkaAdminClient(**admin_options(config))
    try:
        parts = consumer.partitions_for_topic(config.input_topic)
        if not parts:
            raise ConfigError(f"input topic {config.input_topic!r} does not exist")
        tps = [TopicPartition(config.input_topic, p) for p in sorted(parts)]
        begin = consumer.beginning_offsets(tps)
        if end == "latest":
            stop = consumer.end_offsets(tps)
        else:
            committed = _group_offsets(admin, config.group_id, timeout)
            stop = {
                tp: (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else begin[tp]) for tp in tps
            }
        ranges = {tp.partition: (begin[tp], max(begin[tp], stop[tp])) for tp in tps}
        report = Report(config.input_topic, ranges, isolation_level)
        scored = {p: np.zeros(hi - lo, dtype=np.int32) for p, (lo, hi) in ranges.items()}
        dead = {p: np.zeros(hi - lo, dtype=bool) for p, (lo, hi) in ranges.items()}
        decode = msgspec.json.Decoder(_Result).decode
        due_alerts: set[str] = set()

        def slot(headers) -> tuple[int, int] | None:
            src = _source(headers)
            if src is None or src[0] != config.input_topic or src[1] not in ranges:
                return None
            lo, hi = ranges[src[1]]
            return (src[1], src[2] - lo) if lo <= src[2] < hi else None

        def on_score(r) -> None:
            s = slot(r.headers)
            if s is None:
                return
            scored[s[0]][s[1]] += 1
            try:
                result = decode(r.value)
            except msgspec.DecodeError:
                return
            if result.score >= result.threshold:
                due_alerts.add(result.transaction_id)

        def on_dlq(r) -> None:
            s = slot(r.headers)
            if s is not None:
                dead[s[0]][s[1]] = True

        seen_alerts: set[str] = set()

        def on_alert(r) -> None:
            try:
                result = decode(r.value)
            except msgspec.DecodeError:
                report.wrong_alerts += 1
                _sample(report, "wrong", {"offset": r.offset, "partition": r.partition, "why": "not an alert"})
                return
            report.alerts += 1
            seen_alerts.add(result.transaction_id)
            if result.score < result.threshold:
                report.wrong_alerts += 1
                _sample(report, "wrong", {"transaction_id": result.transaction_id, "score": result.score,
                                          "threshold": result.threshold})  # fmt: skip

        _read_topic(consumer, config.scores_topic, on_score, timeout)
        _read_topic(consumer, config.dlq_topic, on_dlq, timeout)
        _read_topic(consumer, config.alert_topic, on_alert, timeout)

        for p, (lo, hi) in ranges.items():
            report.records += hi - lo
            counts, dlq = scored[p], dead[p]
            report.scored += int(np.count_nonzero(counts))
            report.dead_lettered += int(np.count_nonzero(dlq & (counts == 0)))
            lost = np.flatnonzero((counts == 0) & ~dlq)
            report.lost += int(lost.size)
            report.duplicates += int(np.maximum(counts - 1, 0).sum())
            for i in lost[:SAMPLE].tolist():
                _sample(report, "lost", {"partition": p, "offset": lo + i})
            for i in np.flatnonzero(counts > 1)[:SAMPLE].tolist():
                _sample(report, "duplicates", {"partition": p, "offset": lo + i, "times": int(counts[i])})
        missing = due_alerts - seen_alerts
        report.missing_alerts = len(missing)
        for tx in sorted(missing)[:SAMPLE]:
            _sample(report, "missing", {"transaction_id": tx})
        return report
    finally:
        consumer.close()
        admin.close()


def _group_offsets(admin, group: str, timeout: float) -> dict:
    """The group's committed offsets, retrying while its coordinator is not yet available."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + min(timeout, 30.0)
    while True:
        try:
            return admin.list_group_offsets(group).get(group, {})
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _sample(report: Report, kind: str, item: dict) -> None:
    if len(report.samples[kind]) < SAMPLE:
        report.samples[kind].append(item)


def format_report(r: Report) -> str:
    span = ", ".join(f"{p}:{lo}..{hi}" for p, (lo, hi) in sorted(r.ranges.items()))
    rows = [
        ("input records", r.records), ("scored", r.scored), ("dead-lettered", r.dead_lettered),
        ("LOST", r.lost), ("scored more than once", r.duplicates), ("alerts", r.alerts),
        ("alerts below threshold", r.wrong_alerts), ("scores >= threshold without alert", r.missing_alerts),
    ]  # fmt: skip
    lines = [f"reconcile {r.input_topic} [{span}] ({r.isolation_level})"]
    lines += [f"  {name:<36}{value:>12,}" for name, value in rows]
    for kind, items in r.samples.items():
        if items:
            lines.append(f"  first {kind}: " + "; ".join(json.dumps(i, sort_keys=True) for i in items[:5]))
    lines.append("  result: " + ("OK, every record is accounted for" if r.ok else "FAILED"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog=PROG,
        description="Check that every input record up to the committed offsets has a score or a DLQ entry, "
        "and that alerts agree with their thresholds. Topics, group, bootstrap servers and Kafka client settings "
        "are the worker's own (same flags, FRAUD_* variables and defaults); the worker must run with a scores topic.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 every record accounted for, 1 records lost or alerts wrong "
        "(or an error), 2 bad settings.",
    )
    add_settings(p, USES)
    p.add_argument("--end", choices=("committed", "latest"), default="committed",
                   help="range end: the worker group's committed offsets (default) or the topic's end")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_isolation_level(p)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed to read each topic (default 300)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    problem = "--timeout must be > 0 (got {})"
    parsed = parse_settings(PROG, build_parser(), argv, lambda a: None if a.timeout > 0 else problem.format(a.timeout))
    if isinstance(parsed, int):
        return parsed
    args, config = parsed
    try:
        report = reconcile(config, end=args.end, timeout=args.timeout, isolation_level=args.isolation_level)
    except ConfigError as exc:  # e.g. no scores topic to reconcile against
        print(f"{PROG}: bad setting: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line for the operator
        line, code = failure(exc, config)
        print(f"{PROG}: {line}", file=sys.stderr)
        return code
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1
