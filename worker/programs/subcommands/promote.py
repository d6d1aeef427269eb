"""``fraud-worker promote``: the shadow challenger becomes the champion, on labelled evidence.

CHALLENGER's version replaces CURRENT's atomically (``set_current``: a temp file renamed over
CURRENT, so a reader sees the old name or the new, never part of one), then CHALLENGER is removed;
running workers hot-reload the new champion and report the one it replaced
(``fraud_model_previous_info``). The challenger must pass the checks a worker makes before serving
it (with ``--trusted-keys``, its signature too; with ``--min-model-version``, its version). The
evidence is fraud-feedback's stores
(``--feedback-state-dir``): the transactions both versions scored and whose truth is known
(labelled, or genuine past the label window). Promotion is refused, unless ``--force``, when there
are fewer than ``--min-labelled`` of them or no fraud among them, or when the challenger's average
precision on them is below the champion's by more than ``--tolerance``.

Exit codes: 0 promoted, 1 refused (the line says why) or an error, 2 bad settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worker.core.bundle import CHALLENGER_FILE, read_current, set_current
from worker.core.errors import BundleError, ConfigError
from worker.edges.config import SETTINGS_EPILOG, SettingsParser, add_settings
from worker.programs.settings import parse_settings

PROG = "fraud-worker promote"


def build_parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog=PROG,
        description="Swap models/CHALLENGER into models/CURRENT atomically, when fraud-feedback's labelled "
        "evidence says the challenger is not worse than the champion on the transactions both scored.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 promoted, 1 refused or an error, 2 bad settings.",
    )
    add_settings(p, ["models_dir", "trusted_keys", "min_model_version"])
    p.add_argument("--feedback-state-dir", help="fraud-feedback's --state-dir: the labelled evidence")
    p.add_argument("--label-window", default="120d", help="as fraud-feedback's (default: %(default)s)")
    p.add_argument("--min-labelled", type=int, default=1000,
                   help="resolved transactions both versions scored, at least (default: %(default)s)")  # fmt: skip
    p.add_argument("--tolerance", type=float, default=0.005,
                   help="how much lower the challenger's average precision may be (default: %(default)s)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="promote whatever the evidence says")
    return p


def evidence(state_dir: str, label_window_ms: int, champion: str, challenger: str) -> tuple[int, int, float, float]:
    """(transactions both scored and resolved, frauds among them, champion AP, challenger AP)."""
    from worker.feedback.export import store_files
    from worker.feedback.quality import average_precision
    from worker.feedback.store import Store

    files = store_files(state_dir)
    if not files:
        raise ConfigError(f"{state_dir}: no fraud-feedback stores (partition-*.sqlite)")
    parts = []
    for f in files:
        store = Store(f, label_window_ms)
        try:
            parts.append(store.paired(champion, challenger))
        finally:
            store.close()
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    truth = np.concatenate([p[2] for p in parts])
    ap_a, ap_b = average_precision(truth, a), average_precision(truth, b)
    return int(truth.size), int(truth.sum()), ap_a or 0.0, ap_b or 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse_settings(PROG, build_parser(), argv)
    if isinstance(parsed, int):
        return parsed
    args, config = parsed
    from worker.core.scoring import load_scorer
    from worker.core.signing import load_trusted_keys
    from worker.feedback.export import parse_duration_ms

    models = config.models_dir
    try:
        champion = read_current(models)
        challenger = read_current(models, CHALLENGER_FILE)
        if champion is None or challenger is None:
            missing = "CURRENT" if champion is None else CHALLENGER_FILE
            raise ConfigError(f"{Path(models) / missing} does not exist: nothing to promote")
        keys = load_trusted_keys(config.trusted_keys) if config.trusted_keys else None
        # the checks a worker makes before serving it
        load_scorer(models, challenger, trusted_keys=keys, min_version=config.min_model_version or None)
        window = parse_duration_ms(args.label_window)
    except ConfigError as exc:
        print(f"{PROG}: bad setting: {exc}", file=sys.stderr)
        return 2
    except BundleError as exc:
        print(f"{PROG}: refused: challenger {challenger} fails its checks: {exc}", file=sys.stderr)
        return 1
    why = None
    if args.feedback_state_dir is None:
        why = "no labelled evidence (give --feedback-state-dir)"
    else:
        try:
            n, frauds, ap_old, ap_new = evidence(args.feedback_state_dir, window, champion, challenger)
        except ConfigError as exc:
            print(f"{PROG}: bad setting: {exc}", file=sys.stderr)
            return 2
        figures = f"on {n:,} labelled transactions ({frauds:,} fraud) both scored"
        if n < args.min_labelled or frauds == 0:
            why = f"too little labelled evidence: {figures}, at least {args.min_labelled:,} with a fraud wanted"
        elif ap_new < ap_old - args.tolerance:
            why = (
                f"challenger {challenger} PR AUC {ap_new:.4f} is worse than champion {champion}'s {ap_old:.4f} "
                f"{figures}"
            )
        else:
            print(f"{PROG}: evidence: challenger {challenger} PR AUC {ap_new:.4f}, champion {champion} {ap_old:.4f}, "
                  f"{figures}")  # fmt: skip
    if why is not None and not args.force:
        print(f"{PROG}: refused: {why}; --force promotes anyway", file=sys.stderr)
        return 1
    set_current(models, challenger)
    try:
        os.unlink(Path(models) / CHALLENGER_FILE)
    except FileNotFoundError:
        pass
    forced = f" (--force: {why})" if why is not None else ""
    print(f"{PROG}: {challenger} is the champion now (CURRENT), replacing {champion}{forced}")
    return 0
