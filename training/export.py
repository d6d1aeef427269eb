"""Keras model -> TFLite flatbuffer bytes.

``model.export()`` writes a SavedModel with a serving signature and
``TFLiteConverter.from_saved_model`` converts it cleanly; converting from concrete functions
was seen to produce NaN outputs for this model, so that path is not used.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


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
