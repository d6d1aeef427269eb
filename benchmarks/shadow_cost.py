"""The shadow challenger's cost: the worker alone, with a shadow feeding only its metrics, and with one writing
a shadow record per event, over one backlog in rotating order; then the same on top of a worker that already
writes a score record per event (``--scores-topic``)."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import uuid
from pathlib import Path

from benchmarks.harness import create_topics, log, median_runs, pair_ratios, produce_all, worker_run


def measure(bootstrap: str, models: str, values: list[bytes], repeats: int) -> dict:
    """The worker alone, with a shadow challenger feeding only its metrics, and with one writing a shadow
    record per event, over one backlog, in rotating order: the throughput ratios. Then the same for a
    worker that already writes a score record per event (``--scores-topic``, as label feedback needs):
    the shadow topic's cost on top of that.

    The shadow runs' models directory is a copy whose CHALLENGER names the champion's own bundle (the
    cost of a shadow does not depend on its weights).
    """
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-shadow-in-{tag}", "alerts": f"bench-shadow-alerts-{tag}",
              "dlq": f"bench-shadow-dlq-{tag}", "shadow": f"bench-shadow-out-{tag}",
              "scores": f"bench-shadow-scores-{tag}"}  # fmt: skip
    create_topics(bootstrap, {topics["input"]: (6, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {}),
                              topics["shadow"]: (6, {}), topics["scores"]: (6, {})})  # fmt: skip
    secs = produce_all(bootstrap, topics["input"], values)
    log(f"shadow cost: produced {len(values):,} events in {secs:.1f}s; {repeats} rounds of five runs")
    shadowed = tempfile.mkdtemp(prefix="fraud-bench-shadow-models-")
    try:
        shutil.copytree(models, shadowed, dirs_exist_ok=True)
        version = (Path(models) / "CURRENT").read_text().strip()
        (Path(shadowed) / "CHALLENGER").write_text(version + "\n")
        variants = {
            "worker": (models, ()),
            "shadow_metrics_only": (shadowed, ()),
            "shadow_with_topic": (shadowed, ("--shadow-topic", topics["shadow"])),
            "worker_with_scores": (models, ("--scores-topic", topics["scores"])),
            "shadow_topic_with_scores": (
                shadowed,
                ("--scores-topic", topics["scores"], "--shadow-topic", topics["shadow"]),
            ),
        }
        runs: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for i in range(repeats):
            for name in names[i % len(names) :] + names[: i % len(names)]:  # the order rotates
                where, extra = variants[name]
                runs[name].append(worker_run(bootstrap, where, topics, len(values), extra=extra)["rate"])
            log(f"round {i + 1}/{repeats}: " + ", ".join(f"{n} {runs[n][-1]:,.0f}/s" for n in names))
    finally:
        shutil.rmtree(shadowed, ignore_errors=True)
    out: dict = {"events": len(values)}
    for name in names:
        out[name] = median_runs(runs[name])
    for name, base in (("shadow_metrics_only", "worker"), ("shadow_with_topic", "worker"),
                       ("shadow_topic_with_scores", "worker_with_scores")):  # fmt: skip
        pairs = pair_ratios(runs[name], runs[base])
        out[f"{name}_over_{base}"] = {"median_of_pairs": statistics.median(pairs), "runs": pairs}
    return out


def print_shadow(sh: dict) -> None:
    print("\nShadow challenger (models/CHALLENGER scored beside the champion on every batch)")
    print(f"  worker alone                           {sh['worker']['median']:>10,.0f} events/s (median)")
    for name, label in (("shadow_metrics_only", "with a shadow, metrics only"),
                        ("shadow_with_topic", "with a shadow writing --shadow-topic")):  # fmt: skip
        r = sh[f"{name}_over_worker"]["median_of_pairs"]
        print(f"  {label:<38} {sh[name]['median']:>10,.0f} events/s, ratio {r:.3f} (goal >= 0.9: "
              f"{'pass' if r >= 0.9 else 'FAIL'})")  # fmt: skip
    if "worker_with_scores" in sh:
        r = sh["shadow_topic_with_scores_over_worker_with_scores"]["median_of_pairs"]
        print(f"  {'worker writing --scores-topic':<38} {sh['worker_with_scores']['median']:>10,.0f} events/s (median)")
        print(f"  {'  and a shadow writing --shadow-topic':<38} {sh['shadow_topic_with_scores']['median']:>10,.0f} "
              f"events/s, ratio {r:.3f} to it")  # fmt: skip
