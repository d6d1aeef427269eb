"""Exactly-once mode on the real broker: outputs and offsets in one transaction, seen by read_committed readers.

Every test reads the output topics as a downstream ``read_committed`` consumer would
(tests/support/committed_reader.py) and counts each expected alert, score and DLQ record.
"""

from __future__ import annotations

import random
import signal
import time

from tests.integration.conftest import SLICE
from tests.support.exactly_once import check_exactly_once
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, committed, produce, wait_committed

EXACTLY_ONCE = ["--processing-guarantee", "exactly-once"]


def test_exactly_once_outputs_and_offsets_commit_together(kafka, ulb, models_dir, topics, workers):
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics, extra=EXACTLY_ONCE).start()
    workers.append(worker)
    worker.wait_ready()
    n, bad = 5000, {17, 999, 4321}
    events = [(None, b"{not json" if i in bad else ulb.event(i)) for i in range(n)]
    produce(kafka.producer(linger_ms=20), topics["input_topic"], events)
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])
    assert worker.metric("fraud_transactions_total", {"outcome": "committed"}) >= 1
    assert worker.metric("fraud_transactions_total", {"outcome": "aborted"}) == 0
    assert worker.stop() == 0
    figures = check_exactly_once(kafka, group, topics, n, len(bad))
    print(f"exactly-once: {figures}")


def test_three_sigkills_lose_nothing_and_repeat_nothing(kafka, ulb, models_dir, topics, workers):
    """Acceptance: three SIGKILLs at random moments in 100,000 events with 30 malformed records."""
    rng = random.Random(11)
    n, kills = 100_000, 3
    bad = set(rng.sample(range(n), 30))
    group = kafka.group()
    events = [
        (
            f"acct-{i % 101}".encode(),
            b'{"transaction_id": ' if i in bad else ulb.event(i % SLICE, prefix=f"k{i // SLICE}"),
        )
        for i in range(n)
    ]
    # As in Kubernetes: the replacement comes back under the same instance id, so it takes the
    # partitions back at once and its producer aborts the transaction the killed one left open.
    extra = [*EXACTLY_ONCE, "--max-batch-size", "200", "--group-instance-id", "eos-0"]

    def start() -> WorkerProcess:
        w = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics, extra=extra).start()
        workers.append(w)
        return w

    worker = start()
    stream = Stream(kafka.producer(linger_ms=50, batch_size=256 * 1024), topics["input_topic"], events, rate=4000)
    stream.start()
    for k in range(kills):
        worker.wait_ready(timeout=90)
        worker.wait_metric("fraud_events_scored_total", 1, timeout=90)
        time.sleep(rng.uniform(0.5, 3.0))
        scored = worker.metric("fraud_events_scored_total")
        worker.stop(signal.SIGKILL)
        print(f"\nkill {k + 1}: this worker had scored {scored:,.0f}; committed "
              f"{committed(kafka, group, topics['input_topic'])}; stream sent {stream.sent:,}")  # fmt: skip
        worker = start()
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], timeout=180, workers=[worker])
    assert worker.stop() == 0
    figures = check_exactly_once(kafka, group, topics, n, len(bad))
    print(f"{kills} SIGKILLs over {n:,} events, exactly-once: {figures}, 0 duplicates, 0 missing")


def test_rebalances_commit_the_open_transaction_before_partitions_go(kafka, ulb, models_dir, topics, workers):
    """A second worker joins mid-stream, then the first stops: two rebalances, nothing twice, nothing lost."""
    group = kafka.group()
    n = 20_000

    def start() -> WorkerProcess:
        w = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics, extra=EXACTLY_ONCE).start()
        workers.append(w)
        return w

    first = start()
    first.wait_ready()
    stream = Stream(kafka.producer(linger_ms=20), topics["input_topic"],
                    [(f"acct-{i % 31}".encode(), ulb.event(i)) for i in range(n)], rate=2000)  # fmt: skip
    stream.start()
    first.wait_metric("fraud_events_scored_total", 3000)
    second = start()
    second.wait_ready(timeout=60)  # it owns partitions now
    second.wait_metric("fraud_events_scored_total", 1, timeout=60)
    first.wait_metric("fraud_rebalances_total", 2, timeout=30)
    assert first.stop() == 0  # SIGTERM mid-stream: its partitions go to the second
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], timeout=120, workers=[second])
    assert second.stop() == 0
    figures = check_exactly_once(kafka, group, topics, n, 0)
    print(f"\ntwo rebalances mid-stream, exactly-once: {figures}")
