"""``fraud-worker backtest``: score a file of transactions offline, through the worker's own code path.

The command line of worker/offline/backtest.py, which reads the file (JSON lines or CSV, plain or
gzip), scores it batch by batch with the worker's ``score_decoded`` and ``score_payloads`` and
writes one score line per valid event and one reject line per other record: its flags, the checks
of its settings, the summary and label metrics it prints (worker/offline/backtest_metrics.py), and
its exit codes.

Batches (``--batch-size``, 10,000 lines) are scored by ``--jobs`` processes (one per core by
default), each with its own scorer, and written in input order; the reading and writing stay here.

``--rules FILE`` decides each batch with a rule set as the worker would (``--candidate-rules FILE``
beside it, its lists from ``--lists-dir``) and reports each rule's matches, amount, frauds,
precision, recall and incremental effect, each action's totals, and the candidate against the
serving set (worker/offline/rule_backtest.py). ``--json FILE`` writes every figure printed.

Exit codes: 0 done, 1 the input cannot be read, 2 bad settings (one line naming the flag or
file), 3 no servable model (with ``--trusted-keys``: none signed by a trusted key), 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.core.errors import BundleError, ConfigError
from worker.core.rules import RuleSetError, ServingRules
from worker.core.scoring import load_scorer
from worker.core.signing import load_trusted_keys
from worker.edges.config import WorkerConfig
from worker.offline import backtest_metrics as metrics
from worker.offline.backtest import (
    LABEL_CANDIDATES,
    Labelled,
    ScorerArgs,
    Source,
    Totals,
    backtest,
    event_columns,
    label_columns_of,
    labelled,
)
from worker.offline.rule_backtest import RuleFile, RuleReport, read_rule_file

PROG = "fraud-worker backtest"
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_STARTUP = 0, 1, 2, 3
_DEFAULTS = WorkerConfig()


class Progress:
    """One self-overwriting line on stderr, only at a terminal and only once a run takes over 2 s."""

    def __init__(self, source: Source, enabled: bool) -> None:
        self.source, self.enabled = source, enabled and sys.stderr.isatty()
        self.start = self.last = time.monotonic()
        self.shown = False

    def update(self, events: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.start < 2.0 or now - self.last < 0.25:
            return
        self.last, self.shown = now, True
        share = self.source.position / max(self.source.size, 1)
        rate = events / (now - self.start)
        sys.stderr.write(f"\rbacktest: {events:,} events ({share:.0%} of the file), {rate:,.0f}/s   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score a file of transactions (JSON lines or CSV, plain or .gz) offline with a model bundle, "
        "through the worker's own decode, validation, transforms, scaling, scoring and output code.",
        epilog="Exit codes: 0 done, 1 the input cannot be read, 2 bad settings, 3 no servable model, 130 interrupted.",
    )
    p.add_argument("file", nargs="?", default=None, metavar="FILE",
                   help="events: JSON lines or a CSV, plain or .gz (or --input FILE)")  # fmt: skip
    p.add_argument("--input", default=None, metavar="FILE", help="the events file, as FILE")
    p.add_argument("--models-dir", required=True, metavar="DIR", help="the models directory (as the worker's)")
    p.add_argument("--version", default=None, help="the bundle version to score with (default: the one CURRENT names)")
    p.add_argument("--output", required=True, metavar="OUT.jsonl", help="one score record (JSON) per valid event")
    p.add_argument("--rejects", default=None, metavar="REJECTS.jsonl",
                   help="one line per bad record (default: OUT's name with .rejects.jsonl)")  # fmt: skip
    p.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                   help="input format (default: by the file name, else by its first byte)")  # fmt: skip
    p.add_argument("--label-column", default=None, metavar="COL",
                   help=f"label for the metrics (default: {' or '.join(LABEL_CANDIDATES)} if present)")  # fmt: skip
    p.add_argument("--label-time-column", default="label_time", metavar="COL",
                   help="with a spec reading labels (fraud_count, fraud_rate): when each label became known, epoch "
                   "ms as in label records (default: %(default)s, used when present; without it a label counts "
                   "from its transaction's time)")  # fmt: skip
    p.add_argument("--thresholds", default=",".join(map(str, metrics.DEFAULT_THRESHOLDS)),
                   help="thresholds for the metrics besides the model's own (default: %(default)s)")  # fmt: skip
    p.add_argument("--cost-missed-fraud", type=float, default=metrics.COST_MISSED_FRAUD,
                   help="cost of a fraud not flagged, as fraud-train's cost policy (default: %(default)g)")  # fmt: skip
    p.add_argument("--cost-false-alarm", type=float, default=metrics.COST_FALSE_ALARM,
                   help="cost of a genuine event flagged (default: %(default)g)")  # fmt: skip
    p.add_argument("--pr-curve", default=None, metavar="PLOT.png", help="write the PR curve (needs matplotlib)")
    p.add_argument("--batch-size", type=int, default=10_000, help="records per batch (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=0, help="scoring processes; 0 = one per core (default), 1 = this one")
    p.add_argument("--reasons", type=int, default=_DEFAULTS.reasons,
                   help="reasons per score record, as the worker's setting (default: %(default)s)")  # fmt: skip
    p.add_argument("--max-message-bytes", type=int, default=_DEFAULTS.max_message_bytes,
                   help="longest valid record, as the worker's setting (default: %(default)s)")  # fmt: skip
    p.add_argument("--trusted-keys", default=os.environ.get("FRAUD_TRUSTED_KEYS") or None, metavar="FILE[,FILE...]",
                   help="score only with a bundle signed by one of these Ed25519 public keys, as the worker's "
                   "setting (default: $FRAUD_TRUSTED_KEYS; unset: signatures not checked)")  # fmt: skip
    p.add_argument("--scores-include-features", action="store_true",
                   help="each output line also holds the event's feature values, as the worker's setting")  # fmt: skip
    p.add_argument("--rules", default=None, metavar="RULES.toml",
                   help="decide each event with this rule set as the worker would, and report each rule's and "
                   "action's figures on the file (docs/backtest-and-shadow.md, Backtesting rules)")  # fmt: skip
    p.add_argument("--candidate-rules", default=None, metavar="CANDIDATE.toml",
                   help="a second rule set decided beside --rules (its output lines' shadow_decision), reported "
                   "side by side with it (without --rules: against the model's threshold alone)")  # fmt: skip
    p.add_argument("--lists-dir", default=None, metavar="DIR",
                   help="where the rule sets' named lists are, as the worker's lists_dir (default: "
                   "<models-dir>/lists)")  # fmt: skip
    p.add_argument("--amount-field", default="amount", metavar="FIELD",
                   help="the event field summed as each rule's and action's amount; missing or not a number: 0 "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--json", default=None, metavar="FILE",
                   help="write the figures printed (summary, label metrics, rule figures) as one JSON document")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _problem(args: argparse.Namespace) -> str | None:
    """The first bad setting, in one line naming its flag or file; None when all are usable."""
    if args.input is not None and args.file is not None and args.input != args.file:
        return f"FILE {args.file} and --input {args.input}: one events file, named once"
    args.input = args.input or args.file
    if args.input is None:
        return "no events file: name it as FILE or --input FILE"
    try:
        args.threshold_list = [float(x) for x in args.thresholds.split(",") if x.strip()]
    except ValueError:
        return f"--thresholds: not a comma-separated list of numbers: {args.thresholds!r}"
    args.rejects = args.rejects or str(Path(args.output).with_suffix("")) + ".rejects.jsonl"
    checks = [
        (args.batch_size < 1, f"--batch-size must be >= 1 (got {args.batch_size})"),
        (args.jobs < 0, f"--jobs must be >= 0 (got {args.jobs})"),
        (args.reasons < 0, f"--reasons must be >= 0 (got {args.reasons})"),
        (args.max_message_bytes < 1, f"--max-message-bytes must be >= 1 (got {args.max_message_bytes})"),
        (min(args.cost_missed_fraud, args.cost_false_alarm) < 0,
         "--cost-missed-fraud and --cost-false-alarm must be >= 0"),
        (any(not 0 <= t <= 1 for t in args.threshold_list), f"--thresholds must lie in [0, 1]: {args.thresholds}"),
        (len({_same(args.input), _same(args.output), _same(args.rejects)}) < 3,
         "--input, --output and --rejects must be three different files"),
        (args.json is not None and _same(args.json) in {_same(args.input), _same(args.output), _same(args.rejects)},
         "--json must be another file than --input, --output and --rejects"),
        (not args.amount_field.strip(), "--amount-field must name an event field"),
    ]  # fmt: skip
    for flag, path in (("--output", args.output), ("--rejects", args.rejects), ("--pr-curve", args.pr_curve),
                       ("--json", args.json)):  # fmt: skip
        if path is not None and not Path(path).resolve().parent.is_dir():
            checks.append((True, f"{flag} {path}: no such directory {Path(path).resolve().parent}"))
    if args.pr_curve is not None:
        import importlib.util

        missing = importlib.util.find_spec("matplotlib") is None
        checks.append((missing, f"--pr-curve needs matplotlib: {metrics.PLOT_HINT}"))
    return next((why for bad, why in checks if bad), None)


def _same(path: str) -> str:
    return os.path.realpath(path)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a malformed command line (2)
        return int(exc.code or 0)
    why = _problem(args)
    if why is not None:
        print(f"{PROG}: bad setting: {why}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        keys = load_trusted_keys(args.trusted_keys, "--trusted-keys") if args.trusted_keys else None
    except ConfigError as exc:
        print(f"{PROG}: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    settings = dataclasses.replace(_DEFAULTS, models_dir=args.models_dir, lists_dir=args.lists_dir or "")
    lists_dir = settings.lists_directory  # the worker's rule: --lists-dir, else <models-dir>/lists
    rules: dict[str, tuple[RuleFile, ServingRules] | None] = {}
    for flag, path in (("--rules", args.rules), ("--candidate-rules", args.candidate_rules)):
        try:
            rules[flag] = read_rule_file(path, lists_dir) if path is not None else None
        except RuleSetError as exc:
            print(f"{PROG}: bad setting: {flag}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    args.rule_files, args.lists_directory = rules, lists_dir
    try:
        scorer = load_scorer(args.models_dir, args.version, trusted_keys=keys)
    except BundleError as exc:
        print(f"{PROG}: no servable model in {args.models_dir}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    try:
        source = Source(Path(args.input), args.format)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        print(f"{PROG}: cannot read {args.input}: {_reason(exc)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return _backtest(args, scorer, source)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        print(f"{PROG}: cannot read {args.input}: {_reason(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        source.close()


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _backtest(args: argparse.Namespace, scorer: Any, source: Source) -> int:
    if source.format == "csv" and args.label_column is not None and args.label_column not in source.header:
        print(f"{PROG}: bad setting: --label-column {args.label_column}: not a column of {args.input}",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    # Behavioural features are computed event after event over one state: one process, in file order.
    jobs = 1 if scorer.spec is not None else args.jobs or os.cpu_count() or 1
    label_columns = label_columns_of(source, args.label_column)
    labelled_file = None
    if scorer.spec is not None and scorer.spec.risk_fields:
        if label_columns:  # fraud_count, fraud_rate: the file's own labels, read first (docs/entity-risk.md)
            labelled_file = (args.input, source.format, label_columns[0], args.label_time_column)
        else:
            print(f"{PROG}: the spec reads labels (fraud_count, fraud_rate) and {args.input} has no label column: "
                  "they are computed as having none", file=sys.stderr)  # fmt: skip
    serving, candidate = args.rule_files["--rules"], args.rule_files["--candidate-rules"]
    with_rules = serving is not None or candidate is not None
    rule_sets = [r[1].rule_set for r in (serving, candidate) if r is not None]
    segment_field = scorer.segments.field if scorer.segments is not None else None
    columns = event_columns(scorer.event_fields, rule_sets, args.amount_field if with_rules else None, segment_field)
    scorer_args = ScorerArgs(args.models_dir, scorer.version, args.reasons, args.max_message_bytes, label_columns,
                             args.trusted_keys, args.scores_include_features, labelled_file,
                             serving[0] if serving is not None else None,
                             candidate[0] if candidate is not None else None, args.amount_field)  # fmt: skip
    progress = Progress(source, not args.quiet)
    try:
        totals = backtest(source, args.output, args.rejects, scorer_args, columns, args.batch_size, jobs,
                          progress.update)  # fmt: skip
    finally:
        progress.close()
    events, seconds = totals.events, totals.seconds
    print(
        f"backtest: {events:,} events, {totals.scored:,} scored, {totals.rejected:,} rejected, {totals.alerts:,} "
        f"alerts (model {scorer.version}, threshold {scorer.threshold:.4f}) in {seconds:.2f} s, "
        f"{events / max(seconds, 1e-9):,.0f} events/s; scores in {args.output}, rejects in {args.rejects}"
    )
    known = labelled(totals)
    code = _label_report(args, scorer, known)
    if code != EXIT_OK:
        return code
    report = _rule_report(args, totals, known) if with_rules else None
    if args.json is not None:
        _write_json(args, scorer, totals, known, report)
    return EXIT_OK


def _label_report(args: argparse.Namespace, scorer: Any, known: Labelled | None) -> int:
    if known is None:
        wanted = args.label_column or " or ".join(LABEL_CANDIDATES)
        print(f"no label column ({wanted}) in {args.input}: no precision or recall")
        if args.pr_curve is not None:
            print(f"{PROG}: bad setting: --pr-curve needs labels, and {args.input} has none", file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_OK
    y, s = known.y, known.scores
    print(metrics.report(known.column, y, s, scorer.threshold, args.threshold_list, args.cost_missed_fraud,
                         args.cost_false_alarm, unlabelled=known.unlabelled))  # fmt: skip
    if args.pr_curve is not None:
        metrics.plot_pr_curve(args.pr_curve, y, s, scorer.threshold, f"{Path(args.input).name}, model {scorer.version}")
        print(f"PR curve in {args.pr_curve}")
    return EXIT_OK


def _rule_report(args: argparse.Namespace, totals: Totals, known: Labelled | None) -> dict[str, Any]:
    """The rule figures over the events with a known label (every scored event without labels), printed."""
    serving, candidate = args.rule_files["--rules"], args.rule_files["--candidate-rules"]
    report = RuleReport(serving[1].rule_set if serving is not None else None,
                        candidate[1].rule_set if candidate is not None else None,
                        (args.rules, args.candidate_rules), args.amount_field, args.lists_directory)  # fmt: skip
    start = labelled_at = 0  # where each batch's rows begin among the scored events, and among the labelled ones
    for rows in totals.decided:
        if known is None or known.known is None:
            report.add(rows, None)
        else:
            keep = known.known[start : start + len(rows)]
            n = int(keep.sum())
            report.add(rows.take(keep), known.y[labelled_at : labelled_at + n])
            labelled_at += n
        start += len(rows)
    figures = report.figures()
    print(report.text(figures))
    return figures


def _write_json(args: argparse.Namespace, scorer: Any, totals: Totals, known: Labelled | None,
                rules: dict[str, Any] | None) -> None:  # fmt: skip
    doc: dict[str, Any] = {
        "input": args.input,
        "output": args.output,
        "rejects": args.rejects,
        "model_version": scorer.version,
        "threshold": scorer.threshold,
        "events": totals.events,
        "scored": totals.scored,
        "rejected": totals.rejected,
        "alerts": totals.alerts,
        "seconds": round(totals.seconds, 3),
        "labels": metrics.figures(known.column, known.y, known.scores, scorer.threshold, args.threshold_list,
                                  args.cost_missed_fraud, args.cost_false_alarm, known.unlabelled)
        if known is not None else None,
        "rules": rules,
    }  # fmt: skip
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    print(f"figures in {args.json}")


if __name__ == "__main__":
    sys.exit(main())
