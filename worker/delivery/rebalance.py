"""Rebalances: which partitions were revoked since a batch was polled, and the listener kafka-python calls.

``Revocations`` counts rebalances (epochs). A batch remembers the epoch it was polled in, and
``since(epoch)`` tells which of its partitions are no longer ours: their results are not sent
and their offsets not committed (their new owner starts from the last commit).

``RebalanceListener`` runs on kafka-python's IO loop, so it awaits instead of blocking. On
revocation it lets the results already on their way be acknowledged and committed while the
partitions are still ours (or their new owner would score them again), then commits the pending
offsets of the revoked partitions. On a forced eviction (partitions lost) those offsets are
dropped: the group no longer accepts this member's commits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kafka import AsyncConsumerRebalanceListener, TopicPartition

from worker.delivery.batch import Batch, describe_offsets
from worker.delivery.committer import Committer, Offsets
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


class RebalanceListener(AsyncConsumerRebalanceListener):
    """Commits before partitions go; keeps the health state and the partition metrics current."""

    def __init__(
        self,
        revocations: Revocations,
        committer: Committer,
        in_flight: Callable[[], Batch | None],  # the last batch emitted
        commit: Callable[[Offsets], Awaitable[None]],  # a commit that may run on kafka-python's IO loop
        assignment: Callable[[], set],  # the consumer's assignment now
        health: HealthState,
        metrics: WorkerMetrics,
        restarts: Restarts,
        seek: Callable[[TopicPartition, int], None],  # the consumer's seek
        # Exactly-once: ends the open transaction before partitions go ("revoked": committed,
        # "lost": given up); None at-least-once.
        end_transaction: Callable[[str], None] | None = None,
    ) -> None:
        self.revocations = revocations
        self.committer = committer
        self.in_flight = in_flight
        self.commit = commit
        self.assignment = assignment
        self.health = health
        self.metrics = metrics
        self.restarts = restarts
        self.seek = seek
        self.end_transaction = end_transaction

    async def on_partitions_revoked(self, revoked) -> None:
        if self.end_transaction is not None:
            # Exactly-once: the open transaction is committed while the partitions are ours
            # (a blocking wait on this IO thread; the producer's own threads do the work).
            self.end_transaction("revoked")
        batch = self.in_flight()
        if batch is not None and not batch.done.is_done:
            # Results are on their way: let them be acknowledged while these partitions are still
            # ours, and commit their offsets below, or their new owner would score them again.
            # Counted as revoked only then: a batch acknowledged after that keeps no offsets of
            # theirs. (The loop's thread is inside poll() meanwhile, so it emits nothing for them.)
            self.committer.hold(revoked)
            try:
                self.committer.hurry(batch)
                await batch.done
                self.revocations.revoke(revoked)
                offsets = self.committer.take(revoked)
            finally:
                self.committer.release()
        else:
            self.revocations.revoke(revoked)
            offsets = self.committer.take(revoked)
        if offsets:
            try:
                await self.commit(offsets)
                self.metrics.committed(True)
                logger.info("committed %s on revocation", describe_offsets(offsets))
            except Exception as exc:  # noqa: BLE001 - their records will be delivered again: at-least-once
                self.metrics.committed(False)
                logger.warning("commit on revocation of %s failed: %s", describe_offsets(offsets), exc)
        for tp, o in self.restarts.take(revoked).items():
            try:
                self.seek(tp, o)  # in case it comes straight back (Restarts)
            except (ValueError, AssertionError) as exc:
                logger.debug("not sought back %s to %s: %s", tp, o, exc)
        self._forget(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        self.health.partitions = len(self.assignment())
        self.metrics.rebalances.inc()
        self.metrics.partitions_assigned.set(self.health.partitions)
        logger.info("assigned %s", sorted(tp.partition for tp in assigned) or "no partitions")

    async def on_partitions_lost(self, lost) -> None:
        logger.warning("group membership lost; dropping uncommitted offsets of %s", sorted(tp.partition for tp in lost))
        if self.end_transaction is not None:
            self.end_transaction("lost")
        self.revocations.revoke(lost)
        self.committer.take(lost)
        self.restarts.forget(lost)  # kafka-python drops their positions: they start from the last commit
        self._forget(lost)

    def _forget(self, partitions) -> None:
        self.metrics.forget_partitions(tp.partition for tp in partitions)
        self.health.partitions = max(0, self.health.partitions - len(partitions))
        self.metrics.partitions_assigned.set(self.health.partitions)
