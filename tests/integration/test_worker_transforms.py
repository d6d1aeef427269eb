"""Issue 19, acceptance 3: a bundle with feature transforms, served by a real worker on the real broker.

The ULB slice's model refitted on transformed features (Time a clipped identity, V1..V28
signed_log1p, Amount log1p clipped to [0, its 99.5 % quantile]), scaled and fitted with
scikit-learn on the transformed slice. Every event, and rows far outside the training range
(amounts far above the clip and negative, times before and far after it, V values of 1e4 and
1e30), is scored by the worker; each published score equals an independent float64 computation
(clip -> transform -> scale -> weights -> sigmoid) within 1e-5, each reason's contribution is
weight x transformed, scaled value and names the raw value sent, and NaN or infinite values in a
transformed column still go to the DLQ, as does a time more than 1e4 training standard deviations
from the mean (``out_of_range``: the identity Time column at 1e9).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.integration.conftest import SLICE
from tests.support.bundles import ULB_FEATURES, make_bundle
from tests.support.workers import WorkerProcess, headers, produce, read_topic, wait_committed

AMOUNT, TIME = ULB_FEATURES.index("Amount"), ULB_FEATURES.index("Time")


def transform(raw: np.ndarray, transforms: list[dict]) -> np.ndarray:
    """The contract in float64, written out here: clip, then kind, column by column."""
    out = np.array(raw, dtype=np.float64)
    for j, t in enumerate(transforms):
        lo, hi = t["clip"] or (None, None)
        col = np.clip(out[:, j], -np.inf if lo is None else lo, np.inf if hi is None else hi)
        if t["kind"] == "log1p":
            col = np.log1p(col)
        elif t["kind"] == "signed_log1p":
            col = np.sign(col) * np.log1p(np.abs(col))
        out[:, j] = col
    return out


def outside_the_training_range(x: np.ndarray, logit) -> np.ndarray:
    """Rows with one or more values far outside what training saw, each on the real row that then
    scores closest to 0.5 (where a score shows the most of what the transforms did)."""
    v = list(range(1, 29))
    edits: list[dict[int, float | np.ndarray]] = [
        {AMOUNT: 1e6}, {AMOUNT: -50.0}, {AMOUNT: -1e30}, {AMOUNT: 3e38}, {TIME: 1e7}, {TIME: -100.0},
        {ULB_FEATURES.index("V14"): -1e4}, {ULB_FEATURES.index("V4"): 1e4}, {ULB_FEATURES.index("V1"): -1e30},
        {TIME: 1e7, AMOUNT: -1.0}, {AMOUNT: 0.0, TIME: 0.0}, {j: 0.0 for j in range(30)},
        {j: 1e20 for j in v}, {j: -1e20 for j in v},
    ]  # fmt: skip
    rows = []
    for edit in edits:
        candidates = x.copy()
        for j, value in edit.items():
            candidates[:, j] = value
        rows.append(candidates[int(np.argmin(np.abs(logit(candidates))))])
    return np.asarray(rows)


@pytest.fixture
def transformed(tmp_path, ulb):
    """A models directory serving ``t1``, the ULB slice's model fitted on transformed features."""
    from sklearn.linear_model import LogisticRegression

    x, y = ulb.features, ulb.labels
    transforms = (
        [{"kind": "identity", "clip": [0.0, float(np.quantile(x[:, TIME], 0.99))]}]
        + [{"kind": "signed_log1p", "clip": None}] * 28
        + [{"kind": "log1p", "clip": [0.0, float(np.quantile(x[:, AMOUNT], 0.995))]}]
    )
    t = transform(x, transforms)
    mean, scale = t.mean(axis=0), t.std(axis=0)
    fit = LogisticRegression(class_weight="balanced", max_iter=1000).fit((t - mean) / scale, y)
    model = dict(feature_names=ULB_FEATURES, mean=mean.tolist(), scale=scale.tolist(), weights=fit.coef_[0].tolist(),
                 bias=float(fit.intercept_[0]), threshold=0.9, feature_transforms=transforms)  # fmt: skip
    models = tmp_path / "models"
    make_bundle(models, "t1", **model)
    return models, model


