"""A batch's behavioural features when the spec has entities other than the input topic's key
(worker/core/stages.py, docs/features.md "Entities other than the key").

The worker consumes the input topic and one repartition topic per other entity field, in one consumer
group. A record's topic says its stage: each stage's rows get that stage's features from the feature
state (``FeatureState.extend``, the same path as a one-stage spec); rows of a stage before the last
become records for the next stage's topic (the event's value unchanged, keyed by the next entity, the
features so far in a header), sent and committed with the batch's other outputs; rows of the last stage
get the full spec's features and are scored.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence

import numpy as np

from worker.core.decode import STALE_FEATURES, DecodedBatch, take_rows
from worker.core.errors import DecodeError
from worker.core.features import FeatureSpec
from worker.core.outputs import Output
from worker.core.stages import KeyReader, Stage, assemble, digest, header, plan, read_header
from worker.state.feature_state import FeatureState


def repartition_topic(group_id: str, field: str) -> str:
    return f"{group_id}-repartition-{field}"


class Repartition:
    """The stages of one spec, and the topics that carry them."""

    def __init__(self, spec: FeatureSpec, key_field: str, input_topic: str, group_id: str) -> None:
        self.spec = spec
        self.stages: tuple[Stage, ...] = plan(spec, key_field)
        self.topics = [input_topic, *(repartition_topic(group_id, s.field or "") for s in self.stages[1:])]
        self._stage_of = {t: n for n, t in enumerate(self.topics)}
        self._keys = [None, *(KeyReader(s.field or "") for s in self.stages[1:])]
        self._digest = digest(spec)
        self._carried = [sum(len(s.positions) for s in self.stages[:n]) for n in range(len(self.stages))]

    @property
    def chained(self) -> bool:
        return len(self.stages) > 1

    def features(
        self, state: FeatureState, records: Sequence, decoded: DecodedBatch
    ) -> tuple[DecodedBatch, list[Output]]:
        """The batch's last-stage rows with the full spec's features (every error of the batch with them),
        and the records that forward the other rows to their next stage."""
        groups: list[list[int]] = [[] for _ in self.stages]
        for j, i in enumerate(decoded.index):
            groups[self._stage_of.get(records[i].topic, 0)].append(j)
        errors = list(decoded.errors)
        forwards: list[Output] = []
        own = decoded.features.shape[1]
        final = take_rows(decoded, [], [])
        for stage, rows in zip(self.stages, groups, strict=True):
            last = stage.number == len(self.stages) - 1
            if not rows and not last:
                continue
            sub = take_rows(decoded, rows, [])
            earlier: dict[int, np.ndarray] = {}
            if stage.number:
                stale = []
                for k, j in enumerate(rows):
                    r = records[decoded.index[j]]
                    carried = read_header(r.headers, self._digest, stage.number, self._carried[stage.number])
                    if carried is None:
                        stale.append(k)
                    else:
                        earlier[decoded.index[j]] = carried
                if stale:
                    errors += [(sub.index[k], _stale(self.topics[stage.number])) for k in stale]
                    gone = set(stale)
                    sub = take_rows(sub, [k for k in range(len(rows)) if k not in gone], [])
            if stage.spec.entities or stage.spec.categoricals:
                sub = state.extend(stage.spec, records, sub)
                errors += sub.errors
            mine = sub.features[:, own:]
            before = (
                np.vstack([earlier[i] for i in sub.index]) if earlier and sub.index
                else np.empty((len(sub.index), self._carried[stage.number]), dtype=np.float32)
            )  # fmt: skip
            if last:
                full = assemble(self.stages, before, mine)
                final = DecodedBatch(np.hstack([sub.features[:, :own], full]), sub.transaction_ids, sub.event_times,
                                     sub.index, [])  # fmt: skip
                continue
            carried = np.hstack([before, mine])
            topic, keys = self.topics[stage.number + 1], self._keys[stage.number + 1]
            assert keys is not None
            # Forwarded in event-time order: the batch holds its partitions one after the other, and the
            # next stage takes a terminal's events in the order they reach its partition.
            times = sub.event_times
            order: Sequence[int] = range(len(times))
            if None not in times:
                order = sorted(order, key=lambda k: times[k] or 0)
            for k in order:
                value = records[sub.index[k]].value
                forwards.append((topic, keys.key(value), value, [header(self._digest, stage.number + 1, carried[k])]))
        return dataclasses.replace(final, errors=sorted(errors, key=operator.itemgetter(0))), forwards


def _stale(topic: str) -> DecodeError:
    return DecodeError(
        STALE_FEATURES,
        f"{topic}: the event came without the features of the stages before it for the serving feature spec "
        "(computed for another spec, or not by this worker)",
    )
