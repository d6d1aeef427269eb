"""Benchmark (not a test): the lift of a feature spec on the synthetic v3 data.

For each seed: 100,000 synthetic v3 payments (customers and terminals with account takeovers,
card-testing bursts and compromised terminals; ``worker/offline/synthetic.py``), the full training job
with ``examples/behavioural.toml``, ``--split time`` and ``--fit-since`` two weeks in; then, from the
bundle's manifest (``training.behaviour``), the test PR AUC and ROC AUC of the bundle against the same
model on the event's own fields only, and the rate of the offline feature computation.

    .venv/bin/python benchmarks/feature_lift.py [--seeds 0,1,42] [--rows 100000]

Writes ``benchmarks/feature_lift.json``. Exit status 0 when, on every seed, the spec adds at least
0.2 to the test PR AUC.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIN_LIFT = 0.2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,42")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--spec", default=str(ROOT / "examples" / "behavioural.toml"))
    p.add_argument("--out", default=str(Path(__file__).with_name("feature_lift.json")))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from training.pipeline import TrainConfig, run

    rows: list[dict[str, Any]] = []
    print("| seed | test frauds | PR AUC with the spec | without | lift | ROC AUC with | without | features/s |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as models:
            cfg = TrainConfig(
                synthetic_rows=args.rows, generator="v3", feature_spec=args.spec, split="time",
                fit_since="2026-01-15", seed=seed, models_dir=models,
            )  # fmt: skip
            result = run(cfg)
        b = result.manifest.training["behaviour"]
        with_, without = b["lift"]["with"], b["lift"]["without"]
        row = {
            "seed": seed, "test_frauds": result.metrics["positives"], "with": with_, "without": without,
            "lift_pr_auc": with_["pr_auc"] - without["pr_auc"], "rows_per_second": b["rows_per_second"],
        }  # fmt: skip
        rows.append(row)
        print(f"| {seed} | {row['test_frauds']} | {with_['pr_auc']:.4f} | {without['pr_auc']:.4f} "
              f"| {row['lift_pr_auc']:+.4f} | {with_['roc_auc']:.4f} | {without['roc_auc']:.4f} "
              f"| {row['rows_per_second']:,.0f} |", flush=True)  # fmt: skip
    ok = all(r["lift_pr_auc"] >= MIN_LIFT for r in rows)
    print(f"\nthe spec adds at least {MIN_LIFT} PR AUC on every seed: {ok}")
    Path(args.out).write_text(
        json.dumps({"rows": args.rows, "spec": args.spec, "seeds": rows, "ok": ok}, indent=2) + "\n"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
