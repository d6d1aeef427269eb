"""``fraud-train``: train, verify and publish a model bundle. See ``fraud-train --help``.

Exit codes: 0 a bundle was written (promoted or not, the last line says which), 1 bad input or a
failed check (nothing written), 2 bad usage, 3 the ``training`` extra is not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from training.thresholds import POLICIES, Policy

if TYPE_CHECKING:
    from training.pipeline import TrainConfig

logger = logging.getLogger("training")

EXTRA_HINT = "fraud-train needs the training extra: pip install 'fraud-scoring[training]'"
HEAVY = ("tensorflow", "sklearn", "matplotlib")


# The threshold flags: (flag, the Policy field it sets, help); defaults are TrainConfig().policy's.
POLICY_FLAGS = (
    ("--threshold-policy", "name",
     "max-f1: best F1; precision: most recall at --target-precision; cost: least expected cost"),
    ("--target-precision", "target_precision", "for --threshold-policy precision"),
    ("--cost-missed-fraud", "cost_missed_fraud", "for --threshold-policy cost: cost of a FN"),
    ("--cost-false-alarm", "cost_false_alarm", "for --threshold-policy cost: cost of a FP"),
)  # fmt: skip


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, except where there is none to show (None, an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    """The flags of TrainConfig's fields (help, default, group and all from their metadata), then -q."""
    from training.pipeline import TrainConfig

    p = argparse.ArgumentParser(
        prog="fraud-train",
        description="Train the fraud model (class-weighted Dense(1, sigmoid) with L2), export it to TFLite, "
        "verify TFLite/Keras parity, and write a model bundle; promote it to CURRENT if it is not worse.",
        formatter_class=_HelpFormatter,
    )
    defaults = TrainConfig()
    groups: dict[str, argparse._ArgumentGroup] = {}
    source = None
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if "group" not in meta:
            continue
        if meta["group"] not in groups:
            groups[meta["group"]] = p.add_argument_group(meta["group"])
        group = groups[meta["group"]]
        if f.name == "policy":
            for flag, attr, text in POLICY_FLAGS:
                default = getattr(defaults.policy, attr)
                choices = POLICIES if attr == "name" else None
                group.add_argument(flag, type=type(default), default=default, choices=choices, help=text)
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        default = getattr(defaults, f.name)
        options: dict[str, Any] = {"dest": f.name, "default": default, "help": meta["help"]}
        if isinstance(default, bool):
            options["action"] = "store_true"
        else:
            options["type"] = meta.get("type", type(default))
            options["metavar"] = meta.get("metavar", _dest(flag).upper())
            if "choices" in meta:
                options.update(choices=meta["choices"], metavar=None)
        if meta.get("source"):
            if source is None:
                source = group.add_mutually_exclusive_group(required=True)
            source.add_argument(flag, **options)
        else:
            group.add_argument(flag, **options)
    groups["output"].add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the summary")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed flags (a field's flag stores under the field's name); ValueError: a bad policy."""
    from training.pipeline import TrainConfig

    policy = Policy(**{attr: getattr(args, _dest(flag)) for flag, attr, _ in POLICY_FLAGS})
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**settings, policy=policy)


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
        cfg = config_from_args(args)
        if args.class_weight not in ("balanced", "none"):
            if not float(args.class_weight) > 0:
                raise ValueError("--class-weight must be 'balanced', 'none' or a positive number")
        for name in ("epochs", "patience", "min_rows", "segment_min_support"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if args.batch_size < 0:
            raise ValueError("--batch-size must be 0 (every training row) or more")
        if not (args.l2 >= 0 and args.learning_rate > 0 and 0 < args.lr_decay <= 1):
            raise ValueError("--l2 must be >= 0, --learning-rate > 0 and --lr-decay within (0, 1]")
        if not (0 < args.val_fraction < 1 and 0 < args.test_fraction < 1
                and args.val_fraction + args.test_fraction < 0.9):
            raise ValueError("--val-fraction and --test-fraction must leave at least 10% of rows for training")
    except ValueError as exc:
        parser.error(str(exc))

    from training.errors import TrainingError
    from training.pipeline import run
    from worker.core.errors import FraudScoringError

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
        ("signed", f"key {result.signed_by}" if result.signed_by else "no"),
        ("gate", result.promotion_reason),
        ("split", f"{result.split.method}: {result.split.train.size} / {result.split.val.size} / "
                  f"{result.split.test.size} rows train / validation / test"),  # fmt: skip
        ("test rows / frauds", f"{m['rows']} / {m['positives']}"),
        ("ROC AUC", f"{m['roc_auc']:.4f}"),
        ("PR AUC (AP)", f"{m['pr_auc']:.4f}"),
        ("threshold", f"{result.threshold:.6f} ({result.manifest.threshold_policy['name']}, on validation)"),
        ("precision / recall / F1", f"{m['precision']:.4f} / {m['recall']:.4f} / {m['f1']:.4f}"),
        ("confusion tn fp fn tp", f"{c['tn']} {c['fp']} {c['fn']} {c['tp']}"),
        *segments_summary(result.manifest),
        ("feature transforms", transforms_summary(result.manifest)),
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


def segments_summary(manifest) -> list[tuple[str, str]]:
    """With --segment-field: how many segments have a threshold of their own, and the test metrics with them."""
    facts = manifest.training.get("segments")
    if not facts:
        return []
    s = facts["test"]["with_segment_thresholds"]
    kept = facts["below_support"] + facts["no_fraud"] + facts["too_long"]
    return [
        ("segment thresholds", f"{facts['chosen']} values of {facts['field']}; {kept} others keep the global one"),
        ("precision / recall / F1 (segments)", f"{s['precision']:.4f} / {s['recall']:.4f} / {s['f1']:.4f}"),
    ]


def transforms_summary(manifest) -> str:
    """E.g. "33 of 34 features (kept: val PR AUC 0.9630 with, 0.8859 without)"; report.html has each one."""
    facts = manifest.training.get("transforms") or {}
    n = sum(t.kind != "identity" for t in manifest.feature_transforms)
    val = facts.get("validation_pr_auc") or {}
    if "without" not in val:
        return f"{n} of {manifest.n_features} features"
    verdict = "kept" if facts.get("used") else "dropped"
    scores = f"val PR AUC {val['with']:.4f} with, {val['without']:.4f} without"
    return f"{n} of {manifest.n_features} features ({verdict}: {scores})"
