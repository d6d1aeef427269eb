"""Benchmark (not a test): the full training job on the ULB credit-card data, and a 5-seed
comparison with scikit-learn ``LogisticRegression(class_weight='balanced')`` on raw and on
signed-log1p features, fitted on the same training rows (standardised on them) and measured on
the same test rows.

    .venv/bin/python benchmarks/train_ulb.py [--data ../shared/datasets/creditcard.csv.gz] [--seeds 0,1,2,3,4]

Prints a timing breakdown (load, fit, export, parity) and the comparison table, and writes
``benchmarks/train_results.json``. Exit status 0 when the acceptance holds: the bundle's mean test
PR AUC >= logistic regression on signed-log1p features - 0.01, and its mean ROC AUC >= 0.97.
Data: Dal Pozzolo et al., "Calibrating Probability with Undersampling for Unbalanced
Classification", IEEE CIDM 2015.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "creditcard.csv.gz"


def signed_log1p(X: np.ndarray) -> np.ndarray:
    return np.sign(X) * np.log1p(np.abs(X))


def logistic_baselines(X: np.ndarray, y: np.ndarray, split: Any) -> dict[str, float]:
    """Class-weighted logistic regression on raw and on signed-log1p features: test PR and ROC AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    out = {}
    for name, features in (("raw", X), ("slog", signed_log1p(X))):
        mean, std = features[split.train].mean(axis=0), features[split.train].std(axis=0)
        std[~(std > 1e-12)] = 1.0
        scaled = (features - mean) / std
        lr = LogisticRegression(class_weight="balanced", max_iter=3000)
        lr.fit(scaled[split.train], y[split.train])
        p = lr.predict_proba(scaled[split.test])[:, 1]
        out[f"lr_{name}_pr_auc"] = float(average_precision_score(y[split.test], p))
        out[f"lr_{name}_roc_auc"] = float(roc_auc_score(y[split.test], p))
    return out


def compare(cfg_for_seed, dataset, seeds: list[int]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per seed: one bundle (training.pipeline.run) and the two baselines on its split."""
    from training.pipeline import run

    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as models:
            r = run(cfg_for_seed(seed, models), dataset=dataset)
        facts = r.manifest.training
        kinds = [t.kind for t in r.manifest.feature_transforms]
        rows.append({
            "seed": seed,
            "bundle_pr_auc": r.metrics["pr_auc"], "bundle_roc_auc": r.metrics["roc_auc"],
            **logistic_baselines(dataset.X, dataset.y, r.split),
            "val_pr_auc_with": facts["transforms"]["validation_pr_auc"]["with"],
            "val_pr_auc_without": facts["transforms"]["validation_pr_auc"]["without"],
            "transforms_used": facts["transforms"]["used"],
            "transformed": {k: kinds.count(k) for k in ("identity", "log1p", "signed_log1p")},
            "epochs": facts["epochs_run"], "parity": r.parity_max_abs_diff,
        })
        row = rows[-1]
        print(f"seed {seed}: bundle PR AUC {row['bundle_pr_auc']:.4f}  LR raw {row['lr_raw_pr_auc']:.4f}  "
              f"LR signed-log1p {row['lr_slog_pr_auc']:.4f}  (transforms used: {row['transforms_used']})", flush=True)
    numeric = [k for k, v in rows[0].items() if k != "seed" and isinstance(v, (int, float))]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in numeric}
    return rows, mean


def table(rows: list[dict[str, Any]], mean: dict[str, float]) -> str:
    lines = [
        "| seed | bundle PR AUC | LR raw PR AUC | LR signed-log1p PR AUC | bundle ROC AUC | LR raw ROC AUC "
        "| LR signed-log1p ROC AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = ("bundle_pr_auc", "lr_raw_pr_auc", "lr_slog_pr_auc", "bundle_roc_auc", "lr_raw_roc_auc", "lr_slog_roc_auc")
    for r in rows:
        lines.append(f"| {r['seed']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{mean[k]:.4f}**" for k in keys) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out", default=str(Path(__file__).with_name("train_results.json")))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from training.pipeline import TrainConfig, load_dataset, run

    # 1. One full run, as `fraud-train --data ...` does it, timed end to end.
    with tempfile.TemporaryDirectory() as models:
        t0 = time.perf_counter()
        result = run(TrainConfig(data_path=args.data, models_dir=models))
        wall = time.perf_counter() - t0
    t = result.timings
    print(f"full run: {wall:.1f} s wall (load {t['load']:.1f}, fit {t['fit']:.1f} for two fits, "
          f"export {t['export']:.1f}, parity {t['parity']:.2f}, evaluate+report {t['evaluate']:.1f}, "
          f"write {t['write']:.2f}); parity max |TFLite-Keras| {result.parity_max_abs_diff:.2e}", flush=True)

    # 2. Five seeds: the bundle (through the TFLite model) vs logistic regression on the same split.
    dataset = load_dataset(TrainConfig(data_path=args.data))
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, mean = compare(lambda seed, models: TrainConfig(data_path=args.data, models_dir=models, seed=seed),
                         dataset, seeds)
    print()
    print(table(rows, mean))
    ok_pr = mean["bundle_pr_auc"] >= mean["lr_slog_pr_auc"] - 0.01
    ok_roc = mean["bundle_roc_auc"] >= 0.97
    print(f"\nmean bundle PR AUC >= LR signed-log1p - 0.01: {ok_pr} "
          f"({mean['bundle_pr_auc']:.4f} vs {mean['lr_slog_pr_auc']:.4f}); mean ROC AUC >= 0.97: {ok_roc}")
    Path(args.out).write_text(json.dumps({
        "machine": machine(), "data": str(args.data),
        "full_run_seconds": wall, "timings": t, "parity_max_abs_diff": result.parity_max_abs_diff,
        "seeds": rows, "mean": mean, "acceptance": {"pr_auc": ok_pr, "roc_auc": ok_roc},
    }, indent=2) + "\n")
    return 0 if ok_pr and ok_roc else 1


if __name__ == "__main__":
    raise SystemExit(main())
