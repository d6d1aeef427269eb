"""Acceptance 1 and 6: a clean run over a ULB slice scores every event once, alerts exactly the
events at or above the threshold with the bundle's offline scores, imports no TensorFlow and
stays under 150 MB resident."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np

from tests.integration.conftest import SLICE
from tests.support.bundles import ULB_FEATURES
from tests.support.workers import WorkerProcess, headers, produce, read_topic, wait_committed
from worker.core.scoring import load_scorer


def test_clean_run_scores_every_event_once_and_alerts_match_offline_scores(kafka, ulb, models_dir, topics, workers):
    assert ulb.labels.sum() > 0, "the slice holds frauds"
    sent = produce(
        kafka.producer(linger_ms=20), topics["input_topic"],
        ((f"acct-{i % 97}".encode(), ulb.event(i)) for i in range(SLICE)),
    )  # fmt: skip
    assert sent == SLICE >= 20_000
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics).start()
    workers.append(worker)
    worker.wait_ready()
    # The first join already knows the input's partitions: no empty assignment to recover from.
    lines = worker.output().splitlines()
    tag = "worker.delivery.rebalance: "
    assigned = [line.split(tag, 1)[1] for line in lines if f"{tag}assigned" in line]
    assert assigned[:1] == ["assigned [0, 1, 2]"], assigned
    # FRAUD_FAST_PATHS=none make test: the whole suite on kafka-python's own code paths.
    fast_paths = os.environ.get("FRAUD_FAST_PATHS", "all")
    assert ("kafka-python fast paths off" in worker.output()) == (fast_paths != "all"), fast_paths
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])

    rss = worker.rss_mb()
    print(f"\nworker RSS with the model loaded, after {SLICE} events: {rss:.1f} MB")
    assert rss < 150
    assert "tensorflow" not in worker.mapped_files().lower()
    assert worker.metric("fraud_events_scored_total") == SLICE
    assert worker.metric("fraud_events_consumed_total") == SLICE
    assert worker.stop() == 0

    scorer = load_scorer(str(models_dir))
    offline = scorer.score(ulb.features.astype(np.float32))
    threshold = ulb.model["threshold"]

    scores = [json.loads(r.value) for r in read_topic(kafka, topics["scores_topic"])]
    counts = Counter(s["transaction_id"] for s in scores)
    assert len(counts) == SLICE and set(counts.values()) == {1}, "every valid event scored exactly once"
    by_id = {s["transaction_id"]: s for s in scores}
    got = np.array([by_id[f"tx-{i}"]["score"] for i in range(SLICE)])
    assert np.max(np.abs(got - offline)) <= 1e-5

    alerts = read_topic(kafka, topics["alert_topic"])
    alert_docs = {r.key.decode(): json.loads(r.value) for r in alerts}
    assert len(alert_docs) == len(alerts), "one alert per event"
    expected = {f"tx-{i}" for i in np.flatnonzero(offline >= threshold)}
    borderline = {f"tx-{i}" for i in np.flatnonzero(np.abs(offline - threshold) <= 1e-5)}
    assert set(alert_docs) - borderline == expected - borderline
    assert 0 < len(alert_docs) < SLICE
    frauds_alerted = sum(1 for i in np.flatnonzero(ulb.labels) if f"tx-{i}" in alert_docs)
    print(f"alerts: {len(alert_docs)} of {SLICE} events; {frauds_alerted} of {int(ulb.labels.sum())} frauds")
    for key, doc in alert_docs.items():
        assert doc["transaction_id"] == key
        assert doc["score"] >= threshold - 1e-5 and doc["threshold"] == threshold
        assert doc["model_version"] == "v1"
        assert len(doc["reasons"]) == 3
        assert all(set(r) == {"feature", "contribution", "value"} for r in doc["reasons"])
        i = int(key.split("-")[1])
        # Each reason names its feature's raw value, as the worker read it (float32).
        assert all(np.float32(r["value"]) == np.float32(ulb.features[i, ULB_FEATURES.index(r["feature"])])
                   for r in doc["reasons"])  # fmt: skip
        assert isinstance(doc["event_time"], int) and isinstance(doc["scored_at"], int)
    sample = next(iter(alert_docs))
    i = int(sample.split("-")[1])
    raw = ulb.features[i : i + 1].astype(np.float32)
    want = scorer.top_reasons(scorer.scale(raw)[0], raw[0], 3)
    assert [(r["feature"], r["contribution"], r["value"]) for r in alert_docs[sample]["reasons"]] == want
    h = headers(read_topic(kafka, topics["scores_topic"])[0])
    assert {"source_topic", "source_partition", "source_offset"} <= set(h)
    assert h["source_topic"] == topics["input_topic"]
    assert read_topic(kafka, topics["dlq_topic"]) == []
