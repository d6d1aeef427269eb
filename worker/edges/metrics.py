"""Every metric the worker exports (namespace ``fraud_``), in one class that takes a registry.

Per-event histograms (scores, event latency) are fed a whole batch at once through
``ArrayHistogram.observe_many``: one numpy call per batch instead of one Python call per event.
Labels stay low-cardinality: a reason code, a partition, a model version; never an id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from worker.core.decode import REASONS
from worker.core.drift import DEFAULT_WINDOW, DriftWindow, Reference
from worker.core.signing import REASONS as SIGNATURE_REASONS
from worker.edges.health_server import DROP_REASONS

logger = logging.getLogger(__name__)

# Fine resolution where thresholds usually sit (fraud is rare: thresholds are often above 0.5).
SCORE_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9,
    0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0,
)  # fmt: skip
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 750, 1000, 2000, 5000)


class ArrayHistogram:
    """A label-less histogram collector fed with numpy arrays (thread-safe, cheap per batch)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._upper = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self._upper) + 1, dtype=np.int64)  # last: above every bucket (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray | Iterable[float]) -> None:
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size == 0:
            return
        # side="left": a value equal to a bound falls into that bucket (le = less or equal).
        counts = np.bincount(np.searchsorted(self._upper, arr, side="left"), minlength=len(self._counts))
        total = float(arr.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(floatToGoString(b), float(c)) for b, c in zip(self._upper, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        return [HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)]

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]


class PsiCollector:
    """``fraud_score_psi``, computed at scrape time from the drift window (no sample until it is known)."""

    name = "fraud_score_psi"
    documentation = (
        "Population stability index of the last scores (fraud_score_psi_window_scores of them) against the "
        "serving model's training-score histogram; > 0.2 is a significant shift."
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.window: DriftWindow | None = None
        registry.register(self)

    def collect(self) -> list[GaugeMetricFamily]:
        psi = GaugeMetricFamily(self.name, self.documentation)
        size = GaugeMetricFamily(f"{self.name}_window_scores", "Live scores in the PSI window.")
        window = self.window
        if window is not None:
            value = window.value()
            if value is not None:
                psi.add_metric([], value)
            size.add_metric([], window.size)
        return [psi, size]

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation)]


