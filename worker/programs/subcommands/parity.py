"""``fraud-worker parity``: a file's behavioural features computed offline (as fraud-train computes them)
and online (as the worker computes them), every feature compared; with ``--scores``, the features in score
records too (the scores topic dumped with ``scores_include_features``, or a backtest's output).

Exit codes: 0 every value equal, 1 a difference (each feature that differs is printed with examples) or
an error, 2 bad settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from worker.core.errors import FraudScoringError

PROG = "fraud-worker parity"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Compute a file's behavioural features (the bundle's feature spec) offline and through the "
        "worker's online path, and report every feature that differs.",
        epilog="Exit codes: 0 equal, 1 a difference or an error, 2 bad settings.",
    )
    p.add_argument("--input", required=True, metavar="FILE", help="events: JSON lines or a CSV, plain or .gz")
    p.add_argument("--models-dir", required=True, metavar="DIR", help="the models directory (as the worker's)")
    p.add_argument("--version", default=None, help="the bundle version (default: the one CURRENT names)")
    p.add_argument("--scores", default=None, metavar="SCORES.jsonl",
                   help="score records with features (one JSON per line) to compare with the offline "
                   "values too")  # fmt: skip
    p.add_argument("--labels", default=None, metavar="LABELS.jsonl",
                   help="label records (one JSON per line, as on the labels topic) for a spec reading labels "
                   "(fraud_count, fraud_rate): both paths count them as fraud-feedback does")  # fmt: skip
    p.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                   help="input format (default: auto)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=10_000, help="records per batch (default: %(default)s)")
    p.add_argument("--max-message-bytes", type=int, default=1_048_576,
                   help="longest valid record (default: %(default)s)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.batch_size < 1:
        print(f"{PROG}: bad setting: --batch-size must be >= 1 (got {args.batch_size})", file=sys.stderr)
        return 2
    from worker.core.scoring import load_scorer
    from worker.offline.backtest import Source
    from worker.offline.parity import compare

    for flag, path in (("--input", args.input), ("--scores", args.scores), ("--labels", args.labels)):
        if path is not None and not Path(path).is_file():
            print(f"{PROG}: bad setting: {flag} {path}: no such file", file=sys.stderr)
            return 2
    try:
        scorer = load_scorer(args.models_dir, args.version)
    except FraudScoringError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    spec = scorer.spec
    if spec is None:
        print(f"{PROG}: bundle {scorer.version} has no feature spec: nothing to compare", file=sys.stderr)
        return 1
    source = Source(Path(args.input), args.format)
    if spec.risk_fields and args.labels is None:
        print(f"{PROG}: bundle {scorer.version}'s spec reads labels (fraud_count, fraud_rate): without --labels "
              "they are compared as having none", file=sys.stderr)  # fmt: skip
    try:
        chunks = source.chunks(args.batch_size, scorer.event_fields, None)
        with ExitStack() as stack:
            records = stack.enter_context(open(args.scores, "rb")) if args.scores is not None else None
            labels = stack.enter_context(open(args.labels, "rb")) if args.labels is not None else None
            report = compare(spec, scorer.input_names, chunks, args.max_message_bytes, records, labels)
    finally:
        source.close()
    print(f"parity: {report.events:,} events, {len(report.features)} features of bundle {scorer.version}: "
          f"online {'equal' if not report.online else 'DIFFERENT'}"
          + (f"; {report.records:,} score records {'equal' if not report.in_records else 'DIFFERENT'}"
             + (f", {report.missing_records:,} without a matching event or features" if report.missing_records else "")
             if args.scores is not None else ""))  # fmt: skip
    for where, diffs in (("online", report.online), ("score records", report.in_records)):
        for d in diffs.values():
            shown = ", ".join(f"{tid}: offline {a!r}, {where} {b!r}" for tid, a, b in d.examples)
            print(f"  {where}: {d.feature}: {d.count:,} values differ ({shown})")
    return 0 if report.equal else 1
