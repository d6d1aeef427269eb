"""One poll's records on their way through the pipeline, and the same batch less revoked partitions."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from kafka import TopicPartition
from kafka.future import Future as KafkaFuture

from worker.core.batch_scoring import ShadowCounts
from worker.core.decisions import Decisions
from worker.core.decode import DecodedBatch
from worker.core.rules import ServingRules
from worker.core.scoring import Scorer


@dataclass(eq=False)
class Batch:
    """A poll's records, then their decoded rows and scores, until acknowledged and committed."""

    records: list
    first_offsets: dict[TopicPartition, int]
    next_offsets: dict[TopicPartition, int]
    epoch: int  # rebalances seen when it was polled (worker/delivery/rebalance.py)
    scorer: Scorer | None = None  # the model it is scored with, fixed when it is submitted
    challenger: Scorer | None = None  # the shadow challenger scoring it too (worker/pipeline/shadow.py), fixed likewise
    rules: ServingRules | None = None  # the rule set deciding it (worker/models/rules.py), fixed likewise
    shadow_rules: ServingRules | None = None  # the shadow rule set, fixed likewise
    decoded: DecodedBatch | None = None
    urgent: bool = False  # sent results: committed without waiting for the commit interval
    # Written by the producer's and the consumer's IO threads once emitted (worker/delivery/acks.py).
    # ``outstanding`` counts unacknowledged sends, plus one while sending, plus one until the
    # batch before it is acknowledged (offsets are committed in order).
    outstanding: int = 2
    error: BaseException | None = None
    acknowledged: bool = False
    next: Batch | None = None  # emitted after this one, waiting for its acknowledgement
    acked_ms: float = 0.0
    commit_ok: bool | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: threading.Event = field(default_factory=threading.Event)  # acknowledged and committed, or failed
    done: KafkaFuture = field(default_factory=KafkaFuture)  # the same, awaitable by the rebalance listener
    # For the metrics, once settled.
    scores: np.ndarray | None = None
    hits: np.ndarray | None = None
    times: list = field(default_factory=list)  # event times of the alerts (epoch ms)
    shadow: ShadowCounts | None = None
    decisions: Decisions | None = None  # the rule set's decisions, when a rule set or a segment applies
    shadow_decisions: Decisions | None = None
    forwarded: int = 0  # rows sent on to a repartition topic (worker/pipeline/repartition.py)
    repartitioned: int = 0  # records polled from a repartition topic

    @classmethod
    def of(cls, polled: dict, epoch: int) -> Batch:
        return cls(
            [r for batch in polled.values() for r in batch],
            {tp: recs[0].offset for tp, recs in polled.items()},
            {tp: recs[-1].offset + 1 for tp, recs in polled.items()},
            epoch,
        )

    def settle(self) -> None:
        self.settled.set()
        if not self.done.is_done:
            self.done.success(None)

    def fail(self, error: BaseException) -> None:
        """Remember the first error (any thread)."""
        with self.lock:
            self.error = self.error or error

    def describe(self) -> str:
        spans = (f"{tp.topic}[{tp.partition}]@{o}..{self.next_offsets[tp] - 1}" for tp, o in self.first_offsets.items())
        return ", ".join(spans)


def without(batch: Batch, partitions: frozenset[TopicPartition]) -> Batch:
    """``batch`` less the records of ``partitions`` (revoked since it was polled)."""
    keep = [TopicPartition(r.topic, r.partition) not in partitions for r in batch.records]
    position = np.cumsum(keep) - 1  # new position of each kept record
    d = batch.decoded
    assert d is not None, "only a decoded batch loses records"
    rows = [j for j, i in enumerate(d.index) if keep[i]]
    decoded = DecodedBatch(
        d.features[rows],
        [d.transaction_ids[j] for j in rows],
        [d.event_times[j] for j in rows],
        [int(position[d.index[j]]) for j in rows],
        [(int(position[i]), e) for i, e in d.errors if keep[i]],
    )
    return Batch(
        [r for r, k in zip(batch.records, keep, strict=True) if k],
        {tp: o for tp, o in batch.first_offsets.items() if tp not in partitions},
        {tp: o for tp, o in batch.next_offsets.items() if tp not in partitions},
        batch.epoch,
        scorer=batch.scorer,
        challenger=batch.challenger,
        rules=batch.rules,
        shadow_rules=batch.shadow_rules,
        decoded=decoded,
    )


def first_offsets(batches: list[Batch]) -> dict[TopicPartition, int]:
    """The lowest first offset of each partition over ``batches`` (where a rewind goes back to)."""
    first: dict[TopicPartition, int] = {}
    for b in batches:
        for tp, o in b.first_offsets.items():
            first[tp] = min(o, first.get(tp, o))
    return first


def describe_offsets(offsets: dict) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{o.offset}" for tp, o in offsets.items())
