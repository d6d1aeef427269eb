"""What the worker publishes for a batch: its alert, score and dead-letter records. Pure: no Kafka.

``build_outputs`` turns a decoded batch and its scores into the records to send, in order:
alerts, then (with a scores topic) one score record per valid event, then a DLQ record per bad
one. An alert and a score record carry the same JSON (docs/formats.md, "Alert"):
``transaction_id``, ``score``, ``threshold``, ``model_version``, ``reasons`` (the top features
by signed contribution to the logit, each with its raw value in the event), ``event_time`` (epoch
ms) and ``scored_at`` (epoch ms). With ``scores_include_features`` a score record also carries
``features``: the event's raw feature values by name, in the model's order, each the shortest
decimal that reads back as the float32 the worker read (as a reason's ``value``).

``score_payloads`` is the one builder of score-record JSON: the worker's score records, the shadow
challenger's (worker/pipeline/shadow.py) and the backtest's output lines (worker/offline/backtest.py)
all come from it. What the settings decide (topics, reasons, features, the DLQ size limit) comes in
an ``OutputSettings``, which the worker's ``WorkerConfig.output_settings`` builds: the core never
reads the settings object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import msgspec
import numpy as np

from worker.core.decimals import float32_decimals, rounded
from worker.core.decisions import Decisions, decide
from worker.core.decode import DecodedBatch, Unread
from worker.core.errors import DecodeError
from worker.core.scoring import Scorer

_encode = msgspec.json.Encoder().encode

Output = tuple[str, "bytes | None", bytes, "list[tuple[str, bytes]] | None"]  # topic, key, value, headers
# A DLQ record of more key, value and header bytes than this is sent with its value cut to fit
# (headers ``truncated``, ``original_size``): kafka-python's producer refuses a record over its
# ``max_request_size`` (1 MiB by default) and the broker one over the topic's ``max.message.bytes``
# (1 MiB + 12 by default), and a batch that cannot be sent would be retried for ever.
DLQ_MAX_BYTES = 1_000_000
PRODUCER_MAX_REQUEST_SIZE = 1_048_576  # kafka-python's default max_request_size
DLQ_FRAMING = 16_384  # room left below max_request_size for the batch's and the record's framing


@dataclass(frozen=True)
class OutputSettings:
    """What the outputs of a batch depend on in the worker's settings (``WorkerConfig.output_settings``)."""

    alert_topic: str
    dlq_topic: str
    scores_topic: str  # "" for no score records
    shadow_topic: str  # "" for no shadow records
    reasons: int  # reasons per alert or score record
    scores_include_features: bool
    max_request_size: int = PRODUCER_MAX_REQUEST_SIZE  # the producer's, passed through or its default


@dataclass
class Outputs:
    """The records to send for one batch, and what the metrics need of it once acknowledged."""

    records: list[Output] = field(default_factory=list)
    scores: np.ndarray | None = None
    hits: np.ndarray | None = None  # rows at or above the threshold
    alert_times: list[int] = field(default_factory=list)  # event times of the alerts (epoch ms)


def build_outputs(
    settings: OutputSettings,
    scorer: Scorer,
    records: Sequence,  # the batch's Kafka records (topic, partition, offset, timestamp, key, value)
    decoded: DecodedBatch,
    scaled: np.ndarray | None,  # the valid rows (decoded.features) transformed and scaled; None if there are none
    scores: np.ndarray | None,
    scored_at: int,
    context: Sequence[bytes] | None = None,
    decisions: Decisions | None = None,
    shadow_decisions: Decisions | None = None,
) -> Outputs:
    """Alerts, score records and DLQ records for ``decoded``, in the order they are sent.

    ``decisions`` (worker/core/decisions.py): an alert for every row whose action is not ``allow``, each alert
    and score record carrying its decision record and the threshold that applied; None: an alert where the
    score is at or above the model's threshold, decided as such. ``shadow_decisions``: the shadow rule set's,
    carried by the score records as ``shadow_decision``.

    The reasons' raw values are ``decoded.features``, the rows ``scaled`` was computed from. ``context``:
    per valid row, JSON members the score record carries besides (worker/core/score_context.py).
    """
    c, out = settings, Outputs()
    if decoded.index and scaled is not None and scores is not None:
        ids = decoded.transaction_ids
        if decisions is None:
            thresholds = np.full(len(scores), scorer.threshold, dtype=np.float64)
            decisions = decide(scores, thresholds, None, None, [None] * len(scores), None)
        hits = decisions.alerts
        # Event time, or the record's timestamp for an event without one: for every row when
        # every score is published, else only for the alerts.
        rows = range(len(scores)) if c.scores_topic else hits.tolist()
        times = {j: _event_time(decoded, records, j) for j in rows}
        out.scores, out.hits, out.alert_times = scores, hits, [times[j] for j in hits.tolist()]
        raw = decoded.features
        alerts = encode_results(scorer, hits, ids, times, scaled, raw, scores, scored_at, c.reasons,
                                decisions=decisions)  # fmt: skip
        out.records += [(c.alert_topic, ids[j].encode(), p, None) for j, p in zip(hits.tolist(), alerts, strict=True)]
        if c.scores_topic:
            payloads = score_payloads(scorer, decoded, scaled, scores, times, scored_at, c.reasons,
                                      c.scores_include_features, context, decisions, shadow_decisions)  # fmt: skip
            out.records += keyed(c.scores_topic, payloads, records, decoded)
    limit = dlq_limit(c)
    for i, err in decoded.errors:
        r = records[i]
        key, value, headers = dlq_record(err, r, limit)
        out.records.append((c.dlq_topic, key, value, headers))
    return out


