"""``fraud-feedback``'s Prometheus metrics: outcome counts and quality per model version, label lag.

The per-version figures are computed from the stores by the consumer's thread (``snapshot``) and
served from that snapshot, so a scrape never touches SQLite. ``fraud_feedback_outcomes`` is the
stores' own counts (a gauge: a label that changes moves a transaction from one outcome to another),
summed over the partitions this instance holds: the instances of a group add up to the whole.

Per rule and per action (``fraud_feedback_rule_*``, ``fraud_feedback_action_*``, labelled by role, rule set
and rule or action): over the same transactions as the per-version figures, those whose score record carried
a decision of a rule set (quality.py ``rule_figures``); only rule sets with transactions in the window have
series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.feedback.quality import (
    OUTCOMES,
    Figures,
    Tally,
    add_tally,
    average_precision,
    precision_recall,
    rule_figures,
)
from worker.feedback.store import PENDING, Store

LAG_BUCKETS = (60, 600, 3600, 6 * 3600, 86_400, 3 * 86_400, 7 * 86_400, 30 * 86_400, 60 * 86_400, 120 * 86_400)
RECORD_TOPICS = ("scores", "labels")


@dataclass
class Snapshot:
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    precision: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    pr_auc: dict[str, float] = field(default_factory=dict)
    window: dict[str, int] = field(default_factory=dict)
    # Per (role, rule set, rule) and per (role, rule set, action): quality.py ``rule_figures``.
    rule_resolved: Figures = field(default_factory=dict)
    rule_precision: Figures = field(default_factory=dict)
    rule_recall: Figures = field(default_factory=dict)
    action_resolved: Figures = field(default_factory=dict)
    action_precision: Figures = field(default_factory=dict)
    action_recall: Figures = field(default_factory=dict)


def snapshot(stores: Sequence[Store], since_ms: int, max_rows: int) -> Snapshot:
    """The per-version figures of these stores: counts, and quality over the window of resolved rows."""
    snap = Snapshot()
    for store in stores:
        for key, n in store.outcome_counts().items():
            snap.outcomes[key] = snap.outcomes.get(key, 0) + n
    versions = sorted({v for v, _ in snap.outcomes})
    actions: Tally = {}
    rules: Tally = {}
    for version in versions:
        snap.pending[version] = snap.outcomes.pop((version, PENDING), 0)
        for store in stores:
            by_action, by_rule = store.decision_window(version, since_ms, max_rows)
            add_tally(actions, by_action)
            add_tally(rules, by_rule)
        parts = [s.window(version, since_ms, max_rows) for s in stores]
        scores = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
        thresholds = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
        truths = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, bool)
        snap.window[version] = int(scores.size)
        if scores.size == 0:
            continue
        flagged = scores >= thresholds
        counts = {
            "tp": int(np.sum(flagged & truths)),
            "fp": int(np.sum(flagged & ~truths)),
            "fn": int(np.sum(~flagged & truths)),
        }
        precision, recall = precision_recall(counts)
        if precision is not None:
            snap.precision[version] = precision
        if recall is not None:
            snap.recall[version] = recall
        ap = average_precision(truths, scores)
        if ap is not None:
            snap.pr_auc[version] = ap
    figures = rule_figures(actions, rules)
    snap.rule_resolved, snap.rule_precision, snap.rule_recall = (
        figures["resolved"], figures["precision"], figures["recall"])  # fmt: skip
    snap.action_resolved, snap.action_precision, snap.action_recall = (
        figures["action_resolved"], figures["action_precision"], figures["action_recall"])  # fmt: skip
    return snap


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snap = Snapshot()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        snap = self.snap  # one reference read: a consistent snapshot
        outcomes = GaugeMetricFamily(
            "fraud_feedback_outcomes",
            "Scored transactions by outcome at the threshold each was scored with (tp, fp, fn, tn), per model "
            "version: the store's counts",
            labels=["model_version", "outcome"],
        )
        versions = sorted({v for v, _ in snap.outcomes} | set(snap.pending))
        for version in versions:
            for name in OUTCOMES:
                outcomes.add_metric([version, name], snap.outcomes.get((version, name), 0))
        yield outcomes
        unlabelled = GaugeMetricFamily(
            "fraud_feedback_unlabelled_ratio",
            "Share of scored transactions without a label yet and younger than the label window",
            labels=["model_version"],
        )
        for version in versions:
            total = snap.pending.get(version, 0) + sum(snap.outcomes.get((version, o), 0) for o in OUTCOMES)
            if total:
                unlabelled.add_metric([version], snap.pending.get(version, 0) / total)
        yield unlabelled
        for name, values, text in (
            ("fraud_feedback_precision", snap.precision, "Precision at the scored threshold over the quality window"),
            ("fraud_feedback_recall", snap.recall, "Recall at the scored threshold over the quality window"),
            ("fraud_feedback_pr_auc", snap.pr_auc, "Average precision (PR AUC) over the quality window"),
            ("fraud_feedback_window_transactions", snap.window, "Resolved transactions in the quality window"),
        ):
            family = GaugeMetricFamily(name, text, labels=["model_version"])
            for version, value in sorted(values.items()):
                family.add_metric([version], value)
            yield family
        for name, figures, kind, text in (
            ("fraud_feedback_rule_resolved", snap.rule_resolved, "rule",
             "Resolved transactions in the quality window the rule matched, per role and rule set"),
            ("fraud_feedback_rule_precision", snap.rule_precision, "rule",
             "Share of fraud among the resolved transactions the rule matched, over the quality window"),
            ("fraud_feedback_rule_recall", snap.rule_recall, "rule",
             "Share of the rule set's resolved frauds the rule matched, over the quality window"),
            ("fraud_feedback_action_resolved", snap.action_resolved, "action",
             "Resolved transactions in the quality window decided with the action, per role and rule set"),
            ("fraud_feedback_action_precision", snap.action_precision, "action",
             "Share of fraud among the resolved transactions decided with the action, over the quality window"),
            ("fraud_feedback_action_recall", snap.action_recall, "action",
             "Share of the rule set's resolved frauds decided with the action, over the quality window"),
        ):  # fmt: skip
            family = GaugeMetricFamily(name, text, labels=["role", "rule_set", kind])
            for key, value in sorted(figures.items()):
                family.add_metric(list(key), value)
            yield family


class FeedbackMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._collector = _SnapshotCollector()
        registry.register(self._collector)
        self.label_lag = Histogram(
            "fraud_feedback_label_lag_seconds",
            "Event time to label time of each transaction, when its label and its score first meet",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.records = Counter(
            "fraud_feedback_records", "Records read from the scores and labels topics", ["topic"], registry=registry
        )
        self.invalid = Counter(
            "fraud_feedback_invalid", "Records skipped as not a score or label, by reason", ["topic", "reason"],
            registry=registry,
        )  # fmt: skip
        self.ignored = Counter(
            "fraud_feedback_ignored",
            "Records that changed nothing: a repeated score, a label repeated or older than the one held",
            ["kind"],
            registry=registry,
        )
        self.partitions = Gauge(
            "fraud_feedback_partitions_assigned", "Partitions this instance joins", registry=registry
        )
        self.store_rows = Gauge(
            "fraud_feedback_store_rows", "Scored rows held in this instance's stores", registry=registry
        )
        self.store_bytes = Gauge("fraud_feedback_store_bytes", "Size of this instance's store files", registry=registry)
        self.store_rebuilds = Counter(
            "fraud_feedback_store_rebuilds",
            "Stores found damaged or unopenable, moved aside and rebuilt from the topics",
            registry=registry,
        )
        self.last_commit = Gauge(
            "fraud_feedback_last_commit_timestamp_seconds", "When the stores last took a batch (Unix time)",
            registry=registry,
        )  # fmt: skip
        self.risk_records = Counter(
            "fraud_feedback_entity_risk_records",
            "Entity risk records published to the entity risk topic (an entity's fraud entries, or a tombstone)",
            registry=registry,
        )
        self.risk_errors = Counter(
            "fraud_feedback_entity_risk_errors",
            "Entity risk records that could not be published (kept and sent again later)",
            registry=registry,
        )
        for topic in RECORD_TOPICS:
            self.records.labels(topic=topic)
        for kind in ("score", "label"):
            self.ignored.labels(kind=kind)

    def publish(self, snap: Snapshot) -> None:
        self._collector.snap = snap
