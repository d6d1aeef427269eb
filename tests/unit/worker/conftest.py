"""A small real bundle for the worker's unit tests (one TFLite conversion per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.bundles import make_bundle

N = 6
SPEC = dict(
    feature_names=tuple(f"f{i}" for i in range(N)),
    mean=np.linspace(-1, 1, N).tolist(),
    scale=np.linspace(0.5, 2, N).tolist(),
    weights=[0.8, -1.2, 0.3, 0.0, 2.0, -0.5],
    bias=-1.5,
    threshold=0.7,
)


@pytest.fixture
def bundle_spec() -> dict:
    return dict(SPEC)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    make_bundle(path, "v1", **SPEC)
    return path
