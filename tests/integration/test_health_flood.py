"""A running worker under a flood of connections to its health port that never finish a request.

While events stream in, 2,000 connections are opened on the worker's ``/metrics``/``/healthz``
port (a third silent, a third with half a request head, a third sending a byte a second) by a
process of its own, which also probes ``/healthz`` with a fresh connection every 20 ms, as a
kubelet would, and reads the worker's thread count (``/proc/<pid>/status``). The thread count must
stay where it was, every probe must be answered (95 % of them within 100 ms, every one within
250 ms), and reconciliation must find every event sent scored.

Why not every probe within 100 ms: on this project's 2-core machine, the probe that connects while
the 2,000 connections arrive (in about 0.2 s, from a process of their own, beside the worker, its
decoder process and the broker) waits behind them in the kernel's accept queue, and its wait is
mostly CPU time the machine has not got: runs measured a slowest probe of 11 to 103 ms (the one
over 100 in a full-suite CI run), p95 well under 30 ms. 250 ms still tells this server from one
that piles up a thread per connection (1,028 ms, and 2,005 threads, under the same flood).
"""

from __future__ import annotations

from tests.integration.conftest import SLICE
from tests.support.faults import reconcile_run
from tests.support.flood import flood_elsewhere, thread_count
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, wait_committed

N = 20_000
RATE = 2_000  # events/s: the stream outlasts the flood (10 s against about 3 s)
SPARE_THREADS = 2  # kafka-python may start a short-lived thread of its own (e.g. a metadata refresh)


def test_a_connection_flood_holds_no_worker_threads_and_neither_probes_nor_scoring_stop(
    kafka, ulb, models_dir, topics, workers
):
    group = kafka.group()
    w = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics).start()
    workers.append(w)
    w.wait_ready()
    events = [(f"acct-{i % 101}".encode(), ulb.event(i % SLICE, prefix=f"k{i // SLICE}")) for i in range(N)]
    stream = Stream(kafka.producer(linger_ms=20), topics["input_topic"], events, rate=RATE)
    stream.start()
    w.wait_metric("fraud_events_scored_total", 1)  # the committer thread exists from the first batch on
    threads_before = thread_count(w.pid)
    _, _, unflooded = flood_elsewhere(w.port, w.pid, n=0)  # what scoring alone costs a probe, for comparison

    opened, refused, probes = flood_elsewhere(w.port, w.pid, n=2000)
    sent_during_flood = stream.sent
    stream.finish()
    print(f"\n{opened} unfinished connections while {sent_during_flood:,} events had been sent: "
          f"{probes.summary()}; before: {unflooded.summary()}")  # fmt: skip

    assert opened == 2000 and refused == 0
    assert set(probes.statuses) == {200} and len(probes.latencies) >= 20
    assert probes.p95 < 0.100 and max(probes.latencies) < 0.250, probes.summary()
    assert max(probes.threads) <= threads_before + SPARE_THREADS, probes.summary()
    assert w.metric("fraud_health_connections_dropped_total", {"reason": "cap"}) >= 2000 - 64

    wait_committed(kafka, group, topics["input_topic"], timeout=120, workers=[w])
    assert w.stop() == 0
    report = reconcile_run(kafka.bootstrap, group, topics)
    assert report.records == N and report.scored == N, report.as_dict()
    assert report.lost == 0 and report.wrong_alerts == 0 and report.missing_alerts == 0, report.as_dict()
