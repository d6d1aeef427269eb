"""The worker side stays light: importing it never pulls in TensorFlow, Keras or the training job."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import worker

HEAVY = ("tensorflow", "keras", "training", "sklearn", "matplotlib")


def test_importing_every_worker_module_imports_nothing_heavy():
    # Every package and module under worker/, the programs too: they run in the worker image, which
    # has no training package.
    found = pkgutil.walk_packages(worker.__path__, "worker.")
    modules = ["worker"] + [m.name for m in found if not m.name.endswith("__main__")]
    assert "worker.programs.fraud_replay" in modules and "worker.core.scoring" in modules, modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"worker imports heavy modules: {out}"
