"""Label-derived features on the real broker (docs/entity-risk.md): two worker instances score synthetic v3
payments keyed by terminal with ``fraud_count`` and ``fraud_rate`` per terminal, fraud-feedback joins
their score records with the labels (sent in the data's time, each when its label time comes) and
publishes each terminal's fraud entries to the entity-risk topic, which both workers read as a table.

The stream goes one data day (the block's delay) at a time: before a day's payments, the labels known by
its end are sent and both workers' tables are waited for until they hold every fraud of the payments
before it (the labels due by then, read). Then every score record's risk values equal the offline
computation over the labelled file, on both instances, and midway fraud-feedback and one worker are
SIGKILLed and restarted: their tables converge back and no fraud counts twice.
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from tests.support.bundles import make_bundle
from tests.support.feedback import FeedbackProcess
from tests.support.workers import WorkerProcess, read_topic, wait_committed
from worker.core.features import compute_columns, fit_priors, from_mapping
from worker.core.risk import FraudHistory
from worker.feedback.records import encode_label
from worker.offline import synthetic

DAY = 86_400_000
DAYS = 8
N = 8_000
KILL_AT_DAY = 4
FIELDS = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount")
SPEC = {
    "time_field": "event_time",
    "entity": [
        {
            "field": "terminal_id",
            "windows": ["1d", "3d"],
            "delay": "1d",
            "fraud_prior_weight": 5,
            "aggregates": ["count", "fraud_count", "fraud_rate"],
        },  # fmt: skip
    ],
}


def _wait_frauds(w: WorkerProcess, expected: int, fb: FeedbackProcess, when: str, timeout: float = 90.0) -> None:
    """Until the worker's risk table holds exactly ``expected`` frauds."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = w.metric("fraud_entity_risk_frauds")
        if got == expected:
            return
        time.sleep(0.1)
    published = fb.metric("fraud_feedback_entity_risk_records_total")
    raise AssertionError(
        f"{when}: worker {w.proc.pid}'s risk table holds {got} frauds, not {expected}; fraud-feedback published "
        f"{published} records\n{fb.output()[-3000:]}\n{w.output()[-3000:]}"
    )


def test_two_workers_read_the_offline_risk_values_through_kills(kafka, topics, workers, feedbacks, tmp_path):
    columns = synthetic.generate_behavioural(N, 17, days=DAYS)
    times = columns["event_time"].astype(np.int64)
    is_fraud = columns["Class"].astype(int)
    label_times = columns["label_time"].astype(np.int64)
    spec = fit_priors(from_mapping(SPEC, "spec"), float(is_fraud.mean()))
    names = ["amount", *spec.names]
    models = tmp_path / "models"
    make_bundle(models, "r1", feature_names=names, mean=[0.0] * len(names), scale=[1.0] * len(names),
                weights=[0.001] * len(names), bias=-3.0, threshold=0.5, feature_spec=spec.to_manifest())  # fmt: skip

    labels_topic = kafka.topic(partitions=1, prefix="labels")  # co-partitioned with the 1-partition scores topic
    group = kafka.group()
    risk_topic = f"{group}-entity-risk"  # created by fraud-feedback
    risk = ["--entity-risk-topic", risk_topic]
    extra = ["--scores-include-features", "--max-batch-size", "200", *risk, "--entity-risk-wait-seconds", "20",
             "--kafka-option", "session_timeout_ms=6000", "--kafka-option", "heartbeat_interval_ms=1000"]  # fmt: skip
    disks = iter(range(100))

    def worker() -> WorkerProcess:
        state = ["--feature-state-dir", str(tmp_path / f"state-{next(disks)}")]
        w = WorkerProcess(kafka.bootstrap, models, group=group, extra=[*extra, *state], **topics).start()
        workers.append(w)
        return w

    def feedback() -> FeedbackProcess:
        f = FeedbackProcess(kafka.bootstrap, topics["scores_topic"], labels_topic, f"{group}-feedback",
                            tmp_path / "feedback-state", extra=risk).start()  # fmt: skip
        feedbacks.append(f)
        return f

    fb = feedback()
    instances = [worker(), worker()]
    for w in instances:
        w.wait_ready(timeout=90)
    producer = kafka.producer(linger_ms=5)
    start = int(times.min()) // DAY * DAY
    labels_sent = np.zeros(N, dtype=bool)
    killed = False

    for day in range(DAYS + 1):
        lo, hi = start + day * DAY, start + (day + 1) * DAY
        # The labels known by the end of this day; then both tables hold the frauds among the payments before it.
        due = np.flatnonzero(~labels_sent & (label_times < hi))
        for i in due.tolist():
            value = encode_label(str(columns["transaction_id"][i]), bool(is_fraud[i]), int(label_times[i]), "test")
            producer.send(labels_topic, key=str(columns["transaction_id"][i]).encode(), value=value)
        producer.flush()
        labels_sent[due] = True
        expected = int((is_fraud.astype(bool) & labels_sent & (times < lo)).sum())
        for w in instances:
            _wait_frauds(w, expected, fb, f"day {day}")
        if day == DAYS:
            break
        rows = np.flatnonzero((times >= lo) & (times < hi)).tolist()
        half = len(rows) // 2 if day == KILL_AT_DAY else len(rows)
        for first, part in ((True, rows[:half]), (False, rows[half:])):
            for i in part:
                event = {f: columns[f][i].item() for f in FIELDS}
                producer.send(topics["input_topic"], key=str(columns["terminal_id"][i]).encode(),
                              value=json.dumps(event).encode())  # fmt: skip
            producer.flush()
            if day == KILL_AT_DAY and first:
                # Mid-stream: fraud-feedback and one worker are SIGKILLed while the day's payments are scored
                # and joined, and come back (the worker on an empty disk). The next day's wait checks that
                # the tables converge to exactly the frauds due: none missed, none counted twice.
                time.sleep(0.1)
                fb.stop(signal.SIGKILL)
                instances[1].stop(signal.SIGKILL)
                fb = feedback()
                instances[1] = worker()
                instances[1].wait_ready(timeout=90)
                killed = True
        wait_committed(kafka, group, topics["input_topic"], timeout=120, workers=instances)  # every one scored

    assert killed
    stale = sum(w.metric("fraud_entity_risk_stale_events_total") for w in instances)
    for w in instances:
        assert w.stop() == 0
    fb.stop()

    # The offline computation: the labelled file's entries (each fraud at its label time), the same function.
    history = FraudHistory.from_rows(spec.risk_fields, columns, times.tolist(), is_fraud.tolist(),
                                     label_times.tolist())  # fmt: skip
    offline = compute_columns(spec, times, {f: columns[f] for f in spec.input_fields}, risk=history)
    offline = offline.astype(np.float32)
    row_of = {tid: i for i, tid in enumerate(columns["transaction_id"].tolist())}
    risk_names = [n for n in spec.names if ".fraud_" in n]
    seen = set()
    bad = []
    records = read_topic(kafka, topics["scores_topic"])
    for r in records:
        doc = json.loads(r.value)
        i = row_of[doc["transaction_id"]]
        seen.add(i)
        got = np.array([doc["features"][n] for n in spec.names], dtype=np.float32)
        if (got != offline[i]).any():
            bad.append((i, {n: (float(offline[i][k]), float(got[k])) for k, n in enumerate(spec.names)
                            if got[k] != offline[i][k]}))  # fmt: skip
        assert doc["entities"] == {"terminal_id": str(columns["terminal_id"][i])}
        assert doc["entity_time"] == int(times[i])
    assert len(seen) == N
    assert not bad, f"{len(bad)} score records differ from the offline risk values; first: {bad[:3]}"
    counted = offline[:, [spec.names.index(n) for n in risk_names if "fraud_count" in n]]
    assert counted.sum() > 0, "no event saw a confirmed fraud: the test would not show anything"
    print(
        f"\n{N:,} events over {DAYS} days, {int(is_fraud.sum())} frauds; {int((counted > 0).any(axis=1).sum())} "
        f"events with confirmed fraud at their terminal; every risk value equals the offline one, on both "
        f"instances, through a SIGKILL of fraud-feedback and of a worker mid-stream ({len(records) - N} score "
        f"records repeated); {stale:.0f} events scored stale"
    )


