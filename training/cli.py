"""``fraud-train``: train, verify and publish a model bundle. See ``fraud-train --help``.

Exit codes: 0 a bundle was written (promoted or not, the last line says which), 1 bad input or a
failed check (nothing written), 2 bad usage, 3 the ``training`` extra is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence

from training.thresholds import POLICIES, Policy

logger = logging.getLogger("training")

EXTRA_HINT = "fraud-train needs the training extra: pip install 'fraud-scoring[training]'"
HEAVY = ("tensorflow", "sklearn", "matplotlib")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fraud-train",
        description="Train the fraud model (class-weighted Dense(1, sigmoid) with L2), export it to TFLite, "
        "verify TFLite/Keras parity, and write a model bundle; promote it to CURRENT if it is not worse.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = p.add_argument_group("data").add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="PATH", help="labelled CSV (plain or .gz), e.g. the ULB creditcard.csv")
    src.add_argument("--synthetic", metavar="N", type=int, help="generate N seeded synthetic transactions instead")
    d = p.add_argument_group("columns")
    d.add_argument("--label-column", default="Class", help="0/1 label column (1 = fraud)")
    d.add_argument(
        "--features", type=lambda s: tuple(x.strip() for x in s.split(",") if x.strip()), default=None,
        help="comma-separated feature columns, in model input order (default: every numeric column but the label)",
    )
    d.add_argument("--fraud-rate", type=float, default=0.005, help="fraud share of --synthetic data")
    d.add_argument("--min-rows", type=int, default=1000, help="refuse data with fewer rows")
    s = p.add_argument_group("split")
    s.add_argument(
        "--split", choices=("stratified", "time"), default="stratified",
        help="stratified: random per class with --seed; time: oldest rows train, newest test (see --time-column)",
    )
    s.add_argument("--time-column", default="Time", help="column ordering rows for --split time")
    s.add_argument("--val-fraction", type=float, default=0.2, help="share of rows for validation")
    s.add_argument("--test-fraction", type=float, default=0.2, help="share of rows for test")
    t = p.add_argument_group("training")
    t.add_argument("--seed", type=int, default=42, help="seed for the split, weight init and batch order")
    t.add_argument("--epochs", type=int, default=60, help="maximum epochs (early stopping on validation PR AUC)")
    t.add_argument("--patience", type=int, default=5, help="epochs without a better validation PR AUC before stopping")
    t.add_argument("--l2", type=float, default=1e-6, help="L2 penalty on the kernel")
    t.add_argument("--learning-rate", type=float, default=0.1, help="initial Adam learning rate")
    t.add_argument("--lr-decay", type=float, default=0.95, help="learning-rate factor per epoch")
    t.add_argument("--batch-size", type=int, default=32768, help="rows per gradient step")
    t.add_argument(
        "--class-weight", default="balanced",
        help="'balanced' (n / (2 n_class)), 'none', or a number: the fraud class's weight (genuine = 1)",
    )
    th = p.add_argument_group("threshold (chosen on the validation split)")
    th.add_argument(
        "--threshold-policy", choices=POLICIES, default="max-f1",
        help="max-f1: best F1; precision: most recall at --target-precision; cost: least expected cost",
    )
    th.add_argument("--target-precision", type=float, default=0.9, help="for --threshold-policy precision")
    th.add_argument("--cost-missed-fraud", type=float, default=100.0, help="for --threshold-policy cost: cost of a FN")
    th.add_argument("--cost-false-alarm", type=float, default=1.0, help="for --threshold-policy cost: cost of a FP")
    o = p.add_argument_group("output")
    o.add_argument("--models-dir", default="models", help="where bundles and CURRENT live")
    o.add_argument(
        "--promote-tolerance", type=float, default=0.005,
        help="promote unless test PR AUC is worse than CURRENT's on the same rows by more than this",
    )
    o.add_argument("--force", action="store_true", help="promote to CURRENT even if the gate says no")
    o.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the summary")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    missing = [m for m in HEAVY if importlib.util.find_spec(m) is None]
    if missing:
        print(EXTRA_HINT, file=sys.stderr)
        return 3
    try:
        policy = Policy(args.threshold_policy, args.target_precision, args.cost_missed_fraud, args.cost_false_alarm)
        if args.class_weight not in ("balanced", "none"):
            if not float(args.class_weight) > 0:
                raise ValueError("--class-weight must be 'balanced', 'none' or a positive number")
        for name in ("epochs", "patience", "batch_size", "min_rows"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if not (args.l2 >= 0 and args.learning_rate > 0 and 0 < args.lr_decay <= 1):
            raise ValueError("--l2 must be >= 0, --learning-rate > 0 and --lr-decay within (0, 1]")
        if not (0 < args.val_fraction < 1 and 0 < args.test_fraction < 1
                and args.val_fraction + args.test_fraction < 0.9):
            raise ValueError("--val-fraction and --test-fraction must leave at least 10% of rows for training")
    except ValueError as exc:
        parser.error(str(exc))

    from training.errors import TrainingError
    from training.pipeline import TrainConfig, run
    from worker.errors import FraudScoringError

    cfg = TrainConfig(
        data_path=args.data,
        synthetic_rows=args.synthetic,
        synthetic_fraud_rate=args.fraud_rate,
        label_column=args.label_column,
        features=args.features,
        models_dir=args.models_dir,
        seed=args.seed,
        epochs=args.epochs,
        patience=args.patience,
        l2=args.l2,
        learning_rate=args.learning_rate,
        lr_decay=args.lr_decay,
        batch_size=args.batch_size,
        class_weight=args.class_weight,
        split=args.split,
        time_column=args.time_column,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        policy=policy,
        min_rows=args.min_rows,
        promote_tolerance=args.promote_tolerance,
        force=args.force,
    )
    try:
        result = run(cfg)
    except TrainingError as exc:
        print(f"fraud-train: {exc}", file=sys.stderr)
        return 1
    except FraudScoringError as exc:  # e.g. a BundleError writing into the models directory
        print(f"fraud-train: {exc}", file=sys.stderr)
        return 1
    print(summary(result))
    return 0


def summary(result) -> str:
    """The plain-text table printed at the end of a run."""
    m = result.metrics
    c = m["confusion"]
    tm = result.timings
    rows = [
        ("version", result.version),
        ("bundle", str(result.bundle_path)),
        ("CURRENT", "yes" if result.promoted else "no"),
        ("gate", result.promotion_reason),
        ("test rows / frauds", f"{m['rows']} / {m['positives']}"),
        ("ROC AUC", f"{m['roc_auc']:.4f}"),
        ("PR AUC (AP)", f"{m['pr_auc']:.4f}"),
        ("threshold", f"{result.threshold:.6f} ({result.manifest.threshold_policy['name']}, on validation)"),
        ("precision / recall / F1", f"{m['precision']:.4f} / {m['recall']:.4f} / {m['f1']:.4f}"),
        ("confusion tn fp fn tp", f"{c['tn']} {c['fp']} {c['fn']} {c['tp']}"),
        ("parity max |TFLite-Keras|", f"{result.parity_max_abs_diff:.2e}"),
        (
            "time load/fit/export/parity",
            " / ".join(f"{tm.get(k, 0.0):.1f}s" for k in ("load", "fit", "export", "parity")),
        ),
        ("time total", f"{tm['total']:.1f}s"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k.ljust(width)}  {v}" for k, v in rows), line])