def dlq_record(error: DecodeError, r: Any, limit: int) -> tuple[bytes | None, Any, list[tuple[str, bytes]]]:
    """The DLQ record of input record ``r``: its key, value and headers, cut to ``limit`` bytes if larger."""
    headers = dlq_headers(error, r.topic, r.partition, r.offset)
    key, value = r.key, r.value
    if isinstance(value, Unread):
        value = bytes(value)  # the unread batch's header, as plain bytes
    if value is None and key is None:
        value = b""  # Kafka clients refuse a record with neither key nor value
        headers.append(("value_null", b"true"))
    if dlq_size(key, value, headers) > limit:
        key, value = truncate(key, value, headers, limit)
    return key, value, headers


def dlq_limit(settings: OutputSettings) -> int:
    """The most bytes of key, value and headers a DLQ record may take whole (``DLQ_MAX_BYTES``, or less
    when a passed-through ``max_request_size`` leaves less room)."""
    return max(0, min(DLQ_MAX_BYTES, int(settings.max_request_size) - DLQ_FRAMING))


def dlq_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """Key, value and header bytes (each header's name as UTF-8)."""
    return (len(key) if key is not None else 0) + (len(value) if value is not None else 0) + _header_bytes(headers)


def truncate(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> tuple[bytes | None, bytes | None]:
    """``key`` and ``value`` cut so that the record, with ``headers`` and the ``truncated`` headers added
    to them here, takes at most ``limit`` bytes: the value first, then the key if the key alone leaves
    no room."""
    headers.append(("truncated", b"true"))
    headers.append(("original_size", str(len(value) if value is not None else 0).encode()))
    if key is not None and len(key) + _header_bytes(headers) > limit:
        headers.append(("original_key_size", str(len(key)).encode()))
        key = key[: max(0, limit - _header_bytes(headers))]
    room = max(0, limit - _header_bytes(headers) - (len(key) if key is not None else 0))
    return key, value[:room] if value is not None else None


def truncated_count(settings: OutputSettings, records: Sequence, decoded: DecodedBatch) -> int:
    """How many of ``decoded``'s DLQ records ``build_outputs`` truncates (for the metric, once acknowledged)."""
    limit = dlq_limit(settings)
    n = 0
    for i, err in decoded.errors:
        r = records[i]
        n += dlq_size(r.key, r.value, dlq_headers(err, r.topic, r.partition, r.offset)) > limit
    return n


def _header_bytes(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(k.encode()) + len(v) for k, v in headers)


def event_times(decoded: DecodedBatch, records: Sequence, rows: Sequence[int]) -> dict[int, int]:
    """Each row's event time (epoch ms), or its record's timestamp for an event without one."""
    return {j: _event_time(decoded, records, j) for j in rows}


def _event_time(decoded: DecodedBatch, records: Sequence, row: int) -> int:
    t = decoded.event_times[row]
    return t if t is not None else records[decoded.index[row]].timestamp


def score_payloads(
    scorer: Scorer,
    decoded: DecodedBatch,
    scaled: np.ndarray,  # decoded.features transformed and scaled (``ScoredBatch.scaled``)
    scores: np.ndarray,
    times: Mapping[int, int],  # each row's event time (epoch ms): ``event_times``, or 0 offline
    scored_at: int,
    reasons: int,
    features: bool = False,
    context: Sequence[bytes] | None = None,
    decisions: Decisions | None = None,
    shadow_decisions: Decisions | None = None,
) -> list[bytes]:
    """The score record's JSON of every valid row of ``decoded``, in order: the one place a score record is
    built, for the scores topic, the shadow topic and the backtest's output lines alike."""
    rows = range(len(scores))
    return encode_results(scorer, rows, decoded.transaction_ids, times, scaled, decoded.features, scores, scored_at,
                          reasons, features=features, context=context, decisions=decisions,
                          shadow_decisions=shadow_decisions)  # fmt: skip


def keyed(topic: str, payloads: Sequence[bytes], records: Sequence, decoded: DecodedBatch) -> list[Output]:
    """Records for ``topic`` of one payload per valid row: keyed by transaction id, with the source headers of
    the input record the row came from."""
    ids = decoded.transaction_ids
    out: list[Output] = []
    for j, payload in enumerate(payloads):
        r = records[decoded.index[j]]
        out.append((topic, ids[j].encode(), payload, source_headers(r.topic, r.partition, r.offset)))
    return out


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
    context: Sequence[bytes] | None = None,
    decisions: Decisions | None = None,
    shadow_decisions: Decisions | None = None,
) -> list[bytes]:
    """One JSON payload per row index in ``rows`` (indices into the batch's valid rows).

    Each reason is ``{"feature", "contribution", "value"}``: the feature's weight × transformed,
    scaled value, and its raw value (``Scorer.top_reasons_many``). ``features``: each payload also
    holds every raw feature value by name (``float32_decimals``).

    The payload is what msgspec makes of the dict ``{"transaction_id": ..., "score": ...,
    "threshold": ..., "model_version": ..., "reasons": [...], "event_time": ..., "scored_at": ...,
    "features": {...}, "decision": {...}, "shadow_decision": {...}}``, byte for byte
    (tests/unit/worker/test_outputs_encoding.py holds it to that), built column by column: msgspec
    encodes each column's values in one call and the rows are joined from the pieces, so no dict or
    list is made per row.
    """
    if len(rows) == 0:
        return []
    rows = list(rows)
    order, top, values = scorer.top_reason_columns(scaled[rows], raw[rows], k)
    names = [_encode(name) for name in scorer.feature_names]
    row = _Pieces()
    row.text(b'{"transaction_id":')
    row.column(list(map(_encode, [transaction_ids[j] for j in rows])))
    row.text(b',"score":')
    row.column(_numbers(scores[rows].astype(np.float64).tolist()))
    if decisions is None:
        row.text(b',"threshold":' + _encode(scorer.threshold))
    else:  # the threshold that applied: the global one or the event's segment's
        row.text(b',"threshold":')
        row.column(_numbers(decisions.thresholds[rows].tolist()))
    row.text(b',"model_version":' + _encode(scorer.version))
    row.text(b',"reasons":[')
    for r in range(order.shape[1]):
        row.text(b',{"feature":' if r else b'{"feature":')
        row.column(list(map(names.__getitem__, order[:, r].tolist())))
        row.text(b',"contribution":')
        row.column(_numbers(rounded(top[:, r], 4)))
        row.text(b',"value":')
        row.column(_numbers(values[:, r].tolist()))
        row.text(b"}")
    row.text(b'],"event_time":')
    row.column(_numbers([event_times[j] for j in rows]))
    row.text(b',"scored_at":' + _encode(scored_at))
    if features:
        decimals = float32_decimals(raw[rows])
        for f, name in enumerate(names):
            row.text((b',"features":{' if f == 0 else b",") + name + b":")
            row.column(_numbers(decimals[:, f].tolist()))
        row.text(b"}")
    if context is not None:
        row.column([context[j] for j in rows])
    if decisions is not None:
        row.column(decisions.fragments(rows))
    if shadow_decisions is not None:
        row.column(shadow_decisions.fragments(rows, b"shadow_decision"))
    row.text(b"}")
    return row.join()


class _Pieces:
    """A JSON document per row, as constant text and columns of already encoded values, in order."""

    def __init__(self) -> None:
        self._columns: list[Iterable[bytes]] = []
        self._text = b""

    def text(self, text: bytes) -> None:
        self._text += text

    def column(self, encoded: list[bytes]) -> None:
        self._columns += (repeat(self._text), encoded)
        self._text = b""

    def join(self) -> list[bytes]:
        return list(map(b"".join, zip(*self._columns, repeat(self._text))))


def _numbers(values: list[float] | list[int]) -> list[bytes]:
    """Each number as msgspec writes it, from one call: a number's JSON has no comma."""
    return _encode(values)[1:-1].split(b",")


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
