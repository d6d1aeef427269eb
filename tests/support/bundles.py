"""Model bundles with known weights, built without training.

``tflite_for(weights, bias)`` builds ``training.export.dense_model``, sets the weights and converts
it with ``to_tflite``; TensorFlow is imported in the test process only, and each weight set is
converted once per session (conversion takes seconds). ``make_bundle`` writes a bundle through
the real contract (``worker.core.bundle.write_bundle``), with ``feature_transforms`` (the manifest's
list of ``{"kind", "clip"}``) when given, signed when given a ``signing_key``; helpers below break
one in a chosen way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.core.bundle import MANIFEST_FILE, MODEL_FILE, Manifest, set_current, sha256_hex, write_bundle
from worker.core.transforms import read_transforms

if TYPE_CHECKING:
    from worker.core.signing import SigningKey

ULB_FEATURES = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
_TFLITE: dict[tuple, bytes] = {}


def tflite_for(weights: Sequence[float], bias: float) -> bytes:
    key = (tuple(float(w) for w in weights), float(bias))
    if key not in _TFLITE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from training.export import dense_model, to_tflite

        n = len(key[0])
        model = dense_model(n)
        model.set_weights([np.asarray(key[0], dtype=np.float32).reshape(n, 1), np.asarray([bias], dtype=np.float32)])
        _TFLITE[key] = to_tflite(model)
    return _TFLITE[key]


def make_bundle(
    models_dir: Path,
    version: str,
    *,
    feature_names: Sequence[str],
    mean: Sequence[float],
    scale: Sequence[float],
    weights: Sequence[float],
    bias: float,
    threshold: float,
    model_bytes: bytes | None = None,
    promote: bool = True,
    score_histogram: dict | None = None,
    feature_transforms: Sequence[dict] | None = None,
    signing_key: SigningKey | None = None,
    feature_spec: dict | None = None,
    segment_thresholds: dict | None = None,
) -> Path:
    """Write (and by default promote) a bundle; ``feature_transforms`` None or [] means none (all identity)."""
    model_bytes = model_bytes if model_bytes is not None else tflite_for(weights, bias)
    manifest = Manifest(
        version=version,
        created_at=datetime.now(timezone.utc).isoformat(),
        feature_names=tuple(feature_names),
        scaler_mean=tuple(float(x) for x in mean),
        scaler_scale=tuple(float(x) for x in scale),
        weights=tuple(float(x) for x in weights),
        bias=float(bias),
        threshold=float(threshold),
        threshold_policy={"policy": "fixed", "why": "test bundle"},
        model_sha256=sha256_hex(model_bytes),
        score_histogram=dict(score_histogram or {}),
        feature_transforms=read_transforms(list(feature_transforms or []), len(feature_names)),
        feature_spec=feature_spec,
        segment_thresholds=segment_thresholds,
    )
    manifest.validate()
    path = write_bundle(models_dir, manifest, model_bytes, signing_key=signing_key)
    if promote:
        set_current(models_dir, version)
    return path


def corrupt_sha256(bundle_dir: Path) -> None:
    """Flip one byte of the model so it no longer matches the manifest's sha256."""
    model = bytearray((bundle_dir / MODEL_FILE).read_bytes())
    model[len(model) // 2] ^= 0xFF
    (bundle_dir / MODEL_FILE).write_bytes(bytes(model))


def drop_last_feature(bundle_dir: Path) -> None:
    """Rewrite the manifest for one feature fewer than the model takes (sha256 still right)."""
    data = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    for key in ("feature_names", "scaler_mean", "scaler_scale", "weights"):
        data[key] = data[key][:-1]
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(data))


def swap_weights(bundle_dir: Path, weights: Sequence[float], bias: float) -> None:
    """Replace the model by one with other weights and make the manifest agree (weights, bias,
    model_sha256), leaving any signature.json as it was: a bundle every check but the signature passes."""
    model_bytes = tflite_for(weights, bias)
    data = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    data.update(weights=[float(w) for w in weights], bias=float(bias), model_sha256=sha256_hex(model_bytes))
    (bundle_dir / MODEL_FILE).write_bytes(model_bytes)
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
