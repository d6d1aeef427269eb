"""Acceptance 6: how long scoring stops when a worker is SIGKILLed mid-stream and replaced at once.

A static member (``--group-instance-id``) restarted with the same id takes its partitions back at
once; a dynamic one waits for the broker to expire the dead member's session (10 s by default,
worker/edges/clients.py). Each test measures, from the kill, when the replacement answers HTTP (process
up), owns partitions (/readyz) and has scored its first event, and checks nothing was lost.

The cost of static membership: a static member that stops cleanly does not leave the group either
(kafka-python sends no LeaveGroup for it), so if it does not come back, its partitions wait for
the session timeout too.
"""

from __future__ import annotations

import json
import signal
import time

from tests.support.faults import reconcile_run
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, wait_committed

N = 15_000
RATE = 1_000  # events per second
SESSION_S = 10.0  # the worker's session timeout (worker/edges/clients.py)
HEARTBEAT_S = 3.0  # and its heartbeat interval
STATIC_BOUND_S = 5.0
DYNAMIC_BOUND_S = SESSION_S + 2.0


def _partitions(w: WorkerProcess) -> int:
    try:
        return json.loads(w.get("/readyz")[1]).get("partitions", 0)
    except OSError:  # its HTTP server is not up yet
        return 0


def _recovery(kafka, ulb, models_dir, topics, workers, instance_id: str) -> dict[str, float]:
    """Kill a worker that is scoring a steady stream, start its replacement at once; seconds from the kill."""
    group = kafka.group()
    extra = ["--group-instance-id", instance_id] if instance_id else []
    args = dict(group=group, extra=extra, **topics)
    first = WorkerProcess(kafka.bootstrap, models_dir, **args).start()
    workers.append(first)
    first.wait_ready()
    stream = Stream(kafka.producer(linger_ms=5), topics["input_topic"],
                    [(f"acct-{i % 31}".encode(), ulb.event(i)) for i in range(N)], rate=RATE)  # fmt: skip
    stream.start()
    first.wait_metric("fraud_events_scored_total", 2 * RATE)  # scoring the stream for a while
    killed = time.monotonic()
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = WorkerProcess(kafka.bootstrap, models_dir, **args).start()
    workers.append(second)

    seen: dict[str, float] = {}
    deadline = killed + DYNAMIC_BOUND_S + 20  # past the bound: a failure still says how long it took
    while "scored" not in seen and time.monotonic() < deadline:
        assert second.proc.poll() is None, second.output()[-3000:]
        try:
            partitions = json.loads(second.get("/readyz")[1]).get("partitions", 0)
            seen.setdefault("http", time.monotonic() - killed)
            if partitions == 3:
                seen.setdefault("assigned", time.monotonic() - killed)
            if second.metric("fraud_events_scored_total") >= 1:
                seen.setdefault("scored", time.monotonic() - killed)
        except OSError:  # its HTTP server is not up yet
            pass
        time.sleep(0.02)
    assert stream.is_alive(), "the stream ended before the replacement scored: lengthen it"
    kind = f"static (--group-instance-id {instance_id})" if instance_id else "dynamic (no instance id)"
    print("\n" + f"{kind}: after the SIGKILL the replacement " +
          ", ".join(f"{k} at {v:.2f}s" for k, v in seen.items()))  # fmt: skip

    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], workers=[second])
    assert second.stop() == 0
    report = reconcile_run(kafka.bootstrap, group, topics)
    assert report.records == N and report.lost == 0, report.as_dict()
    return seen


def test_static_member_restarted_with_its_id_scores_again_within_5s(kafka, ulb, models_dir, topics, workers):
    seen = _recovery(kafka, ulb, models_dir, topics, workers, instance_id="w-0")
    assert seen.get("scored", float("inf")) <= STATIC_BOUND_S, seen


def test_dynamic_member_replaced_scores_again_within_the_session_timeout(kafka, ulb, models_dir, topics, workers):
    seen = _recovery(kafka, ulb, models_dir, topics, workers, instance_id="")
    assert seen.get("scored", float("inf")) <= DYNAMIC_BOUND_S, seen


def test_static_member_that_stops_cleanly_holds_its_partitions_a_session(kafka, models_dir, topics, workers):
    group = kafka.group()
    for i in range(2):
        workers.append(WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics,
                                     extra=["--group-instance-id", f"w-{i}"]).start())  # fmt: skip
    a, b = workers
    deadline = time.monotonic() + 60
    while not (_partitions(a) and _partitions(b) and _partitions(a) + _partitions(b) == 3):
        assert time.monotonic() < deadline, a.output()[-2000:] + b.output()[-2000:]
        time.sleep(0.1)
    stopped = time.monotonic()
    assert a.stop() == 0  # SIGTERM: commits and closes its consumer, but sends no LeaveGroup
    while _partitions(b) < 3 and time.monotonic() < stopped + SESSION_S + 30:
        time.sleep(0.02)
    took = time.monotonic() - stopped
    print(f"\nstatic member w-0 stopped cleanly (SIGTERM): w-1 owned all 3 partitions {took:.2f}s later")
    # A member that left would hand over within a second or two; this one is only expired, and the
    # survivor hears of the rebalance that follows at its next heartbeat.
    assert SESSION_S / 2 <= took <= SESSION_S + HEARTBEAT_S + 2, took


def test_a_second_worker_under_the_same_instance_id_makes_the_first_stop_with_status_1(
    kafka, ulb, models_dir, topics, workers
):
    """Two live workers under one name would both score every event; the one fenced out stops."""
    group = kafka.group()
    args = dict(group=group, extra=["--group-instance-id", "w-0"], **topics)
    first = WorkerProcess(kafka.bootstrap, models_dir, **args).start()
    workers.append(first)
    first.wait_ready()
    stream = Stream(kafka.producer(linger_ms=5), topics["input_topic"],
                    [(f"acct-{i % 31}".encode(), ulb.event(i)) for i in range(6000)], rate=RATE)  # fmt: skip
    stream.start()
    first.wait_metric("fraud_events_scored_total", RATE)
    second = WorkerProcess(kafka.bootstrap, models_dir, **args).start()
    workers.append(second)
    started = time.monotonic()
    status = first.proc.wait(timeout=60)
    took = time.monotonic() - started
    assert status == 1, first.output()[-3000:]
    assert "as group_instance_id 'w-0', so this one stops" in first.output()
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], workers=[second])
    assert second.stop() == 0
    report = reconcile_run(kafka.bootstrap, group, topics)
    assert report.records == 6000 and report.lost == 0, report.as_dict()
    print(f"\nthe first w-0 stopped with status 1 {took:.1f}s after the second started; lost 0, "
          f"scored twice {report.duplicates}")  # fmt: skip
