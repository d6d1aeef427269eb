"""At-least-once (the default; docs/delivery.md): results acknowledged first, then the offsets committed.

A batch's offsets are committed only after every result of it and of every batch before it is
acknowledged (acks.py; what is committed when: committer.py; the batches between send and
commit: inflight.py). A batch's results are sent only once every earlier batch with results is
committed, so a crash repeats the results of at most one batch. If producing fails, the consumer
is rewound to the failed batch's first offsets, the batches behind it are dropped (they will be
polled again: ``Next.REWOUND``), the producer is discarded, and the retry comes after a backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.future import Future as KafkaFuture

from worker.delivery.acks import AckChain
from worker.delivery.batch import Batch, describe_offsets, first_offsets
from worker.delivery.committer import Committer, Offsets
from worker.delivery.guarantee import Guarantee, Next, Shared
from worker.delivery.inflight import InFlight

logger = logging.getLogger(__name__)


class AtLeastOnce(Guarantee):
    """The acknowledgement chain, the committer thread, the batches in flight, and the rewind after a failure."""

    committer: Committer
    chain: AckChain

    def __init__(
        self,
        shared: Shared,
        account: Callable[[Batch], None],  # the metrics of an acknowledged batch (any thread)
        commit_interval: float,  # seconds between commits of batches without results
        ack_timeout: float,  # the producer's own delivery timeout, plus a margin
    ) -> None:
        super().__init__(shared)
        self.committer = Committer(self._commit, self.metrics.committed, commit_interval)
        self.chain = AckChain(self.committer, account, self.revocations.since)
        self.in_flight = InFlight(self.committer, self.health, self.metrics, self.trouble, ack_timeout)

    def ready(self, batch: Batch, held: Batch | None) -> Next:
        """Account for the batches settled meanwhile; a failed one rewinds ``batch`` too."""
        return self._collect(batch, held)

    def emit(self, batch: Batch, records: list, held: Batch | None) -> Next:
        if records:
            # Results wait until every earlier batch with results is committed: a crash repeats one batch at most.
            then = self._wait_settled(self.in_flight.last_with_results, batch, held)
            if then is not Next.GO_ON:
                return then
            self.in_flight.last_with_results = batch
            batch.urgent = True
        self.in_flight.append(batch)
        self.chain.emit(batch, self._send(records))
        return Next.GO_ON

    def between_polls(self, idle: bool, held: Batch | None) -> Next:
        """Idle: wait for everything emitted and commit what is pending; else take what has settled."""
        if not idle:
            return self._collect(None, held)
        then = self._wait_settled(self.chain.tail)
        if self.committer.has_pending:
            self._commit_pending()
        return then

    def finish(self, final: bool = False) -> Next:
        if not final:
            return self._wait_settled(self.chain.tail)
        # Batches already emitted are finished; a failed one is logged, not retried.
        if self.chain.tail is not None:
            self.in_flight.wait(self.chain.tail)
        self.in_flight.finish()
        return Next.GO_ON

    def close(self) -> None:
        self.committer.stop()
        if self.source.connected and self.committer.has_pending:
            self._commit_pending(retry=False)

    async def on_revocation(self, revoked: set[TopicPartition]) -> Offsets:
        batch = self.chain.tail
        if batch is not None and not batch.done.is_done:
            # Results are on their way: let them be acknowledged while these partitions are still
            # ours, and commit their offsets (the listener does), or their new owner would score them
            # again. Counted as revoked only then: a batch acknowledged after that keeps no offsets
            # of theirs. (The loop's thread is inside poll() meanwhile, so it emits nothing for them.)
            self.committer.hold(revoked)
            try:
                self.committer.hurry(batch)
                await batch.done
                self.revocations.revoke(revoked)
                return self.committer.take(revoked)
            finally:
                self.committer.release()
        self.revocations.revoke(revoked)
        return self.committer.take(revoked)

    def on_lost(self, lost: set[TopicPartition]) -> None:
        self.revocations.revoke(lost)
        self.committer.take(lost)  # dropped: the group no longer accepts this member's commits

    # -- sending, waiting, failing -------------------------------------------------------------

    def _send(self, records: list) -> Iterator[KafkaFuture]:
        """Sends while the chain iterates it: a failure to make the producer fails the batch too."""
        if records:
            yield from self.source.compat.send_all(self.producer.get(), records)

    def _collect(self, behind: Batch | None, held: Batch | None) -> Next:
        """Account for the settled batches at the front of the pipeline; REWOUND if one failed."""
        for batch in self.in_flight.settled():
            if batch.error is not None:
                self._fail(batch, batch.error, behind, held)
                return Next.REWOUND
            self.trouble.recovered()
            if not batch.commit_ok:
                self._commit_pending()
        return Next.GO_ON

    def _wait_settled(self, batch: Batch | None, behind: Batch | None = None, held: Batch | None = None) -> Next:
        """Wait until ``batch`` and every batch before it is settled; REWOUND if one failed."""
        if batch is not None:
            self.in_flight.wait(batch)
        return self._collect(behind, held)

    def _fail(self, failed: Batch, error: BaseException, behind: Batch | None, held: Batch | None) -> None:
        """Rewind to the failed batch's first offsets, drop every batch behind it, new producer, back off."""
        batches = [failed, *self.in_flight.take_all()]
        self.chain.reset()
        batches += [b for b in (behind, held) if b is not None]
        revoked = self.revocations.since(failed.epoch)
        for tp, o in first_offsets(batches).items():
            if tp in revoked:
                continue  # no longer ours: its new owner starts from the last commit
            try:
                self.source.seek(tp, o)
            except (KafkaError, AssertionError):
                pass
        self.producer.discard(error)
        self.trouble.report("produce", f"batch not acknowledged, will retry it ({failed.describe()}): {error}")

    # -- committing ----------------------------------------------------------------------------

    def _commit(self, offsets: Offsets) -> None:
        self.source.commit(offsets)
        self.restarts.committed(offsets)

    def _commit_pending(self, retry: bool = True) -> None:
        """Commit the acknowledged offsets and wait for the broker's answer (retry and shutdown path)."""
        offsets, error = self.committer.commit_pending()
        if error is None:
            return
        if not isinstance(error, KafkaError):
            raise error
        if self.trouble.replaced(error):
            return
        # Kept: retried on the next pass or by the revocation listener; lost partitions drop them.
        if retry:
            self.trouble.report("commit", f"commit of {describe_offsets(offsets)} failed: {error}")
        else:
            logger.warning("final commit of %s failed: %s", describe_offsets(offsets), error)
