"""One small synthetic training run shared by the training tests (trained once per module)."""

from __future__ import annotations

import pytest

try:
    from training.model import import_tensorflow

    import_tensorflow()  # quietly, before anything else imports it
except ImportError:
    pytest.skip("the training extra is not installed", allow_module_level=True)

FAST = ["--epochs", "8", "--batch-size", "1024", "--learning-rate", "0.05", "--min-rows", "500", "-q"]


def train(models_dir, *extra: str, rows: int = 6000, seed: int = 7, fraud_rate: float = 0.03) -> int:
    from training.fraud_train import main

    return main(
        ["--synthetic", str(rows), "--fraud-rate", str(fraud_rate), "--seed", str(seed),
         "--models-dir", str(models_dir), *FAST, *extra]
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A models directory holding one promoted bundle trained on synthetic rows."""
    models = tmp_path_factory.mktemp("models")
    assert train(models) == 0
    return models
