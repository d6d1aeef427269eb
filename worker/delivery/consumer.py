"""The worker's consumer as the delivery parts see it: commits, seeks, and the group's committed offsets.

The loop (worker/pipeline/loop.py) connects it and polls with it; a rejoin replaces it. The
guarantees and the rebalance listener hold this slot, not the consumer itself, so they always
reach the current one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition

from worker.delivery.committer import COMMIT_TIMEOUT_MS, Offsets
from worker.kafka_compat import KafkaCompat

logger = logging.getLogger(__name__)


class StateHook(Protocol):
    def before_commit(self, offsets: Offsets, producer: Any = None) -> None: ...

    def forget(self, partitions: Iterable[TopicPartition]) -> None: ...

    def assigned(self, partitions: Iterable[TopicPartition]) -> None: ...

    def after_commit(self, offsets: Offsets) -> None: ...


class ConsumerSlot:
    """The current consumer (None until connected) and its kafka-python fast paths (``compat``)."""

    def __init__(self) -> None:
        self._consumer: KafkaConsumer | None = None
        self.compat = KafkaCompat()  # the connected consumer's fast paths (the producer's batch_send too)
        # State kept beside the input offsets (the behavioural features' stores, worker/state/): made
        # durable before any offset is committed, forgotten when partitions go. None: no such state.
        self.state: StateHook | None = None

    def before_commit(self, offsets: Offsets, producer: Any = None) -> None:
        """Called before ``offsets`` are committed: by the consumer, or in ``producer``'s transaction."""
        if self.state is not None:
            self.state.before_commit(offsets, producer)

    def after_commit(self, offsets: Offsets) -> None:
        """Called once ``offsets`` are committed: by the consumer, or with a transaction (and the state's
        changelog records in it)."""
        if self.state is not None:
            self.state.after_commit(offsets)

    def assigned_state(self, partitions: Iterable[TopicPartition]) -> None:
        if self.state is not None:
            self.state.assigned(partitions)

    def forget_state(self, partitions: Iterable[TopicPartition]) -> None:
        if self.state is not None:
            self.state.forget(partitions)

    @property
    def consumer(self) -> KafkaConsumer:
        assert self._consumer is not None, "not connected"
        return self._consumer

    @property
    def connected(self) -> bool:
        return self._consumer is not None

    def attach(self, consumer: KafkaConsumer, compat: KafkaCompat) -> None:
        self._consumer, self.compat = consumer, compat

    def close(self, quiet: bool = False) -> None:
        """Close the consumer without committing (offsets are committed by the delivery parts), then forget it."""
        old, self._consumer = self._consumer, None
        if old is None:
            return
        try:
            old.close(autocommit=False)
        except Exception as exc:  # noqa: BLE001 - closing goes on
            if quiet:
                logger.debug("closing the fenced consumer: %s", exc)
            else:
                logger.warning("closing the consumer: %s", exc)

    def assignment(self) -> set[TopicPartition]:
        return self.consumer.assignment()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(tp, offset)

    def commit(self, offsets: Offsets) -> None:
        """Commit ``offsets`` and wait for the broker's answer; raises on failure."""
        self.before_commit(offsets)
        self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        self.after_commit(offsets)

    async def commit_on_revocation(self, offsets: Offsets) -> None:
        """Commit from inside the rebalance listener, on kafka-python's IO loop; raises on failure."""
        self.before_commit(offsets)
        await self.compat.commit_on_revocation(self.consumer, offsets, COMMIT_TIMEOUT_MS)
        self.after_commit(offsets)

    def group_metadata(self) -> object:
        return self.consumer.group_metadata()

    def seek_to_committed(self) -> None:
        """Seek every assigned partition to the group's committed offset (raises KafkaError)."""
        for tp in self.consumer.assignment():
            offset = self.consumer.committed(tp, timeout_ms=COMMIT_TIMEOUT_MS)
            if offset is None:
                self.consumer.seek_to_beginning(tp)  # nothing committed yet (auto_offset_reset)
            else:
                self.consumer.seek(tp, offset)
