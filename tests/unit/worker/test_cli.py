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


def test_started_with_only_a_tampered_signed_bundle_exits_3_with_one_line(tmp_path, bundle_spec):
    from tests.support.bundles import make_bundle, swap_weights
    from tests.support.keys import make_keys

    keys = make_keys(tmp_path / "keys")
    models = tmp_path / "models"
    swap_weights(make_bundle(models, "v1-tampered", signing_key=keys.signing_key, **bundle_spec),
                 [w * 2 for w in bundle_spec["weights"]], bundle_spec["bias"])  # fmt: skip
    proc = _run("-m", "worker", "--models-dir", str(models), "--metrics-port", "0", "--bootstrap-servers",
                "127.0.0.1:1", env={"FRAUD_TRUSTED_KEYS": str(keys.public)})  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and "no servable model" in line, line
    assert "bundle v1-tampered" in line and f"key {keys.key_id}" in line and "changed after signing" in line, line


def test_started_with_only_an_unsigned_bundle_and_trusted_keys_exits_3(models, tmp_path):
    from tests.support.keys import make_keys

    keys = make_keys(tmp_path / "keys")
    proc = _run("-m", "worker", "--models-dir", str(models), "--metrics-port", "0", "--trusted-keys", str(keys.public))
    assert proc.returncode == 3 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "bundle v1 is not signed" in proc.stderr


def test_a_bad_trusted_key_file_exits_2_with_one_line_naming_it(models, tmp_path):
    bad = tmp_path / "worker.pub"
    bad.write_text("not a key\n")
    proc = _run("-m", "worker", "--models-dir", str(models), "--metrics-port", "0", "--trusted-keys", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and str(bad) in proc.stderr and "trusted_keys" in proc.stderr
