"""A short run of every fuzz target (``make fuzz`` runs the full campaign): a few hundred inputs
each, derandomized, through the same targets and runner; any failure names its first input."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz import TARGETS
from fuzz.core import run

# Examples per target: a few hundred inputs each, a few seconds in all (the bundle target loads a
# model per example that passes, the decoder's examples are batches).
SMOKE_EXAMPLES = {"decode": 20, "records": 30, "bundle": 100, "pointer": 200, "training_data": 150, "backtest": 60,
                  "replay": 60, "health": 150, "tail": 60, "settings": 200,
                  "rules": 150}  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_every_target_has_a_smoke_size():
    assert set(SMOKE_EXAMPLES) == set(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_smoke(name: str, workdir: Path):
    report = run(name, workdir, examples=SMOKE_EXAMPLES[name])
    assert report.examples == SMOKE_EXAMPLES[name] and report.inputs >= 100
    failures = "; ".join(f"{f.key} x{f.count}: {f.message} (first input {f.example})" for f in report.distinct.values())
    assert report.failures == 0, failures
