"""Entity risk from labels (docs/entity-risk.md): the confirmed fraud of a terminal, merchant or device in
a delayed window, the same offline and online. Pure: no Kafka, no store.

A label changes an entity's history by a **fraud entry** ``(tx_time, label_time, delta)``: the labelled
transaction's event time and the label's time, both epoch ms, and +1 when the transaction becomes fraud,
-1 when a later label takes that back. A transaction labelled genuine from the first gives no entry.
``FeatureEngine`` (worker/core/features.py) counts, for an event at time ``t`` and a window of buckets
``[lo, hi)`` (the delayed window of the block, the same buckets as the entity's ``count``), the entries
with ``lo <= tx_time < hi`` and ``label_time <= t``: the frauds confirmed by ``t`` among the entity's
transactions in the window. Offline the entries come from the labelled file (``FraudHistory.from_rows``),
online from the risk table ``fraud-feedback`` publishes (worker/state/risk_table.py); both are a
``RiskSource``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

Entry = tuple[int, int, int]  # (transaction's event time ms, label time ms, +1 / -1)
MAX_KEY_LENGTH = 256  # an entity key longer than this gets no entries (score records leave it out)
NO_ENTRIES: tuple[Entry, ...] = ()


class RiskSource(Protocol):
    """An entity's fraud entries, sorted by transaction time; empty when it has none."""

    def entries(self, field: str, key: str, /) -> Sequence[Entry]: ...


class NoRisk:
    """A source without labels: every entity's fraud count is 0 (its rate the prior)."""

    def entries(self, field: str, key: str, /) -> Sequence[Entry]:
        return NO_ENTRIES


def frauds_in(entries: Sequence[Entry], lo: int, hi: int, t: int) -> float:
    """The sum of the deltas of ``entries`` (sorted) with ``lo <= tx_time < hi`` and ``label_time <= t``."""
    if not entries:
        return 0.0
    a = bisect.bisect_left(entries, (lo,))
    b = bisect.bisect_left(entries, (hi,), a)
    n = 0
    for i in range(a, b):
        entry = entries[i]
        if entry[1] <= t:
            n += entry[2]
    return float(n)


def change(was_fraud: bool, is_fraud: bool, tx_time: int, label_time: int) -> Entry | None:
    """The entry a label makes: ``was_fraud`` what the transaction was before it (False without a label)."""
    if was_fraud == is_fraud:
        return None
    return (int(tx_time), int(label_time), 1 if is_fraud else -1)


class FraudHistory:
    """Fraud entries per (entity field, entity key), in memory: the offline source, and the worker's merge of
    what the risk table holds."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], list[Entry]] = {}

    def entries(self, field: str, key: str, /) -> Sequence[Entry]:
        return self._entries.get((field, key), NO_ENTRIES)

    def put(self, field: str, key: str, entries: Iterable[Entry]) -> None:
        """Replace an entity's entries (sorted here); none: the entity is dropped."""
        ordered = sorted(entries)
        if ordered:
            self._entries[(field, key)] = ordered
        else:
            self._entries.pop((field, key), None)

    def __len__(self) -> int:
        return len(self._entries)

    def total(self) -> int:
        """The frauds held now, all entries summed (a metric)."""
        return sum(e[2] for entries in self._entries.values() for e in entries)

    @classmethod
    def from_rows(
        cls,
        fields: Sequence[str],
        columns: Mapping[str, Any],
        tx_times_ms: Sequence[int],
        is_fraud: Sequence[Any],
        label_times_ms: Sequence[int] | None = None,
    ) -> FraudHistory:
        """A labelled file's entries: each fraud row is +1 at its label time (its own event time when the file
        has no label times: then only the window's delay keeps a label from the future)."""
        from worker.core.features import key_of  # the entity keys as the engine reads them

        grouped: dict[tuple[str, str], list[Entry]] = {}
        rows = [i for i, y in enumerate(is_fraud) if y and float(y) >= 0.5]
        for field in fields:
            col = columns[field]
            for i in rows:
                key = key_of(col[i])
                if key is None:
                    continue
                tx = int(tx_times_ms[i])
                lab = int(label_times_ms[i]) if label_times_ms is not None else tx
                grouped.setdefault((field, key), []).append((tx, lab, 1))
        history = cls()
        for (field, key), entries in grouped.items():
            history.put(field, key, entries)
        return history


def history_from_labels(
    events: Iterable[tuple[str, int, Mapping[str, str]]],
    labels: Iterable[tuple[str, bool, int]],
) -> FraudHistory:
    """The entries fraud-feedback makes of a stream of labels (docs/feedback.md, docs/entity-risk.md): ``events``
    are (transaction id, event time ms, {entity field: key}), ``labels`` (transaction id, is fraud, label time
    ms) in the order they are read. Per transaction the label with the latest time wins (one no later than
    the one held changes nothing); each change of truth is an entry at ``max(label_time, tx_time)``."""
    where = {tid: (tx, entities) for tid, tx, entities in events}
    held: dict[str, tuple[bool, int]] = {}
    grouped: dict[tuple[str, str], list[Entry]] = {}
    for tid, is_fraud, label_time in labels:
        old = held.get(tid)
        if old is not None and old[1] >= label_time:
            continue
        held[tid] = (is_fraud, label_time)
        event = where.get(tid)
        if event is None:
            continue
        tx, entities = event
        entry = change(old is not None and old[0], is_fraud, tx, max(label_time, tx))
        if entry is not None:
            for field, key in entities.items():
                grouped.setdefault((field, key), []).append(entry)
    history = FraudHistory()
    for (field, key), entries in grouped.items():
        history.put(field, key, entries)
    return history


# -- the risk table's records (docs/formats.md, "Entity risk records") -------------------------------------

_encode = msgspec.msgpack.Encoder().encode
_decode_entries = msgspec.msgpack.Decoder(list[tuple[int, int, int]]).decode
KEY_SEPARATOR = "\x1f"  # the unit separator: not in a field name, and a key of ours never holds it unescaped


def record_key(field: str, key: str, source: int) -> bytes:
    """The record's key: the entity field, the fraud-feedback partition that wrote it, and the entity."""
    return f"{field}{KEY_SEPARATOR}{source}{KEY_SEPARATOR}{key}".encode()


def parse_key(raw: bytes) -> tuple[str, int, str]:
    """(field, source partition, entity key); ``ValueError`` for a key not made by ``record_key``."""
    field, source, key = raw.decode().split(KEY_SEPARATOR, 2)
    if not field or not key:
        raise ValueError("empty field or entity")
    return field, int(source), key


def encode_entries(entries: Iterable[Entry]) -> bytes:
    return _encode(sorted(entries))


def decode_entries(raw: bytes) -> list[Entry]:
    """A record's entries, sorted; ``msgspec.DecodeError`` / ``ValidationError`` for anything else, ``ValueError``
    for a delta other than +1 or -1."""
    entries = _decode_entries(raw)
    if any(e[2] not in (1, -1) for e in entries):
        raise ValueError("an entry's delta is not +1 or -1")
    return sorted(entries)
