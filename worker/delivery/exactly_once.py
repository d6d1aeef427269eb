"""Exactly-once (``processing_guarantee=exactly-once``; docs/delivery.md): results and offsets in one transaction.

Each batch's records go into the open Kafka transaction with the batch's offsets
(transactions.py); the transaction commits every ``commit_interval_ms`` on a thread of its own,
at once when the stream is idle, and before partitions are revoked. When a commit fails, nothing
of it became visible: the producer is discarded (its replacement's ``init_transactions`` ends what
it left) and the loop starts over from the group's committed offsets (``Next.REPOSITION``). When
this member was fenced, or its partitions were lost, it rejoins the group (``Next.REJOIN``) or
lets the partitions' next owner score them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kafka import TopicPartition
from kafka.errors import KafkaError

from worker.delivery.batch import Batch
from worker.delivery.committer import Offsets
from worker.delivery.guarantee import Guarantee, Next, Shared
from worker.delivery.transactions import PartitionsLost, Transaction

logger = logging.getLogger(__name__)


class ExactlyOnce(Guarantee):
    """The open transaction: begun, sent into, committed when due, and what follows a failed one."""

    def __init__(
        self,
        shared: Shared,
        account: Callable[[Batch], None],  # the metrics of a committed batch
        commit_interval: float,  # seconds a transaction collects batches
        ack_timeout: float,  # the longest wait for a commit: the producer's delivery timeout, plus a margin
    ) -> None:
        super().__init__(shared)
        self._account = account
        self._ack_timeout = ack_timeout
        self.transaction = Transaction(
            commit_interval, self._committed, before_commit=self.source.before_commit
        )

    def _committed(self, offsets: Offsets) -> None:
        """A transaction committed (on its thread): the restart positions and the state's changelog know."""
        self.restarts.committed(offsets)
        self.source.after_commit(offsets)

    def poll_timeout(self, default_ms: int) -> int:
        if self.transaction.is_open:
            return min(default_ms, int(self.transaction.remaining() * 1000))  # it commits on time
        return default_ms

    def emit(self, batch: Batch, records: list, held: Batch | None) -> Next:
        """Send ``batch``'s results in the open transaction (begun if none is); commit it when due."""
        txn = self.transaction
        if txn.ending:
            then = self._finish()
            if then is not Next.GO_ON:
                return then  # the transaction before it failed: this batch is polled again
        try:
            producer = self.producer.get()  # after a failure (or fencing): a new one
            txn.begin(producer)
            for future in self.source.compat.send_all(producer, records):
                txn.sent(future)
        except KafkaError as exc:
            if txn.is_open:
                self.metrics.transactions.labels(outcome="aborted").inc()
            return self._restart([*txn.drop(), batch], exc)
        txn.add(batch, self.source.group_metadata())
        if txn.due():
            txn.start_commit(producer)
        return Next.GO_ON

    def between_polls(self, idle: bool, held: Batch | None) -> Next:
        """Take an ended commit's outcome; start the open transaction's commit when due.

        An idle stream commits at once: nothing would join the transaction, and its alerts wait.
        """
        txn, then = self.transaction, Next.GO_ON
        if txn.ended():
            then = self._finish()
        if txn.is_open and not txn.ending and (idle or txn.due()) and self.producer.current is not None:
            txn.start_commit(self.producer.current)
        if idle and txn.ending:
            then = self._finish()
        return then

    def finish(self, final: bool = False) -> Next:
        if self.transaction.is_open and self.producer.current is not None:
            self.transaction.start_commit(self.producer.current)
        return self._finish(rewind=not final)

    def reposition(self) -> Next:
        """Seek every assigned partition to its committed offset, with a new producer made first.

        Not to the batches' own first offsets: a commit that timed out may still have gone
        through. The new producer's ``init_transactions`` first ends what its predecessor left
        (aborted, or committed if that commit got through), and the committed offsets are then
        read stable (read_committed), so they say exactly what became visible.
        """
        try:
            self.producer.get()
            self.source.seek_to_committed()
        except KafkaError as exc:
            if not self.trouble.replaced(exc):
                self.trouble.report("produce", f"cannot restart transactions yet: {exc}")
            return Next.REPOSITION
        return Next.GO_ON

    async def on_revocation(self, revoked: set[TopicPartition]) -> Offsets:
        # The open transaction is committed while the partitions are ours (a blocking wait on this
        # IO thread; the producer's own threads do the work). Its outcome is left to the loop.
        if self.producer.current is not None:
            self.transaction.commit_now(self.producer.current)
        else:
            self.transaction.give_up()
        return await super().on_revocation(revoked)

    def on_lost(self, lost: set[TopicPartition]) -> None:
        self.transaction.give_up()  # the group no longer accepts this member's offsets
        super().on_lost(lost)

    def _finish(self, rewind: bool = True) -> Next:
        """Wait for the commit in progress and take its outcome: GO_ON, or what follows its failure."""
        ended = self.transaction.wait(self._ack_timeout, self.health.beat)
        if ended is None:
            return Next.GO_ON
        if ended.error is None:
            for b in ended.batches:
                b.acked_ms = ended.finished_ms
                self._account(b)
                b.records, b.decoded, b.scores, b.hits, b.times = [], None, None, None, []
                b.settle()
            self.metrics.transactions.labels(outcome="committed").inc()
            self.metrics.transaction_seconds.observe(ended.seconds)
            self.metrics.committed(True)
            self.trouble.recovered()
            return Next.GO_ON
        self.metrics.transactions.labels(outcome="aborted").inc()
        self.metrics.committed(False)
        if self.trouble.replaced(ended.error):
            self.producer.discard(ended.error)
            return Next.STOP
        if isinstance(ended.error, PartitionsLost) or ended.fenced:
            # Not ours any more: nothing of it may become visible. A new producer (same
            # transactional id) aborts it for good; the partitions' next owner scores the records.
            # Whatever was polled meanwhile is polled again, from the committed offsets.
            logger.warning("transaction of %s aborted: %s; %s", ended.describe(), ended.error,
                           "rejoining the group" if ended.fenced else "their next owner scores them")  # fmt: skip
            self.producer.discard(ended.error)
            return Next.REJOIN if ended.fenced else Next.REPOSITION
        if not rewind:
            logger.warning("final transaction of %s not committed: %s", ended.describe(), ended.error)
            return Next.STOP
        return self._restart(ended.batches, ended.error)

    def _restart(self, batches: list[Batch], error: BaseException) -> Next:
        """After a failed transaction: a new producer, then on from the group's committed offsets."""
        self.producer.discard(error)
        self.trouble.report("produce", f"transaction not committed, will retry from the committed offsets "
                                       f"({batches[0].describe()}): {error}")  # fmt: skip
        return Next.REPOSITION
