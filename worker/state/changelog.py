"""The feature state's changelog topic (docs/features.md, "State"): every flush of a partition's state
also goes to partition N of a compacted topic, as Kafka Streams and Quix Streams log their stores, so an
instance given that input partition (a rebalance, a replaced pod without its disk) restores it exactly.

Records, keyed ``<spec id>/<kind>[/<entity>]``: ``s/<entity>`` an entity's state (MessagePack, as in the
SQLite file); ``p`` the offset after the last event applied; ``r`` the features recorded for each event
since the last commit (``{offset: float32 bytes}``). A flush writes only the entities changed since the
last one (coalesced: one record per entity however many of its events came between), then ``p`` and ``r``.
At-least-once: a producer of its own, and the input offsets are committed only once the broker has them;
exactly-once: the records go in the worker's transaction, before its offsets (read back ``read_committed``).

The topic is ``<group id>-feature-changelog`` (or ``feature_changelog_topic``) with as many partitions as
the input topic and ``cleanup.policy=compact``; the worker creates it when it is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError

from worker.kafka_compat import KafkaCompat

logger = logging.getLogger(__name__)

READ_TIMEOUT_S = 120.0
# The longest a dead predecessor's transaction stays open: the worker's transaction_timeout_ms (10 s), and a margin.
SETTLE_S = 15.0


class Changelog:
    def __init__(self, topic: str, consumer_config: dict[str, Any], producer_config: dict[str, Any],
                 admin_config: dict[str, Any], exactly_once: bool) -> None:  # fmt: skip
        self.topic = topic
        own = ("group_id", "group_instance_id")
        self._consumer_config = {k: v for k, v in consumer_config.items() if k not in own}
        isolation = "read_committed" if exactly_once else "read_uncommitted"
        self._consumer_config.update(group_id=None, enable_auto_commit=False, isolation_level=isolation)
        # Its own producer (at-least-once): batches of entity states, waited for before each commit.
        self._producer_config = {k: v for k, v in producer_config.items() if k not in ("transactional_id",
                                                                                       "transaction_timeout_ms")}
        self._producer_config.update(linger_ms=5, batch_size=256 * 1024)
        self._admin_config = admin_config
        self._producer: KafkaProducer | None = None
        self._ensured = False
        self.exactly_once = exactly_once
        self.records_written = 0
        self.records_read = 0
        # The connected consumer's kafka-python fast paths (worker/kafka_compat/), set by the worker: writes go
        # through its batch_send when it is on.
        self.compat: Callable[[], KafkaCompat] | None = None

    def ensure(self, partitions: int) -> None:
        """Create the topic (compacted, ``partitions`` partitions) unless it exists."""
        if self._ensured:
            return
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(**self._admin_config)
        try:
            if self.topic not in set(admin.list_topics()):
                try:
                    admin.create_topics([NewTopic(self.topic, num_partitions=partitions, replication_factor=-1,
                                                  topic_configs={"cleanup.policy": "compact"})])  # fmt: skip
                    logger.info("created the feature changelog topic %s (%d partitions)", self.topic, partitions)
                except TopicAlreadyExistsError:
                    pass
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                metas = admin.describe_topics([self.topic])
                parts = metas[0].get("partitions") if metas else None
                if parts and all(p.get("leader_id", -1) >= 0 for p in parts):
                    break
                time.sleep(0.2)
        finally:
            admin.close()
        self._ensured = True

    def write(self, partition: int, records: list[tuple[bytes, bytes]], producer: KafkaProducer | None = None) -> None:
        """Send ``records`` to ``partition``: in ``producer``'s open transaction (exactly-once), else with the
        changelog's own producer, waiting until the broker has every one (raises if not)."""
        if not records:
            return
        own = producer is None
        if producer is None:
            if self._producer is None:
                self._producer = KafkaProducer(**self._producer_config)
            producer = self._producer
        compat = self.compat() if self.compat is not None else None
        if compat is not None:  # the batch_send fast path: appended to the partition's batch at once
            futures = compat.send_to(producer, self.topic, partition, records)
        else:
            futures = [producer.send(self.topic, key=k, value=v, partition=partition) for k, v in records]
        self.records_written += len(records)
        if own:
            producer.flush()
            for f in futures:
                f.get(timeout=0)  # raises the send's error, if it failed

    def _settled(self, tp: TopicPartition, consumer: KafkaConsumer) -> int:
        """Exactly-once: the partition's end once no transaction is open on it (its last stable offset has
        reached its high watermark), waiting at most ``SETTLE_S``; else (or at-least-once) its end now.

        A predecessor that died mid-commit may have committed its input offsets (which the consumer reads
        stable) while the markers of its changelog records are still being written: reading before they
        land would restore a state older than those offsets."""
        end = consumer.end_offsets([tp])[tp]
        if not self.exactly_once:
            return end
        plain = KafkaConsumer(**{**self._consumer_config, "isolation_level": "read_uncommitted"})
        try:
            deadline = time.monotonic() + SETTLE_S
            while True:
                high = plain.end_offsets([tp])[tp]
                end = consumer.end_offsets([tp])[tp]
                if end >= high:
                    return end
                if time.monotonic() > deadline:
                    logger.warning("changelog %s-%d: a transaction is still open after %.0f s (stable %d, high "
                                   "%d); restoring what is committed", tp.topic, tp.partition, SETTLE_S, end,
                                   high)  # fmt: skip
                    return end
                time.sleep(0.1)
        finally:
            plain.close(autocommit=False)

    def read(self, partition: int, start: int) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(offset, key, value) of ``partition`` from offset ``start`` to its end as of now."""
        consumer = KafkaConsumer(**self._consumer_config)
        tp = TopicPartition(self.topic, partition)
        try:
            consumer.assign([tp])
            end = self._settled(tp, consumer)
            if start >= end:
                return
            consumer.seek(tp, start)
            deadline = time.monotonic() + READ_TIMEOUT_S
            while consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise KafkaError(
                        f"changelog {self.topic}-{partition}: not read to {end} within {READ_TIMEOUT_S:.0f} s"
                    )
                for batch in consumer.poll(timeout_ms=500).values():
                    for r in batch:
                        self.records_read += 1
                        yield r.offset, r.key, r.value
        finally:
            consumer.close(autocommit=False)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
