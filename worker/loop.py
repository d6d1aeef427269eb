"""The consume -> decode -> scale -> score -> produce -> acknowledge -> commit loop.

At-least-once: a batch's offsets are committed only after every alert, score and DLQ record
produced for it has been acknowledged by the broker. If producing fails, nothing is committed,
the consumer is rewound to the batch's first offsets and the batch is retried after a backoff.
Offsets acknowledged but not yet committed are committed on the next pass, on partition
revocation and on shutdown; partitions lost to a forced eviction are never committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from worker.config import WorkerConfig
from worker.decode import Decoder
from worker.errors import BrokerError
from worker.health import HealthState
from worker.logs import Throttle
from worker.metrics import WorkerMetrics
from worker.models import ModelWatcher
from worker.results import dlq_headers, encode_results, source_headers

logger = logging.getLogger(__name__)

LAG_INTERVAL = 5.0
LAG_TIMEOUT_MS = 2_000
COMMIT_TIMEOUT_MS = 10_000
TROUBLE_LOG_INTERVAL = 30.0


class Worker:
    """Runs until ``request_stop``; then finishes the batch in hand, commits and closes."""

    def __init__(
        self,
        config: WorkerConfig,
        models: ModelWatcher,
        metrics: WorkerMetrics,
        health: HealthState,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.models = models
        self.metrics = metrics
        self.health = health
        self._clock = clock
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._pending: dict[TopicPartition, int] = {}  # acknowledged, not yet committed: next offset
        self._pending_lock = threading.Lock()
        self._decoder: Decoder | None = None
        self._throttle = Throttle(TROUBLE_LOG_INTERVAL, clock)
        self._backoff = 0.0
        self._next_lag = 0.0
        # A flush waits for the producer's own delivery timeout, plus a margin.
        self._flush_timeout = config.producer_options().get("delivery_timeout_ms", 30_000) / 1000 + 5

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        if not self._connect():
            return 0
        try:
            while not self._stop.is_set():
                self.health.beat()
                if self.models.maybe_reload():
                    self.health.model_version = self.models.version
                polled = self._poll()
                if polled:
                    self._handle(polled)
                elif self._pending:
                    self._commit_pending()
                self._update_lag()
        finally:
            self._close()
        return 0

    # -- Kafka clients -------------------------------------------------------------------------

    def _client_configs(self) -> tuple[dict, dict]:
        c = self.config
        consumer = {
            "bootstrap_servers": c.bootstrap_servers,
            "client_id": "fraud-worker",
            "group_id": c.group_id,
            "enable_auto_commit": False,
            "max_poll_records": c.max_batch_size,
            "auto_offset_reset": "earliest",
            "bootstrap_timeout_ms": 5_000,
            "max_partition_fetch_bytes": max(1 << 20, c.max_message_bytes * 2),
        }
        producer = {
            "bootstrap_servers": c.bootstrap_servers,
            "client_id": "fraud-worker",
            "acks": "all",
            # Alerts are rare and urgent, and each batch is flushed at once anyway: no lingering.
            "linger_ms": 0,
            "request_timeout_ms": 10_000,
            "delivery_timeout_ms": 30_000,
            "max_block_ms": 10_000,
            # kafka-python's producer waits 30 s for a first broker by default: as long as the
            # /healthz stall bound, so a worker waiting for its broker would be reported dead.
            "bootstrap_timeout_ms": 5_000,
        }
        consumer.update(c.consumer_options())
        producer.update(c.producer_options())
        return consumer, producer

    def _connect(self) -> bool:
        consumer_cfg, producer_cfg = self._client_configs()
        while not self._stop.is_set():
            try:
                if self._producer is None:
                    self._producer = KafkaProducer(**producer_cfg)
                self._consumer = KafkaConsumer(**consumer_cfg)
                self._consumer.subscribe([self.config.input_topic], listener=_Rebalance(self))
                self._recovered()
                logger.info("connected to %s; consuming %s as group %s", self.config.bootstrap_servers,
                            self.config.input_topic, self.config.group_id)  # fmt: skip
                return True
            except KafkaError as exc:
                self._trouble("connect", f"cannot reach the broker at {self.config.bootstrap_servers}: {exc}")
        return False

    def _close(self) -> None:
        if self._consumer is not None:
            if self._pending:
                self._commit_pending(retry=False)
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:  # noqa: BLE001 - closing goes on
                logger.warning("closing the consumer: %s", exc)
        if self._producer is not None:
            try:
                self._producer.close(timeout=10)
            except Exception as exc:  # noqa: BLE001
                logger.warning("closing the producer: %s", exc)
        logger.info("worker stopped")

    # -- one batch -----------------------------------------------------------------------------

    def _poll(self) -> dict:
        try:
            polled = self._consumer.poll(timeout_ms=self.config.poll_timeout_ms, max_records=self.config.max_batch_size)
        except KafkaError as exc:
            self._trouble("poll", f"poll failed: {exc}")
            return {}
        self.metrics.last_poll.set(time.time())
        return polled

    def _handle(self, polled: dict) -> None:
        try:
            self._process(polled)
        except BrokerError as exc:
            for tp, records in polled.items():
                try:
                    self._consumer.seek(tp, records[0].offset)
                except (KafkaError, AssertionError):
                    pass  # no longer ours: its new owner starts from the last commit
            self._replace_producer(exc)
            self._trouble("produce", f"batch not acknowledged, will retry it ({_describe(polled)}): {exc}")
            return
        self._recovered()
        with self._pending_lock:
            for tp, records in polled.items():
                self._pending[tp] = records[-1].offset + 1
        self._commit_pending()

    def _process(self, polled: dict) -> None:
        c, m = self.config, self.metrics
        records = [r for batch in polled.values() for r in batch]
        scorer = self.models.scorer
        decoder = self._decoder
        if decoder is None or decoder.feature_names != scorer.feature_names:
            decoder = self._decoder = Decoder(scorer.feature_names, c.max_message_bytes)
        decoded = decoder.decode_batch([r.value for r in records])

        futures = []
        try:
            if self._producer is None:
                self._producer = KafkaProducer(**self._client_configs()[1])
            send = self._producer.send
            n_scored, hits, times = 0, np.empty(0, dtype=np.int64), []
            if decoded.index:
                t0 = time.perf_counter()
                scaled = scorer.scale(decoded.features)
                scores = scorer.score_scaled(scaled)
                m.scoring_seconds.observe(time.perf_counter() - t0)
                n_scored = len(scores)
                scored_at = int(time.time() * 1000)
                ids = decoded.transaction_ids
                times = [t if t is not None else records[i].timestamp for t, i in zip(decoded.event_times, decoded.index)]
                hits = np.flatnonzero(scores >= scorer.threshold)
                alerts = encode_results(scorer, hits, ids, times, scaled, scores, scored_at, c.reasons)
                for j, payload in zip(hits.tolist(), alerts):
                    futures.append(send(c.alert_topic, key=ids[j].encode(), value=payload))
                if c.scores_topic:
                    payloads = encode_results(scorer, range(n_scored), ids, times, scaled, scores, scored_at, c.reasons)
                    for j, payload in enumerate(payloads):
                        r = records[decoded.index[j]]
                        headers = source_headers(r.topic, r.partition, r.offset)
                        futures.append(send(c.scores_topic, key=ids[j].encode(), value=payload, headers=headers))
            for i, err in decoded.errors:
                r = records[i]
                headers = dlq_headers(err, r.topic, r.partition, r.offset)
                value = r.value
                if value is None and r.key is None:
                    value = b""  # Kafka clients refuse a record with neither key nor value
                    headers.append(("value_null", b"true"))
                futures.append(send(c.dlq_topic, key=r.key, value=value, headers=headers))
            self._producer.flush(timeout=self._flush_timeout)
        except KafkaError as exc:
            raise BrokerError(str(exc) or type(exc).__name__) from None
        failed = [f for f in futures if not f.is_done or f.failed()]
        if failed:
            first = failed[0].exception if failed[0].is_done else "not acknowledged in time"
            raise BrokerError(f"{len(failed)} of {len(futures)} records not acknowledged, first: {first}")

        acked_ms = time.time() * 1000
        m.events_consumed.inc(len(records))
        m.batch_size.observe(len(records))
        if n_scored:
            m.events_scored.inc(n_scored)
            m.observe_scores(scores)
        if len(hits):
            m.alerts.inc(len(hits))
            m.event_latency.observe_many((acked_ms - np.asarray(times, dtype=np.float64)[hits]) / 1000.0)
        if decoded.errors:
            m.count_invalid(err.reason for _, err in decoded.errors)
            if logger.isEnabledFor(logging.DEBUG):
                for i, err in decoded.errors:
                    r = records[i]
                    logger.debug("dead-lettered %s[%s]@%s: %s", r.topic, r.partition, r.offset, err)

    # -- commits, rebalances, trouble ----------------------------------------------------------

    def _commit_pending(self, retry: bool = True) -> None:
        """Commit the acknowledged offsets and wait for the broker's answer.

        Synchronous on purpose: a batch's results are produced only after the previous batch's
        offsets are committed, so a crash re-delivers at most the batch in hand. (An asynchronous
        commit saved about a tenth of the loop's time but let a crash repeat several batches.)
        """
        with self._pending_lock:
            offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self._pending.items()}
        if not offsets:
            return
        try:
            self._consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as exc:
            # Kept: retried on the next pass or by the revocation listener; lost partitions drop them.
            self.metrics.committed(False)
            if retry:
                self._trouble("commit", f"commit of {_describe_offsets(offsets)} failed: {exc}")
            else:
                logger.warning("final commit of %s failed: %s", _describe_offsets(offsets), exc)
            return
        self.metrics.committed(True)
        with self._pending_lock:
            for tp, o in offsets.items():
                if self._pending.get(tp) == o.offset:
                    del self._pending[tp]

    def _take_pending(self, partitions) -> dict[TopicPartition, OffsetAndMetadata]:
        with self._pending_lock:
            return {tp: OffsetAndMetadata(self._pending.pop(tp), "", -1) for tp in partitions if tp in self._pending}

    def _update_lag(self) -> None:
        now = self._clock()
        if now < self._next_lag:
            return
        self._next_lag = now + LAG_INTERVAL
        lag: dict[int, int] = {}
        try:
            assigned = list(self._consumer.assignment())
            # The broker's end offsets (one ListOffsets request), not the last fetch's highwater:
            # right even for a partition this worker has not fetched from yet.
            ends = self._consumer.end_offsets(assigned, timeout_ms=LAG_TIMEOUT_MS) if assigned else {}
            for tp in assigned:
                end = ends.get(tp)
                position = self._consumer.position(tp, timeout_ms=100)
                if end is not None and position is not None:
                    lag[tp.partition] = max(0, end - position)
        except (KafkaError, AssertionError):
            return
        self.metrics.set_lag(lag)

    def _trouble(self, stage: str, message: str) -> None:
        """Count, log once per interval per stage, and back off (interruptible by a stop request)."""
        self.metrics.broker_errors.labels(stage=stage).inc()
        if self._throttle.ready(stage):
            held = self._throttle.take_suppressed(stage)
            more = f" ({held} more since the last report)" if held else ""
            logger.warning("%s; retrying with backoff, reported once per %.0fs%s", message, TROUBLE_LOG_INTERVAL, more)
        self._backoff = min(max(0.25, self._backoff * 2), self.config.retry_backoff_max_seconds)
        deadline = self._clock() + self._backoff
        while not self._stop.is_set() and self._clock() < deadline:
            self.health.beat()  # alive and retrying: a restart would not bring the broker back
            self._stop.wait(min(0.2, max(0.0, deadline - self._clock())))

    def _replace_producer(self, error: object) -> None:
        """Drop the producer of a batch that was not acknowledged; the retry starts a new one.

        kafka-python's idempotent producer can stay broken after a failure: a non-retriable error
        (e.g. MessageSizeTooLarge from a topic whose size limit was lowered) is fatal to it, and
        batches expired during a broker outage leave it waiting for a new producer epoch; either
        way every later send fails, so the batch would be retried forever after the cause is gone.
        """
        old, self._producer = self._producer, None
        if old is None:
            return
        if self._throttle.ready("producer"):
            logger.info("starting a new producer for the retry (the last one failed: %s)", error)
        try:
            old.close(timeout=0)
        except Exception as exc:  # noqa: BLE001 - it is being discarded anyway
            logger.debug("closing the failed producer: %s", exc)

    def _recovered(self) -> None:
        if self._backoff:
            logger.info("broker reachable again; resuming")
            self._backoff = 0.0


class _Rebalance(AsyncConsumerRebalanceListener):
    """Runs on kafka-python's IO loop, so it awaits the coordinator instead of blocking on it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        w = self.worker
        offsets = w._take_pending(revoked)
        if offsets:
            try:
                # The coroutine KafkaConsumer.commit() itself runs; commit() cannot be called from this loop.
                await w._consumer._coordinator._commit_offsets_sync_async(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
                w.metrics.committed(True)
                logger.info("committed %s on revocation", _describe_offsets(offsets))
            except Exception as exc:  # noqa: BLE001 - their records will be delivered again: at-least-once
                w.metrics.committed(False)
                logger.warning("commit on revocation of %s failed: %s", _describe_offsets(offsets), exc)
        self._forget(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        w = self.worker
        w.health.partitions = len(w._consumer.assignment())
        w.metrics.rebalances.inc()
        w.metrics.partitions_assigned.set(w.health.partitions)
        logger.info("assigned %s", sorted(tp.partition for tp in assigned) or "no partitions")

    async def on_partitions_lost(self, lost) -> None:
        logger.warning("group membership lost; dropping uncommitted offsets of %s", sorted(tp.partition for tp in lost))
        self.worker._take_pending(lost)
        self._forget(lost)

    def _forget(self, partitions) -> None:
        w = self.worker
        w.metrics.forget_partitions(tp.partition for tp in partitions)
        w.health.partitions = max(0, w.health.partitions - len(partitions))
        w.metrics.partitions_assigned.set(w.health.partitions)


def _describe(polled: dict) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{recs[0].offset}..{recs[-1].offset}" for tp, recs in polled.items())


def _describe_offsets(offsets: dict) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{o.offset}" for tp, o in offsets.items())
