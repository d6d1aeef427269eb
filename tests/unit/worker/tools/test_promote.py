"""fraud-worker promote: CHALLENGER into CURRENT atomically, on labelled evidence from fraud-feedback's stores."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.support.bundles import corrupt_sha256, make_bundle
from worker.core.bundle import CHALLENGER_FILE, read_current, set_current
from worker.feedback.records import Label, Score
from worker.feedback.store import DAY_MS, Store
from worker.programs.fraud_worker import main

SPEC = dict(feature_names=("a", "b"), mean=(0.0, 0.0), scale=(1.0, 1.0), weights=(1.0, -1.0), bias=0.0, threshold=0.5)


@pytest.fixture
def models(tmp_path, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)
    m = tmp_path / "models"
    make_bundle(m, "v1", **SPEC)
    make_bundle(m, "v2", promote=False, **SPEC)
    set_current(m, "v2", CHALLENGER_FILE)
    return m


def evidence(tmp_path, better: bool, n: int = 2000):
    """A store where v2 ranks the frauds first and v1 at random (or the reverse)."""
    rng = np.random.default_rng(1)
    truth = rng.random(n) < 0.05
    good, noise = np.where(truth, 0.9, 0.1), rng.random(n)
    store = Store(tmp_path / "fb" / "partition-0.sqlite", 120 * DAY_MS)
    now = 1_800_000_000_000
    scores = [Score(f"t{i}", "v1", float(noise[i] if better else good[i]), 0.5, now, None) for i in range(n)]
    scores += [Score(f"t{i}", "v2", float(good[i] if better else noise[i]), 0.5, now, None) for i in range(n)]
    store.apply(scores, [Label(f"t{i}", bool(truth[i]), now, "t") for i in range(n)], {})
    store.close()
    return str(tmp_path / "fb")


def test_without_a_challenger_there_is_nothing_to_promote(models, capsys):
    (models / CHALLENGER_FILE).unlink()
    assert main(["promote", "--models-dir", str(models), "--force"]) == 2
    assert "CHALLENGER does not exist" in capsys.readouterr().err


def test_without_evidence_it_refuses_unless_forced(models, capsys):
    assert main(["promote", "--models-dir", str(models)]) == 1
    assert "no labelled evidence" in capsys.readouterr().err and read_current(models) == "v1"
    assert main(["promote", "--models-dir", str(models), "--force"]) == 0
    assert read_current(models) == "v2" and not (models / CHALLENGER_FILE).exists()
    assert "replacing v1" in capsys.readouterr().out


def test_a_better_challenger_is_promoted_and_a_worse_one_refused(models, tmp_path, capsys):
    state = evidence(tmp_path, better=False)
    assert main(["promote", "--models-dir", str(models), "--feedback-state-dir", state]) == 1
    assert "is worse than champion v1's" in capsys.readouterr().err and read_current(models) == "v1"
    (tmp_path / "fb" / "partition-0.sqlite").unlink()
    state = evidence(tmp_path, better=True)
    assert main(["promote", "--models-dir", str(models), "--feedback-state-dir", state]) == 0
    assert read_current(models) == "v2"


def test_too_little_evidence_is_refused(models, tmp_path, capsys):
    state = evidence(tmp_path, better=True, n=200)
    assert main(["promote", "--models-dir", str(models), "--feedback-state-dir", state]) == 1
    assert "too little labelled evidence" in capsys.readouterr().err


def test_a_challenger_that_fails_its_checks_is_refused_even_forced(models, capsys):
    corrupt_sha256(models / "v2")
    assert main(["promote", "--models-dir", str(models), "--force"]) == 1
    assert "fails its checks" in capsys.readouterr().err and read_current(models) == "v1"


def test_a_reader_of_current_never_sees_a_partial_file(models, capsys):
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add((models / "CURRENT").read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(100):
            set_current(models, "v1" if i % 2 else "v2", CHALLENGER_FILE)
            assert main(["promote", "--models-dir", str(models), "--force"]) == 0
    finally:
        stop.set()
        reader.join()
    assert seen == {"v1\n", "v2\n"}, seen
