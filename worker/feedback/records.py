"""Score and label records as ``fraud-feedback`` reads them. Pure: bytes in, typed values or a reason out.

A score record is the worker's (docs/formats.md, "Score record"): ``transaction_id``, ``score``,
``threshold``, ``model_version``, ``event_time`` (epoch ms) and, with ``--scores-include-features``,
``features`` (name -> raw value). When the model has a feature spec it may also carry ``entity_time``
(epoch ms, the event's time as the spec reads it) and ``entities`` (entity field -> key, the entities
whose risk the spec reads: worker/core/risk.py), and ``inputs`` (field -> the event's raw value: a
string, number, boolean or null; for ``fraud-feedback export``). With a rule set (docs/rules.md) it carries
``decision`` and, when a shadow rule set runs, ``shadow_decision`` (``Decision``): the action, the deciding
rule, every rule that matched and the rule set's version. A label is ``{"transaction_id": str, "is_fraud": bool,
"label_time": epoch ms, "source": str}``. A record that is not one of these is skipped and counted
by its reason (``fraud_feedback_invalid_total``), never stops the program.

A time (a score's ``event_time``, a label's ``label_time``) is epoch ms in [0, 2^63): anything else
is ``out_of_range`` (a SQLite integer could not hold it). One more than a day ahead of the wall
clock is ``future`` (a µs or ns value read as ms, say): such a label would win "latest label_time"
for ever and never be pruned, such a score would stay pending for ever. Every value that reaches the
store is then one SQLite holds: bounded integers, finite floats, valid UTF-8 text.

A decision record is read strictly, as the other members are: an ``action`` as rule sets name them, a
``rule_set`` that is a version name (or null: no rule set, and then no rules), at most ``MAX_DECISION_RULES``
distinct rule ids as rule sets spell them (worker/core/rules.py), the deciding ``rule`` one of them or null.
Anything else is a ``schema`` error: the whole score record is skipped and counted, as for a bad feature.
Its ``threshold_source`` and ``segment`` are not read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated

import msgspec

from worker.core.bundle import VERSION_PATTERN
from worker.core.decode import Unread
from worker.core.risk import KEY_SEPARATOR, MAX_KEY_LENGTH
from worker.core.rules import ACTION, MAX_RULES, RULE_ID

MAX_ID_LENGTH = 256
MAX_ENTITY_LENGTH = MAX_KEY_LENGTH  # an entity key, and an entity field's name
MAX_ENTITIES = 16
MAX_INPUTS = 64
MAX_TIME_MS = 2**63 - 1  # a SQLite INTEGER
FUTURE_MS = 86_400_000  # a time more than this ahead of the wall clock is refused ("future")
MAX_DECISION_RULES = MAX_RULES  # matched rule ids in one decision record
MAX_RULE_ID_LENGTH = 64
InputValue = str | int | float | bool | None  # an input field's raw value, as the event had it
SERVING, SHADOW = "serving", "shadow"  # the roles of a decision: ``decision`` and ``shadow_decision``


class _Decision(msgspec.Struct):
    action: str
    rule: str | None
    rules: Annotated[list[Annotated[str, msgspec.Meta(max_length=MAX_RULE_ID_LENGTH)]],
                     msgspec.Meta(max_length=MAX_DECISION_RULES)]  # fmt: skip
    rule_set: str | None


class _Score(msgspec.Struct):
    transaction_id: str
    score: float
    threshold: float
    model_version: str
    event_time: int
    features: dict[str, float] | None = None
    entity_time: int | None = None
    entities: dict[str, str] | None = None
    inputs: dict[str, InputValue] | None = None
    decision: _Decision | None = None
    shadow_decision: _Decision | None = None


class _Label(msgspec.Struct):
    transaction_id: str
    is_fraud: bool
    label_time: int
    source: str = ""


_score_decoder = msgspec.json.Decoder(_Score)
_label_decoder = msgspec.json.Decoder(_Label)


@dataclass(frozen=True)
class Decision:
    """A score record's decision record: its action, the deciding rule (None: no rule decided), every rule that
    matched in precedence order, the rule set's version (None: no rule set served)."""

    action: str
    rule: str | None
    rules: tuple[str, ...]
    rule_set: str | None


@dataclass(frozen=True)
class Score:
    transaction_id: str
    model_version: str
    score: float
    threshold: float
    event_time: int
    features: tuple[tuple[str, ...], tuple[float, ...]] | None  # (names, values), the model's order
    entity_time: int | None = None  # epoch ms: the transaction's time as the feature spec reads it
    entities: dict[str, str] | None = None  # entity field -> key, for the entity risk (None: none)
    inputs: dict[str, InputValue] | None = None  # the event's raw fields the spec reads
    decision: Decision | None = None  # the serving rule set's decision record
    shadow_decision: Decision | None = None  # the shadow rule set's

    def decisions(self) -> list[tuple[str, Decision]]:
        """(role, decision record) of each decision record the score record carried."""
        return [(role, d) for role, d in ((SERVING, self.decision), (SHADOW, self.shadow_decision)) if d is not None]


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


def _check_time(name: str, t: int, now_ms: int | None) -> None:
    if not 0 <= t <= MAX_TIME_MS:
        raise BadRecord("out_of_range", f"{name} must be epoch ms in [0, 2^63)")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if t > now + FUTURE_MS:
        raise BadRecord("future", f"{name} {t} is more than a day ahead of the clock ({now})")


