"""The shortest decimal that reads back as a float32: how an alert names the raw value it read."""

from __future__ import annotations

import numpy as np


def float32_decimals(values: np.ndarray) -> np.ndarray:
    """float64 values of the shortest decimals (6 to 9 significant digits) that read back as ``values``' float32s.

    ``149.62`` read as float32 is 149.6199951171875; this gives 149.62 back (what the event said,
    when it said it in at most 6 digits), vectorised: at most four numpy passes, none per value.
    Nine digits are always enough for a float32; a value none of them reads back as (only where
    the powers of ten are inexact, beyond 1e22) stays the float64 of the float32, which does.
    """
    x = np.asarray(values, dtype=np.float32)
    v = x.astype(np.float64)
    out = v.copy()
    todo = np.isfinite(v) & (v != 0)
    if not todo.any():
        return out
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.abs(np.where(todo, v, 1.0))))
        for digits in (6, 7, 8, 9):
            decimals = digits - 1 - exponent
            # 10**d is exact up to d = 22, so the division or product rounds once: r is the float64
            # nearest the decimal.
            power = 10.0 ** np.abs(decimals)
            r = np.where(decimals >= 0, np.round(v * power) / power, np.round(v / power) * power)
            ok = todo & (r.astype(np.float32) == x)
            out[ok] = r[ok]
            todo &= ~ok
            if not todo.any():
                break
    return out


def rounded(values: np.ndarray, decimals: int) -> list[float]:
    """``[round(x, decimals) for x in values]`` (Python's correctly rounded ``round``), vectorised.

    numpy's ``rint(x * 10**d) / 10**d`` gives the same float wherever ``x * 10**d`` is not within
    its rounding error of a half (the division of two exact integers rounds once, as Python's
    decimal-to-float step does); values near a half, or too large for that, take Python's ``round``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    power = 10.0**decimals
    with np.errstate(over="ignore", invalid="ignore"):
        y = v * power
        out = (np.rint(y) / power).tolist()
        half_or_large = ~(np.abs(np.abs(y - np.trunc(y)) - 0.5) > 1e-9 * np.maximum(1.0, np.abs(y)))
        half_or_large |= ~(np.abs(y) < 2.0**50)
    for i in np.flatnonzero(half_or_large).tolist():
        out[i] = round(float(v[i]), decimals)
    return out
