"""Rebalances: which partitions were revoked since a batch was polled, and the listener kafka-python calls.

``Revocations`` counts rebalances (epochs). A batch remembers the epoch it was polled in, and
``since(epoch)`` tells which of its partitions are no longer ours: their results are not sent
and their offsets not committed (their new owner starts from the last commit).

``RebalanceListener`` runs on kafka-python's IO loop, so it awaits instead of blocking. On
revocation it asks the delivery guarantee to settle what is in flight for the partitions while
they are still ours (or their new owner would score them again: at-least-once lets the results on
their way be acknowledged, exactly-once commits the open transaction), then commits the pending
offsets the guarantee returns. On a forced eviction (partitions lost) the guarantee drops what
it holds for them: the group no longer accepts this member's commits.
"""

from __future__ import annotations

import logging
from typing import Protocol

from kafka import AsyncConsumerRebalanceListener, TopicPartition

from worker.delivery.batch import describe_offsets
from worker.delivery.committer import Offsets
from worker.delivery.consumer import ConsumerSlot
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics

logger = logging.getLogger(__name__)


class Revocations:
    """The partitions revoked at each rebalance, by epoch (the last 64 rebalances)."""

    def __init__(self) -> None:
        self.epoch = 0
        self._by_epoch: list[tuple[int, frozenset[TopicPartition]]] = []

    def revoke(self, partitions) -> None:
        self.epoch += 1
        self._by_epoch.append((self.epoch, frozenset(partitions)))
        del self._by_epoch[:-64]

    def since(self, epoch: int) -> frozenset[TopicPartition]:
        if epoch >= self.epoch:
            return frozenset()
        return frozenset().union(*(p for e, p in list(self._by_epoch) if e > epoch))


class Restarts:
    """Where each partition picks up again if a rebalance revokes it and assigns it straight back.

    kafka-python keeps a partition's fetch position when one rebalance revokes it and assigns it
    back to the same member (``SubscriptionState.assign_from_subscribed`` keeps the partition's
    state), but the worker drops what it polled from a revoked partition and has not committed
    (``without``; a batch in the decoder, a failed batch). Reading on from the kept position would
    skip those records. So the listener seeks each revoked partition back to where this worker's
    last commit left it, or to where it began reading it: what its next owner, whoever that is,
    starts from. Written by the loop, the committer thread and the listener (one dict operation
    at a time).
    """

    def __init__(self) -> None:
        self._at: dict[TopicPartition, int] = {}

    def polled(self, first_offsets: dict[TopicPartition, int]) -> None:
        """A batch was polled: a partition not seen since its assignment starts at its first offset."""
        for tp, o in first_offsets.items():
            self._at.setdefault(tp, o)

    def committed(self, offsets: Offsets) -> None:
        for tp, meta in offsets.items():
            self._at[tp] = max(meta.offset, self._at.get(tp, meta.offset))

    def take(self, partitions) -> dict[TopicPartition, int]:
        return {tp: self._at.pop(tp) for tp in partitions if tp in self._at}

    def forget(self, partitions) -> None:
        for tp in partitions:
            self._at.pop(tp, None)


class Delivery(Protocol):
    """What the listener asks of the delivery guarantee (worker/delivery/guarantee.py)."""

    async def on_revocation(self, revoked: set[TopicPartition]) -> Offsets: ...

    def on_lost(self, lost: set[TopicPartition]) -> None: ...


class RebalanceListener(AsyncConsumerRebalanceListener):
    """Commits before partitions go; keeps the health state and the partition metrics current."""

    def __init__(
        self,
        source: ConsumerSlot,  # the consumer: its assignment, seeks and the commit on revocation
        delivery: Delivery,  # settles what is in flight for the partitions going, and counts them revoked
        restarts: Restarts,
        health: HealthState,
        metrics: WorkerMetrics,
    ) -> None:
        self.source = source
        self.delivery = delivery
        self.restarts = restarts
        self.health = health
        self.metrics = metrics

    async def on_partitions_revoked(self, revoked) -> None:
        # At-least-once: the results on their way are acknowledged first, and their offsets returned;
        # exactly-once: the open transaction is committed, and nothing is returned.
        offsets = await self.delivery.on_revocation(revoked)
        if offsets:
            try:
                await self.source.commit_on_revocation(offsets)
                self.restarts.committed(offsets)
                self.metrics.committed(True)
                logger.info("committed %s on revocation", describe_offsets(offsets))
            except Exception as exc:  # noqa: BLE001 - their records will be delivered again: at-least-once
                self.metrics.committed(False)
                logger.warning("commit on revocation of %s failed: %s", describe_offsets(offsets), exc)
        for tp, o in self.restarts.take(revoked).items():
            try:
                self.source.seek(tp, o)  # in case it comes straight back (Restarts)
            except (ValueError, AssertionError) as exc:
                logger.debug("not sought back %s to %s: %s", tp, o, exc)
        self._forget(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        self.source.assigned_state(assigned)
        self.health.partitions = len(self.source.assignment())
        self.metrics.rebalances.inc()
        self.metrics.partitions_assigned.set(self.health.partitions)
        logger.info("assigned %s", sorted(tp.partition for tp in assigned) or "no partitions")

    async def on_partitions_lost(self, lost) -> None:
        logger.warning("group membership lost; dropping uncommitted offsets of %s", sorted(tp.partition for tp in lost))
        self.delivery.on_lost(lost)
        self.restarts.forget(lost)  # kafka-python drops their positions: they start from the last commit
        self._forget(lost)

    def _forget(self, partitions) -> None:
        self.source.forget_state(partitions)
        self.metrics.forget_partitions(tp.partition for tp in partitions)
        self.health.partitions = max(0, self.health.partitions - len(partitions))
        self.metrics.partitions_assigned.set(self.health.partitions)