def _decode(decoder: msgspec.json.Decoder, value: bytes | None):  # type: ignore[no-untyped-def]
    """The typed record, its transaction id checked; BadRecord for no value, not JSON, or the wrong shape."""
    if not value:
        raise BadRecord("empty", "no value")
    if isinstance(value, Unread):  # its compressed batch was over the inflate cap or unreadable (inflate.py)
        raise BadRecord(value.reason, value.detail)
    try:
        record = decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise BadRecord("schema", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRecord("not_json", str(exc)) from None
    except RecursionError:  # msgspec's depth limit: JSON nested thousands deep
        raise BadRecord("not_json", "nested too deeply") from None
    _check_id(record.transaction_id)
    return record


def decode_score(value: bytes | None, now_ms: int | None = None) -> Score:
    """The score record; BadRecord otherwise. ``now_ms``: the clock for the ``future`` check (default: wall clock)."""
    s = _decode(_score_decoder, value)
    _check_time("event_time", s.event_time, now_ms)
    if not (math.isfinite(s.score) and 0.0 <= s.score <= 1.0 and 0.0 <= s.threshold <= 1.0):
        raise BadRecord("schema", "score and threshold must lie in [0, 1]")
    features = None
    if s.features:
        if not all(math.isfinite(v) for v in s.features.values()):
            raise BadRecord("schema", "a feature value is not finite")
        features = (tuple(s.features), tuple(float(v) for v in s.features.values()))
    entity_time = None
    if s.entity_time is not None:
        _check_time("entity_time", s.entity_time, now_ms)
        entity_time = int(s.entity_time)
    entities = _entities(s.entities, entity_time)
    inputs = _inputs(s.inputs)
    decision = _decision("decision", s.decision)
    shadow_decision = _decision("shadow_decision", s.shadow_decision)
    return Score(s.transaction_id, s.model_version, float(s.score), float(s.threshold), int(s.event_time), features,
                 entity_time, entities, inputs, decision, shadow_decision)  # fmt: skip


def _decision(name: str, d: _Decision | None) -> Decision | None:
    """The decision record, checked (the module's doc); None without one."""
    if d is None:
        return None
    if not ACTION.fullmatch(d.action):
        raise BadRecord("schema", f"{name}.action is not an action name ({ACTION.pattern})")
    if d.rule_set is not None and not VERSION_PATTERN.fullmatch(d.rule_set):
        raise BadRecord("schema", f"{name}.rule_set is not a version name ({VERSION_PATTERN.pattern})")
    for rule in d.rules:
        if not RULE_ID.fullmatch(rule):
            raise BadRecord("schema", f"{name}.rules holds an id that is not a rule id ({RULE_ID.pattern})")
    if len(set(d.rules)) != len(d.rules):
        raise BadRecord("schema", f"{name}.rules names a rule twice")
    if d.rule is not None and d.rule not in d.rules:
        raise BadRecord("schema", f"{name}.rule is not one of its rules")
    if d.rule_set is None and d.rules:
        raise BadRecord("schema", f"{name} has rules but no rule_set")
    return Decision(d.action, d.rule, tuple(d.rules), d.rule_set)


def _entities(entities: dict[str, str] | None, entity_time: int | None) -> dict[str, str] | None:
    """The entity keys, checked; None when there are none. A field name never holds the risk records' key
    separator (worker/core/risk.py ``record_key``)."""
    if not entities:
        return None
    if len(entities) > MAX_ENTITIES:
        raise BadRecord("schema", f"entities has {len(entities)} fields, at most {MAX_ENTITIES}")
    if entity_time is None:
        raise BadRecord("schema", "entities without entity_time")
    for name, key in entities.items():
        if not name or len(name) > MAX_ENTITY_LENGTH or KEY_SEPARATOR in name:
            raise BadRecord("schema", f"an entity field name must be 1 to {MAX_ENTITY_LENGTH} characters")
        if not key or len(key) > MAX_ENTITY_LENGTH:
            raise BadRecord("schema", f"an entity key must be 1 to {MAX_ENTITY_LENGTH} characters")
    return dict(entities)


def _inputs(inputs: dict[str, InputValue] | None) -> dict[str, InputValue] | None:
    if not inputs:
        return None
    if len(inputs) > MAX_INPUTS:
        raise BadRecord("schema", f"inputs has {len(inputs)} fields, at most {MAX_INPUTS}")
    for value in inputs.values():
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRecord("schema", "an input value is not finite")
    return dict(inputs)


def decode_label(value: bytes | None, now_ms: int | None = None) -> Label:
    """The label; BadRecord otherwise. ``now_ms``: the clock for the ``future`` check (default: wall clock)."""
    lab = _decode(_label_decoder, value)
    _check_time("label_time", lab.label_time, now_ms)
    return Label(lab.transaction_id, bool(lab.is_fraud), int(lab.label_time), lab.source)


def encode_label(transaction_id: str, is_fraud: bool, label_time: int, source: str) -> bytes:
    """A label record's value, as ``fraud-replay --labels-topic`` and a team's own labeller write it."""
    return msgspec.json.encode(
        {"transaction_id": transaction_id, "is_fraud": bool(is_fraud), "label_time": int(label_time), "source": source}
    )
