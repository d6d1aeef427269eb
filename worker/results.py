"""What the worker publishes for a batch: alert/score JSON payloads and Kafka headers. Pure.

An alert and a record of the all-scores topic carry the same JSON (DESIGN.md, "Alert"):
``transaction_id``, ``score``, ``threshold``, ``model_version``, ``reasons`` (the top features
by signed contribution to the logit), ``event_time`` (epoch ms) and ``scored_at`` (epoch ms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import numpy as np

from worker.errors import DecodeError
from worker.scoring import Scorer

_encode = msgspec.json.Encoder().encode


def encode_results(
    scorer: Scorer,
    rows: Sequence[int] | np.ndarray,
    transaction_ids: Sequence[str],
    event_times: Mapping[int, int],  # epoch ms by row index
    scaled: np.ndarray,
    scores: np.ndarray,
    scored_at: int,
    k: int,
) -> list[bytes]:
    """One JSON payload per row index in ``rows`` (indices into the batch's valid rows)."""
    if len(rows) == 0:
        return []
    rows = list(rows)
    reasons = scorer.top_reasons_many(scaled[rows], k)
    threshold, version = scorer.threshold, scorer.version
    picked = scores[rows].astype(np.float64).tolist()
    return [
        _encode(
            {
                "transaction_id": transaction_ids[j],
                "score": score,
                "threshold": threshold,
                "model_version": version,
                "reasons": [{"feature": f, "contribution": c} for f, c in why],
                "event_time": event_times[j],
                "scored_at": scored_at,
            }
        )
        for j, score, why in zip(rows, picked, reasons, strict=True)
    ]


def source_headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


def dlq_headers(error: DecodeError, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("error", error.reason.encode()),
        ("error_detail", error.detail.encode("utf-8", "backslashreplace")),
        *source_headers(topic, partition, offset),
    ]
