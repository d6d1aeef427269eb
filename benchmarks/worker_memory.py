"""The worker's peak resident memory, its decoder process included (each one's VmHWM).

Read at the end of every throughput run (``harness.Worker.peak_rss_mb``), so it costs no run of its
own: the figure is the peak over the runs, for each guarantee and for at-least-once alone.
"""

from __future__ import annotations


def report(runs: dict[str, list[dict]], out: dict) -> None:
    """Each guarantee's peak into ``out["worker_by_guarantee"]``, and at-least-once's as ``worker_peak_rss_mb``."""
    for g, rs in runs.items():
        out["worker_by_guarantee"][g]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rs)
    out["worker_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs["at-least-once"])


def rows(r: dict) -> list[tuple[str, str]]:
    return [("worker peak RSS (with its decoder process)", f"{r['worker_peak_rss_mb']:.1f} MB")]
