"""A decoded batch's behavioural features (docs/features.md): the worker's step between decoding and
scoring when its bundle carries a feature spec. Pure: no Kafka; the state is the store it is given.

``BatchFeatures.extend`` reads each valid event's spec fields from its JSON (``InputReader``), computes
its features with ``FeatureEngine.step`` in the batch's order (the order of each partition), and returns
the batch with them appended to the event's own fields: the model's input, float32 as the model takes it.
An event without a usable time field is moved to the batch's errors (``missing_field`` when absent or
null, ``bad_event_time`` when not a number >= 0), dead-lettered like any other.

Each event's (partition, offset) is remembered per partition: an event at an offset below the next one
already applied (polled again after a rewind) gets its features from the state as it is and changes
nothing, so no event counts twice.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, MutableMapping, Sequence

import numpy as np

from worker.core.decode import DecodedBatch, reject_rows
from worker.core.errors import DecodeError
from worker.core.features import EntityState, FeatureEngine, FeatureSpec, InputReader, valid_time


class BatchFeatures:
    """One spec's features over a stream of decoded batches, its state in ``store``."""

    def __init__(self, spec: FeatureSpec, store: MutableMapping[str, EntityState] | None = None) -> None:
        self.spec = spec
        self.engine = FeatureEngine(spec, store)
        self.reader = InputReader(spec)
        self.applied: dict[Hashable, int] = {}  # partition -> the offset after the last event applied
        self.seconds = 0.0  # time spent computing features (a metric)
        self.replayed = 0  # events seen before: features computed, state left as it was

    def extend(
        self,
        decoded: DecodedBatch,
        values: Sequence[bytes],
        partitions: Sequence[Hashable] | None = None,
        offsets: Sequence[int] | None = None,
    ) -> DecodedBatch:
        """``decoded`` with each valid row's spec features appended. ``values``: the raw value of each valid
        row (aligned with ``decoded.index``); ``partitions`` and ``offsets``: where each came from (None:
        a file, every event new)."""
        start = time.perf_counter()
        spec, engine, read = self.spec, self.engine, self.reader.read
        unit, width = spec.time_unit, engine.width
        use_event_time = spec.time_field == "event_time"
        out: list[float] = []
        rejected: list[tuple[int, DecodeError]] = []
        applied = self.applied
        for j, value in enumerate(values):
            raw_time, inputs = read(value)
            t = decoded.event_times[j] if use_event_time else valid_time(raw_time, unit)
            if t is None:
                rejected.append((j, _time_error(spec.time_field, unit, raw_time)))
                out.extend([0.0] * width)  # a placeholder row, moved to the errors below
                continue
            fresh = True
            if partitions is not None and offsets is not None:
                p, o = partitions[j], offsets[j]
                fresh = o >= applied.get(p, -1)
                if fresh:
                    applied[p] = o + 1
                else:
                    self.replayed += 1
            engine.step(t, inputs, out, apply=fresh)
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
