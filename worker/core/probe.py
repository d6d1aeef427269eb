"""The probe a bundle passes before it serves: the served path held to the manifest's own arithmetic.

``reference_scores`` is the scoring contract written out again in float64 from the manifest alone
(no ``Transforms``, no LiteRT); ``check(scorer)`` scores ``probe_rows`` through the scorer and
compares. Run at start and on every hot reload (worker/models/watcher.py through ``Scorer.probe``) and by
the training job before it writes a bundle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.core.bundle import Manifest
from worker.core.errors import BundleError
from worker.core.transforms import SCALED_LIMIT, FeatureTransform

PROBE_TOLERANCE = 1e-4  # |served score - reference_scores| allowed on every probe row
# The probe's rows are made, scored and compared a chunk at a time, each chunk at most this many raw values
# (a few MB in float64), so its memory stays bounded whatever the feature count (all rows at once took
# memory in proportion to the square of the feature count: +1.1 GB at 4,000 features).
PROBE_CHUNK_VALUES = 1 << 18


def check(scorer: Any) -> None:
    """Refuse a bundle whose model, weights, scaler and transforms do not make one consistent scorer.

    Three checks, all from the manifest alone:

    - the scaler's mean of a clipped feature lies in its transformed clip range (the mean of
      values clipped to [lo, hi] and transformed cannot lie outside [kind(lo), kind(hi)]): a
      scaler fitted on other values than the transforms give is refused;
    - the probe rows (``probe_rows``: raw zeros, the raw values the transforms take to the
      scaler's mean, each feature alone one standard deviation above it, and each clipped
      feature alone beyond its bounds) scored through the scorer (transforms, scaler, LiteRT)
      are probabilities within ``PROBE_TOLERANCE`` of ``reference_scores``. A model whose weights
      or bias are not the manifest's, or a transform the scorer does not apply as the contract
      says, fails here. The rows are made and compared ``PROBE_CHUNK_VALUES`` raw values at a time;
    - two rows with every feature at the float32 extremes (±3.4e38) score probabilities: the
      scorer's ±``SCALED_LIMIT`` guard (worker/core/scoring.py) is in place. (Compared with nothing:
      their logits are so large that float32 rounding alone can move a score.)
    """
    m = scorer.bundle.manifest
    contract = _Contract(m)
    _check_scaler_within_clips(m, contract.specs)
    plan = _Plan(m, contract.specs)
    step = max(1, PROBE_CHUNK_VALUES // max(1, m.n_features))
    for start in range(0, plan.n_rows, step):
        rows = plan.rows(start, min(start + step, plan.n_rows))
        expected = contract.scores(rows)
        got = _outputs(scorer, rows, lambda i, start=start: plan.label(start + i))
        diff = np.abs(got - expected)
        i = int(np.argmax(diff))
        if diff[i] > PROBE_TOLERANCE:
            raise BundleError(
                f"bundle {scorer.version}: probe score {got[i]:.6f} ({plan.label(start + i)}) disagrees with the "
                f"manifest's {expected[i]:.6f} (its transforms, scaler, weights and bias computed in float64): the "
                f"model and the manifest do not match"
            )
    extremes = ("every feature at 3.4e38", "every feature at -3.4e38")
    _outputs(scorer, extreme_rows(m.n_features), extremes.__getitem__)


def _outputs(scorer: Any, rows: np.ndarray, label: Any) -> np.ndarray:
    """The scorer's model outputs for raw ``rows`` (float64), each a probability, else a BundleError."""
    got = scorer.model_outputs(scorer.scale(rows)).astype(np.float64)
    bad = np.flatnonzero(~((got >= 0.0) & (got <= 1.0)))
    if len(bad):
        i = int(bad[0])
        raise BundleError(f"bundle {scorer.version}: probe score {got[i]} ({label(i)}) is not within [0, 1]")
    return got


def extreme_rows(n_features: int) -> np.ndarray:
    """Two raw rows, every feature at the largest float32 an event can carry, then at its negative."""
    top = np.finfo(np.float32).max
    return np.array([[top] * n_features, [-top] * n_features], dtype=np.float32)


def _specs(m: Manifest) -> tuple[FeatureTransform, ...]:
    """The manifest's transforms, each checked again by the contract's rules (a Manifest built in code skips
    the reader's checks), all identity when it has none."""
    specs = m.feature_transforms or (FeatureTransform(),) * m.n_features
    if len(specs) != m.n_features:
        raise BundleError(f"manifest feature_transforms has {len(specs)} entries for {m.n_features} features")
    return tuple(FeatureTransform.from_dict(t.to_dict(), f"feature_transforms[{j}]") for j, t in enumerate(specs))


