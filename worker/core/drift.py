"""Score drift: population stability index (PSI) of live scores against the training scores. Pure.

The reference is the training-score histogram stored in the bundle's manifest
(``score_histogram`` = ``{"edges": [...], "counts": [...]}``, increasing edges over [0, 1]; the
training job puts them at training-score quantiles so every bin holds a similar share). Live
scores are kept as bin counts only: one count vector per batch in a ring, so adding a batch costs
one ``searchsorted`` and one ``bincount`` and the window never stores a score.

    PSI = Σ (a_i − e_i) · ln(a_i / e_i)

with ``e_i`` and ``a_i`` the expected (training) and actual (live) shares of bin ``i``, each at
least ``EPSILON`` so an empty bin does not make it infinite. Common reading: < 0.1 stable,
0.1–0.2 a moderate shift, > 0.2 a significant shift.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

EPSILON = 1e-4
DEFAULT_WINDOW = 10_000


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = EPSILON) -> float:
    """PSI between two count (or share) vectors over the same bins."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise ValueError(f"PSI needs two count vectors of the same length (got {e.shape} and {a.shape})")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs a positive total on both sides")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


class Reference:
    """The training-score distribution: bin edges and the share of training scores per bin."""

    def __init__(self, edges: Sequence[float], counts: Sequence[float]) -> None:
        e = np.asarray(edges, dtype=np.float64)
        c = np.asarray(counts, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or c.size != e.size - 1:
            raise ValueError("score histogram needs len(counts) == len(edges) - 1 >= 1")
        if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ValueError("score histogram edges must be finite and strictly increasing")
        if not np.all(np.isfinite(c)) or np.any(c < 0) or c.sum() <= 0:
            raise ValueError("score histogram counts must be finite, >= 0 and not all zero")
        self.edges = e
        self.counts = c
        self._inner = e[1:-1]  # a score below the first edge counts in bin 0, above the last in the last bin

    @classmethod
    def from_histogram(cls, histogram: Mapping[str, Sequence[float]] | None) -> Reference | None:
        """None when the manifest has no histogram; ``ValueError`` when it has a malformed one (of any kind:
        ``Manifest.from_dict`` checks the types, this stays safe for a histogram from anywhere else)."""
        if not histogram:
            return None
        if not isinstance(histogram, Mapping):
            raise ValueError("score histogram must be an object with edges and counts")
        try:
            return cls(histogram.get("edges", ()), histogram.get("counts", ()))
        except (TypeError, OverflowError) as exc:
            raise ValueError(f"score histogram edges and counts must be numbers: {type(exc).__name__}") from None

    @property
    def bins(self) -> int:
        return int(self.counts.size)

    def bin_counts(self, scores: np.ndarray) -> np.ndarray:
        """Counts of ``scores`` per bin; bins are [edge_i, edge_i+1), the last one closed (as np.histogram)."""
        idx = np.searchsorted(self._inner, np.asarray(scores, dtype=np.float64).ravel(), side="right")
        return np.bincount(idx, minlength=self.bins)

    def psi(self, counts: np.ndarray) -> float:
        return psi(self.counts, counts)


class DriftWindow:
    """PSI of about the last ``window`` live scores against a ``Reference`` (thread-safe).

    The window drops whole batches, oldest first, while what remains still holds ``window``
    scores; ``value()`` is None until ``min_scores`` scores have been seen (a PSI over a few
    dozen scores is mostly sampling noise: its expectation is about bins / n).
    """

    def __init__(self, reference: Reference, window: int = DEFAULT_WINDOW, min_scores: int | None = None) -> None:
        if window <= 0:
            raise ValueError("drift window must be > 0")
        self.reference = reference
        self.window = window
        self.min_scores = min(window, 1_000) if min_scores is None else min_scores
        self._ring: deque[tuple[int, np.ndarray]] = deque()
        self._total = np.zeros(reference.bins, dtype=np.int64)
        self._n = 0
        self._lock = threading.Lock()

    def add(self, scores: np.ndarray) -> None:
        counts = self.reference.bin_counts(scores)
        n = int(counts.sum())
        if n == 0:
            return
        with self._lock:
            self._ring.append((n, counts))
            self._total += counts
            self._n += n
            while self._ring and self._n - self._ring[0][0] >= self.window:
                old_n, old = self._ring.popleft()
                self._total -= old
                self._n -= old_n

    @property
    def size(self) -> int:
        return self._n

    def counts(self) -> np.ndarray:
        with self._lock:
            return self._total.copy()

    def value(self) -> float | None:
        with self._lock:
            if self._n < max(1, self.min_scores):
                return None
            total = self._total.copy()
        return self.reference.psi(total)
