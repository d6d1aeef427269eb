"""The worker's time from process start to ready: model loaded, metrics served (``/healthz`` answering).

Timed at the start of every throughput run (``harness.Worker.wait_up``), so it costs no run of its
own: the figure is the median over the runs, for each guarantee and for at-least-once alone.
"""

from __future__ import annotations

import statistics


def report(runs: dict[str, list[dict]], out: dict) -> None:
    """Each guarantee's median into ``out["worker_by_guarantee"]``, and at-least-once's as
    ``worker_start_to_ready_s``."""
    for g, rs in runs.items():
        out["worker_by_guarantee"][g]["start_to_ready_s"] = statistics.median(r["start_to_ready_s"] for r in rs)
    out["worker_start_to_ready_s"] = statistics.median(r["start_to_ready_s"] for r in runs["at-least-once"])


def rows(r: dict) -> list[tuple[str, str]]:
    return [("worker start to ready (model + metrics)", f"{r['worker_start_to_ready_s']:.2f} s")]
