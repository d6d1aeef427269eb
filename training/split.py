"""Train / validation / test row indices: stratified at random (seeded), or by time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.errors import DataError


@dataclass(frozen=True)
class Split:
    """Row indices of each part, plus how they were drawn (recorded in the manifest)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    method: str
    val_fraction: float
    test_fraction: float

    def describe(self) -> dict[str, object]:
        return {
            "method": self.method,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "rows": {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)},
        }


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 0.9):
        raise ValueError("validation and test fractions must be in (0, 1) and leave at least 10% for training")


def stratified_split(y: np.ndarray, seed: int, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Split:
    """Each class is shuffled with ``seed`` and cut in the same proportions, so every part keeps the fraud rate."""
    _check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_test = max(1, round(idx.size * test_fraction))
        n_val = max(1, round(idx.size * val_fraction))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return Split(train, val, test, "stratified", val_fraction, test_fraction)


def time_split(
    y: np.ndarray, time: np.ndarray, val_fraction: float = 0.2, test_fraction: float = 0.2, column: str = "time"
) -> Split:
    """Oldest rows train, the next validate, the newest test: how a deployed model meets the future."""
    _check_fractions(val_fraction, test_fraction)
    order = np.argsort(time, kind="stable")
    n = order.size
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    train = np.sort(order[: n - n_val - n_test])
    val = np.sort(order[n - n_val - n_test : n - n_test])
    test = np.sort(order[n - n_test :])
    for name, idx in (("train", train), ("validation", val), ("test", test)):
        pos = int(y[idx].sum())
        if pos == 0 or pos == idx.size:
            raise DataError(f"split by {column!r}: the {name} part holds only one class; use --split stratified")
    return Split(train, val, test, f"time:{column}", val_fraction, test_fraction)
