"""The Kafka side of ``fraud-feedback``: one consumer group over the scores and labels topics.

Both topics are keyed by ``transaction_id`` and have the same partition count, so partition p of
each holds the same transactions; the range assignor gives partition p of both topics to the same
member, which joins them in its store for p (store.py). On assignment each partition resumes at
the offsets its store recorded (or from the beginning of both topics when the store is new: a
partition that moved here, or a lost file, is rebuilt from the topics). Each poll's records are
applied to their stores, durably, and only then are the offsets committed to Kafka (for lag
monitoring: the stores, not Kafka, say where to resume).

A store SQLite finds damaged or cannot open, at assignment or later (``damaged``), is moved aside
(``<name>.corrupt-<UTC time>``), counted (``fraud_feedback_store_rebuilds_total``) and rebuilt:
its partition of every topic is read again from the beginning. A store that cannot be rebuilt, or
any other SQLite failure, stops the service with one line naming the file (``StoreError``, exit 1).
Every record polled is applied, counted as invalid, or read again (a rebuild, a revoked partition).

Entity risk (worker/core/risk.py, docs/entity-risk.md): the fraud entries a store makes are published
to a compacted topic (``entity_risk_topic``, created at start when missing, with as many partitions as
the scores topic) that every worker reads whole as a table. After each batch and each pruning, and once
when a store is opened (a crash may have left entities unpublished), every entity the store marked dirty
is sent, keyed by entity field, partition and entity (``record_key``), its value all the entity's entries
in that store (``encode_entries``) or a tombstone when none are left; once the broker has them they are
cleared. A failed send is one warning line and a count: the entities stay dirty and are sent again
(after ``RISK_RETRY_SECONDS``), by a new producer.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from worker.core.errors import AccessError, ConfigError
from worker.core.risk import encode_entries, record_key
from worker.edges.logs import Throttle
from worker.feedback.metrics import FeedbackMetrics, snapshot
from worker.feedback.records import BadRecord, decode_label, decode_score
from worker.feedback.store import (
    DEFAULT_RISK_HORIZON_MS,
    Store,
    StoreError,
    damaged,
    move_aside,
    now_ms,
    store_path,
)
from worker.kafka_compat import KafkaCompat
from worker.kafka_compat.inflate import DEFAULT_CAP

logger = logging.getLogger(__name__)

MAINTENANCE_SECONDS = 30.0  # expiry by the label window, pruning
DEFAULT_ENTITY_RISK_TOPIC = "fraud-entity-risk"
RISK_CHUNK = 5_000  # dirty entities read from a store and sent at a time
RISK_RETRY_SECONDS = 5.0  # after a failed send, the entities stay dirty this long before the next attempt
RISK_FLUSH_SECONDS = 40.0  # longer than the producer's delivery timeout: every send has an outcome by then


@dataclass(frozen=True)
class FeedbackSettings:
    bootstrap_servers: str
    scores_topic: str
    labels_topic: str
    group_id: str
    state_dir: str
    label_window_ms: int
    quality_window_ms: int
    quality_max_rows: int
    refresh_seconds: float = 5.0
    shadow_topic: str = ""  # the shadow challenger's score records, joined like the champion's (optional)
    poll_max_records: int = 2000
    consumer_options: dict[str, Any] = field(default_factory=dict)
    # A compressed batch inflates to at most this many bytes (worker/kafka_compat/inflate.py; its records
    # are then counted invalid, batch_too_large); None: kafka-python inflates it whole (fast path off).
    inflate_cap: int | None = DEFAULT_CAP
    entity_risk_topic: str = DEFAULT_ENTITY_RISK_TOPIC  # "": the entity risk is not published
    risk_horizon_ms: int = DEFAULT_RISK_HORIZON_MS  # fraud entries of older transactions are dropped


def partition_count(consumer: KafkaConsumer, topics: list[str], bootstrap: str,
                    stop: threading.Event | None = None) -> int:  # fmt: skip
    """The partition count the topics share, once the consumer knows each of them (30 s at most);
    a ConfigError names a topic not found, or the counts when they differ."""
    deadline = time.monotonic() + 30
    counts: dict[str, int] = {}
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
        if all(counts.values()):
            break
        time.sleep(0.5)
    missing = [t for t in topics if not counts.get(t)]
    if missing:
        raise ConfigError(f"topic {missing[0]!r} not found at {bootstrap} (create it with create-topics)")
    if len(set(counts.values())) > 1:
        described = ", ".join(f"{t} has {n}" for t, n in counts.items())
        raise ConfigError(
            f"partition counts differ ({described}): the topics must be co-partitioned (the same count, all "
            "keyed by transaction_id)"
        )
    return counts[topics[0]]


class FeedbackConsumer:
    def __init__(self, settings: FeedbackSettings, metrics: FeedbackMetrics, clock: Callable[[], int] = now_ms) -> None:
        self.settings, self.metrics, self._clock = settings, metrics, clock
        self.stores: dict[int, Store] = {}
        self._stop = threading.Event()
        self._throttle = Throttle(30.0)
        self._consumer: KafkaConsumer | None = None
        self._fatal: StoreError | None = None  # raised by the loop: a listener's exception would be swallowed
        self.health: Any = None  # worker.edges.health.HealthState when the metrics server runs
        # Entity risk: the producer (made by ``connect``, again after a failure), the partitions whose
        # stores may hold dirty entities, and the earliest time of the next attempt after a failure.
        self.risk_publishing = False
        self._producer: Any = None
        self._risk_pending: set[int] = set()
        self._risk_retry_at = 0.0

    def request_stop(self) -> None:
        self._stop.set()

    # -- rebalances ------------------------------------------------------------------------------

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        partitions = sorted({tp.partition for tp in assigned})
        offsets: dict[int, dict[str, int]] = {}
        for p in list(partitions):
            try:
                if p not in self.stores:
                    self.stores[p] = self._open(p)
                offsets[p] = self.stores[p].next_offsets()
            except (sqlite3.Error, OSError) as exc:
                self.stores.pop(p, None)
                try:
                    self.stores[p] = self._rebuild(p, exc)
                except StoreError as fatal:
                    self._fatal = fatal
                    logger.error("%s", fatal)
                    return
                offsets[p] = {}
        consumer = self._consumer
        assert consumer is not None
        for tp in assigned:
            offset = offsets[tp.partition].get(tp.topic)
            if offset is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        self._risk_pending.update(partitions)  # a crash may have left entities unpublished
        rebuilt = [p for p in partitions if not self.stores[p].existed]
        logger.info("joining partitions %s%s", partitions, f" (rebuilt from the topics: {rebuilt})" if rebuilt else "")
        self.metrics.partitions.set(len(self.stores))

    def _open(self, p: int) -> Store:
        s = self.settings
        return Store(store_path(s.state_dir, p), s.label_window_ms, clock=self._clock,
                     risk_horizon_ms=s.risk_horizon_ms)  # fmt: skip

    def _rebuild(self, p: int, exc: BaseException) -> Store:
        """A new empty store for partition p in place of the damaged one (moved aside); StoreError if it cannot be."""
        s = self.settings
        path = store_path(s.state_dir, p)
        reason = str(exc) or type(exc).__name__
        if not damaged(exc):
            raise StoreError(f"store {path} failed: {reason}")
        old = self.stores.pop(p, None)
        if old is not None:
            try:
                old.close()
            except sqlite3.Error:
                pass
        try:
            aside = move_aside(path, self._clock)
            store = self._open(p)
        except (sqlite3.Error, OSError) as again:
            raise StoreError(f"store {path} is unusable ({reason}) and cannot be rebuilt: {again}") from None
        store.existed = False
        self.metrics.store_rebuilds.inc()
        logger.error("store %s is unusable (%s): moved aside to %s; rebuilding partition %d from the topics",
                     path, reason, aside.name, p)  # fmt: skip
        return store

    def _store_failed(self, p: int, exc: sqlite3.Error) -> None:
        """A store failed while in use: rebuild it, and read its partition of every topic again from the start."""
        self.stores[p] = self._rebuild(p, exc)  # StoreError: the loop stops
        consumer = self._consumer
        assert consumer is not None
        for tp in consumer.assignment():
            if tp.partition == p:
                consumer.seek_to_beginning(tp)

    def _revoked(self, revoked: list[TopicPartition]) -> None:
        for p in sorted({tp.partition for tp in revoked}):
            store = self.stores.pop(p, None)
            self._risk_pending.discard(p)  # its next owner publishes what is left dirty
            if store is not None:
                store.close()
        self.metrics.partitions.set(len(self.stores))

    # -- the loop --------------------------------------------------------------------------------

    def connect(self) -> KafkaConsumer:
        s = self.settings
        options = {
            "client_id": "fraud-feedback",
            "auto_offset_reset": "earliest",
            "bootstrap_timeout_ms": 10_000,
            # As the worker's: an instance that dies hands its partitions on after 10 s, not
            # kafka-python's 45 s, with a heartbeat every 3 s (a third of it).
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            **s.consumer_options,
            "bootstrap_servers": s.bootstrap_servers,
            "group_id": s.group_id,
            "enable_auto_commit": False,
            "isolation_level": "read_committed",
            "partition_assignment_strategy": (RangePartitionAssignor,),
        }
        consumer = KafkaConsumer(**options)
        if s.inflate_cap is not None:
            KafkaCompat.install(consumer, frozenset({"inflate_cap"}), s.inflate_cap)
        topics = [s.scores_topic, s.labels_topic, *([s.shadow_topic] if s.shadow_topic else [])]
        try:
            partitions = partition_count(consumer, topics, s.bootstrap_servers, self._stop)
        except ConfigError:
            consumer.close()
            raise
        if s.entity_risk_topic:
            self.ensure_risk_topic(partitions)
            self.risk_publishing = True
        outer = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # type: ignore[no-untyped-def]
                outer._revoked(list(revoked))

            def on_partitions_assigned(self, assigned):  # type: ignore[no-untyped-def]
                outer._assigned(list(assigned))

        self._consumer = consumer
        consumer.subscribe(topics, listener=Listener())
        return consumer

    def run(self) -> int:
        from worker.edges.access import diagnose, refusal

        try:
            consumer = self.connect()
        except KafkaError as exc:
            problem = refusal(exc, self.settings.group_id) or diagnose(
                self.settings.bootstrap_servers, self.settings.consumer_options
            )
            if problem:
                raise AccessError(problem) from None
            raise
        Path(self.settings.state_dir).mkdir(parents=True, exist_ok=True)
        last_refresh = last_maintenance = 0.0
        try:
            while not self._stop.is_set():
                if self.health is not None:
                    self.health.beat()
                    self.health.partitions = len(self.stores)
                try:
                    polled = consumer.poll(timeout_ms=500, max_records=self.settings.poll_max_records)
                except KafkaError as exc:
                    problem = refusal(exc, self.settings.group_id)
                    if problem:
                        raise AccessError(problem) from None
                    if self._throttle.ready("poll"):
                        logger.warning("poll failed: %s; retrying (reported once per 30 s)", exc)
                    time.sleep(1.0)
                    continue
                if self._fatal is not None:
                    raise self._fatal
                if polled:
                    self.take(consumer, polled)
                now = time.monotonic()
                if now - last_maintenance >= MAINTENANCE_SECONDS:
                    for p, store in list(self.stores.items()):
                        try:
                            store.expire()
                            store.prune()
                            self._risk_pending.add(p)
                        except sqlite3.Error as exc:
                            self._store_failed(p, exc)
                    last_maintenance = now
                self.publish_risk()
                if now - last_refresh >= self.settings.refresh_seconds:
                    self.refresh()
                    last_refresh = now
        finally:
            consumer.close(autocommit=False)
            self._discard_producer()
            for store in self.stores.values():
                store.close()
            self.stores.clear()
        return 0

    def take(self, consumer: KafkaConsumer, polled: dict) -> None:
        """Apply one poll's records to their stores (durably), then commit their offsets to Kafka."""
        s = self.settings
        per_partition: dict[int, tuple[list, list, dict[str, int]]] = defaultdict(lambda: ([], [], {}))
        commit: dict[TopicPartition, OffsetAndMetadata] = {}
        now = self._clock()
        for tp, records in polled.items():
            scores, labels, offsets = per_partition[tp.partition]
            is_scores = tp.topic != s.labels_topic  # the champion's scores, or the challenger's
            kind = "scores" if is_scores else "labels"
            for r in records:
                try:
                    if is_scores:
                        scores.append(decode_score(r.value, now))
                    else:
                        labels.append(decode_label(r.value, now))
                except BadRecord as exc:
                    self.metrics.invalid.labels(topic=kind, reason=exc.reason).inc()
                    if self._throttle.ready(f"invalid-{kind}"):
                        logger.warning("skipping %s[%d]@%d: %s (reported once per 30 s)", tp.topic, tp.partition,
                                       r.offset, exc)  # fmt: skip
            self.metrics.records.labels(topic=kind).inc(len(records))
            offsets[tp.topic] = records[-1].offset + 1
            commit[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        assigned = {tp.partition for tp in consumer.assignment()}
        rebuilt: set[int] = set()
        for p, (scores, labels, offsets) in per_partition.items():
            store = self.stores.get(p)
            if store is None:
                if p in assigned:  # never: a store that failed to open stopped the loop before this
                    raise StoreError(f"no store for partition {p}, which this instance holds")
                continue  # revoked: not committed here, its new owner reads them from its store's offsets
            try:
                applied = store.apply(scores, labels, offsets)
            except sqlite3.Error as exc:
                self._store_failed(p, exc)  # its partitions are read again from the start: nothing is lost
                rebuilt.add(p)
                continue
            for lag in applied.label_lags:
                self.metrics.label_lag.observe(lag)
            self.metrics.ignored.labels(kind="score").inc(applied.duplicates)
            self.metrics.ignored.labels(kind="label").inc(applied.stale_labels)
            self._risk_pending.add(p)
        self.metrics.last_commit.set(time.time())
        try:
            consumer.commit({tp: o for tp, o in commit.items() if tp.partition in self.stores and
                             tp.partition not in rebuilt})  # fmt: skip
        except KafkaError as exc:  # the stores hold the offsets: only the lag figure is behind
            if self._throttle.ready("commit"):
                logger.warning("committing offsets to Kafka failed: %s (the stores have them)", exc)
        self.publish_risk()

    # -- entity risk -----------------------------------------------------------------------------

    def _client_options(self, accepted: dict[str, Any], **defaults: Any) -> dict[str, Any]:
        """Options for another kafka-python client: the consumer's own settings (security, timeouts) that
        this client accepts, over ``defaults``."""
        s = self.settings
        shared = {k: v for k, v in s.consumer_options.items() if k in accepted}
        return {"client_id": "fraud-feedback", "bootstrap_timeout_ms": 10_000, **defaults, **shared,
                "bootstrap_servers": s.bootstrap_servers}  # fmt: skip

    def ensure_risk_topic(self, partitions: int) -> None:
        """Create the entity risk topic, compacted with ``partitions`` partitions, unless it exists. A failure
        is one warning line: the sends fail (and are retried) until the topic exists."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        topic = self.settings.entity_risk_topic
        admin = None
        try:
            admin = KafkaAdminClient(**self._client_options(KafkaAdminClient.DEFAULT_CONFIG))
            if topic not in set(admin.list_topics()):
                try:
                    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                                                  topic_configs={"cleanup.policy": "compact"})])  # fmt: skip
                    logger.info("created the entity risk topic %s (%d partitions, compacted)", topic, partitions)
                except TopicAlreadyExistsError:
                    pass
        except KafkaError as exc:
            logger.warning("cannot make sure the entity risk topic %s exists: %s (create it compacted)", topic, exc)
        finally:
            if admin is not None:
                admin.close()

    def _risk_producer(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            options = self._client_options(KafkaProducer.DEFAULT_CONFIG, linger_ms=5, request_timeout_ms=10_000,
                                           delivery_timeout_ms=30_000, max_block_ms=10_000)  # fmt: skip
            self._producer = KafkaProducer(**{**options, "acks": "all"})
        return self._producer

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as exc:  # noqa: BLE001 - it is being discarded anyway
                logger.debug("closing the entity risk producer: %s", exc)

    def publish_risk(self) -> None:
        """Publish the dirty entities of every store that may hold some (``RISK_CHUNK`` at a time)."""
        if not self.settings.entity_risk_topic:
            self._risk_pending.clear()
            return
        if not self.risk_publishing or not self._risk_pending or time.monotonic() < self._risk_retry_at:
            return
        for p in sorted(self._risk_pending):
            while True:
                store = self.stores.get(p)
                if store is None:
                    self._risk_pending.discard(p)
                    break
                try:
                    dirty = store.dirty_records(RISK_CHUNK)
                    sent = self._send_risk(p, dirty, store) if dirty else True
                except sqlite3.Error as exc:
                    self._store_failed(p, exc)  # rebuilt from the topics: its entities are published again
                    break
                if not sent:
                    self._risk_retry_at = time.monotonic() + RISK_RETRY_SECONDS
                    return
                if len(dirty) < RISK_CHUNK:
                    self._risk_pending.discard(p)
                    break

    def _send_risk(self, p: int, dirty: list[tuple[str, str, list[tuple[int, int, int]]]], store: Store) -> bool:
        """Send one partition's dirty entities, wait for the broker, clear those it has; whether all were sent."""
        topic = self.settings.entity_risk_topic
        futures: list[tuple[tuple[str, str], Any]] = []
        error: BaseException | None = None
        try:
            producer = self._risk_producer()
            for field_name, entity, entries in dirty:
                value = encode_entries(entries) if entries else None
                try:
                    future = producer.send(topic, key=record_key(field_name, entity, p), value=value)
                except MessageSizeTooLargeError as exc:  # this entity alone: the others are still sent
                    error = exc
                    continue
                futures.append(((field_name, entity), future))
            producer.flush(timeout=RISK_FLUSH_SECONDS)
        except KafkaError as exc:
            error = exc
        done = [key for key, future in futures if future.succeeded()]
        if done:
            store.clear_dirty(done)
            self.metrics.risk_records.inc(len(done))
        failed = len(dirty) - len(done)
        if not failed:
            return True
        if error is None:
            error = next((f.exception for _, f in futures if f.failed()), None)
        self.metrics.risk_errors.inc(failed)
        if self._throttle.ready("risk"):
            logger.warning("publishing %d entity risk records of partition %d to %s failed: %s; they are sent "
                           "again (reported once per 30 s)", failed, p, topic,
                           error or "not acknowledged in time")  # fmt: skip
        self._discard_producer()  # kafka-python's idempotent producer can stay broken after a failure
        return False

    def refresh(self) -> None:
        s = self.settings
        rows = 0
        for p, store in list(self.stores.items()):
            try:
                rows += store.rows()
            except sqlite3.Error as exc:
                self._store_failed(p, exc)
        stores = list(self.stores.values())
        try:
            self.metrics.publish(snapshot(stores, self._clock() - s.quality_window_ms, s.quality_max_rows))
        except sqlite3.Error as exc:  # a store damaged since: the next batch or maintenance rebuilds it
            if self._throttle.ready("refresh"):
                logger.warning("computing the metrics from the stores failed: %s (reported once per 30 s)", exc)
        self.metrics.store_rows.set(rows)
        self.metrics.store_bytes.set(sum(st.size_bytes() for st in stores))
