"""Benchmark (not a test): the lift of the feature specs on the synthetic v3 data.

For each seed: 100,000 synthetic v3 payments (customers and terminals with account takeovers,
card-testing bursts and compromised terminals, each label with its label time;
``worker/offline/synthetic.py``), the full training job with ``--split time`` and ``--fit-since`` two
weeks in, twice: with ``examples/behavioural.toml`` (the transaction aggregates) and with
``examples/entity-risk.toml`` (the same plus each terminal's confirmed fraud, the label-derived
features). From each bundle's manifest (``training.behaviour``): the test PR AUC and ROC AUC of the
bundle and of the same model on the event's own fields only, and the rate of the offline feature
computation. The table shows per seed the own fields, both specs, and the margin of entity-risk over
behavioural.

    .venv/bin/python benchmarks/feature_lift.py [--seeds 0,1,42] [--rows 100000]

Writes ``benchmarks/feature_lift.json``: per seed the behavioural spec's ``with`` / ``without`` /
``lift_pr_auc`` / ``rows_per_second`` / ``test_frauds``, and under ``entity_risk`` the same for
entity-risk with its ``margin_pr_auc`` and ``margin_roc_auc`` over behavioural. Exit status 0 when, on
every seed, the behavioural spec adds at least 0.2 to the test PR AUC of the own fields and entity-risk's
test PR AUC is above behavioural's.
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


def train(spec: str, rows: int, seed: int) -> dict[str, Any]:
    """One training with ``spec``: its test frauds, test metrics with and without the spec, feature rate."""
    from training.pipeline import TrainConfig, run

    with tempfile.TemporaryDirectory() as models:
        cfg = TrainConfig(
            synthetic_rows=rows, generator="v3", feature_spec=spec, split="time",
            fit_since="2026-01-15", seed=seed, models_dir=models,
        )  # fmt: skip
        result = run(cfg)
    b = result.manifest.training["behaviour"]
    with_, without = b["lift"]["with"], b["lift"]["without"]
    return {
        "test_frauds": result.metrics["positives"], "with": with_, "without": without,
        "lift_pr_auc": with_["pr_auc"] - without["pr_auc"], "rows_per_second": b["rows_per_second"],
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,42")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--spec", default=str(ROOT / "examples" / "behavioural.toml"), help="the behavioural spec")
    p.add_argument(
        "--risk-spec", default=str(ROOT / "examples" / "entity-risk.toml"), help="the spec with label-derived features"
    )
    p.add_argument("--out", default=str(Path(__file__).with_name("feature_lift.json")))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows: list[dict[str, Any]] = []
    print("| seed | test frauds | PR AUC own fields | behavioural | entity-risk | margin "
          "| ROC AUC own fields | behavioural | entity-risk | margin |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        row: dict[str, Any] = {"seed": seed, **train(args.spec, args.rows, seed)}
        risk = train(args.risk_spec, args.rows, seed)
        risk["margin_pr_auc"] = risk["with"]["pr_auc"] - row["with"]["pr_auc"]
        risk["margin_roc_auc"] = risk["with"]["roc_auc"] - row["with"]["roc_auc"]
        row["entity_risk"] = risk
        rows.append(row)
        own, beh, ent = row["without"], row["with"], risk["with"]
        frauds = str(row["test_frauds"])
        if risk["test_frauds"] != row["test_frauds"]:
            frauds += f" / {risk['test_frauds']}"
        print(f"| {seed} | {frauds} | {own['pr_auc']:.4f} | {beh['pr_auc']:.4f} | {ent['pr_auc']:.4f} "
              f"| {risk['margin_pr_auc']:+.4f} | {own['roc_auc']:.4f} | {beh['roc_auc']:.4f} | {ent['roc_auc']:.4f} "
              f"| {risk['margin_roc_auc']:+.4f} |", flush=True)  # fmt: skip
    lift_ok = all(r["lift_pr_auc"] >= MIN_LIFT for r in rows)
    risk_ok = all(r["entity_risk"]["margin_pr_auc"] > 0 for r in rows)
    ok = lift_ok and risk_ok
    print(f"\nthe behavioural spec adds at least {MIN_LIFT} PR AUC over the own fields on every seed: {lift_ok}")
    print(f"entity-risk beats behavioural on PR AUC on every seed: {risk_ok}")
    Path(args.out).write_text(
        json.dumps(
            {"rows": args.rows, "spec": args.spec, "risk_spec": args.risk_spec, "seeds": rows,
             "lift_ok": lift_ok, "entity_risk_ok": risk_ok, "ok": ok},
            indent=2,
        ) + "\n"
    )  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
