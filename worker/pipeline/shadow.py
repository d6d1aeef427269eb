"""The shadow challenger's scoring: a batch scored beside the champion, never alerting.

``shadow_outputs`` scores a decoded batch with the challenger (``ChallengerWatcher``,
worker/models/challenger.py, keeps it): the rows the champion admitted, through the same
``score_decoded`` (worker/core/batch_scoring.py), and one score record per valid event
(``score_payloads``, the score record's JSON, ``model_version`` the challenger's) for the shadow
topic, and the counts the metrics take once the batch is acknowledged: scored, would-alert, and
agreement with the champion (both alert, the champion only, the challenger only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worker.core.batch_scoring import ShadowCounts, score_decoded
from worker.core.decode import DecodedBatch
from worker.core.outputs import Output, OutputSettings, event_times, keyed, score_payloads
from worker.core.scoring import Scorer


def shadow_outputs(
    settings: OutputSettings,
    challenger: Scorer,
    records: Sequence,  # the batch's Kafka records
    decoded: DecodedBatch,  # as the champion admitted it
    champion_hits: np.ndarray,  # the rows the champion alerts on
    scored_at: int,
) -> tuple[list[Output], ShadowCounts]:
    """The challenger's score records of a decoded batch (none without a shadow topic), and its counts."""
    scored = score_decoded(challenger, decoded, admit=False)
    scores = scored.scores if scored.scores is not None else np.empty(0, dtype=np.float32)
    flagged = scores >= challenger.threshold
    champion = np.zeros(len(scores), dtype=bool)
    champion[champion_hits] = True
    counts = ShadowCounts(
        scored=int(len(scores)),
        alerts=int(flagged.sum()),
        agreement={
            "both": int(np.sum(flagged & champion)),
            "champion_only": int(np.sum(champion & ~flagged)),
            "challenger_only": int(np.sum(flagged & ~champion)),
        },
    )
    if not settings.shadow_topic or scored.scaled is None:
        return [], counts
    times = event_times(decoded, records, range(len(scores)))
    payloads = score_payloads(challenger, decoded, scored.scaled, scores, times, scored_at, settings.reasons,
                              settings.scores_include_features)  # fmt: skip
    return keyed(settings.shadow_topic, payloads, records, decoded), counts