def test_a_worker_without_its_risk_table_keeps_scoring_and_says_so(kafka, topics, workers, tmp_path):
    # No fraud-feedback, no entity-risk topic: every event is scored at once with no confirmed fraud (the
    # prior), and the metrics the FraudEntityRiskStale alert reads say the table was never read.
    columns = synthetic.generate_behavioural(300, 5, days=2)
    spec = fit_priors(from_mapping(SPEC, "spec"), 0.02)
    names = ["amount", *spec.names]
    models = tmp_path / "models"
    make_bundle(models, "r1", feature_names=names, mean=[0.0] * len(names), scale=[1.0] * len(names),
                weights=[0.001] * len(names), bias=-3.0, threshold=0.5, feature_spec=spec.to_manifest())  # fmt: skip
    w = WorkerProcess(kafka.bootstrap, models, group=kafka.group(), extra=[
        "--scores-include-features", "--entity-risk-topic", f"{kafka.group()}-no-such-topic",
        "--entity-risk-wait-seconds", "1", "--feature-state-dir", str(tmp_path / "state"),
    ], **topics).start()  # fmt: skip
    workers.append(w)
    w.wait_ready(timeout=90)
    producer = kafka.producer(linger_ms=5)
    for i in range(300):
        event = {f: columns[f][i].item() for f in FIELDS}
        producer.send(topics["input_topic"], key=str(columns["terminal_id"][i]).encode(),
                      value=json.dumps(event).encode())  # fmt: skip
    producer.flush()
    w.wait_metric("fraud_events_scored_total", 300, timeout=60)
    assert w.metric("fraud_entity_risk_stale_events_total") == 300
    assert w.metric("fraud_entity_risk_age_seconds") == float("inf")
    assert w.metric("fraud_entity_risk_entities") == 0
    assert w.stop() == 0
    assert "entity risk topic" in w.output() and "does not exist" in w.output()
    records = [json.loads(r.value) for r in read_topic(kafka, topics["scores_topic"])]
    assert len(records) == 300
    assert {r["features"]["terminal_id.fraud_count.1d.delay_1d"] for r in records} == {0.0}
    for r in records:  # no fraud: the prior, 0.02 as if over 5 more transactions, (0 + 0.02 * 5) / (count + 5)
        f = r["features"]
        assert f["terminal_id.fraud_rate.3d.delay_1d"] == pytest.approx(0.1 / (f["terminal_id.count.3d.delay_1d"] + 5))
