"""Scaling and scoring with the LiteRT interpreter: pure computation, no Kafka, no TensorFlow.

``Scorer.score(raw)`` is the one definition of "the model's score" used by the worker, by the
training job's parity check and by the tests, so all three transform, scale and score the same way.
worker/core/probe.py writes the same contract out again in float64 from the manifest alone and holds
the served path to it before a bundle serves (``Scorer.probe``).

Every valid event gets a finite score (docs/architecture.md, "The data's way through the code"):

- after scaling, every value is clipped to ±``SCALED_LIMIT`` standard deviations, so a raw value
  that overflows float32 in ``t - mean`` (an unclipped column at 3.4e38) becomes finite;
- a bundle is refused (``BundleError``) unless ``SCALED_LIMIT · Σ|w| + |bias|``, the largest logit
  such values can give, is finite in float32, and its scaler is finite in float32: then no partial
  sum of the dot product can overflow, and the logit is never ``inf - inf`` (NaN);
- should a model output still not be a probability in [0, 1] (NaN, ±inf), the score is
  ``OUT_OF_RANGE_SCORE`` (1.0: the event alerts) and it is counted (``Scored.out_of_range``).

Before any of that, a row is refused (``Scorer.admit``: dead-lettered ``out_of_range``) when a
feature's transformed value, its training clip left aside, lies more than ``SCALED_LIMIT`` training
standard deviations from the training mean: no training data comes near such a value, and clipped it
could score as anything (an event at +3.4e38 in every feature scored 0.0). ``RawRange`` turns that
rule into raw bounds per feature, so a batch is checked with a few comparisons.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from worker.core.bundle import Bundle, Manifest, load_bundle
from worker.core.decimals import float32_decimals
from worker.core.decisions import SegmentThresholds
from worker.core.decode import OUT_OF_RANGE, DecodedBatch, reject_rows
from worker.core.errors import BundleError, DecodeError
from worker.core.probe import check as probe_check
from worker.core.transforms import SCALED_LIMIT, Transforms

if TYPE_CHECKING:
    from worker.core.signing import TrustedKeys

TILE_VALUES = 1 << 16  # RawRange's bounds repeated row by row up to this many values
OUT_OF_RANGE_SCORE = 1.0  # the score of a model output that is not a probability: the event alerts
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Scored(NamedTuple):
    """One batch through ``Scorer.score_batch``: its scaled rows and scores, and what the guards did."""

    scaled: np.ndarray
    scores: np.ndarray
    clipped_training: int  # raw values beyond their feature's training clip (moved to the bound)
    clipped_scaled: int  # scaled values beyond ±SCALED_LIMIT (moved to the limit)
    out_of_range: int  # model outputs not in [0, 1] (NaN, ±inf), scored OUT_OF_RANGE_SCORE


class Scorer:
    """Scores raw feature rows (float, model input order) with one bundle's model.

    Not thread-safe: one interpreter, resized only when the batch size changes.
    """

    def __init__(self, bundle: Bundle, num_threads: int = 1) -> None:
        m = bundle.manifest
        self.bundle = bundle
        self.version = m.version
        self.threshold = float(m.threshold)
        # Thresholds per segment (docs/rules.md): None, or the manifest's, checked when it was read.
        self.segments = SegmentThresholds.from_manifest(m.segment_thresholds)
        self.feature_names = m.feature_names
        # The event's own fields the decoder reads; the feature spec's features (if any) follow them.
        self.spec = m.spec
        self.input_names = m.own_features
        # Every event field it reads: its own numeric ones, then the spec's (entities, categories, time).
        spec_fields = () if self.spec is None else (*self.spec.input_fields, self.spec.time_field)
        self.event_fields = tuple(dict.fromkeys((*self.input_names, *spec_fields)))
        with np.errstate(over="ignore"):  # a float32 overflow here is refused by _check_finite
            self.mean = np.asarray(m.scaler_mean, dtype=np.float32)
            self.inv_scale = (1.0 / np.asarray(m.scaler_scale, dtype=np.float64)).astype(np.float32)
            self.weights = np.asarray(m.weights, dtype=np.float32)
        self.transforms = Transforms(m.feature_transforms, m.n_features)
        self._check_finite(np.asarray(m.weights, dtype=np.float64), float(m.bias))
        self.raw_range = RawRange(m)
        try:
            self._interp = Interpreter(model_content=bundle.model_bytes, num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(
                f"bundle {m.version}: LiteRT cannot load {bundle.path.name}/model.tflite: {exc}"
            ) from None
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"bundle {m.version}: model must have one input and one output")
        shape = tuple(int(d) for d in inputs[0]["shape"])
        if len(shape) != 2 or shape[1] != m.n_features:
            raise BundleError(f"bundle {m.version}: model input shape {shape} does not take {m.n_features} features")
        self._in = inputs[0]["index"]
        self._out = outputs[0]["index"]
        self._rows = shape[0]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def _check_finite(self, weights: np.ndarray, bias: float) -> None:
        """Refuse a bundle whose arithmetic can overflow float32 on clipped scaled values (module doc)."""
        version = self.version
        if not np.isfinite(self.mean).all():
            raise BundleError(f"bundle {version}: scaler_mean is not finite in float32")
        if not (np.isfinite(self.inv_scale).all() and (self.inv_scale > 0).all()):
            raise BundleError(f"bundle {version}: 1 / scaler_scale is not a finite positive float32")
        with np.errstate(over="ignore", invalid="ignore"):
            largest = SCALED_LIMIT * float(np.sum(np.abs(weights))) + abs(bias)
        if not largest < _FLOAT32_MAX:
            raise BundleError(
                f"bundle {version}: {SCALED_LIMIT:g} · Σ|weights| + |bias| = {largest:g} is not finite in float32 "
                f"(the logit of scaled values clipped to ±{SCALED_LIMIT:g} could overflow)"
            )

    def admit(self, decoded: DecodedBatch) -> DecodedBatch:
        """``decoded`` less its rows out of this model's range (``out_of_range_rows``), each moved to its
        errors as ``out_of_range``; ``decoded`` itself when there are none. What every caller scores."""
        if not decoded.index:
            return decoded
        return reject_rows(decoded, self.out_of_range_rows(decoded.features))

    def out_of_range_rows(self, raw: np.ndarray) -> list[tuple[int, DecodeError]]:
        """(row, its ``out_of_range`` error) for each row of ``raw`` beyond this model's range (``RawRange``)."""
        return self.raw_range.rows(raw)

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """(transform(raw) - mean) / scale as float32, clipped to ±SCALED_LIMIT; a new array (the input is
        never mutated)."""
        return self._scale(raw)[0]

    def _scale(self, raw: np.ndarray) -> tuple[np.ndarray, int]:
        """``scale``, and how many scaled values it clipped to ±SCALED_LIMIT (an infinity included)."""
        out = self.transforms.apply(np.asarray(raw, dtype=np.float32))  # a new array: scaled in place
        with np.errstate(over="ignore"):  # t - mean beyond float32 is -inf or inf, clipped below
            out -= self.mean
            out *= self.inv_scale
        if not out.size or (out.max() <= SCALED_LIMIT and out.min() >= -SCALED_LIMIT):
            return out, 0  # the usual batch: two reductions (a NaN fails neither test: it is left to the score guard)
        beyond = int(np.count_nonzero(np.abs(out) > SCALED_LIMIT))
        np.clip(out, -SCALED_LIMIT, SCALED_LIMIT, out=out)
        return out, beyond

    def score_batch(self, raw: np.ndarray) -> Scored:
        """Scale and score raw rows (``scale``, then ``score_scaled``) and count what the guards did."""
        raw = np.asarray(raw, dtype=np.float32)
        scaled, beyond = self._scale(raw)
        scores = self.model_outputs(scaled)
        return Scored(scaled, scores, self.transforms.count_clipped(raw), beyond, _probabilities(scores))

    def score_scaled(self, scaled: np.ndarray) -> np.ndarray:
        """Fraud probabilities for already scaled rows, in one interpreter invocation; an output that is
        not a probability (NaN, ±inf) is OUT_OF_RANGE_SCORE, so no score is ever null."""
        scores = self.model_outputs(scaled)
        _probabilities(scores)
        return scores

    def model_outputs(self, scaled: np.ndarray) -> np.ndarray:
        """The model's outputs for already scaled rows, as LiteRT gives them (no guard: the probe reads them)."""
        x = np.ascontiguousarray(scaled, dtype=np.float32)
        n = x.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float32)
        if n != self._rows:
            self._interp.resize_tensor_input(self._in, [n, self.n_features], strict=False)
            self._interp.allocate_tensors()
            self._rows = n
        self._interp.set_tensor(self._in, x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out).reshape(n).copy()

    def score(self, raw: np.ndarray) -> np.ndarray:
        return self.score_scaled(self.scale(raw))

    def contributions(self, scaled: np.ndarray) -> np.ndarray:
        """Each feature's signed contribution to the logit: weight × scaled value (exact here)."""
        return np.asarray(scaled, dtype=np.float32) * self.weights

    def top_reasons(self, scaled_row: np.ndarray, raw_row: np.ndarray, k: int = 3) -> list[tuple[str, float, float]]:
        """The k features pushing the score up the most: (name, contribution to the logit, raw value)."""
        return self.top_reasons_many(np.asarray(scaled_row)[np.newaxis, :], np.asarray(raw_row)[np.newaxis, :], k)[0]

    def top_reasons_many(self, scaled: np.ndarray, raw: np.ndarray, k: int = 3) -> list[list[tuple[str, float, float]]]:
        """``top_reasons`` for every row of a batch (its scaled and its raw rows), sorted in one numpy call.

        The contribution is weight × transformed, scaled value, rounded to 4 decimals; the value is
        the raw feature as the worker read it (float32), as the shortest decimal that reads back as
        that float32 (``float32_decimals``). Ties keep feature order (stable sort), so a row gets
        the same reasons alone or in a batch.
        """
        order, top, values = self.top_reason_columns(scaled, raw, k)
        names = self.feature_names
        return [
            [(names[i], round(c, 4), v) for i, c, v in zip(row_order, row_top, row_values, strict=True)]
            for row_order, row_top, row_values in zip(order.tolist(), top.tolist(), values.tolist(), strict=True)
        ]

    def top_reason_columns(self, scaled: np.ndarray, raw: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
        """``top_reasons_many`` as three (rows, min(k, n_features)) arrays, reason by reason: the
        features' indices, their contributions (float64, not yet rounded) and their raw values."""
        contrib = self.contributions(scaled)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(contrib, order, axis=1).astype(np.float64)
        values = float32_decimals(np.take_along_axis(np.asarray(raw, dtype=np.float32), order, axis=1))
        return order, top, values

    def probe(self) -> None:
        """Refuse a bundle whose model, weights, scaler and transforms are not one consistent scorer
        (worker/core/probe.py: probe rows through this scorer against the manifest's float64 scores)."""
        probe_check(self)


class RawRange:
    """Each feature's raw values [``lo``, ``hi``] within the scoring range (float64; ±inf: no bound), and the
    rows of a batch beyond them: ``|(kind(x) - scaler_mean) / scaler_scale| > SCALED_LIMIT`` for some
    feature, ``kind`` its transform without its clip, inverted at ``t = mean ± SCALED_LIMIT · scale``:

    - identity: ``t``;
    - log1p: ``expm1(t)`` (inf where it overflows); the lower bound only where it is above 0: a log1p
      column is never negative in training, and a value below its clip (at least 0) is clipped;
    - signed_log1p: ``sign(t) · expm1(|t|)`` (±inf where it overflows).

    A feature spec's features (docs/features.md) have no bounds: the worker computes them.
    """

    def __init__(self, m: Manifest) -> None:
        self.feature_names = m.feature_names
        mean = np.asarray(m.scaler_mean, dtype=np.float64)
        spread = SCALED_LIMIT * np.asarray(m.scaler_scale, dtype=np.float64)
        lo, hi = mean - spread, mean + spread
        kinds = np.array([t.kind for t in m.feature_transforms] or ["identity"] * m.n_features)
        with np.errstate(over="ignore"):  # expm1 beyond float64 is inf: no bound
            log = kinds == "log1p"
            lo[log] = np.where(lo[log] > 0, np.expm1(np.maximum(lo[log], 0.0)), -np.inf)
            hi[log] = np.expm1(hi[log])
            signed = kinds == "signed_log1p"
            for t in (lo, hi):
                t[signed] = np.copysign(np.expm1(np.abs(t[signed])), t[signed])
        # The feature spec's features are computed here, not sent: an extreme one (a ratio over a tiny mean)
        # is no bad input. The training clip and the scaled limit bound it; its event is scored.
        n_own = len(m.own_features)
        lo[n_own:], hi[n_own:] = -np.inf, np.inf
        self.lo, self.hi = lo, hi
        # The float32 bounds rounded outwards: a float32 is beyond one exactly when it is beyond the float64 one.
        self._float32 = (_float32_above(lo), _float32_below(hi))
        self._tiled: dict[tuple[np.dtype, int], tuple[np.ndarray, np.ndarray]] = {}

    def rows(self, raw: np.ndarray) -> list[tuple[int, DecodeError]]:
        """(row, its ``out_of_range`` error) for each row with a value beyond its feature's bounds; the
        usual batch costs two comparisons and two reductions (14 µs for 500 ULB events)."""
        x = np.asarray(raw)
        if x.dtype != np.float32:
            x = x.astype(np.float64)
        if not x.size:
            return []
        lo, hi = self._bounds_for(x.dtype, len(x))
        if (x >= lo).all() and (x <= hi).all():
            return []  # the usual batch (a NaN, which the decoder refuses, fails this test but no bound)
        beyond = (x < lo) | (x > hi)
        return [(int(j), self._error(x[j], beyond[j])) for j in np.flatnonzero(beyond.any(axis=1))]

    def _bounds_for(self, dtype: np.dtype, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The bounds in ``dtype``, repeated for ``rows`` rows up to ``TILE_VALUES`` values: compared element
        by element, five times faster than a row of bounds broadcast over a batch (as ``Transforms`` does)."""
        bounds = self._float32 if dtype == np.float32 else (self.lo, self.hi)
        if rows * len(bounds[0]) > TILE_VALUES:
            return bounds
        tiled = self._tiled.get((dtype, rows))
        if tiled is None:
            if len(self._tiled) >= 4:  # a few batch sizes at a time
                self._tiled.clear()
            tiled = self._tiled[(dtype, rows)] = (np.tile(bounds[0], (rows, 1)), np.tile(bounds[1], (rows, 1)))
        return tiled

    def _error(self, row: np.ndarray, beyond: np.ndarray) -> DecodeError:
        """One row's error: its first feature out of range, the value and the range (and how many more)."""
        columns = np.flatnonzero(beyond)
        j = int(columns[0])
        more = f" (and {len(columns) - 1} more features)" if len(columns) > 1 else ""
        return DecodeError(
            OUT_OF_RANGE,
            f"{self.feature_names[j]!r:.80} is {row[j]!s}, more than {SCALED_LIMIT:g} training standard deviations "
            f"from its mean (its range [{self.lo[j]:.7g}, {self.hi[j]:.7g}]){more}",
        )


def _float32_above(bounds: np.ndarray) -> np.ndarray:
    """The least float32 >= each bound: a float32 is below the float64 bound exactly when it is below it."""
    with np.errstate(over="ignore"):
        out = bounds.astype(np.float32)
    low = out.astype(np.float64) < bounds
    out[low] = np.nextafter(out[low], np.float32(np.inf))
    return out


def _float32_below(bounds: np.ndarray) -> np.ndarray:
    """The greatest float32 <= each bound: a float32 is above the float64 bound exactly when it is above it."""
    return -_float32_above(-bounds)


def _probabilities(scores: np.ndarray) -> int:
    """Set every score not within [0, 1] (NaN, ±inf) to OUT_OF_RANGE_SCORE, in place; how many there were."""
    if not scores.size or (scores.min() >= 0.0 and scores.max() <= 1.0):
        return 0  # the usual batch: two reductions (a NaN fails both tests)
    bad = ~((scores >= 0.0) & (scores <= 1.0))
    scores[bad] = OUT_OF_RANGE_SCORE
    return int(np.count_nonzero(bad))


def load_scorer(
    models_dir: str,
    version: str | None = None,
    num_threads: int = 1,
    trusted_keys: TrustedKeys | None = None,
    min_version: str | None = None,
) -> Scorer:
    """Load, verify (signature with ``trusted_keys``, not older than ``min_version``, sha256, feature
    count, probe through the transforms) and return a ready scorer."""
    scorer = Scorer(load_bundle(models_dir, version, trusted_keys, min_version), num_threads=num_threads)
    scorer.probe()
    return scorer
