"""The dependency rule between the packages (pyproject.toml ``[tool.importlinter]``, docs/architecture.md).

import-linter builds the import graph of ``worker`` and ``training`` from the sources and checks each
contract: the layers (a package imports only those below it), a core with no Kafka client, HTTP
server or metrics registry, a worker without training's heavy dependencies, training on the core.
The second test proves the check bites: a copy of the sources whose core imports the settings
object is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_every_import_contract_is_kept():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_the_core_importing_the_settings_object_breaks_the_rule(tmp_path):
    for name in ("worker", "training"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    scoring = tmp_path / "worker" / "core" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\nfrom worker.edges.config import WorkerConfig  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "worker.core is not allowed to import worker.edges" in result.stdout, result.stdout
    assert "worker.core.scoring -> worker.edges.config" in result.stdout, result.stdout
