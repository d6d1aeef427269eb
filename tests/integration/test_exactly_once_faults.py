"""Exactly-once mode under faults: a paused worker (zombie), the broker away for 30 s, a topic refusing writes.

After each fault every input record must be in the read_committed view of the outputs exactly
once (tests/support/exactly_once.py), and reconcile must agree.
"""

from __future__ import annotations

import signal
import time

import numpy as np

from tests.conftest import KafkaClients
from tests.support.exactly_once import check_exactly_once
from tests.support.faults import BROKER_MAX_MESSAGE_BYTES, fresh_topics, limit_message_bytes, outage_producer
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, committed, produce, wait_committed

EXACTLY_ONCE = ["--processing-guarantee", "exactly-once"]


def test_a_paused_worker_whose_partitions_moved_on_publishes_and_commits_nothing(
    kafka, ulb, models_dir, topics, workers
):
    """Zombie fencing: SIGSTOP until a second worker owns the partitions, then SIGCONT."""
    group = kafka.group()
    n = 30_000

    def start() -> WorkerProcess:
        w = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics, extra=EXACTLY_ONCE).start()
        workers.append(w)
        return w

    zombie = start()
    zombie.wait_ready()
    stream = Stream(kafka.producer(linger_ms=20), topics["input_topic"],
                    [(f"acct-{i % 31}".encode(), ulb.event(i % 20_000, prefix=f"z{i // 20_000}")) for i in range(n)],
                    rate=1500)  # fmt: skip
    stream.start()
    zombie.wait_metric("fraud_events_scored_total", 2000)
    zombie.proc.send_signal(signal.SIGSTOP)
    paused_at = committed(kafka, group, topics["input_topic"])
    successor = start()
    successor.wait_ready(timeout=60)
    successor.wait_metric("fraud_partitions_assigned", 3, timeout=60)  # the zombie's session ran out
    successor.wait_metric("fraud_transactions_total", 2, labels={"outcome": "committed"}, timeout=30)
    moved_on = committed(kafka, group, topics["input_topic"])
    assert all(moved_on.get(p, 0) >= o for p, o in paused_at.items())

    zombie.proc.send_signal(signal.SIGCONT)
    # Its offsets, from before the pause, would take the group back if any commit went through.
    watch_until = time.monotonic() + 8
    low = dict(moved_on)
    while time.monotonic() < watch_until:
        now = committed(kafka, group, topics["input_topic"])
        assert all(now.get(p, 0) >= low.get(p, 0) for p in low), f"offsets went back: {now} < {low}"
        low = {p: max(o, low.get(p, 0)) for p, o in now.items()}
        time.sleep(0.1)
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], timeout=120, workers=[successor])
    log = zombie.output()
    assert zombie.stop() == 0 and successor.stop() == 0
    figures = check_exactly_once(kafka, group, topics, n, 0)
    fenced = [line for line in log.splitlines() if "aborted" in line or "membership lost" in line]
    assert fenced, "the resumed worker never noticed it had lost its partitions:\n" + log[-3000:]
    print(f"\nzombie resumed: {fenced[0].split(' - ')[-1][:160]}\nexactly-once after the pause: {figures}")


def test_broker_stopped_for_30s_mid_stream_leaves_no_gap_and_no_duplicate(own_broker, ulb, models_dir, workers):
    own_broker.start()
    clients = KafkaClients(own_broker.bootstrap)
    try:
        topics = fresh_topics(clients)
        group = clients.group()
        n = 18_000
        worker = WorkerProcess(own_broker.bootstrap, models_dir, group=group, **topics,
                               extra=[*EXACTLY_ONCE, "--retry-backoff-max-seconds", "2"]).start()  # fmt: skip
        workers.append(worker)
        worker.wait_ready()
        producer = outage_producer(clients)
        stream = Stream(producer, topics["input_topic"], [(f"acct-{i % 17}".encode(), ulb.event(i)) for i in range(n)],
                        rate=600)  # fmt: skip
        stream.start()
        worker.wait_metric("fraud_events_scored_total", 3000)
        t0 = time.monotonic()
        own_broker.stop()
        time.sleep(30.0)
        assert worker.proc.poll() is None, "the worker died with the broker"
        assert worker.get("/healthz")[0] == 200, "retrying is alive"
        own_broker.start()
        stream.finish()
        wait_committed(clients, group, topics["input_topic"], timeout=240, workers=[worker])
        recovered = time.monotonic() - t0
        aborted = worker.metric("fraud_transactions_total", {"outcome": "aborted"})
        assert worker.stop() == 0
        figures = check_exactly_once(clients, group, topics, n, 0)
        print(f"\nbroker down 30 s: all {n:,} committed {recovered:.0f}s after the stop, {aborted:.0f} transactions "
              f"aborted and retried; exactly-once: {figures}")  # fmt: skip
    finally:
        clients.close()


def test_refused_alerts_abort_the_transaction_until_the_topic_accepts_them(kafka, ulb, models_dir, topics, workers):
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics,
                           extra=[*EXACTLY_ONCE, "--max-batch-size", "100", "--retry-backoff-max-seconds", "1"]
                           ).start()  # fmt: skip
    workers.append(worker)
    producer = kafka.producer(linger_ms=20)
    produce(producer, topics["input_topic"], [(None, ulb.event(i)) for i in range(2000)])
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])

    # Below an alert's size (a few hundred bytes) but above a transaction marker's (under 100):
    # with a limit under the marker's size, Kafka 4.4's transaction coordinator cannot write the
    # abort and treats it as fatal for that transactional id (RecordTooLargeException while sending
    # txn marker), so no producer with that id could start until the broker restarts.
    limit_message_bytes(kafka, topics["alert_topic"], 200)
    frauds = np.flatnonzero(ulb.labels == 1).tolist()
    second = [(None, ulb.event(i, prefix="f")) for i in frauds] + [
        (None, ulb.event(i, prefix="b")) for i in range(2000, 4000)
    ]
    produce(producer, topics["input_topic"], second)
    worker.wait_metric("fraud_transactions_total", 3, labels={"outcome": "aborted"}, timeout=60)
    held = committed(kafka, group, topics["input_topic"])
    time.sleep(3)
    assert committed(kafka, group, topics["input_topic"]) == held, "offsets moved while alerts were refused"
    assert worker.proc.poll() is None and worker.get("/healthz")[0] == 200

    limit_message_bytes(kafka, topics["alert_topic"], BROKER_MAX_MESSAGE_BYTES)
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])
    aborted = worker.metric("fraud_transactions_total", {"outcome": "aborted"})
    assert worker.stop() == 0
    figures = check_exactly_once(kafka, group, topics, 2000 + len(second), 0)
    assert "MessageSizeTooLarge" in worker.output()
    print(f"\nalerts refused: {aborted:.0f} transactions aborted, committed held at {held}; after: {figures}")
