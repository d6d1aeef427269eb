"""Scaling and scoring with the LiteRT interpreter: pure computation, no Kafka, no TensorFlow.

``Scorer.score(raw)`` is the one definition of "the model's score" used by the worker, by the
training job's parity check and by the tests, so all three transform, scale and score the same way.
worker/probe.py writes the same contract out again in float64 from the manifest alone and holds
the served path to it before a bundle serves (``Scorer.probe``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from worker.bundle import Bundle, load_bundle
from worker.decimals import float32_decimals
from worker.errors import BundleError
from worker.transforms import Transforms

if TYPE_CHECKING:
    from worker.signing import TrustedKeys


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
            raise BundleError(f"bundle {m.version}: model input shape {shape} does not take {m.n_features} features")
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
        (worker/probe.py: probe rows through this scorer against the manifest's float64 scores)."""
        from worker.probe import check

        check(self)


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
