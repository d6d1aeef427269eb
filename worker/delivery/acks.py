"""The ordered acknowledgement chain: a batch counts as acknowledged once it and every batch before it is.

Each emitted batch is linked behind the one emitted before it. Its ``outstanding`` count
(worker/delivery/batch.py) starts at two, one for "still sending" and one for "the batch before it is not
acknowledged yet", and each send adds one. The producer's IO thread releases one per
acknowledged send; the last release makes the batch acknowledged, which releases the next batch
in the chain. So offsets become pending strictly in emission order, whatever order the broker's
answers come in, and a failed batch fails every batch behind it (their offsets are never
committed: worker/delivery/at_least_once.py rewinds to the failed batch). Callbacks run on kafka-python's IO threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from kafka.errors import KafkaError
from kafka.future import Future as KafkaFuture

from worker.core.errors import BrokerError
from worker.delivery.batch import Batch
from worker.delivery.committer import Committer


class AckChain:
    """Links emitted batches in order and hands each one, once acknowledged, to the committer."""

    def __init__(
        self,
        committer: Committer,
        account: Callable[[Batch], None],  # the metrics of an acknowledged batch (any thread)
        revoked_since: Callable[[int], frozenset],  # partitions revoked since a batch's epoch
    ) -> None:
        self._committer = committer
        self._account = account
        self._revoked_since = revoked_since
        self._lock = threading.Lock()
        self.tail: Batch | None = None  # the last batch emitted

    def reset(self) -> None:
        """Forget the chain (after a failure: the batches behind it are dropped and polled again)."""
        self.tail = None

    def emit(self, batch: Batch, sends: Iterable[KafkaFuture]) -> None:
        """Link ``batch`` behind the tail and track its sends; ``sends`` sends while it is iterated."""
        with self._lock:
            prev, self.tail = self.tail, batch
            waits_for_prev = prev is not None and not prev.acknowledged
            if prev is not None and waits_for_prev:
                prev.next = batch
        try:
            for future in sends:
                with batch.lock:
                    batch.outstanding += 1
                future.add_callback(self._release, batch)
                future.add_errback(self._send_failed, batch)
        except KafkaError as exc:
            batch.fail(BrokerError(str(exc) or type(exc).__name__))
        self._release(batch)  # sending done
        if not waits_for_prev:
            self._release(batch, error=prev.error if prev is not None else None)

    def _send_failed(self, batch: Batch, exc: BaseException) -> None:
        batch.fail(exc)
        self._release(batch)

    def _release(self, batch: Batch, _result: object = None, error: BaseException | None = None) -> None:
        """One of ``batch``'s outstanding conditions is met (any thread)."""
        with batch.lock:
            if error is not None:
                batch.error = batch.error or error
            batch.outstanding -= 1
            last = batch.outstanding == 0
        if last:
            self._acknowledged(batch)

    def _acknowledged(self, batch: Batch) -> None:
        """Every result of ``batch`` and of the batches before it is on the broker (or one failed)."""
        if batch.error is None:
            batch.acked_ms = time.time() * 1000
            self._account(batch)  # before the commit: the metrics never trail the committed offsets
            # Not needed any more, and it may wait a while for its commit: let its memory go now.
            batch.records, batch.decoded, batch.scores, batch.hits, batch.times = [], None, None, None, []
            revoked = self._revoked_since(batch.epoch)
        with self._lock:
            # Its offsets become pending before it counts as acknowledged: a batch after it may
            # be acknowledged (on another thread) the moment it does, and must not be overtaken.
            if batch.error is None:
                self._committer.add(batch.next_offsets, revoked)
            batch.acknowledged = True
            following, batch.next = batch.next, None
        if batch.error is None:
            self._committer.request(batch)
        else:
            batch.settle()
        if following is not None:
            behind = BrokerError(f"a batch before it was not acknowledged: {batch.error}") if batch.error else None
            self._release(following, error=behind)
