"""What the worker publishes for a batch: its alert, score and dead-letter records. Pure: no Kafka.

``build_outputs`` turns a decoded batch and its scores into the records to send, in order:
alerts, then (with a scores topic) one score record per valid event, then a DLQ record per bad
one. An alert and a score record carry the same JSON (docs/design.md, "Alert"):
``transaction_id``, ``score``, ``threshold``, ``model_version``, ``reasons`` (the top features
by signed contribution to the logit, each with its raw value in the event), ``event_time`` (epoch
ms) and ``scored_at`` (epoch ms). With ``scores_include_features`` a score record also carries
``features``: the event's raw feature values by name, in the model's order, each the shortest
decimal that reads back as the float32 the worker read (as a reason's ``value``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np

from worker.config import WorkerConfig
from worker.decimals import float32_decimals
from worker.decode import DecodedBatch
from worker.errors import DecodeError
from worker.scoring import Scorer

_encode = msgspec.json.Encoder().encode

Output = tuple[str, "bytes | None", bytes, "list[tuple[str, bytes]] | None"]  # topic, key, value, headers


@dataclass
class Outputs:
    """The records to send for one batch, and what the metrics need of it once acknowledged."""

    records: list[Output] = field(default_factory=list)
    scores: np.ndarray | None = None
    hits: np.ndarray | None = None  # rows at or above the threshold
    alert_times: list[int] = field(default_factory=list)  # event times of the alerts (epoch ms)


def build_outputs(
    config: WorkerConfig,
    scorer: Scorer,
    records: Sequence,  # the batch's Kafka records (topic, partition, offset, timestamp, key, value)
    decoded: DecodedBatch,
    scaled: np.ndarray | None,  # the valid rows (decoded.features) transformed and scaled; None if there are none
    scores: np.ndarray | None,
    scored_at: int,
) -> Outputs:
    """Alerts, score records and DLQ records for ``decoded``, in the order they are sent.

    The reasons' raw values are ``decoded.features``, the rows ``scaled`` was computed from.
    """
    c, out = config, Outputs()
    if decoded.index and scaled is not None and scores is not None:
        ids = decoded.transaction_ids
        hits = np.flatnonzero(scores >= scorer.threshold)
        # Event time, or the record's timestamp for an event without one: for every row when
        # every score is published, else only for the alerts.
        rows = range(len(scores)) if c.scores_topic else hits.tolist()
        times = {j: _event_time(decoded, records, j) for j in rows}
        out.scores, out.hits, out.alert_times = scores, hits, [times[j] for j in hits.tolist()]
        raw = decoded.features
        alerts = encode_results(scorer, hits, ids, times, scaled, raw, scores, scored_at, c.reasons)
        out.records += [(c.alert_topic, ids[j].encode(), p, None) for j, p in zip(hits.tolist(), alerts, strict=True)]
        if c.scores_topic:
            payloads = encode_results(
                scorer, range(len(scores)), ids, times, scaled, raw, scores, scored_at, c.reasons,
                features=c.scores_include_features,
            )  # fmt: skip
            for j, payload in enumerate(payloads):
                r = records[decoded.index[j]]
                source = source_headers(r.topic, r.partition, r.offset)
                out.records.append((c.scores_topic, ids[j].encode(), payload, source))
    for i, err in decoded.errors:
        r = records[i]
        dlq = dlq_headers(err, r.topic, r.partition, r.offset)
        value = r.value
        if value is None and r.key is None:
            value = b""  # Kafka clients refuse a record with neither key nor value
            dlq.append(("value_null", b"true"))
        out.records.append((c.dlq_topic, r.key, value, dlq))
    return out


def event_times(decoded: DecodedBatch, records: Sequence, rows: Sequence[int]) -> dict[int, int]:
    """Each row's event time (epoch ms), or its record's timestamp for an event without one."""
    return {j: _event_time(decoded, records, j) for j in rows}


def _event_time(decoded: DecodedBatch, records: Sequence, row: int) -> int:
    t = decoded.event_times[row]
    return t if t is not None else records[decoded.index[row]].timestamp


def encode_results(
    scorer: Scorer,
    rows: Sequence[int] | np.ndarray,
    transaction_ids: Sequence[str],
    event_times: Mapping[int, int],  # epoch ms by row index
    scaled: np.ndarray,
    raw: np.ndarray,  # the same rows before transforms and scaling (the decoded features)
    scores: np.ndarray,
    scored_at: int,
    k: int,
    features: bool = False,
) -> list[bytes]:
    """One JSON payload per row index in ``rows`` (indices into the batch's valid rows).

    Each reason is ``{"feature", "contribution", "value"}``: the feature's weight × transformed,
    scaled value, and its raw value (``Scorer.top_reasons_many``). ``features``: each payload also
    holds every raw feature value by name (``float32_decimals``).
    """
    if len(rows) == 0:
        return []
    rows = list(rows)
    reasons = scorer.top_reasons_many(scaled[rows], raw[rows], k)
    threshold, version = scorer.threshold, scorer.version
    picked = scores[rows].astype(np.float64).tolist()
    docs = [
        {
            "transaction_id": transaction_ids[j],
            "score": score,
            "threshold": threshold,
            "model_version": version,
            "reasons": [{"feature": f, "contribution": c, "value": v} for f, c, v in why],
            "event_time": event_times[j],
            "scored_at": scored_at,
        }
        for j, score, why in zip(rows, picked, reasons, strict=True)
    ]
    if features:
        names = scorer.feature_names
        for doc, values in zip(docs, float32_decimals(raw[rows]).tolist(), strict=True):
            doc["features"] = dict(zip(names, values, strict=True))
    return [_encode(doc) for doc in docs]


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
