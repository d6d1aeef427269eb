"""Score and label records as ``fraud-feedback`` reads them. Pure: bytes in, typed values or a reason out.

A score record is the worker's (docs/design.md, "Score record"): ``transaction_id``, ``score``,
``threshold``, ``model_version``, ``event_time`` (epoch ms) and, with ``--scores-include-features``,
``features`` (name -> raw value). A label is ``{"transaction_id": str, "is_fraud": bool,
"label_time": epoch ms, "source": str}``. A record that is not one of these is skipped and counted
by its reason (``fraud_feedback_invalid_total``), never stops the program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

MAX_ID_LENGTH = 256


class _Score(msgspec.Struct):
    transaction_id: str
    score: float
    threshold: float
    model_version: str
    event_time: int
    features: dict[str, float] | None = None


class _Label(msgspec.Struct):
    transaction_id: str
    is_fraud: bool
    label_time: int
    source: str = ""


_score_decoder = msgspec.json.Decoder(_Score)
_label_decoder = msgspec.json.Decoder(_Label)


@dataclass(frozen=True)
class Score:
    transaction_id: str
    model_version: str
    score: float
    threshold: float
    event_time: int
    features: tuple[tuple[str, ...], tuple[float, ...]] | None  # (names, values), the model's order


@dataclass(frozen=True)
class Label:
    transaction_id: str
    is_fraud: bool
    label_time: int
    source: str


class BadRecord(Exception):
    """A record that is not a score or label; ``reason`` is a stable code for the metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _check_id(transaction_id: str) -> None:
    if not transaction_id or len(transaction_id) > MAX_ID_LENGTH:
        raise BadRecord("bad_transaction_id", f"transaction_id must be 1 to {MAX_ID_LENGTH} characters")


def _decode(decoder: msgspec.json.Decoder, value: bytes | None):  # type: ignore[no-untyped-def]
    """The typed record, its transaction id checked; BadRecord for no value, not JSON, or the wrong shape."""
    if not value:
        raise BadRecord("empty", "no value")
    try:
        record = decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise BadRecord("schema", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRecord("not_json", str(exc)) from None
    _check_id(record.transaction_id)
    return record


def decode_score(value: bytes | None) -> Score:
    s = _decode(_score_decoder, value)
    if not (math.isfinite(s.score) and 0.0 <= s.score <= 1.0 and 0.0 <= s.threshold <= 1.0):
        raise BadRecord("schema", "score and threshold must lie in [0, 1]")
    features = None
    if s.features:
        if not all(math.isfinite(v) for v in s.features.values()):
            raise BadRecord("schema", "a feature value is not finite")
        features = (tuple(s.features), tuple(float(v) for v in s.features.values()))
    return Score(s.transaction_id, s.model_version, float(s.score), float(s.threshold), int(s.event_time), features)


def decode_label(value: bytes | None) -> Label:
    lab = _decode(_label_decoder, value)
    return Label(lab.transaction_id, bool(lab.is_fraud), int(lab.label_time), lab.source)


def encode_label(transaction_id: str, is_fraud: bool, label_time: int, source: str) -> bytes:
    """A label record's value, as ``fraud-replay --labels-topic`` and a team's own labeller write it."""
    return msgspec.json.encode(
        {"transaction_id": transaction_id, "is_fraud": bool(is_fraud), "label_time": int(label_time), "source": source}
    )
