"""Keras model -> TFLite flatbuffer bytes, and the parity check of the exported model.

``model.export()`` writes a SavedModel with a serving signature and
``TFLiteConverter.from_saved_model`` converts it cleanly; converting from concrete functions
was seen to produce NaN outputs for this model, so that path is not used.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.transforms import Transforms


def to_tflite(model) -> bytes:
    """Convert a built Keras model to a float32 TFLite model (no quantisation)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="fraud-export-") as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        return converter.convert()


def dense_model(n_features: int, l2: float = 1e-4):
    """The model this project trains: one Dense(1, sigmoid) with an L2-regularised kernel."""
    import tensorflow as tf

    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(n_features,), name="features"),
            tf.keras.layers.Dense(
                1,
                activation="sigmoid",
                kernel_regularizer=tf.keras.regularizers.L2(l2),
                name="fraud",
            ),
        ]
    )
    return model


def keras_inputs(raw: np.ndarray, transforms: Transforms, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """What the Keras model takes for raw rows: the transforms (in float64), then the scaler, as float32."""
    transformed = transforms.apply(np.asarray(raw, dtype=np.float64))
    return ((transformed - mean) / scale).astype(np.float32)


def parity_max_abs_diff(
    model: Any,
    scorer: Any,
    raw: np.ndarray,
    transforms: Transforms,
    mean: np.ndarray,
    scale: np.ndarray,
    lite: np.ndarray | None = None,
) -> float:
    """Max |score| difference between the served path and Keras on the same raw rows.

    The served path is the worker's ``Scorer`` (``worker.core.scoring``: its manifest's transforms in
    float32, its scaler, LiteRT); Keras gets the rows transformed and scaled by ``keras_inputs``.
    ``lite``: the scorer's scores of ``raw`` when already computed.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape[0] == 0:
        return 0.0
    keras = np.asarray(model.predict(keras_inputs(raw, transforms, mean, scale), batch_size=65536, verbose=0))
    served = scorer.score(raw) if lite is None else lite
    return float(np.max(np.abs(np.asarray(served, dtype=np.float64) - keras.reshape(-1).astype(np.float64))))


def outside_rows(
    lo: np.ndarray, hi: np.ndarray, rows: int = 256, seed: int = 0, columns: np.ndarray | None = None
) -> np.ndarray:
    """Rows inside the training range ``[lo, hi]`` except for some features, below or above it.

    In each row, each of ``columns`` (a boolean mask, default every feature) is out of range with
    probability 1/4, half below and half above, by 1 to 10 range-widths (plus 1): every clip bound
    is crossed, a column never negative in training gets negative values, and a row is not made of
    extremes only (which would saturate the sigmoid and make the comparison blind).
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    mask = np.ones(lo.size, dtype=bool) if columns is None else np.asarray(columns, dtype=bool)
    rng = np.random.default_rng(seed)
    out = lo + rng.random((rows, lo.size)) * (hi - lo)
    beyond = rng.uniform(1.0, 10.0, size=(rows, lo.size)) * (hi - lo + 1.0)
    draw = rng.random((rows, lo.size))
    below, above = mask & (draw < 0.125), mask & (draw >= 0.125) & (draw < 0.25)
    out[below] = (lo - beyond)[below]
    out[above] = (hi + beyond)[above]
    return out
