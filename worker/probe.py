"""The probe a bundle passes before it serves: the served path held to the manifest's own arithmetic.

``reference_scores`` is the scoring contract written out again in float64 from the manifest alone
(no ``Transforms``, no LiteRT); ``check(scorer)`` scores ``probe_rows`` through the scorer and
compares. Run at start and on every hot reload (worker/models.py through ``Scorer.probe``) and by
the training job before it writes a bundle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.bundle import Manifest
from worker.errors import BundleError
from worker.transforms import FeatureTransform

PROBE_TOLERANCE = 1e-4  # |served score - reference_scores| allowed on every probe row


def check(scorer: Any) -> None:
    """Refuse a bundle whose model, weights, scaler and transforms do not make one consistent scorer.

    Two checks, both from the manifest alone:

    - the scaler's mean of a clipped feature lies in its transformed clip range (the mean of
      values clipped to [lo, hi] and transformed cannot lie outside [kind(lo), kind(hi)]): a
      scaler fitted on other values than the transforms give is refused;
    - the probe rows (``probe_rows``: raw zeros, the raw values the transforms take to the
      scaler's mean, each feature alone one standard deviation above it, and each clipped
      feature alone beyond its bounds) scored through the scorer (transforms, scaler, LiteRT)
      are probabilities within ``PROBE_TOLERANCE`` of ``reference_scores``. A model whose weights
      or bias are not the manifest's, or a transform the scorer does not apply as the contract
      says, fails here.
    """
    m = scorer.bundle.manifest
    _check_scaler_within_clips(m)
    labels, rows = probe_rows(m)
    expected = reference_scores(m, rows)
    got = scorer.score(rows).astype(np.float64)
    bad = np.flatnonzero(~((got >= 0.0) & (got <= 1.0)))
    if len(bad):
        i = int(bad[0])
        raise BundleError(f"bundle {scorer.version}: probe score {got[i]} ({labels[i]}) is not within [0, 1]")
    diff = np.abs(got - expected)
    i = int(np.argmax(diff))
    if diff[i] > PROBE_TOLERANCE:
        raise BundleError(
            f"bundle {scorer.version}: probe score {got[i]:.6f} ({labels[i]}) disagrees with the manifest's "
            f"{expected[i]:.6f} (its transforms, scaler, weights and bias computed in float64): the model "
            f"and the manifest do not match"
        )


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


def reference_scores(m: Manifest, raw: np.ndarray) -> np.ndarray:
    """The manifest's scores for raw rows, in float64, column by column from the contract alone:
    clip, then kind, then ``(t - mean) / scale``, then ``weights · z + bias``, then the sigmoid.

    Independent of ``Transforms`` and of the model file, so that the probe can hold both to it.
    """
    x = np.array(raw, dtype=np.float64)
    for j, spec in enumerate(_specs(m)):
        lo, hi = spec.clip or (None, None)
        col = x[:, j]
        if lo is not None:
            col = np.maximum(col, lo)
        if hi is not None:
            col = np.minimum(col, hi)
        x[:, j] = _kind(spec.kind, col)
    z = (x - np.asarray(m.scaler_mean)) / np.asarray(m.scaler_scale)
    logit = z @ np.asarray(m.weights) + m.bias
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logit))


def probe_rows(m: Manifest) -> tuple[list[str], np.ndarray]:
    """The probe's raw rows (float32, as the decoder gives them) and a label for each.

    Raw zeros; the "centre" row, whose values the transforms take to the scaler's mean (scaled
    zeros, so it scores about sigmoid(bias)); for each feature, the centre row with that feature
    alone one standard deviation above its mean (after the transform), so each weight shows on
    its own; and for each clipped feature, the centre row with that feature beyond each bound set.
    """
    specs = _specs(m)
    mean, scale = np.asarray(m.scaler_mean), np.asarray(m.scaler_scale)
    centre, above = _inverse(specs, mean), _inverse(specs, mean + scale)
    labels, rows = ["raw zeros", "the scaler's mean"], [np.zeros_like(centre), centre]
    names = m.feature_names
    for j in range(m.n_features):
        labels.append(f"{names[j]} one sd above its mean")
        rows.append(_with(centre, j, above[j]))
    for j, spec in enumerate(specs):
        lo, hi = spec.clip or (None, None)
        if hi is not None:
            labels.append(f"{names[j]} above its clip {hi:g}")
            rows.append(_with(centre, j, hi + 1.0 + abs(hi)))
        if lo is not None:
            labels.append(f"{names[j]} below its clip {lo:g}")
            rows.append(_with(centre, j, lo - 1.0 - abs(lo)))
    # Finite float32 rows, as an event can carry (a transform's inverse can overflow).
    out = np.nan_to_num(np.asarray(rows), nan=0.0, posinf=1e30, neginf=-1e30)
    return labels, np.clip(out, -1e30, 1e30).astype(np.float32)


def _with(row: np.ndarray, j: int, value: float) -> np.ndarray:
    out = row.copy()
    out[j] = value
    return out


def _check_scaler_within_clips(m: Manifest) -> None:
    mean = m.scaler_mean
    for j, spec in enumerate(_specs(m)):
        lo, hi = spec.clip or (None, None)
        bounds = [None if b is None else float(_kind(spec.kind, np.array([b]))[0]) for b in (lo, hi)]
        t_lo, t_hi = bounds
        slack = 1e-6 + 1e-5 * max(abs(b) for b in (0.0, *(b for b in bounds if b is not None)))
        if (t_lo is not None and mean[j] < t_lo - slack) or (t_hi is not None and mean[j] > t_hi + slack):
            raise BundleError(
                f"manifest scaler_mean {mean[j]:g} of {m.feature_names[j]} lies outside its transformed clip range "
                f"[{'-inf' if t_lo is None else f'{t_lo:g}'}, {'inf' if t_hi is None else f'{t_hi:g}'}] "
                f"({spec.kind}, clip {list(spec.clip or ())}): the scaler was not fitted on the transformed values"
            )
