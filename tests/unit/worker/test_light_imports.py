"""The worker side stays light: importing it never pulls in TensorFlow, Keras or the training job."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import worker
import worker.tools

HEAVY = ("tensorflow", "keras", "training", "sklearn", "matplotlib")


def test_importing_every_worker_module_imports_nothing_heavy():
    modules = ["worker"] + [f"worker.{m.name}" for m in pkgutil.iter_modules(worker.__path__) if m.name != "__main__"]
    # The operator tools too: they run in the worker image, which has no training package.
    modules += [f"worker.tools.{m.name}" for m in pkgutil.iter_modules(worker.tools.__path__)]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"worker imports heavy modules: {out}"
