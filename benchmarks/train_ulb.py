"""Benchmark (not a test): the full training job on the ULB credit-card data, and a 5-seed
comparison with scikit-learn ``LogisticRegression(class_weight='balanced')`` on the same splits
and scaler.

    .venv/bin/python benchmarks/train_ulb.py [--data ../shared/datasets/creditcard.csv.gz] [--seeds 0,1,2,3,4]

Prints a timing breakdown (load, fit, export, parity) and the comparison table, and writes
``benchmarks/train_results.json``. Data: Dal Pozzolo et al., "Calibrating Probability with
Undersampling for Unbalanced Classification", IEEE CIDM 2015.
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

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "creditcard.csv.gz"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out", default=str(Path(__file__).with_name("train_results.json")))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    from training.pipeline import TrainConfig, load_dataset, run

    # 1. One full run, as `fraud-train --data ...` does it, timed end to end.
    with tempfile.TemporaryDirectory() as models:
        t0 = time.perf_counter()
        result = run(TrainConfig(data_path=args.data, models_dir=models))
        wall = time.perf_counter() - t0
    t = result.timings
    print(f"full run: {wall:.1f} s wall (load {t['load']:.1f}, fit {t['fit']:.1f}, export {t['export']:.1f}, "
          f"parity {t['parity']:.2f}, evaluate+report {t['evaluate']:.1f}, write {t['write']:.2f}); "
          f"parity max |TFLite-Keras| {result.parity_max_abs_diff:.2e}")

    # 2. Five seeds: our TFLite model vs logistic regression on the same split and scaler.
    dataset = load_dataset(TrainConfig(data_path=args.data))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as models:
            r = run(TrainConfig(data_path=args.data, models_dir=models, seed=seed), dataset=dataset)
        sp = r.split
        scale = lambda X, r=r: (X - r.scaler_mean) / r.scaler_scale  # noqa: E731  the bundle's scaler
        lr = LogisticRegression(class_weight="balanced", max_iter=2000)
        lr.fit(scale(dataset.X[sp.train]), dataset.y[sp.train])
        y_test = dataset.y[sp.test]
        p_lr = lr.predict_proba(scale(dataset.X[sp.test]))[:, 1]
        rows.append({
            "seed": seed,
            "tflite_pr_auc": r.metrics["pr_auc"], "tflite_roc_auc": r.metrics["roc_auc"],
            "sklearn_pr_auc": float(average_precision_score(y_test, p_lr)),
            "sklearn_roc_auc": float(roc_auc_score(y_test, p_lr)),
            "epochs": r.manifest.training["epochs_run"], "parity": r.parity_max_abs_diff,
        })
        print(f"seed {seed}: TFLite PR AUC {rows[-1]['tflite_pr_auc']:.4f}  sklearn {rows[-1]['sklearn_pr_auc']:.4f}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    print()
    print("| seed | TFLite PR AUC | LogReg PR AUC | TFLite ROC AUC | LogReg ROC AUC |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['tflite_pr_auc']:.4f} | {r['sklearn_pr_auc']:.4f} | "
              f"{r['tflite_roc_auc']:.4f} | {r['sklearn_roc_auc']:.4f} |")
    print(f"| mean | {mean['tflite_pr_auc']:.4f} | {mean['sklearn_pr_auc']:.4f} | "
          f"{mean['tflite_roc_auc']:.4f} | {mean['sklearn_roc_auc']:.4f} |")
    ok_pr = mean["tflite_pr_auc"] >= mean["sklearn_pr_auc"] - 0.01
    ok_roc = mean["tflite_roc_auc"] >= 0.97
    print(f"\nPR AUC within 0.01 of LogReg: {ok_pr}; mean ROC AUC >= 0.97: {ok_roc}; "
          f"full run under 90 s: {wall < 90}")
    Path(args.out).write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "full_run_seconds": wall, "timings": t, "parity_max_abs_diff": result.parity_max_abs_diff,
        "seeds": rows, "mean": mean,
    }, indent=2) + "\n")
    return 0 if ok_pr and ok_roc else 1


if __name__ == "__main__":
    raise SystemExit(main())
