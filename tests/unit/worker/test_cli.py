"""The command line: --help imports no TensorFlow; bad settings exit 2 and no model exits 3, in one line."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.broker import REPO


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    return subprocess.run([sys.executable, *args], cwd=REPO, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_help_imports_no_tensorflow():
    proc = _run("-X", "importtime", "-m", "worker", "--help")
    assert proc.returncode == 0 and "FRAUD_BOOTSTRAP_SERVERS" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert imported, "importtime printed nothing"
    heavy = [m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "training")]
    assert heavy == []


def test_unknown_setting_exits_2_naming_it():
    proc = _run("-m", "worker", env={"FRAUD_BOOTSTRAP_SERVER": "x:1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "FRAUD_BOOTSTRAP_SERVER" in proc.stderr


def test_no_model_exits_3_with_one_line(tmp_path):
    proc = _run("-m", "worker", "--models-dir", str(tmp_path), "--metrics-port", "0")
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0 and "no servable model" in proc.stderr
