"""Fault 7: trouble in the models directory while the worker serves a stream.

CURRENT is pointed in turn at: a version that does not exist; a bundle whose model.tflite is
truncated (its manifest's sha256 rewritten to match, so LiteRT itself must refuse it); a
manifest with one feature fewer than the model; a bundle that cannot be read. "Cannot be read"
is simulated with a manifest.json that is a directory: the tests run as root, for whom chmod
removes no read access, and reading a directory fails with the same OSError path as EACCES.
Each is refused, counted in fraud_model_reloads_total{result="failed"} and logged, and v1 keeps
serving (every score names it); reconciliation finds nothing lost. A worker started on a models
directory with no valid bundle exits 3 with one line (an empty directory is covered by
tests/unit/worker/test_cli.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.broker import REPO
from tests.support.bundles import drop_last_feature, make_bundle
from tests.support.faults import reconcile_run
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, read_topic, wait_committed
from worker.core.bundle import MANIFEST_FILE, MODEL_FILE, sha256_hex

N = 6000


def _point_current(models: Path, version: str) -> None:
    """Write CURRENT as the training job does (temp file + rename), without its sanity check."""
    tmp = models / ".CURRENT.test"
    tmp.write_text(version + "\n")
    os.replace(tmp, models / "CURRENT")


def _truncated(models: Path, model: dict) -> str:
    bundle = make_bundle(models, "v3-truncated", promote=False, **model)
    data = (bundle / MODEL_FILE).read_bytes()[:200]
    (bundle / MODEL_FILE).write_bytes(data)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["model_sha256"] = sha256_hex(data)
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    return bundle.name


def _unreadable(models: Path, model: dict) -> str:
    bundle = make_bundle(models, "v5-unreadable", promote=False, **model)
    (bundle / MANIFEST_FILE).unlink()
    (bundle / MANIFEST_FILE).mkdir()
    return bundle.name


def test_bad_bundles_are_refused_counted_and_logged_while_v1_serves(kafka, ulb, models_dir, topics, workers):
    group = kafka.group()
    worker = WorkerProcess(
        kafka.bootstrap, models_dir, group=group, **topics, extra=["--max-batch-size", "100"]
    ).start()
    workers.append(worker)
    worker.wait_ready()
    stream = Stream(kafka.producer(linger_ms=10), topics["input_topic"],
                    [(f"acct-{i % 7}".encode(), ulb.event(i)) for i in range(N)], rate=600)  # fmt: skip
    stream.start()
    worker.wait_metric("fraud_events_scored_total", 500)

    wrong_width = make_bundle(models_dir, "v4-29-features", promote=False, **ulb.model)
    drop_last_feature(wrong_width)
    troubles = ["v2-missing", _truncated(models_dir, ulb.model), wrong_width.name, _unreadable(models_dir, ulb.model)]
    for k, version in enumerate(troubles, start=1):
        _point_current(models_dir, version)
        worker.wait_metric("fraud_model_reloads_total", k, labels={"result": "failed"}, timeout=30)
        time.sleep(0.3)
        assert worker.metric("fraud_model_info", {"version": "v1"}) == 1
    assert stream.is_alive(), "the troubles came mid-stream"
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])
    assert worker.metric("fraud_model_reloads_total", {"result": "failed"}) == len(troubles)
    assert worker.metric("fraud_model_reloads_total", {"result": "ok"}) == 0
    assert worker.proc.poll() is None and worker.stop() == 0

    refusals = [line for line in worker.output().splitlines() if "model reload refused" in line]
    assert len(refusals) == len(troubles), refusals
    for version, line in zip(troubles, refusals, strict=True):
        assert version in line and "still serving v1" in line, line
    versions = {json.loads(r.value)["model_version"] for r in read_topic(kafka, topics["scores_topic"])}
    assert versions == {"v1"}
    report = reconcile_run(kafka.bootstrap, group, topics)
    assert report.records == N and report.lost == 0 and report.wrong_alerts == 0 and report.missing_alerts == 0
    print("refused, each logged once:\n  " + "\n  ".join(refusals))


def test_worker_started_with_only_a_broken_bundle_exits_3_with_one_line(tmp_path, ulb):
    models = tmp_path / "models"
    models.mkdir()
    _point_current(models, _truncated(models, ulb.model))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    proc = subprocess.run([sys.executable, "-m", "worker", "--models-dir", str(models), "--metrics-port", "0",
                           "--bootstrap-servers", "127.0.0.1:1"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fraud-worker")]
    assert len(lines) == 1 and "no servable model" in lines[0] and "v3-truncated" in lines[0], proc.stderr
