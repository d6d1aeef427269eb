"""Observability end to end: a real Prometheus scraping a worker on the real broker, and the probes.

- Prometheus (the Debian package, installed by the test setup if missing) scrapes the worker every
  second with the shipped alert rules loaded; its HTTP query API must show the exact counts, the
  per-partition lag, the model info, the drift gauge and the recording rules.
- ``/healthz`` turns 503 when the loop thread stalls (a bundle whose manifest is a FIFO: the reload
  blocks in ``read()`` as on a hung model mount) while ``/metrics`` still answers, and recovers.
- ``/readyz`` turns 503 when the serving model is removed from the models directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np

from tests.support.bundles import make_bundle
from tests.support.prometheus import DEPLOY, PrometheusServer
from tests.support.workers import WorkerProcess, produce, wait_committed
from training.evaluate import histogram
from worker.core.bundle import CURRENT_FILE, MANIFEST_FILE, MODEL_FILE, read_manifest


def training_scores(ulb) -> np.ndarray:
    m = ulb.model
    z = ((ulb.features - np.asarray(m["mean"])) / np.asarray(m["scale"])) @ np.asarray(m["weights"]) + m["bias"]
    return 1.0 / (1.0 + np.exp(-z))


def value(sample: dict) -> float:
    return float(sample["value"][1])


def test_prometheus_scrapes_counts_lag_model_and_drift(kafka, topics, ulb, tmp_path, workers):
    models = tmp_path / "models"
    make_bundle(models, "v1", score_histogram=histogram(training_scores(ulb), bins=20), **ulb.model)
    sha = read_manifest(models / "v1").model_sha256
    group = kafka.group()
    w = WorkerProcess(kafka.bootstrap, models, group=group, **topics)
    workers.append(w.start())
    w.wait_ready()
    prom = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{w.port}"], rule_files=(DEPLOY / "alerts.yml",))
    try:
        prom.start()
        prom.wait_for('up{job="fraud-worker"}', lambda r: value(r[0]) == 1)

        rows = np.random.default_rng(5).choice(len(ulb.labels), 3000, replace=False)
        events = [(str(i).encode(), ulb.event(int(i))) for i in rows]
        events += [(b"bad", b"{oops")] * 20 + [(b"bad", b'{"transaction_id": "t"}')] * 10
        produce(kafka.producer(), topics["input_topic"], events)
        wait_committed(kafka, group, topics["input_topic"], workers=[w])

        scored = prom.wait_for("fraud_events_scored_total", lambda r: value(r[0]) == 3000)
        assert len(scored) == 1 and scored[0]["metric"]["job"] == "fraud-worker"
        invalid = prom.wait_for("sum(fraud_events_invalid_total)", lambda r: value(r[0]) == 30)
        assert value(invalid[0]) == 30
        assert value(prom.query("fraud_events_consumed_total")[0]) == 3030

        # Every partition of the 3-partition input topic, caught up (lag is refreshed every 5 s).
        lag = prom.wait_for("fraud_consumer_lag", lambda r: len(r) == 3 and all(value(s) == 0 for s in r), timeout=30)
        assert sorted(s["metric"]["partition"] for s in lag) == ["0", "1", "2"]

        info = prom.query("fraud_model_info")
        assert len(info) == 1 and value(info[0]) == 1
        assert (info[0]["metric"]["version"], info[0]["metric"]["sha256"]) == ("v1", sha)
        assert value(prom.query("fraud_model_threshold")[0]) == 0.9

        # Live scores come from the training population: no drift.
        psi = prom.wait_for("fraud_score_psi", lambda r: True)
        assert value(psi[0]) < 0.1, psi
        assert value(prom.query("fraud_score_psi_window_scores")[0]) == 3000

        # The shipped recording rules evaluate against the real series.
        prom.wait_for("fraud:events_scored:rate5m", lambda r: value(r[0]) > 0)
        ratio = prom.wait_for("fraud:alert_ratio:rate5m", lambda r: True)
        assert 0 <= value(ratio[0]) <= 1
        assert prom.wait_for("fraud:dlq_ratio:rate5m", lambda r: value(r[0]) > 0)
        groups = prom.api("rules")["groups"]
        assert groups and all(rule["health"] == "ok" for g in groups for rule in g["rules"]), groups
        assert value(prom.query("fraud_commits_total{result='ok'}")[0]) >= 1
        assert value(prom.query("fraud_rebalances_total")[0]) >= 1
    finally:
        prom.close()
    assert w.stop() == 0


def test_healthz_flips_on_a_stalled_loop_and_readyz_on_a_removed_model(kafka, topics, models_dir, workers, ulb):
    w = WorkerProcess(kafka.bootstrap, models_dir, group=kafka.group(), **topics,
                      extra=["--health-stall-seconds", "2", "--log-format", "json"])  # fmt: skip
    workers.append(w.start())
    w.wait_ready()
    assert w.get("/healthz")[0] == 200

    # Removing the model: CURRENT, then the serving bundle's files. The model in memory keeps scoring.
    (models_dir / CURRENT_FILE).rename(models_dir / "CURRENT.away")
    code, body = w.get("/readyz")
    assert code == 503 and "CURRENT is missing" in json.loads(body)["reason"], body
    assert w.get("/healthz")[0] == 200
    (models_dir / "CURRENT.away").rename(models_dir / CURRENT_FILE)
    assert w.get("/readyz")[0] == 200
    shutil.move(models_dir / "v1", models_dir.parent / "v1.away")
    code, body = w.get("/readyz")
    assert code == 503 and "of the serving model is missing" in json.loads(body)["reason"], body
    shutil.move(models_dir.parent / "v1.away", models_dir / "v1")
    assert w.get("/readyz")[0] == 200

    # A stalled loop: the decoder child stopped (SIGSTOP) while it holds a batch, so the loop waits for
    # its reply. (A FIFO in the models directory no longer stalls it: pointer files and bundle files
    # must be regular files, opened without blocking.)
    child = _decoder_child(w.proc.pid)
    os.kill(child, signal.SIGSTOP)
    try:
        produce(kafka.producer(), topics["input_topic"], [(b"acct", ulb.event(0, prefix="stall"))])
        deadline = time.monotonic() + 20
        while w.get("/healthz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        code, body = w.get("/healthz")
        assert code == 503, body
        doc = json.loads(body)
        assert doc["status"] == "stalled" and doc["seconds_since_poll"] >= 2 and doc["bound"] == 2
        code, text = w.get("/metrics")
        assert code == 200 and "fraud_events_consumed_total" in text  # the scrape still answers
    finally:
        os.kill(child, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while w.get("/healthz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w.get("/healthz")[0] == 200

    # A hot reload to v2 (the same model under another version).
    v2 = models_dir / "v2"
    v2.mkdir()
    shutil.copy(models_dir / "v1" / MODEL_FILE, v2 / MODEL_FILE)
    manifest = json.loads((models_dir / "v1" / MANIFEST_FILE).read_text())
    manifest["version"] = "v2"
    (v2 / MANIFEST_FILE).write_text(json.dumps(manifest))
    (models_dir / ".CURRENT.new").write_text("v2\n")
    os.replace(models_dir / ".CURRENT.new", models_dir / CURRENT_FILE)
    w.wait_metric("fraud_model_reloads_total", 1, timeout=30, labels={"result": "ok"})
    deadline = time.monotonic() + 10
    while w.get("/healthz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w.get("/healthz")[0] == 200
    assert w.metric("fraud_model_info", {"version": "v2"}) == 1
    assert w.stop() == 0

    # --log-format json: every line the worker logged is one JSON object. The LiteRT runtime itself
    # prints one line per model load ("INFO: Created TensorFlow Lite XNNPACK delegate ...") to stderr
    # from native code, outside Python's logging (docs/metrics.md, "Logs").
    native = "INFO: Created TensorFlow Lite"
    lines = [line for line in w.output().splitlines() if line.strip() and not line.startswith(native)]
    assert lines and all(json.loads(line)["level"] for line in lines), lines[:5]
    assert any("model switched from v1 to v2" in json.loads(line)["message"] for line in lines)


def _decoder_child(pid: int) -> int:
    """The worker's decoder child process (python -m worker.pipeline.decoder_process)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"worker.pipeline.decoder_process" in cmdline:
            return int(entry)
    raise AssertionError(f"worker {pid} has no decoder child")
