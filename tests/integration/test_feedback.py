"""Label feedback on a real broker: 20,000 ULB events scored by the worker, a label for each.

One worker (``--scores-include-features``) scores the events into a 3-partition scores topic;
the labels go to a co-partitioned labels topic keyed by ``transaction_id``. Each test runs its own
``fraud-feedback`` group and state directory over those topics, and the outcome counts it exports
must equal an offline computation: the bundle's own scorer on the same rows, the ULB labels, the
model's threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from tests.conftest import KafkaClients, unique
from tests.integration.conftest import SLICE, Ulb
from tests.support.broker import REPO
from tests.support.bundles import make_bundle
from tests.support.feedback import FeedbackProcess, totals, wait_totals
from tests.support.workers import WorkerProcess, produce, wait_committed
from worker.core.scoring import load_scorer
from worker.feedback.records import encode_label

PARTITIONS = 3
FAST = ("--refresh-seconds", "0.5")


@dataclass
class Scored:
    scores_topic: str
    labels_topic: str
    expected: dict[str, int]  # the offline outcome counts
    labels: list[tuple[bytes, bytes]]  # (key, value) of each label, in row order


def offline_counts(ulb: Ulb, models_dir) -> dict[str, int]:
    scorer = load_scorer(str(models_dir))
    scores = scorer.score(ulb.features.astype(np.float32))
    near = np.abs(scores - scorer.threshold) <= 1e-6
    assert not near.any(), "a score this close to the threshold would make the offline count ambiguous"
    flagged, fraud = scores >= scorer.threshold, ulb.labels.astype(bool)
    return {"tp": int(np.sum(flagged & fraud)), "fp": int(np.sum(flagged & ~fraud)),
            "fn": int(np.sum(~flagged & fraud)), "tn": int(np.sum(~flagged & ~fraud))}  # fmt: skip


@pytest.fixture(scope="module")
def scored(kafka_bootstrap, ulb, tmp_path_factory) -> Iterator[Scored]:
    """The worker's score records of the ULB slice, and the labels of the same rows (not yet sent)."""
    kafka = KafkaClients(kafka_bootstrap)
    models = tmp_path_factory.mktemp("feedback-models")
    make_bundle(models, "v1", **ulb.model)
    topics = dict(
        input_topic=kafka.topic(partitions=3, prefix="transactions"),
        alert_topic=kafka.topic(partitions=1, prefix="alerts"),
        dlq_topic=kafka.topic(partitions=1, prefix="dlq"),
        scores_topic=kafka.topic(partitions=PARTITIONS, prefix="scores"),
    )
    labels_topic = kafka.topic(partitions=PARTITIONS, prefix="labels")
    produce(kafka.producer(linger_ms=20), topics["input_topic"],
            ((f"acct-{i % 97}".encode(), ulb.event(i)) for i in range(SLICE)))  # fmt: skip
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models, group=group, extra=("--scores-include-features",), **topics)
    try:
        worker.start().wait_ready()
        wait_committed(kafka, group, topics["input_topic"], workers=[worker])
        assert worker.stop() == 0
    finally:
        worker.close()
    now = int(time.time() * 1000)
    labels = [(f"tx-{i}".encode(), encode_label(f"tx-{i}", bool(ulb.labels[i]), now, "test")) for i in range(SLICE)]
    try:
        yield Scored(topics["scores_topic"], labels_topic, offline_counts(ulb, models), labels)
    finally:
        kafka.close()


