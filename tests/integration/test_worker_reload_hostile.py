"""A running worker whose models directory is written by an attacker mid-stream: CURRENT pointed at
a manifest with a 400-digit bias, at one with a histogram of the wrong type, made a symlink to a
secret file, a FIFO, and a file forging a log line. Each is refused and counted; the worker keeps
scoring every event with v1, never prints the secret or the control characters, and exits 0."""

from __future__ import annotations

import json
import os
import time
from collections import Counter

from tests.support.bundles import make_bundle
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, read_topic, wait_committed
from worker.core.bundle import CURRENT_FILE, MANIFEST_FILE, set_current

N = 3000


def _wait(predicate, what: str, worker: WorkerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise AssertionError(f"{what}: the worker exited with {worker.proc.returncode}:\n{worker.output()[-3000:]}")
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}:\n{worker.output()[-3000:]}")


def _malformed(models, version: str, change: dict, model: dict) -> None:
    path = make_bundle(models, version, promote=False, **model)
    data = json.loads((path / MANIFEST_FILE).read_text())
    data.update(change)
    (path / MANIFEST_FILE).write_text(json.dumps(data))


def _point(models, replace) -> None:
    """Replace CURRENT by what ``replace(path)`` makes there, through a rename, as an attacker would."""
    tmp = models / ".current-new"
    replace(tmp)
    os.replace(tmp, models / CURRENT_FILE)


def test_hostile_models_directory_never_stops_a_serving_worker(kafka, ulb, models_dir, topics, workers, tmp_path):
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, extra=["--max-batch-size", "50"], **topics)
    workers.append(worker.start())
    worker.wait_ready()
    stream = Stream(kafka.producer(linger_ms=5), topics["input_topic"],
                    [(f"acct-{i % 13}".encode(), ulb.event(i)) for i in range(N)], rate=600)  # fmt: skip
    stream.start()
    worker.wait_metric("fraud_events_scored_total", 200)

    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2-the-password\n")
    _malformed(models_dir, "v2-huge-bias", {"bias": int("9" * 400)}, ulb.model)
    _malformed(models_dir, "v3-bad-histogram", {"score_histogram": {"edges": 5, "counts": [1]}}, ulb.model)
    attacks = [
        lambda: set_current(models_dir, "v2-huge-bias"),
        lambda: set_current(models_dir, "v3-bad-histogram"),
        lambda: _point(models_dir, lambda p: p.symlink_to(secret)),
        lambda: _point(models_dir, lambda p: os.mkfifo(p)),
        lambda: _point(models_dir, lambda p: p.write_bytes(b"v1\nERROR forged line\x1b[2J")),
    ]
    for n, attack in enumerate(attacks, start=1):
        attack()
        _wait(lambda n=n: worker.metric("fraud_model_reloads_total", {"result": "failed"}) == n,
              f"attack {n} not refused", worker)  # fmt: skip
    assert stream.is_alive(), "the attacks happened mid-stream"
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])

    assert worker.metric("fraud_model_info", {"version": "v1"}) == 1
    assert worker.stop() == 0
    log = worker.output()
    refusals = [line for line in log.splitlines() if "model reload refused, still serving v1" in line]
    assert len(refusals) == 5, refusals
    assert "'bias'" in refusals[0] and "score_histogram" in refusals[1] and "symbolic link" in refusals[2], refusals
    assert "FIFO" in refusals[3] and "\\x1b[2J" in refusals[4], refusals
    assert "hunter2" not in log and "\x1b" not in log and "\nERROR forged line" not in log

    docs = [json.loads(r.value) for r in read_topic(kafka, topics["scores_topic"])]
    counts = Counter(d["transaction_id"] for d in docs)
    assert set(counts) == {f"tx-{i}" for i in range(N)} and set(counts.values()) == {1}
    assert {d["model_version"] for d in docs} == {"v1"}
