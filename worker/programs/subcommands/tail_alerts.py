"""``fraud-worker tail-alerts``: print alerts as they arrive, one line each, for people.

A plain consumer of the alert topic with no consumer group (it assigns itself every partition and
commits nothing), so it never takes partitions or offsets from anyone. The topic, the bootstrap
servers and the passed-through Kafka settings are the worker's (``worker.edges.config``: flags,
``FRAUD_*`` variables, defaults), so it reads what the worker writes, from a secured cluster too.
It reads with isolation level ``read_committed`` unless ``--isolation-level read_uncommitted``
says otherwise, so an exactly-once worker's aborted alerts are not printed. Optionally it reads a
worker's ``/metrics`` every few seconds and prints a summary line (events scored, alerts,
dead-lettered, lag); with ``--feedback-metrics-url`` the line also shows fraud-feedback's precision
and recall on labelled traffic for the model version the worker serves, and leaves that part out
while fraud-feedback does not answer. No TensorFlow, no model: only kafka-python and the standard
library.

An alert line starts with the decided action in capitals (``BLOCK``, ``REVIEW``, a rule set's own
action such as ``STEP_UP``) and names the deciding rule, the other rules that matched, the rule set's
version and the segment whose threshold applied (docs/formats.md, "Alert"); an alert without a
decision record (written before decisions) prints as ``ALERT`` with score, threshold, reasons and model.

``format_alert``, ``format_summary`` and ``format_feedback`` are pure and tested without a broker.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from worker.core.decode import Unread
from worker.core.errors import AccessError
from worker.core.printable import printable
from worker.edges.config import SETTINGS_EPILOG, SettingsParser, WorkerConfig, add_settings, client_options
from worker.programs.settings import (
    DEFAULT_ISOLATION_LEVEL,
    TOOL_BOOTSTRAP_TIMEOUT_MS,
    add_isolation_level,
    failure,
    parse_settings,
    require_access,
)

PROG = "fraud-worker tail-alerts"

# Counters summed over their labels for the summary line (prometheus_client drops `_total`).
SUMMARY_METRICS = {
    "fraud_events_consumed": "consumed",
    "fraud_events_scored": "scored",
    "fraud_alerts": "alerts",
    "fraud_events_invalid": "dead_lettered",
    "fraud_consumer_lag": "lag",
    "fraud_entity_risk_entities": "risk_entities",  # the entity-risk table (docs/entity-risk.md), when it fills
    "fraud_entity_risk_frauds": "risk_frauds",
}

# How much of an alert's decision record a line shows (a rule set's rule ids are at most 64 characters and its
# actions 32: worker/core/rules.py).
MAX_ACTION_CHARS = 32
MAX_RULE_CHARS = 64
MAX_OTHER_RULES = 5
MAX_SEGMENT_CHARS = 64
MAX_VERSION_CHARS = 80

# fraud-feedback's per-version gauges the summary line shows (quality over its window of resolved rows).
FEEDBACK_METRICS = {
    "fraud_feedback_precision": "precision",
    "fraud_feedback_recall": "recall",
    "fraud_feedback_window_transactions": "resolved",
}


def _clock(epoch_ms: object) -> str:
    if not isinstance(epoch_ms, (int, float)) or isinstance(epoch_ms, bool):
        return datetime.now().strftime("%H:%M:%S")
    try:
        return datetime.fromtimestamp(epoch_ms / 1000).strftime("%H:%M:%S")
    except (OverflowError, ValueError, OSError):  # NaN, or beyond the platform's time_t
        return "??:??:??"


def _number(value: object, spec: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except OverflowError:  # an integer beyond a float
            return "?"
    return "?"


def format_alert(alert: object) -> str:
    """One line for one alert: time, action, transaction id, score vs threshold (and the segment whose
    threshold applied), top reasons, the deciding and other matched rules, model and rule-set versions::

        12:00:05 BLOCK tx-1  score 0.4120 < 0.9000 (segment channel=web)  reasons: V14 +3.18  by rule
        deny-terminal, also matched big-web  [model 20260101T000000Z-b24332bc, rules 20261207T101500Z-3f2a9c1d]

    (one line). ``ALERT``, and no rule part, for an alert without a decision record.

    Every field comes from the alert topic, which anyone allowed to write it controls: control
    characters are escaped (``worker.core.printable``), so an alert cannot rewrite the operator's terminal."""
    if isinstance(alert, Unread):  # its compressed batch was past the inflate cap, or unreadable
        return f"{_clock(None)} ALERT (not read: {alert.reason}: {printable(alert.detail, 120)})"
    if not isinstance(alert, Mapping):
        return f"{_clock(None)} ALERT (not an alert object: {printable(str(alert), 80)})"
    return printable(_format_alert(alert))


