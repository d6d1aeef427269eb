"""The worker's Kafka clients, built from its config: settings, construction, and metadata fetched ahead."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import TopicAlreadyExistsError

from worker.edges import access
from worker.edges.config import WorkerConfig, client_options
from worker.edges.logs import Throttle
from worker.kafka_compat import KafkaCompat, parse_fast_paths

logger = logging.getLogger(__name__)

METADATA_WAIT_MS = 5_000  # for the input topic's partitions before the first poll (kafka_compat/metadata.py)


def client_configs(c: WorkerConfig) -> tuple[dict, dict]:
    """The worker's kafka-python consumer and producer settings (the benchmark's ceiling uses the first)."""
    consumer = {
        "bootstrap_servers": c.bootstrap_servers,
        "client_id": "fraud-worker",
        "group_id": c.group_id,
        "enable_auto_commit": False,
        "max_poll_records": c.max_batch_size,
        "auto_offset_reset": "earliest",
        "bootstrap_timeout_ms": 5_000,
        # 256 KB per partition (kafka-python's default is 1 MB): a fetch response and the records
        # parsed from it stay small, which takes about 25 MB off the worker's peak memory while it
        # catches up a backlog, at no cost in throughput (benchmarks/bench.py).
        "max_partition_fetch_bytes": max(256 * 1024, c.max_message_bytes * 2),
        # The broker holds a fetch for partitions without new data up to this long (default 500 ms);
        # records arriving meanwhile on partitions outside that fetch wait for it. 20 ms keeps
        # that wait off the alert latency, for about 50 small fetch requests a second when idle.
        "fetch_max_wait_ms": 20,
    }
    producer = {
        "bootstrap_servers": c.bootstrap_servers,
        "client_id": "fraud-worker",
        "acks": "all",
        # Alerts are rare and urgent: sent at once, not held back to fill a batch.
        "linger_ms": 0,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
        "max_block_ms": 10_000,
        # kafka-python's producer waits 30 s for a first broker by default: as long as the
        # /healthz stall bound, so a worker waiting for its broker would be reported dead.
        "bootstrap_timeout_ms": 5_000,
    }
    # Recovery: a member that dies is noticed after the session timeout, and its partitions are
    # scored by nobody until then. kafka-python's default is 45 s; 10 s with a heartbeat every 3 s
    # (a third of it, as kafka-python advises) keeps a crash to about 10 s without alerts (the broker
    # counts a commit as a heartbeat too, so the 10 s run from the dead member's last commit). A
    # static member (group_instance_id) restarted under its name takes its partitions back at once,
    # with no rebalance. But one that stops cleanly does not leave the group either: kafka-python,
    # like the Java client, sends no LeaveGroup for a static member, so its partitions wait for the
    # session timeout unless it comes back (tests/integration/test_worker_recovery.py).
    consumer["session_timeout_ms"] = 10_000
    consumer["heartbeat_interval_ms"] = 3_000
    if c.group_instance_id:
        consumer["group_instance_id"] = c.group_instance_id
    if c.exactly_once:
        # Input written by transactional producers is read only once committed; and the committed
        # offsets are fetched "stable" (require_stable), never from a transaction still open.
        consumer["isolation_level"] = "read_committed"
        producer["transactional_id"] = c.effective_transactional_id()
        # As Kafka Streams under exactly-once: an instance that dies with a transaction open holds
        # read_committed readers of its output partitions back at most this long (unless it comes
        # back first with the same transactional id, which aborts that transaction at once).
        producer["transaction_timeout_ms"] = 10_000
    consumer.update(c.consumer_options())
    producer.update(c.producer_options())
    return consumer, producer


class KafkaClients:
    """Builds the worker's consumer (with its kafka-python fast paths) and producers."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._consumer_cfg, self._producer_cfg = client_configs(config)

    def producer(self) -> KafkaProducer:
        """A new producer (one at start, and one for each retry after a failed batch).

        Exactly-once: a transactional one, initialised; ``init_transactions`` aborts a transaction
        left open under the same transactional id (by a crashed or discarded predecessor).
        """
        producer = KafkaProducer(**self._producer_cfg)
        if self.config.exactly_once:
            try:
                producer.init_transactions()
            except BaseException:
                producer.close(timeout=0)
                raise
        return producer

    def consumer(
        self, listener: AsyncConsumerRebalanceListener, also: Sequence[str] = ()
    ) -> tuple[KafkaConsumer, KafkaCompat]:
        """A consumer subscribed to the input topic (and the repartition topics ``also``), knowing the input
        topic's partitions (or having waited for them)."""
        consumer = KafkaConsumer(**self._consumer_cfg)
        compat = KafkaCompat.install(
            consumer, parse_fast_paths(self.config.fast_paths), self.config.max_inflated_batch_bytes
        )
        consumer.subscribe([self.config.input_topic, *also], listener=listener)
        compat.await_partitions(consumer, self.config.input_topic, METADATA_WAIT_MS)
        return consumer, compat

    def ensure_topics(self, topics: Sequence[str], producer: KafkaProducer) -> None:
        """Create the repartition ``topics`` that are missing, with as many partitions as the input topic."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        partitions = len(producer.partitions_for(self.config.input_topic) or ()) or 1
        admin = KafkaAdminClient(**client_options(self.config, "admin", client_id="fraud-worker"))
        try:
            missing = [t for t in topics if t not in set(admin.list_topics())]
            for topic in missing:
                try:
                    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)])
                    logger.info("created the repartition topic %s (%d partitions)", topic, partitions)
                except TopicAlreadyExistsError:
                    pass
            for topic in topics:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not producer.partitions_for(topic):
                    time.sleep(0.2)
        finally:
            admin.close()

    def check_access(self, also: Sequence[str] = ()) -> tuple[list[str], list[str]]:
        """What the broker says this worker may not do: (topics it cannot read, topics it cannot write).

        Asked once before the first poll, with an admin client of the worker's own settings (the
        Metadata answer lists each topic's authorised operations; worker/edges/access.py).
        """
        c = self.config
        options = client_options(c, "admin", client_id="fraud-worker", bootstrap_timeout_ms=5_000)
        writes = [t for t in (c.alert_topic, c.dlq_topic, c.scores_topic, c.shadow_topic, *also) if t]
        return access.check_topics(options, read=[c.input_topic, *also], write=writes)

    def diagnose(self, error: BaseException) -> str | None:
        """Why the cluster refused these clients (authentication, TLS, protocol, an ACL), or None.

        ``error`` is what a client raised: an authorisation error says so itself; a bootstrap that
        timed out (as after a wrong password) is explained by probing the bootstrap server.
        """
        return access.refusal(error, self.config.group_id) or access.diagnose(
            self.config.bootstrap_servers, self._consumer_cfg
        )

    def discard(self, producer: KafkaProducer, error: object, throttle: Throttle) -> None:
        """Drop the producer of a batch that was not acknowledged; the retry starts a new one.

        kafka-python's idempotent producer can stay broken after a failure: a non-retriable error
        (e.g. MessageSizeTooLarge from a topic whose size limit was lowered) is fatal to it, and
        batches expired during a broker outage leave it waiting for a new producer epoch; either
        way every later send fails, so the batch would be retried forever after the cause is gone.
        """
        if throttle.ready("producer"):
            logger.info("starting a new producer for the retry (the last one failed: %s)", error)
        try:
            producer.close(timeout=0)
        except Exception as exc:  # noqa: BLE001 - it is being discarded anyway
            logger.debug("closing the failed producer: %s", exc)

    def learn_topics(self, producer: KafkaProducer) -> None:
        """Fetch the output topics' metadata now, on a side thread, not at the first alert.

        kafka-python's producer learns a topic's partitions at its first send to it, and the loop's
        thread waits meanwhile (about 90 ms for a second topic, here): the first alerts would queue
        the records behind them. A topic that does not exist (yet) is left to the first send, as before.
        """
        c = self.config

        def learn() -> None:
            for topic in filter(None, (c.alert_topic, c.dlq_topic, c.scores_topic, c.shadow_topic)):
                try:
                    producer.partitions_for(topic)
                except Exception as exc:  # noqa: BLE001 - only a head start: the send reports real trouble
                    logger.debug("metadata of %s not fetched ahead: %s", topic, exc)

        threading.Thread(target=learn, name="fraud-topic-metadata", daemon=True).start()
