"""The shadow challenger on a real broker: models/CHALLENGER scored beside the champion, never alerting.

With CHALLENGER set, every event has exactly one shadow record with the challenger's score, the
alerts are the champion's only, and a challenger that fails its checks changes nothing for the
champion (and the challenger already in shadow stays); then ``promote`` makes the challenger the
champion, and the running worker serves it without a restart.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np

from tests.conftest import unique
from tests.support.bundles import corrupt_sha256, make_bundle
from tests.support.feedback import FeedbackProcess
from tests.support.workers import WorkerProcess, produce, read_topic, wait_committed
from worker.core.bundle import CHALLENGER_FILE, set_current
from worker.core.scoring import load_scorer
from worker.feedback.records import encode_label
from worker.programs.fraud_worker import main

N = 4_000


def test_every_event_gets_one_shadow_record_and_only_the_champion_alerts(
    kafka, ulb, models_dir, topics, workers, tmp_path
):
    challenger = {**ulb.model, "weights": (np.asarray(ulb.model["weights"]) * 0.7).tolist(), "threshold": 0.6}
    make_bundle(models_dir, "v2", promote=False, **challenger)
    set_current(models_dir, "v2", CHALLENGER_FILE)
    shadow_topic = kafka.topic(partitions=1, prefix="shadow")
    group = kafka.group()
    w = WorkerProcess(kafka.bootstrap, models_dir, group=group, extra=("--shadow-topic", shadow_topic), **topics)
    workers.append(w.start())
    w.wait_ready()
    w.wait_metric("fraud_shadow_model_info", 1, labels={"version": "v2"})
    producer = kafka.producer(linger_ms=20)
    produce(producer, topics["input_topic"], ((f"a-{i % 97}".encode(), ulb.event(i)) for i in range(N // 2)))
    wait_committed(kafka, group, topics["input_topic"], workers=[w])

    # A broken challenger: refused and counted; the champion and the challenger in shadow go on.
    make_bundle(models_dir, "v3", promote=False, **challenger)
    corrupt_sha256(models_dir / "v3")
    set_current(models_dir, "v3", CHALLENGER_FILE)
    w.wait_metric("fraud_shadow_reloads_total", 1, labels={"result": "failed"})
    produce(producer, topics["input_topic"], ((f"a-{i % 97}".encode(), ulb.event(i)) for i in range(N // 2, N)))
    wait_committed(kafka, group, topics["input_topic"], workers=[w])
    rows = ulb.features[:N].astype(np.float32)
    champion = load_scorer(str(models_dir), "v1").score(rows)
    shadow_scores = load_scorer(str(models_dir), "v2").score(rows)
    flagged_c, flagged_s = champion >= ulb.model["threshold"], shadow_scores >= 0.6
    assert w.metric("fraud_model_info", {"version": "v1"}) == 1, "the champion is untouched"
    assert w.metric("fraud_shadow_model_info", {"version": "v2"}) == 1, "the challenger in shadow stays"
    assert w.metric("fraud_shadow_scored_total") == N
    assert w.metric("fraud_shadow_alerts_total") == int(flagged_s.sum())
    assert w.metric("fraud_shadow_agreement_total", {"outcome": "both"}) == int(np.sum(flagged_c & flagged_s))
    assert w.metric("fraud_shadow_agreement_total", {"outcome": "challenger_only"}) == int(
        np.sum(flagged_s & ~flagged_c)
    )
    assert "challenger refused" in w.output() and "v3" in w.output()

    # fraud-feedback joins both versions' scores with the labels, side by side.
    labels_topic = kafka.topic(partitions=1, prefix="labels")
    now = int(time.time() * 1000)
    produce(producer, labels_topic, ((f"tx-{i}".encode(), encode_label(f"tx-{i}", bool(ulb.labels[i]), now, "test"))
                                     for i in range(N)))  # fmt: skip
    fb = FeedbackProcess(kafka.bootstrap, topics["scores_topic"], labels_topic, unique("fb"), tmp_path / "fb",
                         ("--shadow-topic", shadow_topic, "--refresh-seconds", "0.5")).start()  # fmt: skip
    try:
        fraud = ulb.labels[:N].astype(bool)
        expected_v2 = {"tp": int(np.sum(flagged_s & fraud)), "fp": int(np.sum(flagged_s & ~fraud)),
                       "fn": int(np.sum(~flagged_s & fraud)), "tn": int(np.sum(~flagged_s & ~fraud))}  # fmt: skip
        deadline = time.monotonic() + 120
        while {o: n for (v, o), n in fb.outcomes().items() if v == "v2"} != expected_v2:
            assert time.monotonic() < deadline, (fb.outcomes(), expected_v2, fb.output()[-2000:])
            time.sleep(0.25)
        # The champion's records come from the scores topic, the challenger's from the shadow topic: each is read
        # at its own pace, so the champion's are waited for as well.
        while sum(n for (v, _), n in fb.outcomes().items() if v == "v1") != N:
            assert time.monotonic() < deadline, (fb.outcomes(), fb.output()[-2000:])
            time.sleep(0.25)
        assert fb.stop() == 0
    finally:
        fb.close()

    # Acceptance 3: promote, on that evidence, swaps CHALLENGER into CURRENT; the worker serves it without a restart.
    set_current(models_dir, "v2", CHALLENGER_FILE)
    assert main(["promote", "--models-dir", str(models_dir), "--feedback-state-dir", str(tmp_path / "fb")]) == 0
    w.wait_metric("fraud_model_info", 1, labels={"version": "v2"})
    assert w.metric("fraud_model_previous_info", {"version": "v1"}) == 1, "the champion it replaced"
    assert "model switched from v1 to v2" in w.output()
    assert w.stop() == 0
    shadow = [json.loads(r.value) for r in read_topic(kafka, shadow_topic)]
    counts = Counter(d["transaction_id"] for d in shadow)
    assert len(counts) == N and set(counts.values()) == {1}, "exactly one shadow record per event"
    assert {d["model_version"] for d in shadow} == {"v2"}
    by_id = {d["transaction_id"]: d["score"] for d in shadow}
    got = np.array([by_id[f"tx-{i}"] for i in range(N)])
    assert np.max(np.abs(got - shadow_scores)) <= 1e-5
    assert all(d["threshold"] == 0.6 for d in shadow)

    alerts = {
        json.loads(r.value)["transaction_id"]: json.loads(r.value) for r in read_topic(kafka, topics["alert_topic"])
    }
    assert {a["model_version"] for a in alerts.values()} == {"v1"}, "the challenger never alerts"
    expected = {f"tx-{i}" for i in np.flatnonzero(champion >= ulb.model["threshold"])}
    borderline = {f"tx-{i}" for i in np.flatnonzero(np.abs(champion - ulb.model["threshold"]) <= 1e-5)}
    assert set(alerts) - borderline == expected - borderline
