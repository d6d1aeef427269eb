"""Scaling and scoring with the LiteRT interpreter: pure computation, no Kafka, no TensorFlow.

``Scorer.score(raw)`` is the one definition of "the model's score" used by the worker, by the
training job's parity check and by the tests, so all three transform, scale and score the same way.
``reference_scores`` is the same contract written out again in float64 from the manifest alone
(no ``Transforms``, no LiteRT); ``Scorer.probe`` holds the served path to it before a bundle serves.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from worker.bundle import Bundle, Manifest, load_bundle
from worker.errors import BundleError
from worker.transforms import FeatureTransform, Transforms

PROBE_TOLERANCE = 1e-4  # |served score - reference_scores| allowed on every probe row


class Scorer:
    """Scores raw feature rows (float, model input order) with one bundle's model.

    Not thread-safe: one interpreter, resized only when the batch size changes.
    """

    def __init__(self, bundle: Bundle, num_threads: int = 1) -> None:
        m = bundle.manifest
        self.bundle = bundle
        self.version = m.version
        self.threshold = float(m.threshold)
        self.feature_names = m.feature_names
        self.mean = np.asarray(m.scaler_mean, dtype=np.float32)
        self.inv_scale = (1.0 / np.asarray(m.scaler_scale, dtype=np.float64)).astype(np.float32)
        self.weights = np.asarray(m.weights, dtype=np.float32)
        self.transforms = Transforms(m.feature_transforms, m.n_features)
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
            raise BundleError(
                f"bundle {m.version}: model input shape {shape} does not take {m.n_features} features"
            )
        self._in = inputs[0]["index"]
        self._out = outputs[0]["index"]
        self._rows = shape[0]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """(transform(raw) - mean) / scale as float32, a new array (the input is never mutated)."""
        out = self.transforms.apply(np.asarray(raw, dtype=np.float32))  # a new array: scaled in place
        out -= self.mean
        out *= self.inv_scale
        return out

    def score_scaled(self, scaled: np.ndarray) -> np.ndarray:
        """Fraud probabilities for already scaled rows, in one interpreter invocation."""
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

    def top_reasons_many(
        self, scaled: np.ndarray, raw: np.ndarray, k: int = 3
    ) -> list[list[tuple[str, float, float]]]:
        """``top_reasons`` for every row of a batch (its scaled and its raw rows), sorted in one numpy call.

        The contribution is weight × transformed, scaled value, rounded to 4 decimals; the value is
        the raw feature as the worker read it (float32), as the shortest decimal that reads back as
        that float32 (``float32_decimals``). Ties keep feature order (stable sort), so a row gets
        the same reasons alone or in a batch.
        """
        contrib = self.contributions(scaled)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(contrib, order, axis=1).astype(np.float64)
        values = float32_decimals(np.take_along_axis(np.asarray(raw, dtype=np.float32), order, axis=1))
        names = self.feature_names
        return [
            [(names[i], round(c, 4), v) for i, c, v in zip(row_order, row_top, row_values, strict=True)]
            for row_order, row_top, row_values in zip(order.tolist(), top.tolist(), values.tolist(), strict=True)
        ]

    def probe(self) -> None:
        """Refuse a bundle whose model, weights, scaler and transforms do not make one consistent scorer.

        Two checks, both from the manifest alone:

        - the scaler's mean of a clipped feature lies in its transformed clip range (the mean of
          values clipped to [lo, hi] and transformed cannot lie outside [kind(lo), kind(hi)]): a
          scaler fitted on other values than the transforms give is refused;
        - the probe rows (``probe_rows``: raw zeros, the raw values the transforms take to the
          scaler's mean, each feature alone one standard deviation above it, and each clipped
          feature alone beyond its bounds) scored through this scorer (transforms, scaler, LiteRT)
          are probabilities within ``PROBE_TOLERANCE`` of ``reference_scores``. A model whose weights
          or bias are not the manifest's, or a transform the scorer does not apply as the contract
          says, fails here.
        """
        m = self.bundle.manifest
        _check_scaler_within_clips(m)
        labels, rows = probe_rows(m)
        expected = reference_scores(m, rows)
        got = self.score(rows).astype(np.float64)
        bad = np.flatnonzero(~((got >= 0.0) & (got <= 1.0)))
        if len(bad):
            i = int(bad[0])
            raise BundleError(f"bundle {self.version}: probe score {got[i]} ({labels[i]}) is not within [0, 1]")
        diff = np.abs(got - expected)
        i = int(np.argmax(diff))
        if diff[i] > PROBE_TOLERANCE:
            raise BundleError(
                f"bundle {self.version}: probe score {got[i]:.6f} ({labels[i]}) disagrees with the manifest's "
                f"{expected[i]:.6f} (its transforms, scaler, weights and bias computed in float64): the model "
                f"and the manifest do not match"
            )


def float32_decimals(values: np.ndarray) -> np.ndarray:
    """float64 values of the shortest decimals (6 to 9 significant digits) that read back as ``values``' float32s.

    ``149.62`` read as float32 is 149.6199951171875; this gives 149.62 back (what the event said,
    when it said it in at most 6 digits), vectorised: at most four numpy passes, none per value.
    Nine digits are always enough for a float32; a value none of them reads back as (only where
    the powers of ten are inexact, beyond 1e22) stays the float64 of the float32, which does.
    """
    x = np.asarray(values, dtype=np.float32)
    v = x.astype(np.float64)
    out = v.copy()
    todo = np.isfinite(v) & (v != 0)
    if not todo.any():
        return out
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.abs(np.where(todo, v, 1.0))))
        for digits in (6, 7, 8, 9):
            decimals = digits - 1 - exponent
            # 10**d is exact up to d = 22, so the division or product rounds once: r is the float64
            # nearest the decimal.
            power = 10.0 ** np.abs(decimals)
            r = np.where(decimals >= 0, np.round(v * power) / power, np.round(v / power) * power)
            ok = todo & (r.astype(np.float32) == x)
            out[ok] = r[ok]
            todo &= ~ok
            if not todo.any():
                break
    return out


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


def load_scorer(models_dir: str, version: str | None = None, num_threads: int = 1) -> Scorer:
    """Load, verify (sha256, feature count, probe through the transforms) and return a ready scorer."""
    scorer = Scorer(load_bundle(models_dir, version), num_threads=num_threads)
    scorer.probe()
    return scorer
