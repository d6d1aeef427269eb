"""Soak (issue 7, fault 6): ten minutes at a steady 500 events/s with the scores topic on.

Resident memory and open file descriptors are sampled every 10 s; after a one-minute warm-up
neither may grow beyond a small tolerance, and reconciliation must account for every event.
Deselected by default; run it with ``make soak`` (``SOAK_SECONDS`` and ``SOAK_RATE`` shorten or
speed it up).
"""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.conftest import SLICE
from tests.support.faults import reconcile_run
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, wait_committed

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "500"))
SAMPLE_EVERY = 10.0
WARM_UP = 60.0
RSS_TOLERANCE_MB = 8.0
FD_TOLERANCE = 3

pytestmark = [pytest.mark.soak, pytest.mark.slow, pytest.mark.timeout(SECONDS + 600)]


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_soak_memory_and_fds_stay_flat_and_every_event_reconciles(kafka, ulb, models_dir, topics, workers):
    group = kafka.group()
    n = int(SECONDS * RATE)
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics).start()
    workers.append(worker)
    worker.wait_ready()
    events = ((f"acct-{i % 997}".encode(), ulb.event(i % SLICE, prefix=f"soak{i // SLICE}")) for i in range(n))
    stream = Stream(kafka.producer(linger_ms=20), topics["input_topic"], events, rate=RATE)  # type: ignore[arg-type]
    started = time.monotonic()
    stream.start()
    samples: list[tuple[float, float, int]] = []
    while stream.is_alive():
        samples.append((time.monotonic() - started, worker.rss_mb(), _fds(worker.pid)))
        assert worker.proc.poll() is None, worker.output()[-3000:]
        time.sleep(SAMPLE_EVERY)
    stream.finish()
    wait_committed(kafka, group, topics["input_topic"], timeout=120, workers=[worker])
    samples.append((time.monotonic() - started, worker.rss_mb(), _fds(worker.pid)))
    scored = worker.metric("fraud_events_scored_total")
    assert worker.stop() == 0

    report = reconcile_run(kafka.bootstrap, group, topics)
    warm = [s for s in samples if s[0] >= min(WARM_UP, SECONDS / 4)] or samples
    first, last = warm[0], samples[-1]
    print(
        f"\nsoak: {n:,} events over {samples[-1][0]:.0f}s at {RATE:.0f}/s; scored {scored:,.0f}\n"
        f"  RSS MB  start {samples[0][1]:.1f}, after warm-up {first[1]:.1f} (t={first[0]:.0f}s), end {last[1]:.1f}, "
        f"max {max(s[1] for s in samples):.1f}\n"
        f"  fds     start {samples[0][2]}, after warm-up {first[2]}, end {last[2]}, max {max(s[2] for s in samples)}\n"
    )
    assert report.ok and report.lost == 0 and report.records == n, report.as_dict()
    assert last[1] - first[1] <= RSS_TOLERANCE_MB, f"RSS grew {first[1]:.1f} -> {last[1]:.1f} MB"
    assert last[2] - first[2] <= FD_TOLERANCE, f"open fds grew {first[2]} -> {last[2]}"

