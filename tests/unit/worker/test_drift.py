"""PSI of live scores against the training histogram: the formula, the binning and the sliding window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluate import histogram
from worker.core.drift import DriftWindow, Reference, psi

RNG = np.random.default_rng(7)


def fraud_like(n: int, rng: np.random.Generator = RNG) -> np.ndarray:
    """Scores crowded near 0 with a thin tail towards 1, like a fraud model's."""
    return rng.beta(0.4, 12.0, n)


def test_psi_matches_the_formula_by_hand():
    e, a = [50, 30, 20], [30, 30, 40]
    want = sum((x / 100 - y / 100) * math.log((x / 100) / (y / 100)) for x, y in zip(a, e, strict=True))
    assert psi(e, a) == pytest.approx(want)
    assert psi(e, e) == 0.0
    assert psi([1, 1], [2, 0]) > 0  # an empty bin costs a lot, but not infinity
    assert math.isfinite(psi([1, 1], [2, 0]))
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def test_bins_follow_numpy_histogram_edges():
    ref = Reference([0.0, 0.1, 0.5, 1.0], [1, 1, 1])
    scores = np.array([0.0, 0.05, 0.1, 0.49, 0.5, 0.99, 1.0, -0.1, 1.2])
    assert ref.bin_counts(scores).tolist() == [3, 2, 4]  # [0,.1) [.1,.5) [.5,1]; outside: first / last
    counts, _ = np.histogram(scores[:7], bins=ref.edges)
    assert ref.bin_counts(scores[:7]).tolist() == counts.tolist()


@pytest.mark.parametrize(
    "hist",
    [
        {"edges": [0.0, 1.0], "counts": [1.0, 2.0]},
        {"edges": [0.0, 0.5, 0.5, 1.0], "counts": [1.0, 1.0, 1.0]},
        {"edges": [0.0, 0.5, 1.0], "counts": [0.0, 0.0]},
        {"edges": [0.0, 0.5, 1.0], "counts": [-1.0, 2.0]},
    ],
)
def test_malformed_reference_is_refused(hist):
    with pytest.raises(ValueError):
        Reference.from_histogram(hist)


def test_no_histogram_means_no_reference():
    assert Reference.from_histogram({}) is None and Reference.from_histogram(None) is None


def test_training_histogram_has_quantile_edges():
    train = fraud_like(50_000)
    hist = histogram(train, bins=20)
    edges, counts = hist["edges"], hist["counts"]
    assert edges[0] == 0.0 and edges[-1] == 1.0 and all(b > a for a, b in zip(edges, edges[1:], strict=False))
    assert len(counts) == 20 and sum(counts) == 50_000
    assert max(counts) / min(counts) < 1.1  # about 1/20 of the training scores in each bin
    # Ties collapse bins instead of producing empty ones.
    tied = histogram(np.array([0.0] * 900 + [0.7] * 100), bins=20)
    assert tied["edges"] == [0.0, 0.7, 1.0] and tied["counts"] == [900.0, 100.0]


def test_psi_near_zero_on_training_like_scores_and_high_on_shifted_ones():
    ref = Reference.from_histogram(histogram(fraud_like(50_000), bins=20))
    same = DriftWindow(ref, window=10_000)
    for _ in range(25):
        same.add(fraud_like(500))
    assert same.value() < 0.02

    shifted = DriftWindow(ref, window=10_000)
    for _ in range(25):
        shifted.add(np.clip(fraud_like(500) * 3.0, 0, 1))  # every score tripled: e.g. a mis-scaled input feature
    assert shifted.value() > 0.2


def test_window_slides_by_whole_batches_and_forgets_old_scores():
    ref = Reference([0.0, 0.5, 1.0], [1, 1])
    w = DriftWindow(ref, window=1000, min_scores=100)
    assert w.value() is None
    w.add(np.full(50, 0.25))
    assert w.value() is None and w.size == 50  # too few scores to say anything
    for _ in range(20):
        w.add(np.full(100, 0.75))  # the old 0.25 batch falls out of the window
    assert w.size == 1000 and w.counts().tolist() == [0, 1000]
    for _ in range(5):
        w.add(np.r_[np.full(50, 0.25), np.full(50, 0.75)])
    assert w.size == 1000 and w.counts().tolist() == [250, 750]
    assert w.value() == pytest.approx(psi([1, 1], [250, 750]))
