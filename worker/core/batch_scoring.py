"""Scoring one decoded batch: the worker's steps from decoded rows to scores, written once. Pure: no Kafka.

``score_decoded(scorer, decoded)`` is what the worker's loop (worker/pipeline/loop.py), the shadow
challenger (worker/pipeline/shadow.py) and the backtest (worker/offline/backtest.py) each do with a
decoded batch: ``Scorer.admit`` moves the rows beyond the model's range to the batch's errors
(``out_of_range``, dead-lettered or rejected like the decoder's), then ``Scorer.score_batch``
transforms, scales and scores the rest in one LiteRT call and counts what its guards did (raw values
moved to a training clip, scaled values clipped to ±SCALED_LIMIT, model outputs that were not
probabilities). The records come from worker/core/outputs.py (``build_outputs``, ``score_payloads``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from worker.core.decode import DecodedBatch, take_rows
from worker.core.scoring import Scorer


@dataclass(frozen=True)
class ScoredBatch:
    """A decoded batch through ``score_decoded``: the rows scored, their scaled values and scores, the guards."""

    decoded: DecodedBatch  # as admitted: its rows are the ones scored, its errors hold the out_of_range ones
    scaled: np.ndarray | None  # decoded.features transformed and scaled; None when no row is valid
    scores: np.ndarray | None  # one per row of decoded; None when no row is valid
    clipped_training: int = 0  # raw values beyond their feature's training clip (moved to the bound)
    clipped_scaled: int = 0  # scaled values beyond ±SCALED_LIMIT (moved to the limit)
    out_of_range: int = 0  # model outputs not in [0, 1] (NaN, ±inf), scored OUT_OF_RANGE_SCORE
    seconds: float = 0.0  # how long the scoring took (the scoring-time histogram)

    def take(self, keep: Sequence[int]) -> ScoredBatch:
        """The rows ``keep`` (positions among the scored rows, ascending) alone, the guard counts as they were.

        A row's scaled values and score depend on that row only, so they are what scoring ``keep`` alone gives.
        """
        if self.scaled is None or self.scores is None:
            return self
        rows = list(keep)
        return dataclasses.replace(self, decoded=take_rows(self.decoded, rows), scaled=self.scaled[rows],
                                   scores=self.scores[rows])  # fmt: skip


def score_decoded(scorer: Scorer, decoded: DecodedBatch, admit: bool = True) -> ScoredBatch:
    """``decoded`` admitted by ``scorer`` and its valid rows scored (the module's doc).

    ``admit=False`` scores the rows as they are: the shadow challenger scores exactly the rows the
    champion admitted, so that both score the same events.
    """
    if admit:
        decoded = scorer.admit(decoded)
    if not decoded.index:
        return ScoredBatch(decoded, None, None)
    start = time.perf_counter()
    scored = scorer.score_batch(decoded.features)
    seconds = time.perf_counter() - start
    return ScoredBatch(decoded, scored.scaled, scored.scores, scored.clipped_training, scored.clipped_scaled,
                       scored.out_of_range, seconds)  # fmt: skip


@dataclass
class ShadowCounts:
    """The shadow challenger's counts of one batch, taken by the metrics once it is acknowledged."""

    scored: int = 0
    alerts: int = 0  # the challenger would have alerted
    agreement: dict[str, int] = field(default_factory=dict)  # both / champion_only / challenger_only
