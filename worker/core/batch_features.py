"""A decoded batch's behavioural features (docs/features.md): the worker's step between decoding and
scoring when its bundle carries a feature spec. Pure: no Kafka; the state is what it is given.

``BatchFeatures.extend`` reads each valid event's spec fields from its JSON (``InputReader``), computes
its features with ``FeatureEngine.step`` in the batch's order (the order of each partition), and returns
the batch with them appended to the event's own fields: the model's input, float32 as the model takes it.
An event without a usable time field is moved to the batch's errors (``missing_field`` when absent or
null, ``bad_event_time`` when not a number >= 0), dead-lettered like any other.

Events from a partition go through that partition's state (``PartitionState``: a ``MemoryPartition``
here, the worker's SQLite store in worker/state/), which knows the offset after the last event it
applied and the features it computed for each event since the last commit. An event at an offset below
it (polled again, after a rewind or a crash) gets the features it had the first time and changes
nothing; so no event counts twice and a replayed event's features equal the first ones. Events without
a partition (a file: the backtest) share one state in memory.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np

from worker.core.decode import DecodedBatch, reject_rows
from worker.core.errors import DecodeError
from worker.core.features import EntityState, FeatureEngine, FeatureSpec, InputReader, StateMap, valid_time
from worker.core.risk import RiskSource


class PartitionState(StateMap, Protocol):
    """One partition's entity states, and what it knows of the events applied to them."""

    next_offset: int  # the offset after the last event applied; -1: none yet

    def record(self, offset: int, features: bytes) -> None: ...  # an event applied, its features (float32)

    def recorded(self, offset: int) -> bytes | None: ...  # the features of an event applied, if still kept


class MemoryPartition(dict[str, EntityState]):
    """A ``PartitionState`` in memory only (nothing survives the process, nothing is pruned): for tests and
    for a partition's events the worker no longer owns (worker/state/feature_state.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.next_offset = -1
        self._recorded: dict[int, bytes] = {}

    def record(self, offset: int, features: bytes) -> None:
        self._recorded[offset] = features
        self.next_offset = offset + 1

    def recorded(self, offset: int) -> bytes | None:
        return self._recorded.get(offset)


class BatchFeatures:
    """One spec's features over a stream of decoded batches."""

    def __init__(
        self,
        spec: FeatureSpec,
        state_for: Callable[[Hashable], PartitionState] | None = None,
        risk: RiskSource | None = None,
    ) -> None:
        self.spec = spec
        self.risk = risk  # the label-derived features' entries (worker/core/risk.py); None: no labels
        self.reader = InputReader(spec)
        self.state_for = state_for or (lambda _: MemoryPartition())
        self.partitions: dict[Hashable, tuple[FeatureEngine, PartitionState]] = {}
        self.unpartitioned = FeatureEngine(spec, risk=risk)  # a file's events
        self.seconds = 0.0  # time spent computing features (a metric)
        self.replayed = 0  # events polled again: their recorded features, nothing applied
        self.unrecorded = 0  # of those, ones whose features were no longer kept: computed from the state as it is
        self._late_gone = 0  # late events counted by the engines of partitions dropped since (``late`` never falls)

    def partition(self, p: Hashable) -> tuple[FeatureEngine, PartitionState]:
        entry = self.partitions.get(p)
        if entry is None:
            state = self.state_for(p)
            entry = self.partitions[p] = (FeatureEngine(self.spec, state, self.risk), state)
        return entry

    def drop(self, p: Hashable) -> PartitionState | None:
        """Forget partition ``p`` (revoked); its state, to be closed by whoever made it."""
        entry = self.partitions.pop(p, None)
        if entry is None:
            return None
        self._late_gone += entry[0].late
        return entry[1]

    @property
    def late(self) -> int:
        """Events computed at their entity's latest time, ever (a counter: partitions dropped still count)."""
        return self.unpartitioned.late + self._late_gone + sum(e.late for e, _ in self.partitions.values())

    @property
    def entities(self) -> int:
        return len(self.unpartitioned.store) + sum(len(s) for _, s in self.partitions.values())

    def extend(
        self,
        decoded: DecodedBatch,
        values: Sequence[bytes],
        partitions: Sequence[Hashable] | None = None,
        offsets: Sequence[int] | None = None,
    ) -> DecodedBatch:
        """``decoded`` with each valid row's spec features appended. ``values``: the raw value of each valid
        row (aligned with ``decoded.index``); ``partitions`` and ``offsets``: where each came from (None:
        a file)."""
        start = time.perf_counter()
        spec, read = self.spec, self.reader.read
        unit, width = spec.time_unit, self.unpartitioned.width
        use_event_time = spec.time_field == "event_time"
        out: list[float] = []
        rejected: list[tuple[int, DecodeError]] = []
        for j, value in enumerate(values):
            raw_time, inputs = read(value)
            t = decoded.event_times[j] if use_event_time else valid_time(raw_time, unit)
            if t is None:
                rejected.append((j, _time_error(spec.time_field, unit, raw_time)))
                out.extend([0.0] * width)  # a placeholder row, moved to the errors below
                continue
            if partitions is None or offsets is None:
                self.unpartitioned.step(t, inputs, out)
                continue
            engine, state = self.partition(partitions[j])
            offset = offsets[j]
            if offset < state.next_offset:  # applied already: polled again
                self.replayed += 1
                seen = state.recorded(offset)
                if seen is not None:
                    out.extend(array("f", seen))
                else:
                    self.unrecorded += 1
                    engine.step(t, inputs, out, apply=False)
                continue
            first = len(out)
            engine.step(t, inputs, out)
            state.record(offset, array("f", out[first:]).tobytes())
        derived = np.asarray(out, dtype=np.float32).reshape(len(values), width)
        extended = DecodedBatch(
            np.hstack([decoded.features, derived]), decoded.transaction_ids, decoded.event_times, decoded.index,
            decoded.errors,
        )  # fmt: skip
        self.seconds += time.perf_counter() - start
        return reject_rows(extended, rejected)


def _time_error(field: str, unit: str, value: object) -> DecodeError:
    if value is None:
        return DecodeError("missing_field", f"{field} is missing (the model's feature spec needs the event time)")
    return DecodeError("bad_event_time", f"{field} must be a number >= 0 ({unit}), for the model's feature spec")
