"""The scoring cost per 500-row batch (``Scorer.scale`` + ``score_scaled``, no broker): every feature identity
against the V columns signed_log1p and Amount log1p clipped to [0, its 99.5 % quantile], alternating."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import BATCH, cpu_name, in_turn, median_runs, pair_ratios


def measure(raw: np.ndarray, manifest: dict, model_bytes: bytes, repeats: int, batches: int) -> dict:
    """Microseconds per 500-row batch of ``Scorer.scale`` + ``score_scaled``, all identity and with transforms.

    The same model and weights both ways; only ``feature_transforms`` differs (the V columns
    signed_log1p, Amount log1p clipped to [0, its 99.5 % quantile], Time identity). The two
    alternate, which goes first swapping every repetition; each repetition times ``batches``
    consecutive batches of ULB rows; medians over the repetitions, and the median of the per-pair ratios.
    """
    from dataclasses import replace

    from worker.core.bundle import Bundle, Manifest
    from worker.core.scoring import Scorer
    from worker.core.transforms import FeatureTransform

    base = Manifest.from_dict(manifest)
    names = base.feature_names
    rows = np.asarray(raw[: batches * BATCH], dtype=np.float32)
    amount_hi = float(np.quantile(rows[:, names.index("Amount")], 0.995))
    transforms = tuple(
        FeatureTransform("signed_log1p") if n.startswith("V")
        else FeatureTransform("log1p", (0.0, amount_hi)) if n == "Amount"
        else FeatureTransform()
        for n in names
    )  # fmt: skip
    scorers = {
        "identity": Scorer(Bundle(Path("."), replace(base, feature_transforms=()), model_bytes)),
        "transforms": Scorer(Bundle(Path("."), replace(base, feature_transforms=transforms), model_bytes)),
    }
    chunks = [rows[i : i + BATCH] for i in range(0, len(rows) - BATCH + 1, BATCH)]
    for s in scorers.values():  # warm up: the interpreter sized for a 500-row batch
        for c in chunks[:5]:
            s.score_scaled(s.scale(c))
    times: dict[str, list[float]] = {k: [] for k in scorers}
    for r in range(repeats):
        for name in in_turn(list(scorers), r):
            s = scorers[name]
            t0 = time.perf_counter()
            for c in chunks:
                s.score_scaled(s.scale(c))
            times[name].append((time.perf_counter() - t0) / len(chunks) * 1e6)
    ident, trans = times["identity"], times["transforms"]
    return {
        "batch_rows": BATCH,
        "batches_per_repeat": len(chunks),
        "repeats": repeats,
        "transforms": f"signed_log1p on V1..V28, log1p on Amount clipped to [0, {amount_hi:.2f}], Time identity",
        "identity_us_per_batch": median_runs(ident),
        "transforms_us_per_batch": median_runs(trans),
        "ratio_of_medians": statistics.median(trans) / statistics.median(ident),
        "median_of_ratios": statistics.median(pair_ratios(trans, ident)),
    }


def environment() -> dict:
    """What the figure depends on when the step runs alone (no broker, so no Kafka versions)."""
    return {"cores": os.cpu_count(), "cpu": cpu_name(), "python": platform.python_version(),
            "numpy": md.version("numpy"), "ai-edge-litert": md.version("ai-edge-litert")}  # fmt: skip


def print_scoring(sc: dict) -> None:
    print(f"scoring per {sc['batch_rows']}-row batch (Scorer.scale + score_scaled; median of {sc['repeats']} "
          f"alternating repetitions of {sc['batches_per_repeat']} batches):")  # fmt: skip
    print(f"  all identity      {sc['identity_us_per_batch']['median']:8.1f} µs")
    print(f"  with transforms   {sc['transforms_us_per_batch']['median']:8.1f} µs  ({sc['transforms']})")
    print(f"  ratio of medians  {sc['ratio_of_medians']:8.3f}   "
          f"(median of the per-pair ratios {sc['median_of_ratios']:.3f})")  # fmt: skip


def rows(r: dict) -> list[tuple[str, str]]:
    """The summary table's scoring rows (none when the step was not run)."""
    sc = r.get("scoring_per_batch")
    if not sc:
        return []
    return [
        (
            f"scoring per {sc['batch_rows']}-row batch, all identity / with transforms (median)",
            f"{sc['identity_us_per_batch']['median']:.1f} / {sc['transforms_us_per_batch']['median']:.1f} µs",
        ),
        ("  with transforms / all identity (ratio of medians)", f"{sc['ratio_of_medians']:.3f}"),
    ]
