"""Fault 1: SIGKILL the worker three times at random moments of a 100,000-event stream.

Each killed worker is replaced at once. Reconciliation must find nothing lost or wrong, and every
record scored twice must come from the one uncommitted batch at one of the kills (the worker
produces a batch's results only once the previous batch's commit has landed), so its offset lies
within one batch after the group's committed offset at that kill.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

from tests.integration.conftest import SLICE
from tests.support.faults import reconcile_run
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, committed, headers, read_topic, wait_committed

N = 100_000
KILLS = 3
BATCH = 200
SEED = 7
UNCOMMITTED = BATCH  # per kill: the batch in hand


def test_three_sigkills_lose_nothing_and_repeat_at_most_one_batch_each(kafka, ulb, models_dir, topics, workers):
    rng = random.Random(SEED)
    group = kafka.group()
    events = [(f"acct-{i % 101}".encode(), ulb.event(i % SLICE, prefix=f"k{i // SLICE}")) for i in range(N)]
    # A killed member's partitions wait for its session to expire (the worker's default is 10 s,
    # tests/integration/test_worker_recovery.py): 6 s, the broker's minimum, saves 12 s over 3 kills.
    extra = ["--max-batch-size", str(BATCH), "--kafka-option", "session_timeout_ms=6000",
             "--kafka-option", "heartbeat_interval_ms=1000"]  # fmt: skip
    args = dict(group=group, extra=extra, **topics)

    def start() -> WorkerProcess:
        w = WorkerProcess(kafka.bootstrap, models_dir, **args).start()
        workers.append(w)
        return w

    t0 = time.monotonic()
    worker = start()
    stream = Stream(kafka.producer(linger_ms=50, batch_size=256 * 1024), topics["input_topic"], events, rate=4000)
    stream.start()
    at_kill: list[dict[int, int]] = []
    for k in range(KILLS):
        worker.wait_ready(timeout=90)
        worker.wait_metric("fraud_events_scored_total", 1, timeout=90)
        delay = rng.uniform(0.5, 3.0)
        time.sleep(delay)
        scored = worker.metric("fraud_events_scored_total")
        worker.stop(signal.SIGKILL)
        at_kill.append(committed(kafka, group, topics["input_topic"]))
        print(f"\nkill {k + 1}: {delay:.2f}s after scoring began, this worker had scored {scored:,.0f}; "
              f"committed {at_kill[-1]}; stream sent {stream.sent:,}")  # fmt: skip
        worker = start()
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], timeout=180, workers=[worker])
    assert worker.stop() == 0
    elapsed = time.monotonic() - t0

    report = reconcile_run(kafka.bootstrap, group, topics)
    assert report.records == N
    assert report.lost == 0 and report.wrong_alerts == 0 and report.missing_alerts == 0, report.as_dict()
    assert report.duplicates <= KILLS * UNCOMMITTED, report.as_dict()

    counts = Counter()
    for r in read_topic(kafka, topics["scores_topic"]):
        h = headers(r)
        counts[(int(h["source_partition"]), int(h["source_offset"]))] += 1
    repeated = [key for key, n in counts.items() if n > 1]
    assert len(repeated) == report.duplicates
    for p, offset in repeated:
        assert any(c.get(p, 0) <= offset < c.get(p, 0) + UNCOMMITTED for c in at_kill), (p, offset, at_kill)
    print(f"{KILLS} SIGKILLs (seed {SEED}) over {N:,} events in {elapsed:.0f}s: lost {report.lost}, "
          f"wrong {report.wrong_alerts + report.missing_alerts}, "
          f"scored twice {report.duplicates} (max {KILLS * UNCOMMITTED})")  # fmt: skip
