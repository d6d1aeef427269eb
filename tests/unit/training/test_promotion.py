"""The promotion gate keeps a better CURRENT and says so; --force overrides it."""

from __future__ import annotations

import shutil

import numpy as np

from tests.unit.training.conftest import train
from worker.core.bundle import list_versions, read_current


def test_worse_model_is_written_but_not_promoted(trained, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(trained, models)
    good = read_current(models)
    # One epoch at a negligible learning rate leaves the random initial weights: a poor ranking.
    rc = train(models, "--epochs", "1", "--learning-rate", "1e-7", "--seed", "7")
    out = capsys.readouterr().out
    assert rc == 0
    assert read_current(models) == good
    assert len(list_versions(models)) == 2
    assert "not promoted" in out and "worse than CURRENT" in out

    rc = train(models, "--epochs", "1", "--learning-rate", "1e-7", "--force")
    assert rc == 0
    assert read_current(models) != good and len(list_versions(models)) == 3


def test_different_features_are_not_compared(trained, tmp_path, capsys):
    from training.gate import decide

    models = tmp_path / "models"
    shutil.copytree(trained, models)
    d = decide(models, ("V1", "V2"), np.zeros((4, 2)), np.array([0, 1, 0, 1]), 0.99)
    assert not d.promote and "different features" in d.reason
    assert decide(models, ("V1", "V2"), np.zeros((4, 2)), np.array([0, 1, 0, 1]), 0.99, force=True).promote


def test_no_current_promotes(tmp_path):
    from training.gate import decide

    d = decide(tmp_path, ("V1",), np.zeros((2, 1)), np.array([0, 1]), 0.5)
    assert d.promote and "no CURRENT" in d.reason


def test_a_challenger_is_pointed_at_by_challenger_and_current_stays(trained, tmp_path, capsys):
    from worker.core.bundle import CHALLENGER_FILE

    models = tmp_path / "models"
    shutil.copytree(trained, models)
    good = read_current(models)
    assert train(models, "--epochs", "1", "--challenger") == 0
    assert read_current(models) == good, "the champion is untouched"
    challenger = read_current(models, CHALLENGER_FILE)
    assert challenger is not None and challenger != good and challenger in list_versions(models)
    assert "models/CHALLENGER points at it" in capsys.readouterr().out
