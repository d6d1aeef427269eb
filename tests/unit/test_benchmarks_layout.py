"""The benchmarks stand on their own harness: every module imports, none imports the test suite, and
``benchmarks/bench.py --help`` (``make bench``) runs as a script and as a module."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(p for p in (REPO / "benchmarks").glob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth of its code (lazy imports in functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_there_is_a_module_per_benchmark_over_a_harness():
    names = {p.stem for p in MODULES}
    assert {"bench", "harness", "throughput", "naive_loop", "latency_vs_load", "worker_memory", "startup_time",
            "scoring_cost", "backtest_speed", "shadow_cost", "metrics_run"} <= names  # fmt: skip


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_benchmark_imports_the_tests(path):
    bad = sorted(n for n in imported(path) if n == "tests" or n.startswith("tests."))
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_every_benchmark_module_imports(path):
    module = importlib.import_module(f"benchmarks.{path.stem}")
    assert module.__doc__, f"{path.name} says what it measures"


@pytest.mark.parametrize("how", [["benchmarks/bench.py"], ["-m", "benchmarks.bench"]], ids=["script", "module"])
def test_bench_help_runs(how):
    done = subprocess.run([sys.executable, *how, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for option in ("--events", "--repeats", "--guarantees", "--only-scoring", "--only-latency", "--only-backtest",
                   "--only-shadow", "--out", "--plot"):  # fmt: skip
        assert option in done.stdout
