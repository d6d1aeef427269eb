"""Acceptance 3: a worker stopped mid-stream (SIGTERM) hands over without skipping or repeating an
event; one killed (SIGKILL) skips nothing and repeats only records of uncommitted batches."""

from __future__ import annotations

import json
import signal
from collections import Counter

from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, committed, headers, read_topic, wait_committed

N = 6000


def _run_and_interrupt(kafka, ulb, models_dir, topics, workers, sig):
    group = kafka.group()
    stream = Stream(kafka.producer(linger_ms=5), topics["input_topic"],
                    [(f"acct-{i % 31}".encode(), ulb.event(i)) for i in range(N)], rate=1500)  # fmt: skip
    # A killed member's partitions wait for its session to expire: 6 s (the broker's minimum), not
    # the worker's default 10 s (tests/integration/test_worker_recovery.py times that).
    extra = [
        "--max-batch-size", "50",
        "--kafka-option", "session_timeout_ms=6000",
        "--kafka-option", "heartbeat_interval_ms=1000",
    ]  # fmt: skip
    args = dict(group=group, extra=extra, **topics)
    first = WorkerProcess(kafka.bootstrap, models_dir, **args).start()
    workers.append(first)
    first.wait_ready()
    stream.start()
    first.wait_metric("fraud_events_scored_total", 1000)
    rc = first.stop(sig)
    at_stop = committed(kafka, group, topics["input_topic"])
    assert stream.is_alive(), "the worker was stopped mid-stream"

    second = WorkerProcess(kafka.bootstrap, models_dir, **args).start()
    workers.append(second)
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], workers=[second])
    assert second.stop() == 0
    scores = read_topic(kafka, topics["scores_topic"])
    counts = Counter(json.loads(r.value)["transaction_id"] for r in scores)
    assert set(counts) == {f"tx-{i}" for i in range(N)}, "no event skipped"
    return rc, at_stop, scores, counts


def test_sigterm_mid_stream_then_restart_scores_every_event_exactly_once(kafka, ulb, models_dir, topics, workers):
    rc, _, _, counts = _run_and_interrupt(kafka, ulb, models_dir, topics, workers, signal.SIGTERM)
    assert rc == 0
    assert max(counts.values()) == 1, "an event was scored twice across a clean restart"


def test_sigkill_mid_stream_repeats_only_uncommitted_records(kafka, ulb, models_dir, topics, workers):
    rc, at_kill, scores, counts = _run_and_interrupt(kafka, ulb, models_dir, topics, workers, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    repeated = {tid for tid, n in counts.items() if n > 1}
    for r in scores:
        if json.loads(r.value)["transaction_id"] in repeated:
            h = headers(r)
            # Only records at or after the last commit before the kill can come back.
            assert int(h["source_offset"]) >= at_kill.get(int(h["source_partition"]), 0)
    print(f"\nSIGKILL: {len(repeated)} events scored twice (uncommitted when killed)")