def parse_alert(value: bytes | None) -> object:
    """A record's value as JSON, or the value itself where it is none (or nested too deep to read)."""
    try:
        return json.loads(value) if value is not None else value
    except (TypeError, ValueError, RecursionError):
        return value


def _format_alert(alert: Mapping) -> str:
    reasons = []
    given = alert.get("reasons")
    for r in given if isinstance(given, list) else []:
        if isinstance(r, Mapping):
            # The feature, its raw value in the event when the alert carries it, its contribution.
            value = f"={_number(r.get('value'), '.6g')}" if "value" in r else ""
            reasons.append(f"{r.get('feature', '?')}{value} {_number(r.get('contribution'), '+.2f')}")
    decision = alert.get("decision")
    if not isinstance(decision, Mapping):  # an alert from before decisions: the model's threshold decided
        decision = None
    score, threshold = alert.get("score"), alert.get("threshold")
    return (
        f"{_clock(alert.get('scored_at'))} {_action(decision)} {alert.get('transaction_id', '?')}"
        f"  score {_number(score, '.4f')} {_comparison(score, threshold)} {_number(threshold, '.4f')}"
        f"{_segment(decision)}"
        f"  reasons: {', '.join(reasons) or '-'}"
        f"{_decided_by(decision)}"
        f"  [model {alert.get('model_version', '?')}{_rule_set(decision)}]"
    )


def _text(value: object, limit: int) -> str:
    """A value of the decision record as text: escaped (``printable``) and cut at ``limit`` characters; a
    number, true, false or null as its JSON, an object or a list as ``?``."""
    if isinstance(value, str):
        return printable(value, limit)
    if value is None or isinstance(value, (bool, int, float)):
        return printable(json.dumps(value), limit)
    return "?"


def _action(decision: Mapping | None) -> str:
    """The decided action in capitals (BLOCK, REVIEW, STEP_UP); ALERT for an alert without a decision."""
    action = decision.get("action") if decision is not None else None
    if not isinstance(action, str) or not action:
        return "ALERT"
    return printable(action.upper(), MAX_ACTION_CHARS)


def _comparison(score: object, threshold: object) -> str:
    """``>=``, or ``<`` for a score below the threshold (a rule decided the alert)."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (score, threshold)):
        return ">="
    return "<" if score < threshold else ">="  # type: ignore[operator]


def _segment(decision: Mapping | None) -> str:
    """`` (segment channel=web)`` when the threshold was the event's segment's, else nothing."""
    if decision is None or decision.get("threshold_source") != "segment":
        return ""
    segment = decision.get("segment")
    if not isinstance(segment, Mapping):
        return " (segment)"
    field, value = segment.get("field", "?"), segment.get("value", "?")
    return f" (segment {_text(field, MAX_SEGMENT_CHARS)}={_text(value, MAX_SEGMENT_CHARS)})"


def _decided_by(decision: Mapping | None) -> str:
    """``  by rule deny-terminal, also matched big-web``, or ``  by threshold`` when no rule decided."""
    if decision is None:
        return ""
    rule = decision.get("rule")
    given = decision.get("rules")
    matched = [r for r in given if r != rule] if isinstance(given, list) else []
    others = ", ".join(_text(r, MAX_RULE_CHARS) for r in matched[:MAX_OTHER_RULES])
    if len(matched) > MAX_OTHER_RULES:
        others += f" and {len(matched) - MAX_OTHER_RULES} more"
    also = f", also matched {others}" if others else ""
    if rule is None:
        return f"  by threshold{also}"
    return f"  by rule {_text(rule, MAX_RULE_CHARS)}{also}"


def _rule_set(decision: Mapping | None) -> str:
    """``, rules <version>`` (or ``, no rule set``) for the line's closing bracket."""
    if decision is None:
        return ""
    version = decision.get("rule_set")
    return ", no rule set" if version is None else f", rules {_text(version, MAX_VERSION_CHARS)}"


