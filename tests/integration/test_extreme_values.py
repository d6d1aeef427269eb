"""Events at ±3.4e38 among valid ones, on the real broker: every event gets a finite score.

An event may carry any finite float32. Before, an event with every ULB feature at 3.4e38 scored
NaN: no alert, ``"score": null`` on the scores topic. Now a bundle's clip (fraud-train sets one
for every feature, its training range) or, for a column without one, the ±SCALED_LIMIT guard on
the scaled values bounds it (worker/scoring.py), and fraud_feature_values_clipped_total counts
the values that hit a bound.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.support.bundles import ULB_FEATURES, make_bundle
from tests.support.workers import WorkerProcess, event_bytes, produce, read_topic, wait_committed
from worker.bundle import load_bundle
from worker.probe import reference_scores

VALID = 200
TOP = 3.4e38  # below float32's largest (3.4028235e38): a valid value for the decoder


def _extremes() -> dict[str, dict[str, float]]:
    """Every feature at +3.4e38, every one at -3.4e38, and single features at either among normal values."""
    events = {"all-plus": dict.fromkeys(ULB_FEATURES, TOP), "all-minus": dict.fromkeys(ULB_FEATURES, -TOP)}
    events["alternating"] = {name: TOP if j % 2 else -TOP for j, name in enumerate(ULB_FEATURES)}
    for name in ("Time", "V14", "Amount"):
        for sign, label in ((1, "plus"), (-1, "minus")):
            events[f"{name}-{label}"] = {**dict.fromkeys(ULB_FEATURES, 0.0), name: sign * TOP}
    return events


@pytest.mark.parametrize("clips", ["none", "training"], ids=["bundle-without-clips", "bundle-with-training-clips"])
def test_extreme_values_get_finite_scores_alert_as_scored_and_are_counted(kafka, ulb, tmp_path, topics, workers,
                                                                          clips):  # fmt: skip
    model = dict(ulb.model)
    if clips == "training":  # as fraud-train writes it: every feature clipped to its training [min, max]
        lo, hi = ulb.features.min(axis=0), ulb.features.max(axis=0)
        model["feature_transforms"] = [{"kind": "identity", "clip": [a, b]} for a, b in zip(lo, hi, strict=True)]
    models = tmp_path / "models"
    make_bundle(models, "v1", **model)
    extremes = _extremes()
    records, raw = [], {}
    for i in range(VALID):
        records.append((b"acct", ulb.event(i, prefix="ok")))
        if i % 20 == 0 and i // 20 < len(extremes):
            name = list(extremes)[i // 20]
            records.append((b"acct", event_bytes(f"x-{name}", extremes[name])))
            raw[f"x-{name}"] = [extremes[name][f] for f in ULB_FEATURES]
    assert len(raw) == len(extremes)
    topic = kafka.topic(partitions=1, prefix="transactions")
    topics = dict(topics, input_topic=topic)
    produce(kafka.producer(), topic, records)
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models, group=group, **topics).start()
    workers.append(worker)
    worker.wait_ready()
    wait_committed(kafka, group, topic, workers=[worker])

    assert read_topic(kafka, topics["dlq_topic"]) == []  # valid events: scored, not dead-lettered
    threshold = ulb.model["threshold"]
    for kind in ("scores_topic", "alert_topic"):
        for r in read_topic(kafka, topics[kind]):
            # No null anywhere: not the score, not a reason's contribution (weight × a scaled value at ±inf).
            assert b"null" not in r.value and b"NaN" not in r.value and b"Infinity" not in r.value, r.value
    scores = {d["transaction_id"]: d["score"] for d in map(json.loads, (r.value for r in read_topic(
        kafka, topics["scores_topic"])))}  # fmt: skip
    alerts = {json.loads(r.value)["transaction_id"] for r in read_topic(kafka, topics["alert_topic"])}
    assert len(scores) == VALID + len(extremes)
    assert all(isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores.values()), scores
    assert alerts == {tx for tx, s in scores.items() if s >= threshold}  # every extreme event alerts as it scores
    # Each extreme event scores as the contract says (its values clipped to the bundle's bounds, the scaled
    # ones to ±SCALED_LIMIT): an event at 3.4e38 in every feature that scores high alerts.
    ids = sorted(raw)
    expected = reference_scores(load_bundle(models).manifest, np.asarray([raw[tx] for tx in ids], dtype=np.float32))
    np.testing.assert_allclose([scores[tx] for tx in ids], expected, atol=2e-3)
    assert any(tx in alerts for tx in ("x-all-plus", "x-all-minus", "x-alternating"))

    n_extreme = sum(1 for values in raw.values() for v in values if abs(v) == TOP)
    training = worker.metric("fraud_feature_values_clipped_total", {"bound": "training"})
    scaled = worker.metric("fraud_feature_values_clipped_total", {"bound": "scaled"})
    if clips == "training":
        assert training >= n_extreme and scaled == 0  # (valid events beyond the slice's range count too)
    else:
        assert (training, scaled) == (0, n_extreme)
    assert worker.metric("fraud_scores_out_of_range_total") == 0
    assert worker.metric("fraud_events_scored_total") == VALID + len(extremes)
    assert worker.stop() == 0
