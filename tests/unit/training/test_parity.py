"""TFLite (via the worker's Scorer) and Keras agree; a bundle failing parity is never written."""

from __future__ import annotations

import numpy as np
import pytest

from training import pipeline
from training.errors import ParityError
from training.export import dense_model, to_tflite
from worker.bundle import Bundle, Manifest, sha256_hex
from worker.scoring import Scorer


def test_scorer_matches_keras_on_random_rows(tmp_path):
    rng = np.random.default_rng(0)
    n = 5
    model = dense_model(n)
    model.build((None, n))
    model.get_layer("fraud").set_weights([rng.normal(size=(n, 1)).astype(np.float32), np.array([-1.5], np.float32)])
    blob = to_tflite(model)
    mean, scale = rng.normal(size=n), rng.uniform(0.5, 3, n)
    kernel, bias = model.get_layer("fraud").get_weights()
    manifest = Manifest(
        version="v1", created_at="2026-01-01T00:00:00Z", feature_names=tuple(f"f{i}" for i in range(n)),
        scaler_mean=tuple(mean), scaler_scale=tuple(scale), weights=tuple(kernel.ravel().tolist()),
        bias=float(bias[0]), threshold=0.5, threshold_policy={}, model_sha256=sha256_hex(blob),
    )
    scorer = Scorer(Bundle(tmp_path, manifest, blob))
    raw = rng.normal(size=(1000, n)) * 4
    keras = model.predict(((raw - mean) / scale).astype(np.float32), verbose=0).ravel()
    assert np.max(np.abs(scorer.score(raw) - keras)) <= 1e-5


def test_parity_failure_writes_no_bundle(tmp_path, monkeypatch):
    """Sabotage the exported model (one weight shifted, which the zero-row probe cannot see): the run
    must stop with ParityError and leave nothing behind."""
    import training.export as export

    real = export.to_tflite

    def skewed(model):
        kernel, bias = model.get_layer("fraud").get_weights()
        model.get_layer("fraud").set_weights([kernel + np.eye(kernel.shape[0], 1, dtype=kernel.dtype) * 0.01, bias])
        try:
            return real(model)
        finally:
            model.get_layer("fraud").set_weights([kernel, bias])

    monkeypatch.setattr(export, "to_tflite", skewed)
    cfg = pipeline.TrainConfig(synthetic_rows=3000, synthetic_fraud_rate=0.03, models_dir=str(tmp_path / "m"),
                               epochs=2, batch_size=1024, min_rows=500)
    with pytest.raises(ParityError):
        pipeline.run(cfg)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
