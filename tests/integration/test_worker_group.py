"""Acceptance 4: two workers in one group share a 4-partition topic and together score every event once."""

from __future__ import annotations

import json
import time
from collections import Counter

from tests.support.workers import WorkerProcess, produce, read_topic, wait_committed

N = 4000


def test_two_workers_share_partitions_and_score_each_event_once(kafka, ulb, models_dir, topics, workers):
    topic = kafka.topic(partitions=4, prefix="transactions")
    topics = dict(topics, input_topic=topic)
    group = kafka.group()
    a = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics).start()
    b = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics).start()
    workers += [a, b]
    a.wait_ready()
    b.wait_ready()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # both ready and no longer rebalancing: two partitions each
        if all(json.loads(w.get("/readyz")[1]).get("partitions") == 2 for w in (a, b)):
            break
        time.sleep(0.1)
    produce(kafka.producer(linger_ms=5), topic, ((f"acct-{i}".encode(), ulb.event(i)) for i in range(N)))
    wait_committed(kafka, group, topic, workers=[a, b])

    scored = [a.metric("fraud_events_scored_total"), b.metric("fraud_events_scored_total")]
    assert all(n > 0 for n in scored) and sum(scored) == N, scored
    assert a.stop() == 0 and b.stop() == 0
    counts = Counter(json.loads(r.value)["transaction_id"] for r in read_topic(kafka, topics["scores_topic"]))
    assert set(counts) == {f"tx-{i}" for i in range(N)} and set(counts.values()) == {1}
