"""``python -m fuzz`` (``make fuzz``): run every fuzz target, print a table, exit 1 on any failure.

Derandomized by default (the same inputs every run); ``--seed N`` runs another reproducible
set, ``--random-seed`` a fresh one (its seed is printed). ``--scale`` multiplies each target's
examples (``--scale 0.02`` is a quick look); at full scale a target that tried fewer inputs than
its floor (``MIN_INPUTS``) fails the run too.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fuzz import TARGETS  # noqa: E402
from fuzz.core import MAX_SHOWN, Report, load, run  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated targets (default: all: {', '.join(TARGETS)})")
    p.add_argument("--scale", type=float, default=1.0, help="multiply each target's examples (default: 1)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="a seed instead of hypothesis's derandomized inputs")
    seeds.add_argument("--random-seed", action="store_true", help="a fresh random seed (printed)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc bound (faster)")
    return p


def table(reports: Sequence[Report], floors: dict[str, int], check_floor: bool) -> str:
    head = f"{'target':<14} {'examples':>9} {'inputs':>9} {'floor':>8} {'failures':>8} {'distinct':>8} " \
           f"{'peak MiB':>8} {'seconds':>8}"  # fmt: skip
    rows = [head, "-" * len(head)]
    for r in reports:
        short = check_floor and r.inputs < floors[r.name]
        rows.append(
            f"{r.name:<14} {r.examples:>9,} {r.inputs:>9,} {floors[r.name]:>8,} {r.failures:>8,} {len(r.distinct):>8} "
            f"{r.peak_bytes / (1 << 20):>8.1f} {r.seconds:>8.1f}" + ("  (below its floor)" if short else "")
        )
    total = sum(r.seconds for r in reports)
    rows.append("-" * len(head))
    rows.append(f"{'total':<14} {sum(r.examples for r in reports):>9,} {sum(r.inputs for r in reports):>9,} "
                f"{'':>8} {sum(r.failures for r in reports):>8,} {'':>8} {'':>8} {total:>8.1f}")  # fmt: skip
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"python -m fuzz: no such target: {', '.join(unknown)} (targets: {', '.join(TARGETS)})", file=sys.stderr)
        return 2
    seed = random.randrange(2**32) if args.random_seed else args.seed
    how = f"seed {seed}" if seed is not None else "derandomized (the same inputs every run)"
    print(f"fuzz: {len(names)} targets, scale {args.scale:g}, {how}", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        reports, floors = [], {}
        for name in names:
            floors[name] = load(name).MIN_INPUTS
            report = run(name, workdir, scale=args.scale, seed=seed, memory=not args.no_memory)
            reports.append(report)
            done = f"{report.inputs:,} inputs, {report.failures:,} failures, {report.seconds:.1f} s"
            print(f"  {name}: {done}", flush=True)
    check_floor = args.scale >= 1.0
    print()
    print(table(reports, floors, check_floor))
    print(f"wall time {time.monotonic() - started:.1f} s")
    failed = False
    for r in reports:
        for f in list(r.distinct.values())[:MAX_SHOWN]:
            failed = True
            print(f"\n{r.name}: {f.key} ({f.count} inputs): {f.message}\n  first input: {f.example}")
        if len(r.distinct) > MAX_SHOWN:
            print(f"{r.name}: and {len(r.distinct) - MAX_SHOWN} more distinct failures")
        failed = failed or r.failures > 0 or (check_floor and r.inputs < floors[r.name])
    print("\nfuzz: FAILED" if failed else "\nfuzz: no failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
