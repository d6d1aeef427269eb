"""A real model bundle for the targets that score: ULB's 30 features, known weights, signed.

Built once per campaign through the project's own writer (``tests.support.bundles``: one TFLite
conversion, a few seconds); ``scorer(workdir)`` loads it as the worker does.
"""

from __future__ import annotations

import hashlib
import shutil
from functools import cache
from pathlib import Path

import numpy as np

from fuzz.gen import ULB_FEATURES

VERSION = "20260101T000000Z-f022f022"


@cache
def models(workdir: Path) -> tuple[Path, Path]:
    """(models directory with the signed bundle VERSION as CURRENT, the trusted public key file)."""
    from tests.support.bundles import make_bundle, tflite_for
    from tests.support.keys import make_keys

    root = workdir / "fixture"
    shutil.rmtree(root, ignore_errors=True)
    keys = make_keys(root / "keys", "fuzz")
    n = len(ULB_FEATURES)
    rng = np.random.default_rng(20260101)
    weights = rng.normal(0, 1, n).round(4).tolist()
    cached = workdir / f"model-{hashlib.sha256(repr(weights).encode()).hexdigest()[:12]}.tflite"
    if not cached.is_file():  # a TFLite conversion takes seconds: once per work directory
        cached.write_bytes(tflite_for(weights, -2.0))
    make_bundle(
        root / "models", VERSION, feature_names=ULB_FEATURES, mean=rng.normal(0, 1, n).tolist(),
        scale=rng.uniform(0.5, 3, n).tolist(), weights=weights, bias=-2.0, threshold=0.7,
        model_bytes=cached.read_bytes(), signing_key=keys.signing_key,
    )  # fmt: skip
    return root / "models", keys.public


@cache
def scorer(workdir: Path):  # type: ignore[no-untyped-def]
    from worker.core.scoring import load_scorer

    return load_scorer(str(models(workdir)[0]))
