"""The per-feature transform rule (training/transforms.py): which kind, which clip, and from which rows."""

from __future__ import annotations

import numpy as np
import pytest

from training.transforms import HEAVY_TAIL_IQR, choose, choose_column
from worker.core.transforms import FeatureTransform, Transforms

RNG = np.random.default_rng(11)
N = 20_000


def test_lognormal_column_gets_log1p_clipped_at_its_training_range():
    x = RNG.lognormal(3.0, 1.5, N)
    c = choose_column(x, "amount")
    assert c.transform.kind == "log1p"
    assert c.transform.clip == (float(x.min()), float(x.max()))
    assert c.transform.clip[0] >= 0
    assert c.upper_tail > HEAVY_TAIL_IQR
    assert "log1p" in c.reason and "IQR from the median" in c.reason


def test_count_column_of_mostly_zeros_gets_log1p_with_a_zero_lower_bound():
    x = np.where(RNG.random(N) < 0.9, 0.0, RNG.poisson(RNG.lognormal(2.0, 1.0, N)))
    c = choose_column(x, "chargebacks")
    assert c.transform.kind == "log1p" and c.transform.clip[0] == 0.0


@pytest.mark.parametrize("sample", [lambda n: RNG.standard_t(2, n), lambda n: RNG.laplace(0.0, 3.0, n) ** 3])
def test_symmetric_heavy_tailed_column_gets_signed_log1p(sample):
    x = sample(N)
    c = choose_column(x, "v")
    assert c.transform.kind == "signed_log1p"
    assert c.transform.clip == (float(x.min()), float(x.max()))
    assert c.lower_tail > HEAVY_TAIL_IQR and c.upper_tail > HEAVY_TAIL_IQR


@pytest.mark.parametrize("sample", [
    lambda n: RNG.normal(0.0, 1.0, n),
    lambda n: RNG.normal(500.0, 40.0, n),
    lambda n: RNG.uniform(-5.0, 5.0, n),
    lambda n: RNG.uniform(0.0, 1000.0, n),
])  # fmt: skip
def test_normal_and_uniform_columns_stay_identity_clipped_to_their_training_range(sample):
    x = sample(N)
    c = choose_column(x, "x")
    assert c.transform.kind == "identity" and c.transform.clip == (x.min(), x.max())
    assert "identity, clipped to [" in c.reason


def test_nearly_constant_column_stays_identity_clipped_to_its_training_range():
    x = np.zeros(N)
    x[:5] = 7.0  # fewer than 0.1 % of the rows
    assert choose_column(x, "rare").transform == FeatureTransform("identity", (0.0, 7.0))


def test_bounds_come_from_the_rows_given_only():
    """A value only in the rows not given (validation, test) moves no bound."""
    train = RNG.lognormal(2.0, 1.2, N)
    test = np.array([-50.0, 1e9])
    c_train = choose_column(train, "a")
    assert c_train.transform.clip == (float(train.min()), float(train.max()))
    assert choose_column(np.concatenate([train, test]), "a").transform.clip != c_train.transform.clip


def test_choose_is_per_column_and_the_worker_applies_it_without_nan():
    X = np.column_stack([RNG.lognormal(3, 1.5, N), RNG.standard_t(2, N), RNG.normal(size=N)])
    choices = choose(X, ["amount", "v", "z"])
    assert [c.transform.kind for c in choices] == ["log1p", "signed_log1p", "identity"]
    assert [c.to_dict()["name"] for c in choices] == ["amount", "v", "z"]
    transforms = Transforms([c.transform for c in choices], 3)
    scoring = np.array([[-10.0, -1e12, 3.0], [1e15, 1e12, -4.0]])  # beyond every training bound
    out = transforms.apply(scoring)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], np.log1p([X[:, 0].min(), X[:, 0].max()]))
    # identity, clipped to the training range (which depends on the draws: the module's RNG is shared, and
    # which tests ran before this one on the same xdist worker decides them)
    np.testing.assert_allclose(out[:, 2], np.clip(scoring[:, 2], X[:, 2].min(), X[:, 2].max()))
    with pytest.raises(ValueError):
        choose(X, ["amount", "v"])
