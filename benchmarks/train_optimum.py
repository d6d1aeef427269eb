"""Benchmark (not a test): how close training gets to its own optimum on the ULB credit-card data.

The model is convex (one dense layer, class-weighted log-loss, L2), so its best weights are
knowable. For each seed: a stratified split, 30 % held out for test and 10 % for validation; the
full training job; then, from the bundle's manifest (``training.optimum``), the fit's objective
against the reference optimum (scikit-learn ``LogisticRegression``, same class weights, same L2, on
the same transformed, scaled training rows), and the held-out PR AUC of the bundle (through its
TFLite model) against the reference weights'.

    .venv/bin/python benchmarks/train_optimum.py [--data ../shared/datasets/creditcard.csv.gz] [--seeds 0,1,2,3,4,42]

Writes ``benchmarks/train_optimum.json``. Exit status 0 when, on every seed, the objective is
within 0.5 % of the optimum and the PR AUC within 0.01 of the reference's.
Data: Dal Pozzolo et al., "Calibrating Probability with Undersampling for Unbalanced
Classification", IEEE CIDM 2015.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "creditcard.csv.gz"
MAX_GAP = 0.005
MAX_PR_AUC_DIFFERENCE = 0.01


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--seeds", default="0,1,2,3,4,42")
    p.add_argument("--out", default=str(Path(__file__).with_name("train_optimum.json")))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from training.pipeline import TrainConfig, load_dataset, run

    dataset = load_dataset(TrainConfig(data_path=args.data))
    rows: list[dict[str, Any]] = []
    print("| seed | objective | optimum | gap | bundle PR AUC | optimum PR AUC | difference | bundle ROC AUC "
          "| optimum ROC AUC | transforms | epochs | stopped | fit s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as models:
            cfg = TrainConfig(data_path=args.data, models_dir=models, seed=seed, test_fraction=0.3, val_fraction=0.1)
            t0 = time.perf_counter()
            result = run(cfg, dataset)
            wall = time.perf_counter() - t0
        facts = result.manifest.training
        o = facts["optimum"]
        row = {
            "seed": seed, "objective": o["objective"], "optimum": o["reference_objective"], "gap": o["gap"],
            "pr_auc": result.metrics["pr_auc"], "optimum_pr_auc": o["reference_test_pr_auc"],
            "roc_auc": result.metrics["roc_auc"], "optimum_roc_auc": o["reference_test_roc_auc"],
            "transforms": facts["transforms"]["used"], "epochs": facts["epochs_run"], "stopped": o["stopped"],
            "fit_seconds": result.timings["fit"], "run_seconds": wall,
        }
        row["ok"] = row["gap"] <= MAX_GAP and abs(row["pr_auc"] - row["optimum_pr_auc"]) <= MAX_PR_AUC_DIFFERENCE
        rows.append(row)
        print(f"| {seed} | {row['objective']:.6f} | {row['optimum']:.6f} | {100 * row['gap']:+.3f} % "
              f"| {row['pr_auc']:.4f} | {row['optimum_pr_auc']:.4f} | {row['pr_auc'] - row['optimum_pr_auc']:+.4f} "
              f"| {row['roc_auc']:.4f} | {row['optimum_roc_auc']:.4f} | {'with' if row['transforms'] else 'without'} "
              f"| {row['epochs']} | {row['stopped']} | {row['fit_seconds']:.0f} |", flush=True)
    ok = all(r["ok"] for r in rows)
    print(f"\nevery seed within {100 * MAX_GAP:g} % of the optimum and {MAX_PR_AUC_DIFFERENCE} PR AUC of it: {ok}")
    Path(args.out).write_text(json.dumps({"data": str(args.data), "seeds": rows, "ok": ok}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
