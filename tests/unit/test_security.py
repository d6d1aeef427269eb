"""Security basics: nothing from a models directory is ever executed or unpickled, and the
metrics server listens on the loopback address unless told otherwise.

A source scan (AST) over ``worker/`` and ``training/``: no pickle-like module is imported, no
eval/exec/compile of text, no ``np.load(..., allow_pickle=True)``, no Keras model loading (a
saved Keras model can carry code), and no subprocess or os.system/exec*/spawn calls, so no path
from a models directory can reach one. The one process start allowed is the decoder child's
``os.posix_spawn`` in worker/pipeline/decoder_process.py, with a fixed command (``python -m
worker.pipeline.decoder_process``); the test below pins that.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from worker.edges.config import WorkerConfig, load_config

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for pkg in ("worker", "training") for p in (REPO / pkg).rglob("*.py"))
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "subprocess"}
BANNED_BUILTINS = {"eval", "exec", "compile", "__import__"}  # as plain names (Keras' model.compile() is fine)
BANNED_CALLS = {"load_model", "system", "popen", "execv", "execve", "execvp", "spawnv", "spawnl", "startfile",
                "posix_spawn", "posix_spawnp", "fork", "forkpty"}  # fmt: skip


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in BANNED_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            # __import__ with a constant module name from the fixed subcommand table is allowed.
            if name == "__import__" and path.name == "fraud_worker.py":
                continue
            if name == "posix_spawn" and path.name == "decoder_process.py" and _fixed_decoder_command(tree):
                continue
            if name in BANNED_CALLS or (isinstance(func, ast.Name) and name in BANNED_BUILTINS):
                found.append(f"{where} calls {name}()")
            if name == "load" and any(k.arg == "allow_pickle" for k in node.keywords):
                found.append(f"{where} calls load(allow_pickle=...)")
    return found


def _fixed_decoder_command(tree: ast.AST) -> bool:
    """The decoder child's argv is the literal [sys.executable, "-m", "worker.pipeline.decoder_process", fd, fd]."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "argv" for t in node.targets):
            v = node.value
            return (isinstance(v, ast.List) and ast.unparse(v.elts[0]) == "sys.executable"
                    and [getattr(e, "value", None) for e in v.elts[1:3]]
                    == ["-m", "worker.pipeline.decoder_process"])  # fmt: skip
    return False


def test_sources_are_scanned():
    assert len(SOURCES) > 20 and any(p.name == "bundle.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_code_path_unpickles_or_executes(path):
    assert _problems(path) == []


def test_the_scan_catches_what_it_bans(tmp_path):
    sample = tmp_path / "probe.py"
    sample.write_text("import pickle\nfrom subprocess import run\nimport numpy as np\n"
                      "eval('1')\nnp.load('m.npy', allow_pickle=True)\nmodel.compile()\n")  # fmt: skip
    assert len(_problems(sample)) == 4


def test_metrics_server_binds_loopback_by_default():
    assert WorkerConfig().metrics_host == "127.0.0.1"
    assert load_config([], {}).metrics_host == "127.0.0.1"
    assert load_config(["--metrics-host", "0.0.0.0"], {}).metrics_host == "0.0.0.0"
    assert load_config([], {"FRAUD_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


def test_ssl_and_sasl_settings_pass_through_to_kafka_python():
    config = load_config(
        ["--kafka-option", "security_protocol=SASL_SSL", "--kafka-option", "sasl_mechanism=PLAIN"],
        {"FRAUD_KAFKA_SASL_PLAIN_USERNAME": "svc", "FRAUD_KAFKA_SASL_PLAIN_PASSWORD": "pw",
         "FRAUD_KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem"},
    )  # fmt: skip
    for options in (config.consumer_options(), config.producer_options()):
        assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "PLAIN"
        assert options["sasl_plain_username"] == "svc" and options["ssl_cafile"] == "/etc/kafka/ca.pem"
