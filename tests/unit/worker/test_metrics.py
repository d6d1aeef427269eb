"""Metrics: names from docs/metrics.md, read from a fresh registry (the full list: test_docs_reference)."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from worker.edges.metrics import WorkerMetrics

DESIGN_NAMES = (
    "fraud_events_consumed_total", "fraud_events_scored_total", "fraud_alerts_total", "fraud_events_invalid_total",
    "fraud_score", "fraud_batch_size", "fraud_scoring_seconds", "fraud_event_latency_seconds", "fraud_consumer_lag",
    "fraud_model_info", "fraud_model_threshold", "fraud_model_reloads_total",
)  # fmt: skip
# Added since the starting contract: health of the loop and the model, and drift (docs/metrics.md).
ADDED_NAMES = (
    "fraud_broker_errors_total", "fraud_last_poll_timestamp_seconds", "fraud_last_commit_timestamp_seconds",
    "fraud_commits_total", "fraud_rebalances_total", "fraud_partitions_assigned", "fraud_model_load_seconds",
    "fraud_model_last_reload_timestamp_seconds", "fraud_score_psi", "fraud_health_connections_dropped_total",
)  # fmt: skip


def test_every_design_metric_is_exported():
    registry = CollectorRegistry()
    m = WorkerMetrics(registry)
    m.count_invalid(["invalid_json"])
    m.set_lag({0: 1})
    m.set_model("v1", "a" * 64, 0.9)
    text = generate_latest(registry).decode()
    for name in DESIGN_NAMES + ADDED_NAMES:
        assert f"\n{name}" in text or text.startswith(name) or f" {name} " in text, name


def test_every_metric_has_help_text():
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    for family in registry.collect():
        assert family.name.startswith("fraud_") and len(family.documentation) > 10, family.name


def test_buckets_span_latency_and_resolve_scores_near_thresholds():
    from worker.edges.metrics import LATENCY_BUCKETS, SCORE_BUCKETS

    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 10.0
    assert SCORE_BUCKETS[-1] == 1.0
    assert sum(1 for b in SCORE_BUCKETS if 0.9 <= b <= 1.0) >= 6  # steps of 0.01 or finer near the top


def test_score_histogram_counts_a_batch():
    registry = CollectorRegistry()
    m = WorkerMetrics(registry)
    m.score.observe_many(np.array([0.0, 0.5, 0.9, 0.95, 1.0], dtype=np.float32))
    get = registry.get_sample_value
    assert get("fraud_score_count") == 5
    assert get("fraud_score_bucket", {"le": "0.5"}) == 2
    assert get("fraud_score_bucket", {"le": "0.9"}) == 3
    assert get("fraud_score_bucket", {"le": "+Inf"}) == 5
    assert abs(get("fraud_score_sum") - 3.35) < 1e-6


def test_invalid_counts_by_reason_and_model_info_switches():
    registry = CollectorRegistry()
    m = WorkerMetrics(registry)
    m.count_invalid(["invalid_json", "too_large", "invalid_json"])
    get = registry.get_sample_value
    assert get("fraud_events_invalid_total", {"reason": "invalid_json"}) == 2
    assert get("fraud_events_invalid_total", {"reason": "too_large"}) == 1
    m.set_model("v1", "a" * 64, 0.8)
    m.set_model("v2", "b" * 64, 0.7)
    assert get("fraud_model_info", {"version": "v1", "sha256": "a" * 64}) is None
    assert get("fraud_model_info", {"version": "v2", "sha256": "b" * 64}) == 1
    assert get("fraud_model_threshold") == 0.7
    assert get("fraud_model_reloads_total", {"result": "failed"}) == 0


def test_lag_per_partition_is_forgotten_on_revoke():
    registry = CollectorRegistry()
    m = WorkerMetrics(registry)
    m.set_lag({0: 3, 1: 0})
    assert registry.get_sample_value("fraud_consumer_lag", {"partition": "0"}) == 3
    m.forget_partitions([0])
    assert registry.get_sample_value("fraud_consumer_lag", {"partition": "0"}) is None
    assert registry.get_sample_value("fraud_consumer_lag", {"partition": "1"}) == 0


def test_health_connection_drops_start_at_zero_for_every_reason():
    from worker.edges.health_server import DROP_REASONS

    registry = CollectorRegistry()
    WorkerMetrics(registry)
    for reason in DROP_REASONS:
        assert registry.get_sample_value("fraud_health_connections_dropped_total", {"reason": reason}) == 0