def parse_metrics(text: str) -> dict[str, float]:
    """The summary's counters from a worker's Prometheus text, each summed over its labels."""
    totals = dict.fromkeys(SUMMARY_METRICS.values(), 0.0)
    for family in text_string_to_metric_families(text):
        key = SUMMARY_METRICS.get(family.name)
        if key is None:
            continue
        for sample in family.samples:
            if sample.name in (family.name, family.name + "_total"):
                totals[key] += sample.value
    return totals


def serving_versions(text: str) -> list[str]:
    """The model versions a worker's Prometheus text says it serves (``fraud_model_info`` at 1)."""
    return sorted(
        {
            s.labels["version"]
            for family in text_string_to_metric_families(text)
            if family.name == "fraud_model_info"
            for s in family.samples
            if s.value == 1 and "version" in s.labels
        }
    )


def parse_feedback(text: str) -> dict[str, dict[str, float]]:
    """Model version -> its ``precision``, ``recall`` and ``resolved`` (those exported) from fraud-feedback's text."""
    quality: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        key = FEEDBACK_METRICS.get(family.name)
        if key is None:
            continue
        for sample in family.samples:
            version = sample.labels.get("model_version")
            if sample.name == family.name and version is not None:
                quality.setdefault(version, {})[key] = sample.value
    return quality


def format_feedback(quality: Mapping[str, Mapping[str, float]], serving: Sequence[str] = ()) -> str:
    """The summary's ``labelled:`` part: precision and recall of each serving version (every version
    fraud-feedback reports when the serving one is not known), ``-`` where one is undefined (nothing
    flagged, no fraud among the resolved)."""
    versions = list(serving) or sorted(quality)
    if not versions:
        return "labelled: none resolved yet"
    parts = []
    for version in versions:
        q = quality.get(version, {})
        resolved = q.get("resolved", 0.0)
        if not resolved:
            parts.append(f"none resolved yet ({version})")
            continue
        precision, recall = (f"{q[k]:.2f}" if k in q else "-" for k in ("precision", "recall"))
        parts.append(f"precision {precision} recall {recall} ({version}, {resolved:,.0f} resolved)")
    return "labelled: " + "; ".join(parts)


def format_summary(
    totals: Mapping[str, float], previous: Mapping[str, float] | None, seconds: float, labelled: str = ""
) -> str:
    """The running summary line; the rate is scored events per second since the previous line.
    ``labelled`` (``format_feedback``), when given, ends the line."""
    rate = ""
    if previous is not None and seconds > 0:
        rate = f" ({(totals['scored'] - previous['scored']) / seconds:,.0f}/s)"
    return (
        f"{datetime.now().strftime('%H:%M:%S')} ---- scored {totals['scored']:,.0f}{rate}"
        f" · alerts {totals['alerts']:,.0f} · dead-lettered {totals['dead_lettered']:,.0f}"
        f" · lag {totals['lag']:,.0f}"
        + (f" · risk table {totals['risk_entities']:,.0f} entities, {totals['risk_frauds']:,.0f} frauds"
           if totals.get("risk_entities") else "")  # fmt: skip
        + (f" · {labelled}" if labelled else "")
    )


def build_parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog=PROG,
        description="Print alerts from the alert topic as they arrive, one line each "
        "(time, action, transaction id, score and threshold, top reasons, deciding rule, model and rule set). "
        "Joins no consumer group.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 stopped (or --max-alerts reached), 1 broker trouble, 2 bad settings.",
    )
    add_settings(p, ("bootstrap_servers", "alert_topic"), aliases={"alert_topic": ("--topic",)})
    p.add_argument("--from-beginning", action="store_true", help="print the alerts already in the topic too")
    p.add_argument("--json", action="store_true", help="print each alert's JSON as it is instead of a summary line")
    p.add_argument("--max-alerts", type=int, default=0, help="exit after this many alerts; 0 = never (default)")
    add_isolation_level(p)
    p.add_argument(
        "--metrics-url", default=None,
        help="a worker's /metrics URL, e.g. http://127.0.0.1:9108/metrics: print a running summary from it",
    )  # fmt: skip
    p.add_argument(
        "--summary-seconds", type=float, default=5.0, help="seconds between summary lines (default: %(default)s)"
    )
    p.add_argument(
        "--feedback-metrics-url", default=None,
        help="fraud-feedback's /metrics URL, e.g. http://127.0.0.1:9109/metrics: the summary line also shows "
        "precision and recall on labelled traffic (needs --metrics-url)",
    )  # fmt: skip
    return p


