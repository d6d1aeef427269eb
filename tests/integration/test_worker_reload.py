"""Acceptance 5: a new bundle promoted mid-stream is served from the next batch without a restart or a
lost event; a corrupt bundle (bad sha256, wrong feature count) is refused while the old one serves.
With --trusted-keys, a signed bundle changed after signing, an unsigned one and one signed by another
key are refused the same way."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

from tests.support.bundles import corrupt_sha256, drop_last_feature, make_bundle, swap_weights
from tests.support.keys import make_keys
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, headers, read_topic, wait_committed
from worker.core.bundle import set_current

N = 12_000  # 8 s at 1,500 events/s: the reloads must come while it still runs, on a busy machine too


def _wait(predicate, what: str, worker: WorkerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}:\n{worker.output()[-3000:]}")


def test_hot_reload_switches_versions_and_refuses_corrupt_bundles(kafka, ulb, models_dir, topics, workers):
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, extra=["--max-batch-size", "50"], **topics)
    workers.append(worker.start())
    worker.wait_ready()
    stream = Stream(kafka.producer(linger_ms=5), topics["input_topic"],
                    [(f"acct-{i % 13}".encode(), ulb.event(i)) for i in range(N)], rate=1500)  # fmt: skip
    stream.start()
    worker.wait_metric("fraud_events_scored_total", 1000)

    make_bundle(models_dir, "v2", **dict(ulb.model, threshold=0.5))
    _wait(lambda: worker.metric("fraud_model_reloads_total", {"result": "ok"}) == 1, "v2 not loaded", worker)
    assert worker.metric("fraud_model_info", {"version": "v2"}) == 1
    assert worker.metric("fraud_model_threshold") == 0.5

    bad_sha = make_bundle(models_dir, "v3-bad-sha", promote=False, **ulb.model)
    corrupt_sha256(bad_sha)
    set_current(models_dir, "v3-bad-sha")
    _wait(lambda: worker.metric("fraud_model_reloads_total", {"result": "failed"}) == 1, "bad sha accepted?", worker)
    wrong_width = make_bundle(models_dir, "v4-29-features", promote=False, **ulb.model)
    drop_last_feature(wrong_width)
    set_current(models_dir, "v4-29-features")
    _wait(lambda: worker.metric("fraud_model_reloads_total", {"result": "failed"}) == 2, "bad width accepted?", worker)
    assert stream.is_alive(), "the reloads happened mid-stream"
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])

    assert worker.metric("fraud_model_info", {"version": "v2"}) == 1
    assert json.loads(worker.get("/readyz")[1])["model_version"] == "v2"
    assert worker.stop() == 0
    log = worker.output()
    assert "v3-bad-sha" in log and "v4-29-features" in log

    scores = read_topic(kafka, topics["scores_topic"])
    docs = [json.loads(r.value) for r in scores]
    counts = Counter(d["transaction_id"] for d in docs)
    assert set(counts) == {f"tx-{i}" for i in range(N)} and set(counts.values()) == {1}
    versions = Counter(d["model_version"] for d in docs)
    assert set(versions) == {"v1", "v2"} and all(n > 0 for n in versions.values()), versions
    # Per partition, every v1 score comes before every v2 score.
    by_partition = defaultdict(list)
    for r, d in zip(scores, docs, strict=True):
        h = headers(r)
        by_partition[h["source_partition"]].append((int(h["source_offset"]), d["model_version"]))
    for seq in by_partition.values():
        names = [v for _, v in sorted(seq)]
        assert names == sorted(names), "a v1 score after a v2 score"
    alerts = [json.loads(r.value) for r in read_topic(kafka, topics["alert_topic"])]
    assert {a["model_version"] for a in alerts} == {"v1", "v2"}
    assert all(a["score"] >= a["threshold"] for a in alerts)


def test_with_trusted_keys_tampered_unsigned_and_foreign_bundles_are_refused_mid_stream(
    kafka, ulb, tmp_path, topics, workers
):
    keys, other = make_keys(tmp_path / "keys", "trainer"), make_keys(tmp_path / "keys", "other")
    models = tmp_path / "models"
    make_bundle(models, "v1", signing_key=keys.signing_key, **ulb.model)
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models, group=group,
                           extra=["--max-batch-size", "50", "--trusted-keys", str(keys.public)], **topics)  # fmt: skip
    workers.append(worker.start())
    worker.wait_ready()
    stream = Stream(kafka.producer(linger_ms=5), topics["input_topic"],
                    [(f"acct-{i % 13}".encode(), ulb.event(i)) for i in range(N)], rate=1500)  # fmt: skip
    stream.start()
    worker.wait_metric("fraud_events_scored_total", 1000)

    make_bundle(models, "v2", signing_key=keys.signing_key, **dict(ulb.model, threshold=0.5))
    _wait(lambda: worker.metric("fraud_model_reloads_total", {"result": "ok"}) == 1, "signed v2 not loaded", worker)

    # Signed, then the weights swapped for ones that never alert, sha256 fields fixed up.
    tampered = make_bundle(models, "v3-tampered", promote=False, signing_key=keys.signing_key, **ulb.model)
    swap_weights(tampered, [0.0] * len(ulb.model["weights"]), -20.0)
    make_bundle(models, "v4-unsigned", promote=False, **ulb.model)
    make_bundle(models, "v5-other-key", promote=False, signing_key=other.signing_key, **ulb.model)
    for n, version in enumerate(("v3-tampered", "v4-unsigned", "v5-other-key"), start=1):
        set_current(models, version)
        _wait(lambda n=n: worker.metric("fraud_model_reloads_total", {"result": "failed"}) == n,
              f"{version} accepted?", worker)  # fmt: skip
    assert stream.is_alive(), "the reloads happened mid-stream"
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])

    for reason in ("mismatch", "unsigned", "unknown_key"):
        assert worker.metric("fraud_model_signature_failures_total", {"reason": reason}) == 1, reason
    assert worker.metric("fraud_model_info", {"version": "v2"}) == 1
    assert worker.stop() == 0
    log = worker.output()
    refusals = [line for line in log.splitlines() if "model reload refused, still serving v2" in line]
    assert len(refusals) == 3 and "v3-tampered" in refusals[0] and "changed after signing" in refusals[0], refusals
    assert "not signature-checked" not in log and f"signed by key {keys.key_id}" in log

    docs = [json.loads(r.value) for r in read_topic(kafka, topics["scores_topic"])]
    counts = Counter(d["transaction_id"] for d in docs)
    assert set(counts) == {f"tx-{i}" for i in range(N)} and set(counts.values()) == {1}
    versions = Counter(d["model_version"] for d in docs)
    assert set(versions) == {"v1", "v2"} and all(n > 0 for n in versions.values()), versions
