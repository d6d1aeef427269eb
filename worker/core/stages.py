"""Behavioural features of entities other than the input topic's key (docs/features.md, "Entities other
than the key"): the spec's entity blocks split into stages, one per entity field, chained by repartition
topics as Kafka Streams does. Pure: no Kafka; the worker's loop sends and reads the records it plans.

The input topic is keyed by one entity (``input_key_field``, say the customer), so a partition holds all
of that customer's events but only some of a terminal's. Stage 0 computes the key entity's blocks where
the event arrives, then forwards the event, unchanged, to a repartition topic keyed by the next entity
field; the worker that owns that topic's partition sees every event of that terminal, in the order they
were forwarded, and computes its blocks there. The last stage adds the categoricals and scores. The
features of the stages before travel with the event in a header (``fraud-features``): float32, the
values the model reads, with the digest of the spec that computed them.

Stages are numbered from the key's: ``stages[0]`` is the key entity's blocks (none when the spec has
no block on the key field), then one stage per other entity field in the order the spec first names it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from worker.core.features import FeatureSpec, key_of

HEADER = "fraud-features"


@dataclass(frozen=True)
class Stage:
    number: int
    field: str | None  # the entity field its partitions are keyed by (None: the input topic's key)
    spec: FeatureSpec  # the blocks computed here (and, in the last stage, the categoricals)
    positions: tuple[int, ...]  # where each of ``spec.names`` goes among the full spec's names


def plan(spec: FeatureSpec, key_field: str) -> tuple[Stage, ...]:
    """The stages of ``spec`` for an input topic keyed by ``key_field``; one stage (the whole spec) when
    ``key_field`` is empty or every block is on it."""
    fields = [key_field, *dict.fromkeys(b.entity for b in spec.entities if b.entity != key_field)]
    if not key_field or len(fields) == 1:
        return (Stage(0, None, spec, tuple(range(len(spec.names)))),)
    at = {name: i for i, name in enumerate(spec.names)}
    stages = []
    for n, entity in enumerate(fields):
        last = n == len(fields) - 1
        blocks = tuple(b for b in spec.entities if b.entity == entity)
        sub = FeatureSpec(spec.time_field, spec.time_unit, blocks, spec.categoricals if last else ())
        stages.append(Stage(n, None if n == 0 else entity, sub, tuple(at[name] for name in sub.names)))
    return tuple(stages)


def digest(spec: FeatureSpec) -> str:
    """Names the spec whose stages computed a header's features (its manifest form: blocks, categoricals)."""
    return hashlib.sha256(json.dumps(spec.to_manifest(), sort_keys=True).encode()).hexdigest()[:16]


def assemble(stages: Sequence[Stage], earlier: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The full spec's features, in its order, from the earlier stages' (``earlier``: their columns side by
    side, stage order) and the last stage's (``last``); float32 rows."""
    out = np.empty((len(last), sum(len(s.positions) for s in stages)), dtype=np.float32)
    columns = [p for s in stages[:-1] for p in s.positions]
    out[:, columns] = earlier
    out[:, list(stages[-1].positions)] = last
    return out


_header = msgspec.msgpack.Encoder().encode
_read_header = msgspec.msgpack.Decoder(tuple[str, int, bytes]).decode


def header(spec_digest: str, stage: int, features: np.ndarray) -> tuple[str, bytes]:
    """The header an event carries to stage ``stage``: the earlier stages' features (float32)."""
    return HEADER, _header((spec_digest, stage, np.ascontiguousarray(features, dtype=np.float32).tobytes()))


def read_header(
    headers: Sequence[tuple[str, bytes]] | None, spec_digest: str, stage: int, width: int
) -> np.ndarray | None:
    """The earlier stages' features an event brought to ``stage``; None when it brought none, or ones
    computed for another spec or stage (a bundle switched meanwhile), or not ``width`` of them."""
    for name, value in headers or ():
        if name != HEADER:
            continue
        try:
            digest, number, data = _read_header(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if digest != spec_digest or number != stage or len(data) != 4 * width:
            return None
        return np.frombuffer(data, dtype=np.float32)
    return None


class KeyReader:
    """One field of JSON event values, as the key a repartition record is sent with (None: no entity)."""

    def __init__(self, field: str) -> None:
        struct = msgspec.defstruct("KeyField", [("value", Any, msgspec.field(name=field, default=None))])
        self._decode = msgspec.json.Decoder(struct).decode

    def key(self, value: bytes) -> bytes | None:
        try:
            k = key_of(self._decode(value).value)  # type: ignore[attr-defined]
        except msgspec.DecodeError:
            return None
        return None if k is None else k.encode()
