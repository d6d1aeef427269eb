"""The contract every bundle meets: scores in [0, 1], input untouched, equal to the reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.bundles import corrupt_sha256, drop_last_feature, make_bundle
from worker.errors import BundleError
from worker.scoring import load_scorer


def _reference(spec, raw: np.ndarray) -> np.ndarray:
    scaled = (raw - np.asarray(spec["mean"])) / np.asarray(spec["scale"])
    return 1 / (1 + np.exp(-(scaled @ np.asarray(spec["weights"]) + spec["bias"])))


def test_scores_are_probabilities_equal_to_the_reference_and_input_is_untouched(models, bundle_spec):
    scorer = load_scorer(str(models))
    rng = np.random.default_rng(7)
    for n in (1, 5, 64, 5, 300):  # the interpreter is resized only when the batch size changes
        raw = rng.normal(scale=3, size=(n, 6)).astype(np.float32)
        before = raw.copy()
        scores = scorer.score(raw)
        np.testing.assert_array_equal(raw, before)
        assert scores.shape == (n,) and scores.dtype == np.float32
        assert ((scores >= 0) & (scores <= 1)).all()
        np.testing.assert_allclose(scores, _reference(bundle_spec, raw.astype(np.float64)), atol=1e-5)
    assert scorer.score(np.empty((0, 6), dtype=np.float32)).shape == (0,)


def test_reasons_in_a_batch_equal_reasons_one_row_at_a_time(models):
    scorer = load_scorer(str(models))
    scaled = scorer.scale(np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32))
    many = scorer.top_reasons_many(scaled, 3)
    assert many == [scorer.top_reasons(row, 3) for row in scaled]
    contrib = scaled[0] * scorer.weights
    assert [c for _, c in many[0]] == sorted((round(float(c), 4) for c in contrib), reverse=True)[:3]


def test_a_bundle_with_a_wrong_sha256_or_feature_count_is_refused(tmp_path, bundle_spec):
    corrupt_sha256(make_bundle(tmp_path, "bad-sha", promote=False, **bundle_spec))
    with pytest.raises(BundleError, match="sha256"):
        load_scorer(str(tmp_path), "bad-sha")
    drop_last_feature(make_bundle(tmp_path, "narrow", promote=False, **bundle_spec))
    with pytest.raises(BundleError, match="features"):
        load_scorer(str(tmp_path), "narrow")