class WorkerMetrics:
    """The worker's metrics, registered in ``registry`` (a fresh ``CollectorRegistry`` in tests)."""

    def __init__(self, registry: CollectorRegistry, drift_window: int = DEFAULT_WINDOW) -> None:
        r = registry
        self.drift_window = drift_window
        self.events_consumed = Counter("fraud_events_consumed", "Records taken from the input topic.", registry=r)
        self.events_scored = Counter("fraud_events_scored", "Valid events scored by the model.", registry=r)
        self.alerts = Counter("fraud_alerts", "Alerts published (score >= threshold) and acknowledged.", registry=r)
        self.events_invalid = Counter(
            "fraud_events_invalid", "Records sent to the dead-letter topic, by reason code.", ["reason"], registry=r
        )
        self.dlq_truncated = Counter(
            "fraud_dlq_truncated",
            "Dead-letter records sent with their value cut to fit a Kafka request (header truncated).",
            registry=r,
        )
        self.score = ArrayHistogram("fraud_score", "Scores of the events scored.", SCORE_BUCKETS, r)
        self.batch_size = Histogram("fraud_batch_size", "Records per poll batch.", buckets=BATCH_BUCKETS, registry=r)
        self.scoring_seconds = Histogram(
            "fraud_scoring_seconds", "Time to scale and score one batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.feature_seconds = Histogram(
            "fraud_feature_seconds",
            "With a feature spec: time to compute one batch's behavioural features.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_entities = Gauge(
            "fraud_feature_entities", "With a feature spec: entities in the worker's feature state.", registry=r
        )
        self.feature_restoring = Gauge(
            "fraud_feature_restoring_records",
            "With a feature spec: changelog records read by the restore under way (0 when none): its progress.",
            registry=r,
        )
        self.feature_state_entities = Gauge(
            "fraud_feature_state_entities",
            "With a feature spec: entities in each partition's feature state (its SQLite file).",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.feature_state_bytes = Gauge(
            "fraud_feature_state_bytes",
            "With a feature spec: bytes on disk of each partition's feature state (SQLite file and its log).",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self._feature_partitions: set[tuple[str, str]] = set()
        self.feature_late_events = Counter(
            "fraud_feature_late_events",
            "With a feature spec: events older than their entity's latest, computed at that latest time.",
            registry=r,
        )
        self.feature_replayed_events = Counter(
            "fraud_feature_replayed_events",
            "With a feature spec: events polled again that the state held already (their first features reused).",
            registry=r,
        )
        self.feature_restored_entities = Counter(
            "fraud_feature_restored_entities",
            "With a feature spec: entity states restored from the changelog topic into a partition's store.",
            registry=r,
        )
        self.feature_restore_seconds = Counter(
            "fraud_feature_restore_seconds",
            "With a feature spec: time spent restoring partitions' stores from the changelog (scoring waits).",
            registry=r,
        )
        self.feature_changelog_records = Counter(
            "fraud_feature_changelog_records",
            "With a feature spec: records written to the changelog topic (entity states, positions).",
            registry=r,
        )
        self.feature_forwarded_events = Counter(
            "fraud_feature_forwarded_events",
            "With input_key_field and a spec on other entities: events sent on to a repartition topic "
            "(their features computed there).",
            registry=r,
        )
        self.entity_risk_age = Gauge(
            "fraud_entity_risk_age_seconds",
            "With a spec reading labels: seconds since the risk table last read its topic to the end (+Inf: never).",
            registry=r,
        )
        self.entity_risk_entities = Gauge(
            "fraud_entity_risk_entities",
            "With a spec reading labels: entities with fraud entries in the risk table.",
            registry=r,
        )
        self.entity_risk_frauds = Gauge(
            "fraud_entity_risk_frauds",
            "With a spec reading labels: confirmed frauds the risk table holds (its entries summed).",
            registry=r,
        )
        self.entity_risk_records = Counter(
            "fraud_entity_risk_records",
            "With a spec reading labels: records read from the risk topic (bad ones included).",
            registry=r,
        )
        self.entity_risk_stale_events = Counter(
            "fraud_entity_risk_stale_events",
            "With a spec reading labels: events scored while the risk table was stale or unread (with the values "
            "it had).",
            registry=r,
        )
        self.event_latency = ArrayHistogram(
            "fraud_event_latency_seconds",
            "From event time (or the record timestamp) to the alert being acknowledged.",
            LATENCY_BUCKETS,
            r,
        )
        self.transactions = Counter(
            "fraud_transactions",
            "Exactly-once mode: transactions ended, by outcome (committed, aborted).",
            ["outcome"],
            registry=r,
        )
        self.transaction_seconds = Histogram(
            "fraud_transaction_commit_seconds",
            "Exactly-once mode: time to commit one transaction (its offsets and its end).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "fraud_consumer_lag", "Records behind the end of each assigned input partition.", ["partition"], registry=r
        )
        self.model_info = Gauge(
            "fraud_model_info", "The model version serving (value 1) and its sha256.", ["version", "sha256"], registry=r
        )
        self.model_threshold = Gauge("fraud_model_threshold", "Alert threshold of the serving model.", registry=r)
        self.model_reloads = Counter(
            "fraud_model_reloads",
            "Attempts to switch to the model named by CURRENT, by result.",
            ["result"],
            registry=r,
        )
        self.model_signature_failures = Counter(
            "fraud_model_signature_failures",
            "Hot reloads refused because the bundle is not signed by a trusted key, by reason (unsigned, "
            "malformed, old_format, unknown_key, mismatch), or older than min_model_version (rollback).",
            ["reason"],
            registry=r,
        )
        self.broker_errors = Counter(
            "fraud_broker_errors",
            "Failed broker operations (the worker backs off and retries), by stage.",
            ["stage"],
            registry=r,
        )
        self.last_poll = Gauge("fraud_last_poll_timestamp_seconds", "When the loop last polled.", registry=r)
        self.last_commit = Gauge(
            "fraud_last_commit_timestamp_seconds", "When offsets were last committed successfully.", registry=r
        )
        self.commits = Counter("fraud_commits", "Offset commits, by result (ok, failed).", ["result"], registry=r)
        self.rebalances = Counter(
            "fraud_rebalances", "Partition assignments received from the group coordinator.", registry=r
        )
        self.partitions_assigned = Gauge(
            "fraud_partitions_assigned", "Input partitions currently assigned to this worker.", registry=r
        )
        self.model_load_seconds = Gauge(
            "fraud_model_load_seconds", "Time the serving model took to read, verify and load.", registry=r
        )
        self.model_last_reload = Gauge(
            "fraud_model_last_reload_timestamp_seconds",
            "When the serving model was loaded (at start or by a hot reload).",
            registry=r,
        )
        self.health_connections_dropped = Counter(
            "fraud_health_connections_dropped",
            "Connections to the /metrics, /healthz, /readyz server closed before they sent a complete request, "
            "by reason (timeout, cap, too_large).",
            ["reason"],
            registry=r,
        )
        self.model_previous_info = Gauge(
            "fraud_model_previous_info",
            "The champion the serving model replaced (value 1), after a switch; none before the first.",
            ["version"],
            registry=r,
        )
        # The shadow challenger (models/CHALLENGER, worker/pipeline/shadow.py): scored beside the champion,
        # never alerting.
        self.shadow_model_info = Gauge(
            "fraud_shadow_model_info", "The challenger in shadow (value 1) and its sha256.", ["version", "sha256"],
            registry=r,
        )  # fmt: skip
        self.shadow_reloads = Counter(
            "fraud_shadow_reloads", "Attempts to put the model named by CHALLENGER in shadow, by result.", ["result"],
            registry=r,
        )  # fmt: skip
        self.shadow_scored = Counter("fraud_shadow_scored", "Valid events the challenger scored.", registry=r)
        self.shadow_alerts = Counter(
            "fraud_shadow_alerts", "Events the challenger would have alerted on (never published).", registry=r
        )
        self.shadow_agreement = Counter(
            "fraud_shadow_agreement",
            "Alerts of the champion and the challenger compared per event: both, champion_only, challenger_only.",
            ["outcome"],
            registry=r,
        )
        # Rules and decisions (docs/rules.md): role "serving" (models/RULES) or "shadow" (models/RULES_SHADOW).
        self.rule_set_info = Gauge(
            "fraud_rule_set_info", "The rule set in use (value 1), by role and version.",
            ["role", "version"], registry=r,
        )  # fmt: skip
        self.rule_set_reloads = Counter(
            "fraud_rule_set_reloads", "Attempts to load the rule set a pointer names, by role and result.",
            ["role", "result"], registry=r,
        )  # fmt: skip
        self.rule_list_reloads = Counter(
            "fraud_rule_list_reloads", "Attempts to read a named list's file, by list and result.", ["list", "result"],
            registry=r,
        )  # fmt: skip
        self.rule_list_entries = Gauge("fraud_rule_list_entries", "Values in each named list.", ["list"], registry=r)
        self.rule_matches = Counter(
            "fraud_rule_matches",
            "Events each rule matched (deciding or not), by role, rule and the rule's action.",
            ["role", "rule", "action"],
            registry=r,
        )
        self.decisions = Counter(
            "fraud_decisions", "Scored events by the action decided (every action but allow is an alert).",
            ["action"], registry=r,
        )  # fmt: skip
        self.shadow_decisions = Counter(
            "fraud_shadow_decisions", "Scored events by the action the shadow rule set would have decided.",
            ["action"], registry=r,
        )  # fmt: skip
        self.allow_overrides = Counter(
            "fraud_decision_allow_overrides",
            "Events an allow rule let through although their score was at or above the threshold, by rule.",
            ["rule"],
            registry=r,
        )
        self.rules_interpreted = Gauge(
            "fraud_rules_interpreted",
            "Rules of the rule set in use evaluated row by row by rule-engine (not compiled to numpy), by role.",
            ["role"],
            registry=r,
        )
        self.decision_seconds = Counter(
            "fraud_decision_seconds", "Time spent deciding batches (rules and thresholds), in seconds.", registry=r
        )
        for action in ("allow", "review"):
            self.decisions.labels(action=action)
        for role in ("serving", "shadow"):
            for result in ("ok", "failed"):
                self.rule_set_reloads.labels(role=role, result=result)
        self.psi = PsiCollector(r)
        # Every valid event gets a finite score (worker/core/scoring.py): what the guards did, counted when scored.
        self.feature_values_clipped = Counter(
            "fraud_feature_values_clipped",
            "Raw feature values of scored events that hit a bound, by bound: training (beyond the feature's "
            "training clip, scored as the bound) or scaled (beyond the scaled limit, SCALED_LIMIT).",
            ["bound"],
            registry=r,
        )
        self.scores_out_of_range = Counter(
            "fraud_scores_out_of_range",
            "Model outputs that were not a probability in [0, 1] (NaN, inf), published as score 1.0 (an alert).",
            registry=r,
        )
        for bound in ("training", "scaled"):
            self.feature_values_clipped.labels(bound=bound)
        for outcome in ("both", "champion_only", "challenger_only"):
            self.shadow_agreement.labels(outcome=outcome)
        for result in ("ok", "failed"):
            self.shadow_reloads.labels(result=result)
            self.model_reloads.labels(result=result)
            self.commits.labels(result=result)
        for outcome in ("committed", "aborted"):
            self.transactions.labels(outcome=outcome)
        for reason in SIGNATURE_REASONS:
            self.model_signature_failures.labels(reason=reason)
        for stage in ("connect", "poll", "produce", "commit", "lag"):
            self.broker_errors.labels(stage=stage)
        # Every series starts at 0, so rate() sees the first bad record instead of a series born at 1.
        for reason in REASONS:
            self.events_invalid.labels(reason=reason)
        for reason in DROP_REASONS:
            self.health_connections_dropped.labels(reason=reason)
        self._model_labels: tuple[str, str] | None = None
        self._shadow_labels: tuple[str, str] | None = None

    def set_model(
        self,
        version: str,
        sha256: str,
        threshold: float,
        score_histogram: Mapping[str, Sequence[float]] | None = None,
        load_seconds: float | None = None,
    ) -> None:
        """Describe the model now serving; the drift window restarts against its training histogram."""
        if self._model_labels is not None:
            self.model_info.remove(*self._model_labels)
            if self._model_labels[0] != version:  # a switch: the champion it replaced
                self.model_previous_info.clear()
                self.model_previous_info.labels(version=self._model_labels[0]).set(1)
        self._model_labels = (version, sha256)
        self.model_info.labels(version=version, sha256=sha256).set(1)
        self.model_threshold.set(threshold)
        if load_seconds is not None:
            self.model_load_seconds.set(load_seconds)
        self.model_last_reload.set(time.time())
        try:
            reference = Reference.from_histogram(score_histogram)
        except ValueError as exc:
            logger.warning("model %s: no drift check, its score_histogram is unusable: %s", version, exc)
            reference = None
        self.psi.window = DriftWindow(reference, self.drift_window) if reference is not None else None

    def set_shadow_model(self, labels: tuple[str, str] | None) -> None:
        """The challenger now in shadow, as (version, sha256), or None when there is none."""
        if self._shadow_labels is not None:
            self.shadow_model_info.remove(*self._shadow_labels)
        self._shadow_labels = labels
        if labels is not None:
            self.shadow_model_info.labels(version=labels[0], sha256=labels[1]).set(1)

    def observe_shadow(self, scored: int, alerts: int, agreement: Mapping[str, int]) -> None:
        """An acknowledged batch's shadow counts (worker/pipeline/shadow.py)."""
        self.shadow_scored.inc(scored)
        self.shadow_alerts.inc(alerts)
        for outcome, n in agreement.items():
            self.shadow_agreement.labels(outcome=outcome).inc(n)

    def observe_decisions(self, role: str, actions: Mapping[str, int], matches: Mapping[tuple[str, str], int],
                          overrides: Mapping[str, int]) -> None:
        """An acknowledged batch's decisions: events per action, matches per (rule, action), overrides per rule."""
        counter = self.decisions if role == "serving" else self.shadow_decisions
        for action, n in actions.items():
            counter.labels(action=action).inc(n)
        for (rule, action), n in matches.items():
            self.rule_matches.labels(role=role, rule=rule, action=action).inc(n)
        for rule, n in overrides.items():
            self.allow_overrides.labels(rule=rule).inc(n)

    def set_rule_set(self, role: str, version: str | None, old: str | None, rules: Sequence[tuple[str, str]] = (),
                     interpreted: int = 0) -> None:
        """The rule set now in use for ``role`` (None: none); its rules' match series start at 0."""
        if old is not None:
            try:
                self.rule_set_info.remove(role, old)
            except KeyError:
                pass
        if version is not None:
            self.rule_set_info.labels(role=role, version=version).set(1)
        for rule, action in rules:
            self.rule_matches.labels(role=role, rule=rule, action=action)
            if action == "allow" and role == "serving":
                self.allow_overrides.labels(rule=rule)
            if role == "serving":
                self.decisions.labels(action=action)
            else:
                self.shadow_decisions.labels(action=action)
        self.rules_interpreted.labels(role=role).set(interpreted)

    def observe_scores(self, scores: np.ndarray) -> None:
        """One batch of scores: the score histogram and the drift window (two numpy calls each)."""
        self.score.observe_many(scores)
        window = self.psi.window
        if window is not None:
            window.add(scores)

    def observe_guards(self, clipped_training: int, clipped_scaled: int, out_of_range: int) -> None:
        """What the scoring guards did to one batch (``worker.core.scoring.Scored``)."""
        if clipped_training:
            self.feature_values_clipped.labels(bound="training").inc(clipped_training)
        if clipped_scaled:
            self.feature_values_clipped.labels(bound="scaled").inc(clipped_scaled)
        if out_of_range:
            self.scores_out_of_range.inc(out_of_range)

    def observe_features(self, late: int, replayed: int, seconds: float, entities: int, changelog_records: int = 0,
                         forwarded: int = 0) -> None:  # fmt: skip
        """One batch's behavioural features (worker/core/batch_features.py, worker/state/); restores are
        ``observe_restores``'."""
        self.feature_seconds.observe(seconds)
        self.feature_entities.set(entities)
        if changelog_records:
            self.feature_changelog_records.inc(changelog_records)
        if forwarded:
            self.feature_forwarded_events.inc(forwarded)
        if late:
            self.feature_late_events.inc(late)
        if replayed:
            self.feature_replayed_events.inc(replayed)

    def observe_batch(
        self, records: int, scores: np.ndarray | None, alert_latency: np.ndarray | None, invalid: Sequence[str]
    ) -> None:
        """An acknowledged batch: its records, scores, alerts (latency in seconds each) and invalid records."""
        self.events_consumed.inc(records)
        self.batch_size.observe(records)
        if scores is not None and len(scores):
            self.events_scored.inc(len(scores))
            self.observe_scores(scores)
        if alert_latency is not None and len(alert_latency):
            self.alerts.inc(len(alert_latency))
            self.event_latency.observe_many(alert_latency)
        if invalid:
            self.count_invalid(invalid)

    def committed(self, ok: bool) -> None:
        self.commits.labels(result="ok" if ok else "failed").inc()
        if ok:
            self.last_commit.set(time.time())

    def count_invalid(self, reasons: Iterable[str]) -> None:
        counts: dict[str, int] = {}
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
        for reason, n in counts.items():
            self.events_invalid.labels(reason=reason).inc(n)

    def observe_restores(self, restored: int, seconds: float) -> None:
        """Partitions' stores restored from the changelog: their entities and the time it took."""
        if restored or seconds:
            self.feature_restored_entities.inc(restored)
            self.feature_restore_seconds.inc(seconds)

    def set_feature_partitions(self, sizes: Mapping[tuple[str, int], tuple[int, int]]) -> None:
        """Each held partition's feature state: (entities, bytes); partitions no longer held lose their series."""
        seen = set()
        for (topic, partition), (entities, size) in sizes.items():
            labels = (topic, str(partition))
            seen.add(labels)
            self.feature_state_entities.labels(*labels).set(entities)
            self.feature_state_bytes.labels(*labels).set(size)
        for labels in self._feature_partitions - seen:
            for gauge in (self.feature_state_entities, self.feature_state_bytes):
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass
        self._feature_partitions = seen

    def set_lag(self, lag: dict[int, int]) -> None:
        for partition, value in lag.items():
            self.consumer_lag.labels(partition=str(partition)).set(value)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            try:
                self.consumer_lag.remove(str(partition))
            except KeyError:
                pass
