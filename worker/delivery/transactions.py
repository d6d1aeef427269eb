"""Exactly-once: the open Kafka transaction, the batches emitted in it, and its commit.

With ``processing_guarantee=exactly-once`` the worker's producer is transactional (KIP-98). The
alerts, scores and DLQ records of every batch emitted during one commit interval go into one
transaction, and so do the input offsets that follow them (``send_offsets_to_transaction`` with
the consumer's group metadata, so the group coordinator refuses the offsets of a member that is
no longer in the group: KIP-447 fencing). A ``read_committed`` reader sees all of a transaction's
records once it commits, or none of them; the group's offsets move with it.

A transaction's life (``ExactlyOnce``, worker/delivery/exactly_once.py, drives it on the loop's thread):

- ``begin`` before the first batch's records are sent, ``add`` each batch once they are;
- ``start_commit`` once the transaction is ``due`` (``commit_interval_ms`` after the last commit
  started, or at once if that is longer ago) or the stream is idle: the commit runs on a thread
  of its own, so the loop polls and decodes the next batch meanwhile; a batch is sent only after
  the commit before it has ended (``wait``);
- ``wait`` returns the ended commit (``Ended``): its batches are accounted for, or, if it
  failed, the producer is dropped (its replacement's ``init_transactions`` ends what is left
  under the same transactional id) and the consumer goes back to the group's committed offsets.

The rebalance listener (worker/delivery/rebalance.py, on kafka-python's IO thread while the loop's thread
is inside ``poll``) ends the transaction before partitions go: it commits it when they are
revoked (``commit_now``) and gives it up when they are lost (``give_up``: the group no longer
accepts this member's offsets), and leaves the outcome to ``ExactlyOnce``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    InvalidProducerEpochError,
    KafkaTimeoutError,
    ProducerFencedError,
    UnknownError,
    UnknownMemberIdError,
)
from kafka.future import Future as KafkaFuture

from worker.delivery.batch import Batch

# Another producer took this transactional id over, or the group moved this member's partitions
# on (a member that was paused or cut off): the worker rejoins the group with new clients.
FENCED = (
    ProducerFencedError, InvalidProducerEpochError, CommitFailedError, IllegalGenerationError,
    UnknownMemberIdError, FencedInstanceIdError,
)  # fmt: skip


class PartitionsLost(Exception):
    """The group evicted this member while a transaction was open: given up, never committed."""


@dataclass(eq=False)
class Ended:
    """A transaction whose commit has ended: its batches, and the error if it failed."""

    batches: list[Batch]
    started: float
    error: BaseException | None = None
    seconds: float = 0.0
    finished_ms: float = 0.0  # epoch ms: when its records became visible to read_committed readers
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def fenced(self) -> bool:
        return isinstance(self.error, FENCED)

    def describe(self) -> str:
        more = f" and {len(self.batches) - 1} batches after it" if len(self.batches) > 1 else ""
        return self.batches[0].describe() + more


class Transaction:
    """The open transaction (if any) and the commit in progress (if any); used by one thread at a time."""

    def __init__(
        self,
        interval: float,
        on_committed: Callable[[dict[TopicPartition, OffsetAndMetadata]], None],
        clock: Callable[[], float] = time.monotonic,
        before_commit: Callable[[dict[TopicPartition, OffsetAndMetadata], KafkaProducer], None] | None = None,
    ) -> None:
        self.interval = interval  # seconds a transaction collects batches (commit_interval_ms)
        self._on_committed = on_committed  # the offsets of each committed transaction (any thread)
        self._before_commit = before_commit  # state made durable before the offsets go (the consumer slot's)
        self._clock = clock
        self.batches: list[Batch] = []
        self._offsets: dict[TopicPartition, int] = {}
        self._group_metadata: object = None
        self._opened: float | None = None
        # Commits start every ``interval``, counted from the last one's start, as Kafka Streams'
        # commit.interval.ms is a frequency: a record waits at most about ``interval`` for its
        # commit to start, not ``interval`` plus the last commit's time.
        self._last_start = float("-inf")
        self._failed_send: list[BaseException] = []  # the open transaction's failed sends (IO threads append)
        self._ending: Ended | None = None  # committing on its thread, or ended and not yet waited for

    @property
    def is_open(self) -> bool:
        return self._opened is not None

    @property
    def ending(self) -> bool:
        """A commit is in progress or has ended without the loop having taken its outcome."""
        return self._ending is not None

    def due(self) -> bool:
        return self._opened is not None and self._clock() >= self._last_start + self.interval

    def remaining(self) -> float:
        """Seconds until the open transaction is due (infinite if none is open)."""
        if self._opened is None:
            return float("inf")
        return max(0.0, self._last_start + self.interval - self._clock())

    def begin(self, producer: KafkaProducer) -> None:
        if self._opened is None:
            assert self._ending is None, "a transaction begun before the last one's outcome was taken"
            producer.begin_transaction()
            self._opened = self._clock()
            self._failed_send = []

    def sent(self, future: KafkaFuture) -> None:
        """Track one send of the open transaction: a failed one fails its commit."""
        future.add_errback(self._failed_send.append)

    def add(self, batch: Batch, group_metadata: object) -> None:
        """``batch``'s records are sent in the open transaction; its offsets go with it."""
        self.batches.append(batch)
        for tp, o in batch.next_offsets.items():
            self._offsets[tp] = max(o, self._offsets.get(tp, o))
        # Taken as each batch is added, on the loop's thread: the membership the records were
        # polled under (a rebalance happens only inside poll, between two batches).
        self._group_metadata = group_metadata

    def drop(self) -> list[Batch]:
        """Forget the open transaction (a send failed: the producer is dropped and the loop starts over)."""
        batches = self.batches
        self.batches, self._offsets, self._group_metadata, self._opened = [], {}, None, None
        return batches

    def start_commit(self, producer: KafkaProducer) -> None:
        """Commit the open transaction on a thread of its own; ``wait`` gives the outcome."""
        ended = self._close()
        self._last_start = self._clock()
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self._offsets.items()}
        metadata, self._offsets, self._group_metadata = self._group_metadata, {}, None
        failed_send = self._failed_send

        def commit() -> None:
            t0 = time.perf_counter()
            try:
                # A failed send leaves the transaction only abortable: kafka-python would then
                # wait for ever in send_offsets_to_transaction. Every send is settled first.
                producer.flush()
                if failed_send:
                    # kafka-python may fail a split batch's futures with a bare UnknownError first.
                    raise next((e for e in failed_send if not isinstance(e, UnknownError)), failed_send[0])
                if self._before_commit is not None:
                    self._before_commit(offsets, producer)  # state (and its changelog) in this transaction
                producer.send_offsets_to_transaction(offsets, metadata)
                producer.commit_transaction()
                self._on_committed(offsets)
            except BaseException as exc:  # noqa: BLE001 - handled by worker/delivery/exactly_once.py
                ended.error = exc
            ended.seconds = time.perf_counter() - t0
            ended.finished_ms = time.time() * 1000
            ended.finished.set()

        threading.Thread(target=commit, name="fraud-transaction", daemon=True).start()

    def commit_now(self, producer: KafkaProducer) -> None:
        """Commit the open transaction and wait for it (the rebalance listener, before partitions go)."""
        if self._opened is not None:
            self.start_commit(producer)
        if self._ending is not None:
            self._ending.finished.wait()

    def give_up(self) -> None:
        """The partitions were lost: the open transaction must never commit (its producer is dropped)."""
        if self._ending is not None:
            self._ending.finished.wait()
        if self._opened is not None:
            ended = self._close()
            self._offsets, self._group_metadata = {}, None
            ended.error = PartitionsLost("group membership lost with a transaction open")
            ended.finished.set()

    def wait(self, timeout: float, beat: Callable[[], None], step: float = 5.0) -> Ended | None:
        """The commit that ended (waiting for one in progress at most ``timeout``), or None if none.

        ``beat`` is called every ``step`` seconds while waiting (the worker is alive meanwhile).
        A commit that takes longer than ``timeout`` counts as failed; its thread is left to end
        on its own (its producer is dropped).
        """
        ended = self._ending
        if ended is None:
            return None
        waited = 0.0
        while not ended.finished.wait(min(step, max(0.0, timeout - waited))):
            waited += step
            beat()
            if waited >= timeout:
                ended.error = ended.error or KafkaTimeoutError(f"transaction not committed within {timeout:.0f}s")
                break
        self._ending = None
        return ended

    def ended(self) -> bool:
        """A commit has ended and its outcome waits for the loop (without blocking)."""
        return self._ending is not None and self._ending.finished.is_set()

    def _close(self) -> Ended:
        assert self._opened is not None, "no transaction is open"
        ended = Ended(self.batches, self._opened)
        self.batches, self._opened, self._ending = [], None, ended
        return ended