def consumer_options(config: WorkerConfig, isolation_level: str = DEFAULT_ISOLATION_LEVEL) -> dict[str, Any]:
    """The consumer's settings: the config's bootstrap servers and Kafka settings, no group, no commits."""
    options = client_options(
        config, "consumer", client_id="fraud-tail-alerts", bootstrap_timeout_ms=TOOL_BOOTSTRAP_TIMEOUT_MS
    )
    return {**options, "group_id": None, "enable_auto_commit": False, "isolation_level": isolation_level}


def _follow(consumer, topic: str, from_beginning: bool, timeout: float = 30.0) -> int:
    from kafka import TopicPartition

    deadline = time.monotonic() + timeout
    while not (parts := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} not found")
        time.sleep(0.2)
    assigned = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(assigned)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*assigned)
    for tp in assigned:  # resolve now, so alerts published from here on are all seen
        consumer.position(tp)
    return len(assigned)


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()
    except (OSError, ValueError):
        return None


def read_summary(url: str, feedback_url: str | None) -> tuple[dict[str, float], str] | None:
    """The worker's totals and the ``labelled:`` part (empty without fraud-feedback's answer); None
    while the worker does not answer."""
    text = _scrape(url)
    if text is None:
        return None
    try:
        totals = parse_metrics(text)
    except ValueError:
        return None
    feedback = _scrape(feedback_url) if feedback_url else None
    labelled = ""
    if feedback is not None:
        try:
            labelled = format_feedback(parse_feedback(feedback), serving_versions(text))
        except ValueError:  # not Prometheus text: left out, as when it does not answer
            labelled = ""
    return totals, labelled


def main(argv: Sequence[str] | None = None) -> int:
    def problem(args: argparse.Namespace) -> str | None:
        if args.max_alerts < 0 or not args.summary_seconds > 0:
            return "--max-alerts must be >= 0 and --summary-seconds > 0"
        if args.feedback_metrics_url and not args.metrics_url:
            return "--feedback-metrics-url needs --metrics-url (it adds to the worker's summary line)"
        return None

    parsed = parse_settings(PROG, build_parser(), argv, problem)
    if isinstance(parsed, int):
        return parsed
    args, config = parsed
    stop = {"now": False}
    # SIGTERM ends the loop after the poll in hand; the caller's handler is back once it returns.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        return _tail(args, config, stop)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tail(args: argparse.Namespace, config: WorkerConfig, stop: dict[str, bool]) -> int:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from worker.kafka_compat import KafkaCompat, parse_fast_paths

    try:
        require_access(config, read=[config.alert_topic])
        consumer = KafkaConsumer(**consumer_options(config, args.isolation_level))
        # A compressed batch inflates to the worker's cap at most; each record of one past it prints as unread.
        KafkaCompat.install(consumer, frozenset({"inflate_cap"}) & parse_fast_paths(config.fast_paths),
                            config.max_inflated_batch_bytes)  # fmt: skip
    except (KafkaError, AccessError) as exc:
        line, code = failure(exc, config)
        print(f"{PROG}: {printable(line)}", file=sys.stderr)
        return code
    topic = config.alert_topic
    shown = 0
    try:
        n = _follow(consumer, topic, args.from_beginning)
        where = "the beginning" if args.from_beginning else "now on"
        print(
            f"tail-alerts: following {topic} ({n} partitions) from {where}, {args.isolation_level}",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        previous, last = None, time.monotonic()
        while not stop["now"]:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    alert = parse_alert(record.value)
                    line = printable(record.value or b"") if args.json else format_alert(alert)
                    print(line, flush=True)
                    shown += 1
                    if args.max_alerts and shown >= args.max_alerts:
                        return 0
            now = time.monotonic()
            if args.metrics_url and now - last >= args.summary_seconds:
                summary = read_summary(args.metrics_url, args.feedback_metrics_url)
                totals = None
                if summary is not None:
                    totals, labelled = summary
                    print(printable(format_summary(totals, previous, now - last, labelled)), flush=True)
                previous, last = totals, now
    except KeyboardInterrupt:
        pass
    except (KafkaError, RuntimeError) as exc:
        line, code = failure(exc, config) if isinstance(exc, KafkaError) else (str(exc), 1)
        print(f"{PROG}: {printable(line)}", file=sys.stderr)
        return code
    finally:
        consumer.close()
    return 0
