"""Events at ±3.4e38 among valid ones, on the real broker: none is scored silently, no record holds null.

An event may carry any finite float32. Before, an event with every ULB feature at 3.4e38 scored NaN (no
alert, ``"score": null``), then, clipped to the bundle's bounds, 0.0: no alert either, a fraud hidden. Now
a row with a feature more than SCALED_LIMIT training standard deviations from the training mean (its
transform without its clip) is dead-lettered ``out_of_range`` (``Scorer.admit``, worker/core/scoring.py); a
value beyond the training range but within that limit is clipped to the training bound, scored and
counted in fraud_feature_values_clipped_total, and the valid events score as the reference says.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.integration.test_reconcile import _args, _reconcile
from tests.support.bundles import ULB_FEATURES, make_bundle
from tests.support.workers import WorkerProcess, event_bytes, headers, produce, read_topic, wait_committed
from worker.core.bundle import load_bundle
from worker.core.probe import reference_scores

VALID = 200
TOP = 3.4e38  # below float32's largest (3.4028235e38): a valid value for the decoder
LIMIT = 1e4  # worker/core/scoring.py's SCALED_LIMIT (written out: the test runs on code from before it too)


def _extremes() -> dict[str, dict[str, float]]:
    """Every feature at +3.4e38, every one at -3.4e38, and single features at either among normal values."""
    events = {"all-plus": dict.fromkeys(ULB_FEATURES, TOP), "all-minus": dict.fromkeys(ULB_FEATURES, -TOP)}
    events["alternating"] = {name: TOP if j % 2 else -TOP for j, name in enumerate(ULB_FEATURES)}
    for name in ("Time", "V14", "Amount"):
        for sign, label in ((1, "plus"), (-1, "minus")):
            events[f"{name}-{label}"] = {**dict.fromkeys(ULB_FEATURES, 0.0), name: sign * TOP}
    return events


def _within(ulb) -> dict[str, dict[str, float]]:
    """Events beyond the training range but within the model's range: scored (clipped where the bundle clips)."""
    mean, scale = np.asarray(ulb.model["mean"]), np.asarray(ulb.model["scale"])
    zero = dict.fromkeys(ULB_FEATURES, 0.0)
    j = ULB_FEATURES.index("Amount")
    return {
        "amount-10x": {**zero, "Amount": float(ulb.features[:, j].max() * 10)},
        "v14-near-limit": {**zero, "V14": float(mean[14] - 0.99 * LIMIT * scale[14])},
    }


@pytest.mark.parametrize("clips", ["none", "training"], ids=["bundle-without-clips", "bundle-with-training-clips"])
def test_extreme_values_are_dead_lettered_out_of_range_and_the_rest_score_as_before(
    kafka, ulb, tmp_path, topics, workers, capsys, clips
):
    model = dict(ulb.model)
    if clips == "training":  # as fraud-train writes it: every feature clipped to its training [min, max]
        lo, hi = ulb.features.min(axis=0), ulb.features.max(axis=0)
        model["feature_transforms"] = [{"kind": "identity", "clip": [a, b]} for a, b in zip(lo, hi, strict=True)]
    models = tmp_path / "models"
    make_bundle(models, "v1", **model)
    extremes, within = _extremes(), _within(ulb)
    odd = list(extremes.items()) + list(within.items())
    records, raw = [], {}
    for i in range(VALID):
        records.append((b"acct", ulb.event(i, prefix="ok")))
        raw[f"ok-{i}"] = ulb.features[i].tolist()
        if i % 10 == 0 and i // 10 < len(odd):
            name, values = odd[i // 10]
            records.append((b"acct", event_bytes(f"x-{name}", values)))
            raw[f"x-{name}"] = [values[f] for f in ULB_FEATURES]
    assert len(raw) == VALID + len(odd)
    topic = kafka.topic(partitions=1, prefix="transactions")
    topics = dict(topics, input_topic=topic)
    produce(kafka.producer(), topic, records)
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models, group=group, **topics).start()
    workers.append(worker)
    worker.wait_ready()
    wait_committed(kafka, group, topic, workers=[worker])

    # Every event at ±3.4e38 is dead-lettered out_of_range, naming a feature and its value.
    dlq = {json.loads(r.value)["transaction_id"]: headers(r) for r in read_topic(kafka, topics["dlq_topic"])}
    assert set(dlq) == {f"x-{name}" for name in extremes}
    for tx, h in dlq.items():
        assert h["error"] == "out_of_range", (tx, h)
        assert " is 3.4e+38, more than 10000 training standard deviations" in h["error_detail"] or \
            " is -3.4e+38, more than 10000 training standard deviations" in h["error_detail"], h  # fmt: skip
    for kind in ("scores_topic", "alert_topic"):
        for r in read_topic(kafka, topics[kind]):
            # No null anywhere: not the score, not a reason's contribution (weight × a scaled value at ±inf). The
            # decision record's rule and rule set are null by contract when the threshold alone decided.
            doc = json.loads(r.value)
            decision = doc.pop("decision")
            assert decision["rule"] is None and decision["rule_set"] is None, decision
            assert "null" not in json.dumps(doc) and b"NaN" not in r.value and b"Infinity" not in r.value, r.value
    scores = {d["transaction_id"]: d["score"] for d in map(json.loads, (r.value for r in read_topic(
        kafka, topics["scores_topic"])))}  # fmt: skip
    alerts = {json.loads(r.value)["transaction_id"] for r in read_topic(kafka, topics["alert_topic"])}
    assert set(scores) == {f"ok-{i}" for i in range(VALID)} | {f"x-{name}" for name in within}
    assert all(isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores.values()), scores
    assert alerts == {tx for tx, s in scores.items() if s >= ulb.model["threshold"]}
    # The valid events, and those beyond the training range but within the model's, score as the contract says.
    ids = sorted(scores)
    expected = reference_scores(load_bundle(models).manifest, np.asarray([raw[tx] for tx in ids], dtype=np.float32))
    np.testing.assert_allclose([scores[tx] for tx in ids], expected, atol=2e-3)

    assert worker.metric("fraud_events_invalid_total", {"reason": "out_of_range"}) == len(extremes)
    assert worker.metric("fraud_events_scored_total") == VALID + len(within)
    assert worker.metric("fraud_feature_values_clipped_total", {"bound": "scaled"}) == 0
    training = worker.metric("fraud_feature_values_clipped_total", {"bound": "training"})
    assert training >= 1 if clips == "training" else training == 0  # the 10x amount at least
    assert worker.metric("fraud_scores_out_of_range_total") == 0
    assert worker.stop() == 0
    rc, report = _reconcile(capsys, *_args(kafka, topics, group))
    assert rc == 0 and report["lost"] == 0 and report["dead_lettered"] == len(extremes), report