def test_worker_scores_with_transforms_equal_an_independent_float64_computation(kafka, ulb, transformed, topics,
                                                                                 workers):  # fmt: skip
    models, model = transformed

    def logit(raw: np.ndarray) -> np.ndarray:
        """The independent computation, from the values sent (float64), not from the worker's code."""
        z = (transform(raw, model["feature_transforms"]) - model["mean"]) / model["scale"]
        return z @ np.asarray(model["weights"]) + model["bias"]

    extreme = outside_the_training_range(ulb.features, logit)
    rows = np.concatenate([ulb.features, extreme])
    n = len(rows)

    def event(i: int, prefix: str = "tx", **over: object) -> bytes:
        doc = {"transaction_id": f"{prefix}-{i}", **dict(zip(ULB_FEATURES, rows[i].tolist(), strict=True)), **over}
        return json.dumps(doc).encode().replace(b'"__too_large__"', b"1e400")

    # NaN, -Infinity and a number beyond float32 in transformed columns: the DLQ, as before transforms; a
    # time 1e4 training standard deviations past the mean too (the clip would score it as the last time seen).
    bad = [event(0, "bad", Amount=float("nan")), event(1, "bad", V3=float("-inf")),
           event(2, "bad", Time="__too_large__"), event(3, "bad", Time=1e9)]  # fmt: skip
    assert 1e9 > model["mean"][TIME] + 1e4 * model["scale"][TIME]
    assert b"NaN" in bad[0] and b"-Infinity" in bad[1] and b'"Time": 1e400' in bad[2]
    sent = produce(
        kafka.producer(linger_ms=20), topics["input_topic"],
        [*((f"acct-{i % 97}".encode(), event(i)) for i in range(n)), *((b"acct-bad", v) for v in bad)],
    )  # fmt: skip
    assert sent == n + len(bad) and n == SLICE + len(extreme)
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models, group=group, **topics).start()
    workers.append(worker)
    worker.wait_ready()
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])
    assert worker.metric("fraud_events_scored_total") == n
    assert worker.stop() == 0

    z = (transform(rows, model["feature_transforms"]) - model["mean"]) / model["scale"]
    expected = 1.0 / (1.0 + np.exp(-logit(rows)))
    assert np.isfinite(expected).all()
    # The rows with Time or Amount beyond their clips score away from 0 and 1, where a wrong clip would show.
    clipped = expected[SLICE:][[0, 1, 2, 3, 4, 5, 9, 10]]
    assert ((clipped > 0.01) & (clipped < 0.99)).all(), clipped

    docs = {d["transaction_id"]: d for d in (json.loads(r.value) for r in read_topic(kafka, topics["scores_topic"]))}
    assert len(docs) == n and all(d["model_version"] == "t1" for d in docs.values())
    got = np.array([docs[f"tx-{i}"]["score"] for i in range(n)])
    diff = np.abs(got - expected)
    print(f"\nmax |worker - float64| over {n} events: {diff.max():.2g}; over the {len(extreme)} outside the "
          f"training range: {diff[SLICE:].max():.2g} (scores {np.round(got[SLICE:], 4).tolist()})")  # fmt: skip
    assert diff.max() <= 1e-5
    assert diff[SLICE:].max() <= 1e-5

    for i in (*range(0, SLICE, 997), *range(SLICE, n)):
        for r in docs[f"tx-{i}"]["reasons"]:
            j = ULB_FEATURES.index(r["feature"])
            assert r["contribution"] == pytest.approx(model["weights"][j] * z[i, j], abs=2e-4), (i, r)
            assert np.float32(r["value"]) == np.float32(rows[i, j]), (i, r)
    alerts = {r.key.decode(): json.loads(r.value) for r in read_topic(kafka, topics["alert_topic"])}
    borderline = {f"tx-{i}" for i in np.flatnonzero(np.abs(expected - model["threshold"]) <= 1e-5)}
    assert set(alerts) - borderline == {f"tx-{i}" for i in np.flatnonzero(expected >= model["threshold"])} - borderline
    assert 0 < len(alerts) < n

    dlq = read_topic(kafka, topics["dlq_topic"])
    assert sorted(r.value for r in dlq) == sorted(bad)
    assert sorted(headers(r)["error"] for r in dlq) == ["non_finite"] * 3 + ["out_of_range"]