def test_outcome_counts_equal_the_offline_computation(kafka, scored, feedbacks, tmp_path):
    """Acceptance 1: every label once; the counts equal the offline ones exactly; the store's are durable."""
    produce(kafka.producer(linger_ms=20), scored.labels_topic, scored.labels)
    group, state = unique("fb"), tmp_path / "state"
    fb = FeedbackProcess(kafka.bootstrap, scored.scores_topic, scored.labels_topic, group, state, FAST).start()
    feedbacks.append(fb)
    wait_totals([fb], scored.expected)
    assert fb.metric("fraud_feedback_unlabelled_ratio", {"model_version": "v1"}) == 0.0
    assert fb.metric("fraud_feedback_label_lag_seconds_count") == SLICE, "one label lag per transaction"
    precision = fb.metric("fraud_feedback_precision", {"model_version": "v1"})
    e = scored.expected
    assert precision == pytest.approx(e["tp"] / (e["tp"] + e["fp"]))
    assert fb.metric("fraud_feedback_recall", {"model_version": "v1"}) == pytest.approx(e["tp"] / (e["tp"] + e["fn"]))
    assert 0 < fb.metric("fraud_feedback_pr_auc", {"model_version": "v1"}) <= 1
    assert fb.stop() == 0
    size = sum(p.stat().st_size for p in state.glob("partition-*.sqlite*"))
    print(f"\nstore: {size / SLICE:.0f} bytes per scored transaction with 30 features ({size / 1e6:.1f} MB)")
    again = FeedbackProcess(kafka.bootstrap, scored.scores_topic, scored.labels_topic, group, state, FAST).start()
    feedbacks.append(again)
    wait_totals([again], scored.expected, timeout=60)  # the same totals after a restart, from the stores

    out = tmp_path / "examples.csv.gz"
    export = subprocess.run(
        [sys.executable, "-m", "worker.programs.fraud_feedback", "export", "--state-dir", str(state),
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert f"{SLICE:,} labelled examples ({e['tp'] + e['fn']:,} fraud)" in export.stdout, export.stdout


def test_two_sigkills_and_every_label_twice_leave_the_counts_unchanged(kafka, scored, feedbacks, tmp_path):
    """Acceptance 2."""
    group, state = unique("fb"), tmp_path / "state"
    producer = kafka.producer(linger_ms=20)
    half = len(scored.labels) // 2
    produce(producer, scored.labels_topic, scored.labels[:half])
    fb = FeedbackProcess(kafka.bootstrap, scored.scores_topic, scored.labels_topic, group, state, FAST).start()
    feedbacks.append(fb)
    fb.wait_records(SLICE // 2)
    fb.kill()
    produce(producer, scored.labels_topic, scored.labels[half:] + scored.labels)  # the rest, then all again
    fb = FeedbackProcess(kafka.bootstrap, scored.scores_topic, scored.labels_topic, group, state, FAST).start()
    feedbacks.append(fb)
    fb.wait_records(SLICE // 4)
    fb.kill()
    fb = FeedbackProcess(kafka.bootstrap, scored.scores_topic, scored.labels_topic, group, state, FAST).start()
    feedbacks.append(fb)
    wait_totals([fb], scored.expected)
    time.sleep(2)  # anything left to read would only be repeats: they must change nothing
    assert totals([fb]) == {k: float(v) for k, v in scored.expected.items()}
    assert fb.metric("fraud_feedback_ignored_total", {"kind": "label"}) > 0, "the repeated labels were seen"


def test_two_instances_split_the_partitions_and_add_up(kafka, scored, feedbacks, tmp_path):
    """Acceptance 3: one group, two state directories; each holds its partitions, the sums are the offline counts."""
    produce(kafka.producer(linger_ms=20), scored.labels_topic, scored.labels)
    group = unique("fb")
    pair = [FeedbackProcess(kafka.bootstrap, scored.scores_topic, scored.labels_topic, group, tmp_path / f"s{i}",
                            FAST).start() for i in range(2)]  # fmt: skip
    feedbacks.extend(pair)
    # The second instance may join after the first has read everything: the group hands it its share then (a
    # partition that moves is rebuilt on its new owner from the topics' beginning), and the totals hold again.
    deadline = time.monotonic() + 90
    while sorted(held := [p.metric("fraud_feedback_partitions_assigned") for p in pair]) != [1, 2]:
        assert time.monotonic() < deadline, held
        time.sleep(0.25)
    wait_totals(pair, scored.expected)
    assert all(sum(p.outcomes().values()) > 0 for p in pair), "each instance counts its own partitions"


def test_export_train_gate_and_the_worker_reloads_the_retrained_model(kafka, scored, ulb, feedbacks, workers,
                                                                      tmp_path):  # fmt: skip
    """Acceptance 4, end to end: feedback store -> `make retrain` (export, fraud-train --split time, the
    promotion gate against CURRENT on the newest rows) -> a running worker hot-reloads the new bundle."""
    produce(kafka.producer(linger_ms=20), scored.labels_topic, scored.labels)
    state = tmp_path / "state"
    fb = FeedbackProcess(kafka.bootstrap, scored.scores_topic, scored.labels_topic, unique("fb"), state, FAST).start()
    feedbacks.append(fb)
    wait_totals([fb], scored.expected)
    assert fb.stop() == 0

    # CURRENT: an old model that ranks the ULB rows at random (weights unrelated to the data).
    models = tmp_path / "models"
    rng = np.random.default_rng(5)
    weak = {**ulb.model, "weights": rng.normal(0, 0.01, len(ulb.model["weights"])).tolist()}
    make_bundle(models, "v0-weak", **weak)
    topics = {"input_topic": kafka.topic(partitions=1, prefix="transactions"),
              "alert_topic": kafka.topic(prefix="alerts"), "dlq_topic": kafka.topic(prefix="dlq")}  # fmt: skip
    worker = WorkerProcess(kafka.bootstrap, models, group=kafka.group(), **topics).start()
    workers.append(worker)
    worker.wait_ready()

    data = tmp_path / "examples.csv.gz"
    retrain = subprocess.run(
        ["make", "-s", "retrain", f"FEEDBACK_STATE_DIR={state}", f"MODELS_DIR={models}", f"RETRAIN_DATA={data}",
         "RETRAIN_ARGS=--quiet --epochs 30"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert retrain.returncode == 0, retrain.stdout[-3000:] + retrain.stderr[-3000:]
    assert f"{SLICE:,} labelled examples" in retrain.stdout, retrain.stdout
    assert "split" in retrain.stdout and "time:event_time" in retrain.stdout, retrain.stdout
    current = (models / "CURRENT").read_text().strip()
    assert current != "v0-weak", retrain.stdout  # the gate promoted it: better than CURRENT on the newest rows
    manifest = json.loads((models / current / "manifest.json").read_text())
    assert "event_time" not in manifest["feature_names"] and "transaction_id" not in manifest["feature_names"]
    assert manifest["training"]["split"]["method"] == "time:event_time"

    deadline = time.monotonic() + 30
    while worker.metric("fraud_model_info", {"version": current}) != 1:
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.2)
    assert worker.metric("fraud_model_reloads_total", {"result": "ok"}) >= 1
