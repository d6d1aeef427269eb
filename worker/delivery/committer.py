"""What may be committed, and when: the acknowledged offsets and the committer thread.

At-least-once: a partition's offset becomes *pending* only once every result of its batch, and
of every batch before it, is acknowledged by the broker (worker/delivery/acks.py decides that moment and
calls ``add``). Pending offsets are committed:

- by the committer thread, as acknowledgements arrive: one commit at a time, each covering
  everything pending so far, so no round trip stalls the loop or kafka-python's IO threads;
  batches without results are committed together at most every ``interval`` (batches come
  every few ms under load; a commit per batch was most of the broker's writes); a batch that
  sent results, or that someone waits for (``hurry``), is committed at once;
- on the loop's thread (worker/delivery/at_least_once.py), synchronously, to retry a failed commit
  and on shutdown (``commit_pending``);
- by the rebalance listener, for the partitions being revoked (``take``, worker/delivery/rebalance.py):
  while it waits for their results in flight to be acknowledged it ``hold``s them, so their
  offsets are committed by it alone, once, before the partitions go.

Every commit goes through ``commit_pending`` under one lock and takes the offsets once it holds
it: a commit never overtakes one further on, which answered in the other order would take the
group's offsets back. A partition acknowledged further while a commit is in flight stays
pending. Partitions lost to a forced eviction are dropped (``take``), never committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from kafka import OffsetAndMetadata, TopicPartition

from worker.delivery.batch import Batch

COMMIT_TIMEOUT_MS = 10_000

Offsets = dict[TopicPartition, OffsetAndMetadata]


class Committer:
    """Holds the acknowledged, uncommitted offsets and commits them; ``commit`` is the consumer's."""

    def __init__(
        self,
        commit: Callable[[Offsets], None],
        on_result: Callable[[bool], None],
        interval: float,  # seconds between commits of batches without results (commit_interval_ms)
    ) -> None:
        self._commit = commit  # blocks until the broker answers; raises on failure
        self._on_result = on_result
        self.interval = interval
        self._pending: dict[TopicPartition, int] = {}  # acknowledged, not yet committed: next offset
        self._pending_lock = threading.Lock()
        self._held: frozenset[TopicPartition] = frozenset()  # left to the rebalance listener
        self._commit_lock = threading.Lock()  # one commit at a time
        self._ready = threading.Condition()
        self._awaiting: list[Batch] = []  # acknowledged batches whose commit the thread owes
        self._now = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- pending offsets -----------------------------------------------------------------------

    def add(self, next_offsets: dict[TopicPartition, int], revoked: frozenset[TopicPartition]) -> None:
        """A batch is acknowledged: its offsets may be committed, but for partitions no longer ours."""
        with self._pending_lock:
            for tp, o in next_offsets.items():
                if tp not in revoked:
                    self._pending[tp] = max(o, self._pending.get(tp, o))

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def pending(self) -> Offsets:
        with self._pending_lock:
            return {tp: OffsetAndMetadata(o, "", -1) for tp, o in self._pending.items() if tp not in self._held}

    def hold(self, partitions: Iterable[TopicPartition]) -> None:
        """Leave ``partitions`` out of every commit but the listener's own (``take``) until ``release``."""
        with self._pending_lock:
            self._held = frozenset(partitions)

    def release(self) -> None:
        with self._pending_lock:
            self._held = frozenset()

    def take(self, partitions: Iterable[TopicPartition]) -> Offsets:
        """Remove and return the pending offsets of ``partitions`` (revoked or lost)."""
        with self._pending_lock:
            return {tp: OffsetAndMetadata(self._pending.pop(tp), "", -1) for tp in partitions if tp in self._pending}

    def _forget(self, offsets: Offsets) -> None:
        """Drop what was committed; a partition acknowledged further meanwhile stays pending."""
        with self._pending_lock:
            for tp, o in offsets.items():
                if self._pending.get(tp) == o.offset:
                    del self._pending[tp]

    def commit_pending(self) -> tuple[Offsets, BaseException | None]:
        """Commit every pending offset and wait for the answer: (offsets, error), ({}, None) if none."""
        with self._commit_lock:
            offsets = self.pending()
            if not offsets:
                return offsets, None
            try:
                self._commit(offsets)
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                self._on_result(False)
                return offsets, exc
            self._on_result(True)
            self._forget(offsets)
            return offsets, None

    # -- the committer thread ------------------------------------------------------------------

    def request(self, batch: Batch) -> None:
        """``batch`` is acknowledged: commit it (at once if urgent), then settle it."""
        with self._ready:
            self._awaiting.append(batch)
            self._now = self._now or batch.urgent
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fraud-committer", daemon=True)
                self._thread.start()
            self._ready.notify()

    def hurry(self, batch: Batch) -> None:
        """Someone waits for ``batch``: it is committed as soon as it is acknowledged."""
        with self._ready:
            batch.urgent = True
            if batch.acknowledged:  # its commit may be waiting for the interval already
                self._now = True
                self._ready.notify()

    def stop(self) -> None:
        """Commit what the thread owes, then end it."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout=COMMIT_TIMEOUT_MS / 1000 + 5)

    def _run(self) -> None:
        """Commits everything acknowledged so far, one commit at a time, in order.

        A thread of its own, so neither the loop nor kafka-python's IO threads wait for the broker's
        answer; ``KafkaConsumer.commit`` may be called from any thread but the consumer's IO thread.
        """
        last = float("-inf")  # the first commit goes out at once
        while True:
            with self._ready:
                while True:
                    if not self._awaiting:
                        if self._stopping:
                            return
                        self._ready.wait()
                        continue
                    due = last + self.interval - time.monotonic()
                    if self._now or self._stopping or due <= 0:
                        break
                    self._ready.wait(due)
                batches, self._awaiting = self._awaiting, []
                self._now = False
            last = time.monotonic()
            # Nothing pending: already committed with an earlier batch, or every partition revoked.
            # A failed commit is retried on the loop's thread, synchronously, with backoff (at_least_once.py).
            _, error = self.commit_pending()
            for b in batches:
                b.commit_ok = error is None
                b.settle()
