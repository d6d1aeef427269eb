"""Per-feature transforms a bundle carries, applied before scaling: clip, then kind. Pure numpy.

The manifest's ``feature_transforms`` is a list aligned with ``feature_names``; each entry is
``{"kind": "identity" | "log1p" | "signed_log1p", "clip": [lo, hi] or null}`` (either bound may
be null). A raw value ``x`` becomes ``kind(clip(x))``, and the scaler's ``(t - mean) / scale``
follows (worker/core/scoring.py):

- ``identity(x) = x``
- ``log1p(x) = log(1 + x)``, for columns that are never negative in training; its clip's lower
  bound is set (>= 0), so a negative value at scoring time is clipped first and never gives NaN
- ``signed_log1p(x) = sign(x) * log1p(|x|)``, for heavy tails on both sides

A bundle without the field is read as all identity, so bundles written before it keep serving.
fraud-train sets a clip for every feature, its training ``[min, max]``, so no value scores beyond
the training range (a column without one is bounded after scaling: worker/core/scoring.py).
``Transforms.apply`` is vectorised over a batch: a few numpy calls per batch, none per row;
``Transforms.count_clipped`` counts the values a batch has beyond their clip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from worker.core.errors import BundleError

KINDS = ("identity", "log1p", "signed_log1p")
_TILE_VALUES = 1 << 16  # bounds repeated row by row up to this many values (Transforms._bounds_for)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # manifest numbers are served as float32

# Scaled values are clipped to ±SCALED_LIMIT standard deviations. No training row can lie further than
# sqrt(n - 1) standard deviations from its column's mean (Samuelson's inequality), so 1e4 leaves every
# value of up to 10^8 training rows, and every value inside a training clip, as it is; it only bounds
# values far outside anything the model was fitted on. 1e4 · Σ|w| stays finite in float32 for any
# kernel whose Σ|w| is below 3.4e34.
SCALED_LIMIT = 1e4


@dataclass(frozen=True)
class FeatureTransform:
    """One feature's transform: ``kind`` after clipping to ``clip`` (lo, hi; either may be None)."""

    kind: str = "identity"
    clip: tuple[float | None, float | None] | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "clip": None if self.clip is None else list(self.clip)}

    @classmethod
    def from_dict(cls, data: object, where: str = "feature_transforms") -> FeatureTransform:
        """Read and check one manifest entry; a ``BundleError`` names what is wrong."""
        if not isinstance(data, Mapping):
            raise BundleError(f"manifest {where} is not an object")
        kind = data.get("kind")
        if kind not in KINDS:
            raise BundleError(f"manifest {where} kind {repr(kind)[:80]} is not one of {', '.join(KINDS)}")
        clip = data.get("clip")
        bounds: tuple[float | None, float | None] | None = None
        if clip is not None:
            if not isinstance(clip, Sequence) or isinstance(clip, str) or len(clip) != 2:
                raise BundleError(f"manifest {where} clip must be [lo, hi] or null")
            lo, hi = (_bound(v, where) for v in clip)
            if lo is not None and hi is not None and lo > hi:
                raise BundleError(f"manifest {where} clip has lo {lo} > hi {hi}")
            bounds = (lo, hi)
        if kind == "log1p" and (bounds is None or bounds[0] is None or bounds[0] < 0):
            raise BundleError(f"manifest {where}: a log1p transform needs a clip lower bound >= 0")
        return cls(kind, bounds)


def finite_float(value: object, limit: float = FLOAT32_MAX) -> float | None:
    """``value`` as a float if it is a JSON number (not a bool) with ``|value| <= limit``, else None.

    An integer too large for a float (a 400-digit literal) is None too, never an ``OverflowError``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) and abs(f) <= limit else None


def _bound(value: object, where: str) -> float | None:
    if value is None:
        return None
    bound = finite_float(value)
    if bound is None:
        raise BundleError(f"manifest {where} clip bounds must be finite float32 numbers or null")
    return bound


def read_transforms(data: object, n_features: int) -> tuple[FeatureTransform, ...]:
    """The manifest's ``feature_transforms``: () when absent (all identity), else one per feature."""
    if data is None or (isinstance(data, list) and not data):
        return ()
    if not isinstance(data, Sequence) or isinstance(data, str):
        raise BundleError("manifest feature_transforms must be a list")
    if len(data) != n_features:
        raise BundleError(f"manifest feature_transforms has {len(data)} entries for {n_features} features")
    return tuple(FeatureTransform.from_dict(d, f"feature_transforms[{i}]") for i, d in enumerate(data))


