"""Commit offsets from inside the rebalance listener, before revoked partitions go to another member.

kafka-python runs an ``AsyncConsumerRebalanceListener`` on its IO loop, where ``KafkaConsumer.commit()``
cannot be called (it hands its work to that same loop and waits). ``commit_on_revocation`` (the fast
path) awaits the coroutine ``commit()`` itself runs, ``ConsumerCoordinator._commit_offsets_sync_async``
(a kafka-python internal, reached through ``KafkaConsumer._coordinator``): it finds the coordinator
and retries retriable errors until ``timeout_ms``, as ``commit()`` does.

``commit_on_revocation_plain`` is the fallback on kafka-python's public API: ``commit_async`` sends
the commit once and the listener awaits its future; a retriable error is not retried, and those
records are delivered again to the partition's next owner (at-least-once holds either way).
"""

from __future__ import annotations

import inspect

from kafka import KafkaConsumer

from worker.kafka_compat.counters import TAKEN


def check_revocation(consumer: KafkaConsumer) -> None:
    """Raise unless the coordinator's commit coroutine is there."""
    commit = getattr(consumer._coordinator, "_commit_offsets_sync_async", None)
    if not inspect.iscoroutinefunction(commit):
        raise TypeError("kafka-python's ConsumerCoordinator._commit_offsets_sync_async is gone")


async def commit_on_revocation(consumer: KafkaConsumer, offsets: dict, timeout_ms: int) -> None:
    TAKEN["revocation_commit"] += 1
    await consumer._coordinator._commit_offsets_sync_async(offsets, timeout_ms=timeout_ms)


async def commit_on_revocation_plain(consumer: KafkaConsumer, offsets: dict, timeout_ms: int) -> None:
    await consumer.commit_async(offsets)