def _kind(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "log1p":
        return np.log1p(x)
    if kind == "signed_log1p":
        return np.copysign(np.log1p(np.abs(x)), x)
    return x


def _inverse(specs: tuple[FeatureTransform, ...], t: np.ndarray) -> np.ndarray:
    """Raw values that the kinds take to ``t`` (one per feature, before any clipping)."""
    kinds = np.array([spec.kind for spec in specs])
    with np.errstate(over="ignore"):  # an infinity here becomes a large finite raw value (probe_rows)
        signed = np.copysign(np.expm1(np.abs(t)), t)
        return np.where(kinds == "log1p", np.expm1(t), np.where(kinds == "signed_log1p", signed, t))


class _Contract:
    """The manifest's scoring contract as float64 arrays, made once per probe (not per chunk)."""

    def __init__(self, m: Manifest) -> None:
        self.specs = _specs(m)
        clips = [spec.clip or (None, None) for spec in self.specs]
        self.lo = np.array([-np.inf if lo is None else lo for lo, _ in clips], dtype=np.float64)
        self.hi = np.array([np.inf if hi is None else hi for _, hi in clips], dtype=np.float64)
        kinds = np.array([spec.kind for spec in self.specs])
        self.log1p = np.flatnonzero(kinds == "log1p")
        self.signed = np.flatnonzero(kinds == "signed_log1p")
        self.mean = np.asarray(m.scaler_mean, dtype=np.float64)
        self.scale = np.asarray(m.scaler_scale, dtype=np.float64)
        self.weights = np.asarray(m.weights, dtype=np.float64)
        self.bias = float(m.bias)

    def scores(self, raw: np.ndarray) -> np.ndarray:
        """clip, then kind, then ``(t - mean) / scale`` clipped to ±SCALED_LIMIT, then ``weights · z + bias``,
        then the sigmoid; each step on every column at once."""
        x = np.minimum(np.maximum(np.array(raw, dtype=np.float64), self.lo), self.hi)
        if len(self.log1p):
            x[:, self.log1p] = _kind("log1p", x[:, self.log1p])
        if len(self.signed):
            x[:, self.signed] = _kind("signed_log1p", x[:, self.signed])
        z = np.clip((x - self.mean) / self.scale, -SCALED_LIMIT, SCALED_LIMIT)
        logit = z @ self.weights + self.bias
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-logit))


def reference_scores(m: Manifest, raw: np.ndarray) -> np.ndarray:
    """The manifest's scores for raw rows, in float64, from the contract alone: clip, then kind, then
    ``(t - mean) / scale`` clipped to ±SCALED_LIMIT, then ``weights · z + bias``, then the sigmoid.

    Independent of ``Transforms`` and of the model file, so that the probe can hold both to it.
    """
    return _Contract(m).scores(raw)


class _Plan:
    """The probe's raw rows, made a range at a time (``rows``), each with a label (``label``).

    Row 0: raw zeros; row 1: the "centre", whose values the transforms take to the scaler's mean
    (scaled zeros, so it scores about sigmoid(bias)); rows 2 .. n+1: the centre with feature j
    alone one standard deviation above its mean (after the transform), so each weight shows on
    its own; then for each clipped feature, the centre with that feature beyond each bound set.
    """

    def __init__(self, m: Manifest, specs: tuple[FeatureTransform, ...]) -> None:
        mean, scale = np.asarray(m.scaler_mean), np.asarray(m.scaler_scale)
        self.names = m.feature_names
        self.n = m.n_features
        self.centre, self.above = _inverse(specs, mean), _inverse(specs, mean + scale)
        beyond: list[tuple[int, float, str]] = []
        for j, spec in enumerate(specs):
            lo, hi = spec.clip or (None, None)
            if hi is not None:
                beyond.append((j, hi + 1.0 + abs(hi), f"above its clip {hi:g}"))
            if lo is not None:
                beyond.append((j, lo - 1.0 - abs(lo), f"below its clip {lo:g}"))
        self.beyond_column = np.array([j for j, _, _ in beyond], dtype=np.intp)
        self.beyond_value = np.array([v for _, v, _ in beyond], dtype=np.float64)
        self.beyond_label = [f"{self.names[j]} {text}" for j, _, text in beyond]
        self.n_rows = 2 + self.n + len(beyond)

    def label(self, i: int) -> str:
        if i == 0:
            return "raw zeros"
        if i == 1:
            return "the scaler's mean"
        if i < 2 + self.n:
            return f"{self.names[i - 2]} one sd above its mean"
        return self.beyond_label[i - 2 - self.n]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` to ``stop`` (float32, as the decoder gives them)."""
        index = np.arange(start, stop)
        out = np.tile(self.centre, (len(index), 1))
        out[index == 0] = 0.0
        one_sd = np.flatnonzero((index >= 2) & (index < 2 + self.n))
        columns = index[one_sd] - 2
        out[one_sd, columns] = self.above[columns]
        past = np.flatnonzero(index >= 2 + self.n)
        k = index[past] - 2 - self.n
        out[past, self.beyond_column[k]] = self.beyond_value[k]
        # Finite float32 rows, as an event can carry (a transform's inverse can overflow).
        out = np.nan_to_num(out, nan=0.0, posinf=1e30, neginf=-1e30)
        return np.clip(out, -1e30, 1e30).astype(np.float32)


def probe_rows(m: Manifest) -> tuple[list[str], np.ndarray]:
    """Every probe row (float32) and its label at once (``_Plan``); the probe itself takes them in chunks."""
    plan = _Plan(m, _specs(m))
    return [plan.label(i) for i in range(plan.n_rows)], plan.rows(0, plan.n_rows)


def _check_scaler_within_clips(m: Manifest, specs: tuple[FeatureTransform, ...]) -> None:
    mean = m.scaler_mean
    for j, spec in enumerate(specs):
        if spec.clip is None:
            continue
        lo, hi = spec.clip
        bounds = [None if b is None else float(_kind(spec.kind, np.array([b]))[0]) for b in (lo, hi)]
        t_lo, t_hi = bounds
        slack = 1e-6 + 1e-5 * max(abs(b) for b in (0.0, *(b for b in bounds if b is not None)))
        if (t_lo is not None and mean[j] < t_lo - slack) or (t_hi is not None and mean[j] > t_hi + slack):
            raise BundleError(
                f"manifest scaler_mean {mean[j]:g} of {m.feature_names[j]} lies outside its transformed clip range "
                f"[{'-inf' if t_lo is None else f'{t_lo:g}'}, {'inf' if t_hi is None else f'{t_hi:g}'}] "
                f"({spec.kind}, clip {list(spec.clip or ())}): the scaler was not fitted on the transformed values"
            )