class Transforms:
    """The transforms of every feature, applied to a batch of raw rows at once."""

    def __init__(self, transforms: Sequence[FeatureTransform], n_features: int) -> None:
        ts = list(transforms) or [FeatureTransform()] * n_features
        if len(ts) != n_features:
            raise ValueError(f"{len(ts)} transforms for {n_features} features")
        self.transforms = tuple(ts)
        self.lo = np.array([t.clip[0] if t.clip and t.clip[0] is not None else -np.inf for t in ts])
        self.hi = np.array([t.clip[1] if t.clip and t.clip[1] is not None else np.inf for t in ts])
        self._clipped = _columns(np.flatnonzero(np.isfinite(self.lo) | np.isfinite(self.hi)))
        self._log1p = _columns(np.flatnonzero([t.kind == "log1p" for t in ts]))
        self._signed = _columns(np.flatnonzero([t.kind == "signed_log1p" for t in ts]))
        c = self._clipped
        self._bounds = {np.dtype(np.float32): (self.lo[c].astype(np.float32), self.hi[c].astype(np.float32))}
        self._tiled: dict[tuple[np.dtype, int], tuple[np.ndarray, np.ndarray]] = {}
        self.is_identity = self._clipped is None and self._log1p is None and self._signed is None

    def count_clipped(self, raw: np.ndarray) -> int:
        """How many values of ``raw`` lie beyond their feature's clip (``apply`` moves them to the bound):
        a few numpy calls over the clipped columns, none per row."""
        c = self._clipped
        if c is None or not len(raw):
            return 0
        x = np.asarray(raw)
        lo, hi = self._bounds_for(x.dtype, len(x))
        v = x[:, c]
        return int(np.count_nonzero(v < lo)) + int(np.count_nonzero(v > hi))

    def _bounds_for(self, dtype: np.dtype, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The clipped columns' bounds in ``dtype``, repeated for ``rows`` rows when that is at most
        ``_TILE_VALUES`` values: numpy then compares element by element in one loop, three to five
        times faster than broadcasting a row of bounds over a batch of a few dozen columns."""
        bounds = self._bounds.get(dtype)
        if bounds is None:
            c = self._clipped
            bounds = self._bounds[dtype] = (self.lo[c].astype(dtype), self.hi[c].astype(dtype))
        if rows * len(bounds[0]) > _TILE_VALUES:
            return bounds
        tiled = self._tiled.get((dtype, rows))
        if tiled is None:
            if len(self._tiled) >= 4:  # a few batch sizes at a time (a full batch, the last, a probe chunk)
                self._tiled.clear()
            tiled = self._tiled[(dtype, rows)] = (np.tile(bounds[0], (rows, 1)), np.tile(bounds[1], (rows, 1)))
        return tiled

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """clip, then kind, for every row; a new array of ``raw``'s float dtype (``raw`` is not changed).

        Each step is a few numpy calls on the columns it concerns, in place in the new array where
        those columns are consecutive (a view), else on a copy of them written back.
        """
        x = np.array(raw, dtype=np.result_type(raw, np.float32), copy=True)
        if self.is_identity:
            return x
        if (c := self._clipped) is not None:
            lo, hi = self._bounds_for(x.dtype, len(x))
            v = x[:, c]
            np.maximum(v, lo, out=v)  # np.clip(v, lo, hi), in a third of its time
            np.minimum(v, hi, out=v)
            _store(x, c, v)
        if (c := self._log1p) is not None:
            v = x[:, c]
            np.log1p(v, out=v)
            _store(x, c, v)
        if (c := self._signed) is not None:
            v = x[:, c]
            t = np.abs(v)
            np.log1p(t, out=t)
            np.copysign(t, v, out=v)  # sign(x) * log1p(|x|)
            _store(x, c, v)
        return x


def _columns(index: np.ndarray) -> slice | np.ndarray | None:
    """None for no columns, a slice for consecutive ones (a view, changed in place), else the indices."""
    if not len(index):
        return None
    if index[-1] - index[0] == len(index) - 1:
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _store(x: np.ndarray, columns: slice | np.ndarray, values: np.ndarray) -> None:
    if not isinstance(columns, slice):  # fancy indexing gave a copy: write it back
        x[:, columns] = values
