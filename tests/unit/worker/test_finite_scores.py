"""Every valid event gets a finite score, and the bundle probe's memory stays bounded whatever the width.

An event may carry any finite float32 (the decoder's bound): at ±3.4e38 a column without a clip
overflows in ``t - mean`` and the logit used to be ``inf - inf`` (NaN, never an alert, "score":
null). Scaled values are now clipped to ±SCALED_LIMIT and a bundle whose clipped logit could
overflow float32 is refused (worker/core/scoring.py).
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from tests.support.bundles import make_bundle, tflite_for
from tests.unit.worker.test_scoring_contract import transformed
from worker.core.bundle import Bundle, load_bundle
from worker.core.errors import BundleError
from worker.core.probe import reference_scores
from worker.core.scoring import Scorer, load_scorer

TOP = float(np.finfo(np.float32).max)  # 3.4028235e38, the largest value the decoder lets through


def extreme_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """±3.4e38 in every feature, in one feature among normal values, and random mixes of both."""
    rows = [np.full(n, TOP), np.full(n, -TOP), np.where(np.arange(n) % 2, TOP, -TOP)]
    for j in range(n):
        for v in (TOP, -TOP, 3e38, -1e30):
            row = rng.normal(size=n)
            row[j] = v
            rows.append(row)
    mixes = rng.normal(size=(64, n))
    mixes[rng.random((64, n)) < 0.3] = TOP
    mixes[rng.random((64, n)) < 0.3] = -TOP
    return np.vstack([np.asarray(rows), mixes]).astype(np.float32)


@pytest.mark.parametrize("transforms", [False, True], ids=["all-identity-no-clips", "some-columns-unclipped"])
def test_rows_at_the_float32_extremes_score_finite_probabilities_equal_to_the_reference(
    tmp_path, bundle_spec, transforms
):
    spec = transformed(bundle_spec) if transforms else bundle_spec
    make_bundle(tmp_path, "v1", **spec)
    scorer = load_scorer(str(tmp_path))  # the probe passes
    raw = extreme_rows(6, np.random.default_rng(5))
    before = raw.copy()
    scores = scorer.score(raw)
    np.testing.assert_array_equal(raw, before)
    assert np.isfinite(scores).all(), f"{np.count_nonzero(~np.isfinite(scores))} scores are not finite"
    assert ((scores >= 0) & (scores <= 1)).all()
    # Where terms of ±1e4 standard deviations cancel, float32 rounding alone moves the logit by ~1e-3.
    np.testing.assert_allclose(scores, reference_scores(scorer.bundle.manifest, raw), atol=2e-3)
    assert scorer.score(raw[:1])[0] == 1.0 or not transforms  # all at +3.4e38 alerts (logit 1e4 · 1.4 - 1.5)


def test_score_batch_counts_the_values_that_hit_each_bound(tmp_path, bundle_spec):
    make_bundle(tmp_path, "v1", **transformed(bundle_spec))  # f0 clipped to [-2, 2], f3 identity without clip
    scorer = load_scorer(str(tmp_path))
    raw = np.ones((3, 6), dtype=np.float32)  # within every clip (f5's log1p is clipped to [1, inf))
    raw[0, 0], raw[1, 0], raw[2, 0] = 5.0, -2.5, 2.0  # two beyond f0's clip, one on it (not clipped)
    raw[0, 3], raw[2, 3] = TOP, -TOP  # beyond ±1e4 standard deviations once scaled
    raw[1, 3] = 1e3  # scaled: (1e3 - 0) / 1.4 = 714 standard deviations, within the limit
    got = scorer.score_batch(raw)
    assert (got.clipped_training, got.clipped_scaled, got.out_of_range) == (2, 2, 0)
    np.testing.assert_array_equal(got.scaled, scorer.scale(raw))
    np.testing.assert_array_equal(got.scores, scorer.score(raw))
    assert np.abs(got.scaled).max() == np.float32(1e4)
    empty = scorer.score_batch(np.empty((0, 6), dtype=np.float32))
    assert empty.scores.shape == (0,) and empty[2:] == (0, 0, 0)


def test_a_model_output_that_is_not_a_probability_scores_one_and_is_counted(models, monkeypatch):
    scorer = load_scorer(str(models))
    real = Scorer.model_outputs

    def broken(self, scaled):
        out = real(self, scaled)
        out[::2] = np.nan
        out[1] = np.inf
        return out

    monkeypatch.setattr(Scorer, "model_outputs", broken)
    raw = np.zeros((4, 6), dtype=np.float32)
    got = scorer.score_batch(raw)
    assert got.out_of_range == 3 and got.scores.tolist()[:3] == [1.0, 1.0, 1.0]
    assert np.isfinite(scorer.score(raw)).all() and np.isfinite(scorer.score_scaled(scorer.scale(raw))).all()
    with pytest.raises(BundleError, match=r"probe score nan \(raw zeros\) is not within \[0, 1\]"):
        scorer.probe()  # the probe reads the model's own outputs


def test_a_bundle_whose_clipped_logit_can_overflow_float32_is_refused(models):
    bundle = load_bundle(models)
    m = bundle.manifest
    for change, message in [
        (dict(weights=(1e35, 0.0, 0.0, 0.0, 0.0, 0.0)), r"Σ\|weights\| \+ \|bias\| = 1e\+39 is not finite in float32"),
        (dict(weights=(3e34, -3e34, 0.0, 0.0, 0.0, 0.0)), "is not finite in float32"),  # inf - inf in the logit
        (dict(bias=1e39), "is not finite in float32"),
        (dict(scaler_mean=(1e39, 0.0, 0.0, 0.0, 0.0, 0.0)), "scaler_mean is not finite in float32"),
        (dict(scaler_scale=(1e-40, 1.0, 1.0, 1.0, 1.0, 1.0)), "1 / scaler_scale is not a finite positive float32"),
        (dict(scaler_scale=(1e46, 1.0, 1.0, 1.0, 1.0, 1.0)), "1 / scaler_scale is not a finite positive float32"),
    ]:
        with pytest.raises(BundleError, match=message):
            Scorer(Bundle(bundle.path, dataclasses.replace(m, **change), bundle.model_bytes))
    Scorer(Bundle(bundle.path, dataclasses.replace(m, weights=(3e29, 0.0, 0.0, 0.0, 0.0, 0.0)), bundle.model_bytes))


def test_the_probe_in_chunks_still_finds_a_wrong_weight_in_a_later_chunk(tmp_path, bundle_spec, monkeypatch):
    import worker.core.probe

    monkeypatch.setattr(worker.core.probe, "PROBE_CHUNK_VALUES", 12)  # two rows of six features per chunk
    spec = dict(bundle_spec, mean=[0.0] * 6)  # raw zeros are the centre: only f5's own row shows its weight
    other = list(spec["weights"])
    other[5] += 0.05  # its one-sd row is row 7, in the fourth chunk
    make_bundle(tmp_path, "skewed", promote=False, model_bytes=tflite_for(other, spec["bias"]), **spec)
    with pytest.raises(BundleError, match=r"probe score .*\(f5 one sd above its mean\) disagrees"):
        load_scorer(str(tmp_path), "skewed")
    make_bundle(tmp_path, "v1", **transformed(bundle_spec))
    load_scorer(str(tmp_path), "v1")


WIDE = 3000


def test_the_probe_of_a_wide_bundle_stays_under_a_memory_bound(tmp_path):
    """3,000 features, each clipped: 9,002 probe rows, 216 MB in float64 at once; in chunks a few MB."""
    rng = np.random.default_rng(11)
    make_bundle(
        tmp_path, "wide", feature_names=[f"f{j}" for j in range(WIDE)], mean=[0.0] * WIDE, scale=[1.0] * WIDE,
        weights=(rng.normal(size=WIDE) / np.sqrt(WIDE)).tolist(), bias=-2.0, threshold=0.5,
        feature_transforms=[{"kind": "identity", "clip": [-5.0, 5.0]}] * WIDE,
    )  # fmt: skip
    scorer = Scorer(load_bundle(tmp_path, "wide"))
    tracemalloc.start()
    try:
        scorer.probe()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"the probe of {WIDE} features took {peak / 2**20:.0f} MB"
