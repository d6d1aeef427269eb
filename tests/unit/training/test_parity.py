"""TFLite (via the worker's Scorer) and Keras agree; a bundle failing parity is never written."""

from __future__ import annotations

import numpy as np
import pytest

from training import pipeline
from training.errors import ParityError
from training.export import dense_model, to_tflite
from worker.core.bundle import Bundle, Manifest, sha256_hex
from worker.core.scoring import Scorer


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


def test_probe_failure_writes_no_bundle(tmp_path, monkeypatch):
    """Sabotage the exported model (one weight shifted): the probe through the manifest sees the model
    disagree with the manifest's weights, the run stops with ParityError and leaves nothing behind."""
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
    with pytest.raises(ParityError, match="fails its probe"):
        pipeline.run(cfg)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_parity_failure_writes_no_bundle(tmp_path, monkeypatch):
    """Keras fed other inputs than the served path computes (no transforms, where the manifest has
    them): model and manifest agree, so the probe passes, and the parity check alone must stop the run."""
    import training.export as export
    from worker.core.transforms import Transforms

    real = export.keras_inputs

    def untransformed(raw, transforms, mean, scale):
        return real(raw, Transforms([], raw.shape[1]), mean, scale)

    monkeypatch.setattr(export, "keras_inputs", untransformed)
    cfg = pipeline.TrainConfig(synthetic_rows=3000, synthetic_fraud_rate=0.03, models_dir=str(tmp_path / "m"),
                               epochs=2, batch_size=1024, min_rows=500)
    with pytest.raises(ParityError, match="TFLite and Keras scores differ"):
        pipeline.run(cfg)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def transformed_model(tmp_path, n=6, seed=1):
    """A random model, a manifest with log1p, signed_log1p and identity features (clipped and not)."""
    from worker.core.transforms import FeatureTransform, Transforms

    rng = np.random.default_rng(seed)
    model = dense_model(n)
    model.build((None, n))
    model.get_layer("fraud").set_weights([rng.normal(size=(n, 1)).astype(np.float32), np.array([-1.0], np.float32)])
    blob = to_tflite(model)
    kinds = [
        FeatureTransform("log1p", (0.0, 5000.0)),
        FeatureTransform("log1p", (2.5, None)),
        FeatureTransform("signed_log1p", (-40.0, 60.0)),
        FeatureTransform("signed_log1p", None),
        FeatureTransform("identity", (-3.0, 3.0)),
        FeatureTransform(),
    ]
    transforms = Transforms(kinds, n)
    lo, hi = np.array([0.0, 2.5, -40.0, -50.0, -3.0, -4.0]), np.array([5000.0, 900.0, 60.0, 50.0, 3.0, 4.0])
    train = lo + rng.random((2000, n)) * (hi - lo)
    mean, scale = pipeline.fit_scaler(transforms.apply(train))
    kernel, bias = model.get_layer("fraud").get_weights()
    manifest = Manifest(
        version="v1", created_at="2026-01-01T00:00:00Z", feature_names=tuple(f"f{i}" for i in range(n)),
        scaler_mean=tuple(mean), scaler_scale=tuple(scale), weights=tuple(kernel.ravel().tolist()),
        bias=float(bias[0]), threshold=0.5, threshold_policy={}, model_sha256=sha256_hex(blob),
        feature_transforms=tuple(kinds),
    )
    return model, Scorer(Bundle(tmp_path, manifest, blob)), transforms, mean, scale, lo, hi, train


def test_parity_covers_the_transforms_inside_and_outside_the_training_range(tmp_path):
    from training.export import keras_inputs, outside_rows, parity_max_abs_diff

    model, scorer, transforms, mean, scale, lo, hi, train = transformed_model(tmp_path)
    outside = outside_rows(lo, hi, rows=400, seed=3)
    assert (outside < lo).any(axis=0).all() and (outside > hi).any(axis=0).all()  # every bound is crossed
    assert (outside[:, 0] < 0).any()  # a log1p column gets negative values
    for rows in (train[:500], outside):
        diff = parity_max_abs_diff(model, scorer, rows, transforms, mean, scale)
        assert diff <= pipeline.PARITY_TOLERANCE
        assert np.isfinite(scorer.score(rows)).all()
    # Not vacuous: Keras fed the rows without the transforms disagrees with the served scores.
    plain = model.predict(((outside - mean) / scale).astype(np.float32), verbose=0).ravel()
    assert np.max(np.abs(scorer.score(outside) - plain)) > 1e-2
    # And keras_inputs is clip, then kind, then the scaler, computed here independently.
    clipped = np.clip(outside, [0, 2.5, -40, -np.inf, -3, -np.inf], [5000, np.inf, 60, np.inf, 3, np.inf])
    t = clipped.copy()
    t[:, :2] = np.log1p(clipped[:, :2])
    t[:, 2:4] = np.sign(clipped[:, 2:4]) * np.log1p(np.abs(clipped[:, 2:4]))
    np.testing.assert_allclose(keras_inputs(outside, transforms, mean, scale), (t - mean) / scale, rtol=1e-6, atol=1e-6)
