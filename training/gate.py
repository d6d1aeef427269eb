"""The promotion gate: a new bundle replaces CURRENT only if it is not worse on the same data."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from training.evaluate import pr_auc
from worker.core.bundle import read_current
from worker.core.errors import BundleError
from worker.core.scoring import load_scorer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    current_version: str | None = None
    current_pr_auc: float | None = None


def decide(
    models_dir: str | os.PathLike[str],
    feature_names: tuple[str, ...],
    X_test: np.ndarray,
    y_test: np.ndarray,
    new_pr_auc: float,
    tolerance: float = 0.005,
    force: bool = False,
) -> Decision:
    """Score the new test rows (raw features) with CURRENT's own scorer and compare PR AUCs.

    Promote when there is no CURRENT, when CURRENT cannot be loaded (a broken bundle is no bar),
    when the new PR AUC is at least CURRENT's minus ``tolerance``, or when ``force`` is set.
    """
    try:
        current = read_current(models_dir)
    except BundleError as exc:
        return Decision(True, f"promoted: CURRENT is unreadable ({exc})")
    if current is None:
        return Decision(True, "promoted: no CURRENT model yet")
    try:
        scorer = load_scorer(str(models_dir), current)
    except BundleError as exc:
        return Decision(True, f"promoted: CURRENT {current} cannot be served ({exc})", current)
    if tuple(scorer.feature_names) != tuple(feature_names):
        if force:
            return Decision(True, f"promoted (--force): CURRENT {current} uses different features", current)
        return Decision(
            False,
            f"not promoted: CURRENT {current} uses different features ({len(scorer.feature_names)} vs "
            f"{len(feature_names)}), so the two cannot be compared; use --force to promote anyway",
            current,
        )
    old = pr_auc(y_test, scorer.score(X_test))
    if new_pr_auc >= old - tolerance:
        return Decision(True, f"promoted: test PR AUC {new_pr_auc:.4f} vs CURRENT {current} {old:.4f}", current, old)
    if force:
        return Decision(
            True, f"promoted (--force): test PR AUC {new_pr_auc:.4f} is below CURRENT's {old:.4f}", current, old
        )
    return Decision(
        False,
        f"not promoted: test PR AUC {new_pr_auc:.4f} is worse than CURRENT {current}'s {old:.4f} on the same "
        f"rows by more than {tolerance}; use --force to promote anyway",
        current,
        old,
    )
