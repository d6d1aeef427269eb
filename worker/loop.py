"""The consume -> decode -> scale -> score -> produce -> acknowledge -> commit loop.

Pipelined while there is a backlog, so that the loop's thread (where every record is parsed:
worker/records.py) does little else:

    loop thread   poll N+1 ............ | submit N+1, take N's rows | score N, send its results | poll N+2
    decoder       decode N ...............| decode N+1 ...............................................
    IO threads    earlier batches' results acknowledged -> committer thread commits their offsets

With time to spare (a poll returns at most a third of max_batch_size records), a batch is
submitted, taken back and sent before the next poll: its alerts do not wait for that poll.

At-least-once: a batch's offsets are committed only after every alert, score and DLQ record
produced for it, and for every batch before it, has been acknowledged by the broker. A committer
thread commits as acknowledgements arrive (one commit at a time, each covering everything
acknowledged so far), so no round trip stalls the loop; batches without results are committed
together at most every COMMIT_INTERVAL. A batch's results are sent only once every earlier batch
with results is committed, so a crash repeats the results of at most one batch. If producing
fails, nothing from that batch on is committed: the consumer is rewound to its first offsets,
the batches behind it are dropped (they will be polled again) and it is retried after a backoff.
Offsets acknowledged but not committed are committed again on the next pass, on partition
revocation and on shutdown; partitions lost to a forced eviction are never committed.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future as KafkaFuture

from worker.config import WorkerConfig
from worker.decode import DecodedBatch
from worker.decoder_process import DecoderProcess, InlineDecoder
from worker.errors import BrokerError
from worker.handoffs import install_handoff_shortcuts
from worker.health import HealthState
from worker.logs import Throttle
from worker.metrics import WorkerMetrics
from worker.models import ModelWatcher
from worker.records import install_reader
from worker.results import dlq_headers, encode_results, source_headers
from worker.scoring import Scorer

logger = logging.getLogger(__name__)

LAG_INTERVAL = 5.0
LAG_TIMEOUT_MS = 2_000
COMMIT_TIMEOUT_MS = 10_000
# Offsets of batches without results are committed at most this often (batches come every few ms
# under load; a commit per batch was most of the broker's writes). Committed at once: a batch
# with results (the next one's results wait for it), and whatever the loop or a revocation waits for.
COMMIT_INTERVAL = 0.2
TROUBLE_LOG_INTERVAL = 30.0
ACK_REPORT_SECONDS = 5.0  # results unacknowledged this long count as a broker error
METADATA_WAIT_MS = 5_000  # for the input topic's partitions before the first poll (_await_partitions)


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
    consumer.update(c.consumer_options())
    producer.update(c.producer_options())
    return consumer, producer


@dataclass(eq=False)
class _Batch:
    """One poll's records on their way through the pipeline."""

    records: list
    first_offsets: dict[TopicPartition, int]
    next_offsets: dict[TopicPartition, int]
    epoch: int  # rebalances seen when it was polled
    scorer: Scorer | None = None  # the model it is scored with, fixed when it is submitted
    decoded: DecodedBatch | None = None
    urgent: bool = False  # sent results: committed without waiting for the commit interval
    # Written by the producer's and the consumer's IO threads once emitted. ``outstanding``
    # counts unacknowledged sends, plus one while sending, plus one until the batch before it
    # is acknowledged (offsets are committed in order).
    outstanding: int = 2
    error: BaseException | None = None
    acknowledged: bool = False
    next: _Batch | None = None  # emitted after this one, waiting for its acknowledgement
    acked_ms: float = 0.0
    commit_ok: bool | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: threading.Event = field(default_factory=threading.Event)  # acknowledged and committed, or failed
    done: KafkaFuture = field(default_factory=KafkaFuture)  # the same, awaitable by the rebalance listener
    # For the metrics, once settled.
    scores: np.ndarray | None = None
    hits: np.ndarray | None = None
    times: list = field(default_factory=list)  # event times of the alerts (epoch ms)

    @classmethod
    def of(cls, polled: dict, epoch: int) -> _Batch:
        return cls(
            [r for batch in polled.values() for r in batch],
            {tp: recs[0].offset for tp, recs in polled.items()},
            {tp: recs[-1].offset + 1 for tp, recs in polled.items()},
            epoch,
        )

    def settle(self) -> None:
        self.settled.set()
        if not self.done.is_done:
            self.done.success(None)

    def describe(self) -> str:
        spans = (f"{tp.topic}[{tp.partition}]@{o}..{self.next_offsets[tp] - 1}" for tp, o in self.first_offsets.items())
        return ", ".join(spans)


class Worker:
    """Runs until ``request_stop``; then lets the batches in flight finish, commits and closes."""

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
        self._decoder = DecoderProcess() if config.decoder_processes else InlineDecoder()
        self._decoding: _Batch | None = None  # submitted to the decoder
        self._unsettled: deque[_Batch] = deque()  # emitted, in order, not yet accounted for
        self._tail: _Batch | None = None  # the last batch emitted
        self._last_with_results: _Batch | None = None  # the last batch that sent anything
        self._chain_lock = threading.Lock()
        self._commit_ready = threading.Condition()
        self._commit_lock = threading.Lock()  # one commit at a time (_commit_acknowledged)
        self._commit_stop = False
        self._commit_now = False
        self._committer: threading.Thread | None = None
        self._awaiting_commit: list[_Batch] = []
        self._epoch = 0
        self._revocations: list[tuple[int, frozenset[TopicPartition]]] = []  # (epoch, partitions) per rebalance
        self._throttle = Throttle(TROUBLE_LOG_INTERVAL, clock)
        self._backoff = 0.0
        self._next_lag = 0.0
        # Waiting for acknowledgements lasts at most the producer's own delivery timeout, plus a margin.
        self._ack_timeout = config.producer_options().get("delivery_timeout_ms", 30_000) / 1000 + 5

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def consumer(self) -> KafkaConsumer:
        """The consumer, once connected (every method below but ``_connect`` runs after it)."""
        assert self._consumer is not None, "not connected"
        return self._consumer

    @property
    def producer(self) -> KafkaProducer:
        """The producer, once connected; after a failed batch, the one started for its retry."""
        assert self._producer is not None, "no producer"
        return self._producer

    def run(self) -> int:
        if isinstance(self._decoder, DecoderProcess):
            self._decoder.start()  # now, not with the first batch: starting takes a few hundred ms
        if not self._connect():
            return 0
        # Everything loaded so far (modules, the model, the Kafka clients) lives as long as the
        # worker: moved out of the collector's sight, a full collection stays short (latency).
        gc.collect()
        gc.freeze()
        try:
            while not self._stop.is_set():
                self.health.beat()
                if self.models.maybe_reload():
                    self.health.model_version = self.models.version
                polled = self._poll()
                batch = _Batch.of(polled, self._epoch) if polled else None
                self._step(batch)
                if batch is not None and len(batch.records) <= self.config.max_batch_size // 3:
                    self._step(None)  # well caught up: finished now, not behind the next poll (see _step)
                if not polled and self._decoding is None:
                    self._wait_settled(self._tail)
                    if self._pending:
                        self._commit_pending()
                else:
                    self._collect()
                self._update_lag()
        finally:
            self._close()
        return 0

    # -- Kafka clients -------------------------------------------------------------------------

    def _connect(self) -> bool:
        consumer_cfg, producer_cfg = client_configs(self.config)
        while not self._stop.is_set():
            try:
                if self._producer is None:
                    self._producer = KafkaProducer(**producer_cfg)
                    _learn_topics(self._producer, self.config)
                self._consumer = KafkaConsumer(**consumer_cfg)
                install_reader(self._consumer)
                install_handoff_shortcuts(self._consumer)
                self._consumer.subscribe([self.config.input_topic], listener=_Rebalance(self))
                _await_partitions(self._consumer, self.config.input_topic, METADATA_WAIT_MS)
                self._recovered()
                logger.info("connected to %s; consuming %s as group %s", self.config.bootstrap_servers,
                            self.config.input_topic, self.config.group_id)  # fmt: skip
                return True
            except KafkaError as exc:
                self._trouble("connect", f"cannot reach the broker at {self.config.bootstrap_servers}: {exc}")
        return False

    def _close(self) -> None:
        # Batches already emitted are finished; one still in the decoder is left to the next run.
        self._wait_settled(self._tail, rewind=False)
        if self._decoding is not None:
            if self._decoding.decoded is None:
                self._decoder.result()
            self._decoding = None
        self._decoder.close()
        self._stop_committer()
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

    # -- the pipeline --------------------------------------------------------------------------

    def _poll(self) -> dict:
        # With a batch in the decoder, only take what is already fetched: waiting for more would
        # hold that batch's alerts back.
        timeout = 0 if self._decoding is not None else self.config.poll_timeout_ms
        try:
            polled = self.consumer.poll(timeout_ms=timeout, max_records=self.config.max_batch_size)
        except KafkaError as exc:
            self._trouble("poll", f"poll failed: {exc}")
            return {}
        self.metrics.last_poll.set(time.time())
        return polled

    def _step(self, new: _Batch | None) -> None:
        """Hand the new batch to the decoder, take the previous one's rows back, then emit it.

        A batch is emitted on the next step, after the next poll, so that polling and decoding
        overlap; its alerts then also wait for that poll's record parsing, which takes longer than
        decoding. A poll of at most a third of max_batch_size means the worker has time to spare,
        and the loop takes that batch back at once (``_step(None)``). Not every short batch: a
        loop that waits for the decoder at each step handles fewer events a second, and at 21,000
        events/s it fell behind. p99 in 15-20 s runs of the benchmark's latency step (ms):

            finished at once          19,000/s: 40-72      21,000/s: 132-458
            pipelined                 19,000/s: 72-189     21,000/s: 57-191
            at most a third: at once  19,000/s: 65-107     21,000/s: 52-354 (median of 5: 85)

        The decoding stays in the decoder process even then: on this thread it kept the loop from
        polling, and the records queued behind it (p99 at 20,000 events/s: 270-630 ms).
        """
        prev, self._decoding = self._decoding, None
        if new is not None:
            # Submitted before ``prev`` is taken back, so the decoder has it while ``prev`` is
            # emitted and the next poll runs.
            new.scorer = self.models.scorer
            values = [r.value for r in new.records]
            self._decoder.submit(values, new.scorer.feature_names, self.config.max_message_bytes)
            self._decoding = new  # until emitted: a rewind before then drops it too
        if prev is not None and prev.decoded is None:
            prev.decoded = self._decoder.result()
        if prev is not None:
            self._emit(prev)

    def _handle(self, polled: dict) -> None:
        """One batch all the way through: sent, acknowledged, committed (used by tests)."""
        self._step(_Batch.of(polled, self._epoch))
        self._step(None)
        self._wait_settled(self._tail)

    def _emit(self, batch: _Batch) -> None:
        """Score ``batch`` and send its results; its offsets are committed once they are acknowledged."""
        if not self._collect(behind=batch):
            return
        revoked = self._revoked_since(batch.epoch)
        if revoked:
            batch = _without(batch, revoked)
            if not batch.records:
                return
        c, scorer, decoded, records = self.config, batch.scorer, batch.decoded, batch.records
        assert scorer is not None and decoded is not None, "emitted before it was decoded"
        outputs: list[tuple[str, bytes | None, bytes, list | None]] = []
        if decoded.index:
            t0 = time.perf_counter()
            scaled = scorer.scale(decoded.features)
            scores = scorer.score_scaled(scaled)
            self.metrics.scoring_seconds.observe(time.perf_counter() - t0)
            scored_at = int(time.time() * 1000)
            ids = decoded.transaction_ids
            hits = np.flatnonzero(scores >= scorer.threshold)
            # Event time, or the record's timestamp for an event without one: for every row when
            # every score is published, else only for the alerts.
            rows = range(len(scores)) if c.scores_topic else hits.tolist()
            times = {j: _event_time(decoded, records, j) for j in rows}
            batch.scores, batch.hits, batch.times = scores, hits, [times[j] for j in hits.tolist()]
            alerts = encode_results(scorer, hits, ids, times, scaled, scores, scored_at, c.reasons)
            outputs += [(c.alert_topic, ids[j].encode(), p, None) for j, p in zip(hits.tolist(), alerts, strict=True)]
            if c.scores_topic:
                payloads = encode_results(scorer, range(len(scores)), ids, times, scaled, scores, scored_at, c.reasons)
                for j, payload in enumerate(payloads):
                    r = records[decoded.index[j]]
                    source = source_headers(r.topic, r.partition, r.offset)
                    outputs.append((c.scores_topic, ids[j].encode(), payload, source))
        for i, err in decoded.errors:
            r = records[i]
            dlq = dlq_headers(err, r.topic, r.partition, r.offset)
            value = r.value
            if value is None and r.key is None:
                value = b""  # Kafka clients refuse a record with neither key nor value
                dlq.append(("value_null", b"true"))
            outputs.append((c.dlq_topic, r.key, value, dlq))
        if outputs:
            # Results wait until every earlier batch with results is committed: a crash repeats one batch at most.
            if not self._wait_settled(self._last_with_results, behind=batch):
                return
            self._last_with_results = batch
            batch.urgent = True
        with self._chain_lock:
            prev, self._tail = self._tail, batch
            waits_for_prev = prev is not None and not prev.acknowledged
            if prev is not None and waits_for_prev:
                prev.next = batch
        self._unsettled.append(batch)
        try:
            if outputs and self._producer is None:
                self._producer = KafkaProducer(**client_configs(self.config)[1])
            for topic, key, value, headers in outputs:
                future = self.producer.send(topic, key=key, value=value, headers=headers)
                with batch.lock:
                    batch.outstanding += 1
                future.add_callback(self._release, batch)
                future.add_errback(self._send_failed, batch)
        except KafkaError as exc:
            self._send_failed(batch, BrokerError(str(exc) or type(exc).__name__), release=False)
        self._release(batch)  # sending done
        if not waits_for_prev:
            self._release(batch, error=prev.error if prev is not None else None)

    def _send_failed(self, batch: _Batch, exc: BaseException, release: bool = True) -> None:
        with batch.lock:
            batch.error = batch.error or exc
        if release:
            self._release(batch)

    def _release(self, batch: _Batch, _result=None, error: BaseException | None = None) -> None:
        """One of ``batch``'s outstanding conditions is met (any thread)."""
        with batch.lock:
            if error is not None:
                batch.error = batch.error or error
            batch.outstanding -= 1
            last = batch.outstanding == 0
        if last:
            self._acknowledged(batch)

    def _acknowledged(self, batch: _Batch) -> None:
        """Every result of ``batch`` and of the batches before it is on the broker (or one failed)."""
        if batch.error is None:
            batch.acked_ms = time.time() * 1000
            self._account(batch)  # before the commit: the metrics never trail the committed offsets
            # Not needed any more, and it may wait a while for its commit: let its memory go now.
            batch.records, batch.decoded, batch.scores, batch.hits, batch.times = [], None, None, None, []
            revoked = self._revoked_since(batch.epoch)
        with self._chain_lock:
            # Its offsets become pending before it counts as acknowledged: a batch after it may
            # be acknowledged (on another thread) the moment it does, and must not be overtaken.
            if batch.error is None:
                with self._pending_lock:
                    for tp, o in batch.next_offsets.items():
                        if tp not in revoked:
                            self._pending[tp] = max(o, self._pending.get(tp, o))
            batch.acknowledged = True
            following, batch.next = batch.next, None
        if batch.error is None:
            self._request_commit(batch)
        else:
            batch.settle()
        if following is not None:
            behind = BrokerError(f"a batch before it was not acknowledged: {batch.error}") if batch.error else None
            self._release(following, error=behind)

    def _request_commit(self, batch: _Batch) -> None:
        with self._commit_ready:
            self._awaiting_commit.append(batch)
            self._commit_now = self._commit_now or batch.urgent
            if self._committer is None:
                self._committer = threading.Thread(target=self._commit_forever, name="fraud-committer", daemon=True)
                self._committer.start()
            self._commit_ready.notify()

    def _hurry_commit(self, batch: _Batch) -> None:
        """Someone waits for ``batch``: it is committed as soon as it is acknowledged."""
        with self._commit_ready:
            batch.urgent = True
            if batch.acknowledged:  # its commit may be waiting for the interval already
                self._commit_now = True
                self._commit_ready.notify()

    def _commit_forever(self) -> None:
        """The committer thread: commits everything acknowledged so far, one commit at a time, in order.

        A thread of its own, so neither the loop nor kafka-python's IO threads wait for the broker's
        answer; ``KafkaConsumer.commit`` may be called from any thread but the consumer's IO thread.
        """
        last = float("-inf")  # the first commit goes out at once
        while True:
            with self._commit_ready:
                while True:
                    if not self._awaiting_commit:
                        if self._commit_stop:
                            return
                        self._commit_ready.wait()
                        continue
                    due = last + COMMIT_INTERVAL - time.monotonic()
                    if self._commit_now or self._commit_stop or due <= 0:
                        break
                    self._commit_ready.wait(due)
                batches, self._awaiting_commit = self._awaiting_commit, []
                self._commit_now = False
            last = time.monotonic()
            # Nothing pending: already committed with an earlier batch, or every partition revoked.
            # A failed commit is retried by the loop, synchronously, with backoff (_collect).
            _, error = self._commit_acknowledged()
            for b in batches:
                b.commit_ok = error is None
                b.settle()

    def _stop_committer(self) -> None:
        with self._commit_ready:
            self._commit_stop = True
            self._commit_ready.notify()
        if self._committer is not None:
            self._committer.join(timeout=COMMIT_TIMEOUT_MS / 1000 + 5)

    def _collect(self, behind: _Batch | None = None) -> bool:
        """Account for the settled batches at the front of the pipeline; False if one failed."""
        while self._unsettled and self._unsettled[0].settled.is_set():
            batch = self._unsettled.popleft()
            if batch.error is not None:
                self._fail(batch, batch.error, behind)
                return False
            self._recovered()
            if not batch.commit_ok:
                self._commit_pending()
        return True

    def _wait_settled(self, batch: _Batch | None, behind: _Batch | None = None, rewind: bool = True) -> bool:
        """Wait until ``batch`` and every batch before it is settled; False if one failed."""
        if batch is not None and not self._wait_for(batch):
            for b in self._unsettled:  # it and everything before it
                if not b.settled.is_set():
                    with b.lock:
                        b.error = b.error or KafkaTimeoutError("results not acknowledged in time")
                    b.settle()
        if rewind:
            return self._collect(behind)
        for b in self._unsettled:
            if b.error is not None:
                logger.warning("results of %s not acknowledged: %s", b.describe(), b.error)
                return False
        self._unsettled.clear()
        return True

    def _wait_for(self, batch: _Batch) -> bool:
        """Wait for ``batch`` to settle, at most the producer's delivery timeout; False if it did not.

        Alive while waiting (a restart would not bring the broker back), and a broker that has
        not answered for a while is counted and reported, once per interval.
        """
        if not batch.settled.is_set():
            self._hurry_commit(batch)
        waited = 0.0
        while not batch.settled.wait(min(ACK_REPORT_SECONDS, self._ack_timeout - waited)):
            waited += ACK_REPORT_SECONDS
            if waited >= self._ack_timeout:
                return False
            self.health.beat()
            self.metrics.broker_errors.labels(stage="produce").inc()
            if self._throttle.ready("ack"):
                logger.warning("results of %s not acknowledged after %.0fs; still waiting (reported once per %.0fs)",
                               batch.describe(), waited, TROUBLE_LOG_INTERVAL)  # fmt: skip
        return True

    def _fail(self, failed: _Batch, error: BaseException, behind: _Batch | None = None) -> None:
        """Rewind to the failed batch's first offsets, drop every batch behind it, back off."""
        batches = [failed, *self._unsettled]
        self._unsettled.clear()
        self._tail = self._last_with_results = None
        if behind is not None:
            batches.append(behind)
        if self._decoding is not None:
            batches.append(self._decoding)
            if self._decoding.decoded is None:
                self._decoder.result()  # keeps the decoder in step; the rows are not used
            self._decoding = None
        first: dict[TopicPartition, int] = {}
        for b in batches:
            for tp, o in b.first_offsets.items():
                first[tp] = min(o, first.get(tp, o))
        revoked = self._revoked_since(failed.epoch)
        for tp, o in first.items():
            if tp in revoked:
                continue  # no longer ours: its new owner starts from the last commit
            try:
                self.consumer.seek(tp, o)
            except (KafkaError, AssertionError):
                pass
        self._replace_producer(error)
        self._trouble("produce", f"batch not acknowledged, will retry it ({failed.describe()}): {error}")

    def _account(self, batch: _Batch) -> None:
        """The metrics of an acknowledged batch (any thread: the metric types take their own locks)."""
        m, decoded = self.metrics, batch.decoded
        assert decoded is not None, "accounted for before it was decoded"
        m.events_consumed.inc(len(batch.records))
        m.batch_size.observe(len(batch.records))
        if batch.scores is not None and len(batch.scores):
            m.events_scored.inc(len(batch.scores))
            m.observe_scores(batch.scores)
        if batch.hits is not None and len(batch.hits):
            m.alerts.inc(len(batch.hits))
            m.event_latency.observe_many((batch.acked_ms - np.asarray(batch.times, dtype=np.float64)) / 1000.0)
        if decoded.errors:
            m.count_invalid(err.reason for _, err in decoded.errors)
            if logger.isEnabledFor(logging.DEBUG):
                for i, err in decoded.errors:
                    r = batch.records[i]
                    logger.debug("dead-lettered %s[%s]@%s: %s", r.topic, r.partition, r.offset, err)

    def _revoke(self, partitions) -> None:
        """Rebalance listener: results of batches polled before now are not sent for these partitions."""
        self._epoch += 1
        self._revocations.append((self._epoch, frozenset(partitions)))
        del self._revocations[:-64]

    def _revoked_since(self, epoch: int) -> frozenset[TopicPartition]:
        if epoch >= self._epoch:
            return frozenset()
        return frozenset().union(*(p for e, p in list(self._revocations) if e > epoch))

    # -- commits, rebalances, trouble ----------------------------------------------------------

    def _commit_pending(self, retry: bool = True) -> None:
        """Commit the acknowledged offsets and wait for the broker's answer (retry and shutdown path)."""
        offsets, error = self._commit_acknowledged()
        if error is None:
            return
        if not isinstance(error, KafkaError):
            raise error
        # Kept: retried on the next pass or by the revocation listener; lost partitions drop them.
        if retry:
            self._trouble("commit", f"commit of {_describe_offsets(offsets)} failed: {error}")
        else:
            logger.warning("final commit of %s failed: %s", _describe_offsets(offsets), error)

    def _commit_acknowledged(self) -> tuple[dict[TopicPartition, OffsetAndMetadata], BaseException | None]:
        """Commit every acknowledged offset and wait for the answer: (offsets, error), ({}, None) if none.

        The committer thread's commits and the loop's own go through here, one at a time, each
        taking the offsets once it holds the lock: a commit never overtakes one further on, which
        answered in the other order would take the group's offsets back.
        """
        with self._commit_lock:
            offsets = self._pending_offsets()
            if not offsets:
                return offsets, None
            try:
                self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                self.metrics.committed(False)
                return offsets, exc
            self.metrics.committed(True)
            self._forget_committed(offsets)
            return offsets, None

    def _pending_offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        with self._pending_lock:
            return {tp: OffsetAndMetadata(o, "", -1) for tp, o in self._pending.items()}

    def _forget_committed(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Drop what was committed; a partition acknowledged further meanwhile stays pending."""
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
            assigned = list(self.consumer.assignment())
            # The broker's end offsets (one ListOffsets request), not the last fetch's highwater:
            # right even for a partition this worker has not fetched from yet.
            ends = self.consumer.end_offsets(assigned, timeout_ms=LAG_TIMEOUT_MS) if assigned else {}
            for tp in assigned:
                end = ends.get(tp)
                position = self.consumer.position(tp, timeout_ms=100)
                if end is not None and position is not None:
                    lag[tp.partition] = max(0, end - position)
        except KafkaError as exc:
            # No answer to a ListOffsets request: the one broker call made even while idle, so an
            # outage shows here when nothing is being produced or committed.
            self.metrics.broker_errors.labels(stage="lag").inc()
            if self._throttle.ready("lag"):
                logger.warning("lag query failed: %s (reported once per %.0fs)", exc, TROUBLE_LOG_INTERVAL)
            return
        except AssertionError:  # a partition revoked meanwhile
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
        w._revoke(revoked)
        batch = w._tail
        if batch is not None and not batch.done.is_done:
            # Results are on their way: let them be acknowledged and committed while these
            # partitions are still ours, or their new owner would score them again.
            w._hurry_commit(batch)
            await batch.done
        offsets = w._take_pending(revoked)
        if offsets:
            try:
                # The coroutine KafkaConsumer.commit() itself runs; commit() cannot be called from this loop.
                await w.consumer._coordinator._commit_offsets_sync_async(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
                w.metrics.committed(True)
                logger.info("committed %s on revocation", _describe_offsets(offsets))
            except Exception as exc:  # noqa: BLE001 - their records will be delivered again: at-least-once
                w.metrics.committed(False)
                logger.warning("commit on revocation of %s failed: %s", _describe_offsets(offsets), exc)
        self._forget(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        w = self.worker
        w.health.partitions = len(w.consumer.assignment())
        w.metrics.rebalances.inc()
        w.metrics.partitions_assigned.set(w.health.partitions)
        logger.info("assigned %s", sorted(tp.partition for tp in assigned) or "no partitions")

    async def on_partitions_lost(self, lost) -> None:
        logger.warning("group membership lost; dropping uncommitted offsets of %s", sorted(tp.partition for tp in lost))
        self.worker._revoke(lost)
        self.worker._take_pending(lost)
        self._forget(lost)

    def _forget(self, partitions) -> None:
        w = self.worker
        w.metrics.forget_partitions(tp.partition for tp in partitions)
        w.health.partitions = max(0, w.health.partitions - len(partitions))
        w.metrics.partitions_assigned.set(w.health.partitions)


def _without(batch: _Batch, partitions: frozenset[TopicPartition]) -> _Batch:
    """``batch`` less the records of ``partitions`` (revoked since it was polled)."""
    keep = [TopicPartition(r.topic, r.partition) not in partitions for r in batch.records]
    position = np.cumsum(keep) - 1  # new position of each kept record
    d = batch.decoded
    assert d is not None, "only a decoded batch loses records"
    rows = [j for j, i in enumerate(d.index) if keep[i]]
    decoded = DecodedBatch(
        d.features[rows],
        [d.transaction_ids[j] for j in rows],
        [d.event_times[j] for j in rows],
        [int(position[d.index[j]]) for j in rows],
        [(int(position[i]), e) for i, e in d.errors if keep[i]],
    )
    return _Batch(
        [r for r, k in zip(batch.records, keep, strict=True) if k],
        {tp: o for tp, o in batch.first_offsets.items() if tp not in partitions},
        {tp: o for tp, o in batch.next_offsets.items() if tp not in partitions},
        batch.epoch,
        batch.scorer,
        decoded,
    )


def _await_partitions(consumer: KafkaConsumer, topic: str, timeout_ms: int) -> None:
    """Wait until ``consumer`` knows ``topic``'s partitions, so its first poll's join assigns them.

    kafka-python joins the group on the first poll, whether or not the subscription's metadata has
    arrived. Before it has, the group's leader assigns nothing ("No partition metadata") and
    rejoins only once a later metadata update shows the partitions; twice in a row a worker in the
    tests then sat with no partitions until the next periodic refresh (5 minutes by default).
    ``KafkaConsumer.partitions_for_topic`` would wait without a bound and fetch every topic of the
    cluster: this asks for the subscribed topics alone and gives up after ``timeout_ms``.

    A refresh already in flight when subscribe() ran answers the update asked for without the
    topic; the loop then asks again. A topic that does not exist (yet) ends the wait at once:
    kafka-python keeps asking for it, and the group rebalances when it appears. Uses kafka-python
    internals (``_cluster``, ``_net``, ``_manager``), as worker/records.py does; hence the pin.
    """
    cluster = consumer._cluster
    deadline = time.monotonic() + timeout_ms / 1000
    while cluster.partitions_for_topic(topic) is None:
        left_ms = (deadline - time.monotonic()) * 1000
        if left_ms <= 0:
            logger.warning("no metadata for %s after %d ms; the group join goes ahead without it", topic, timeout_ms)
            return
        try:
            consumer._net.run(consumer._manager.wait_for, cluster.request_update(), left_ms)
        except KafkaTimeoutError:
            continue
        except KafkaError as exc:  # the topic does not exist (yet), or the broker did not answer
            logger.info("metadata for %s not fetched before joining the group: %s", topic, exc)
            return


def _learn_topics(producer: KafkaProducer, c: WorkerConfig) -> None:
    """Fetch the output topics' metadata now, on a side thread, not at the first alert.

    kafka-python's producer learns a topic's partitions at its first send to it, and the loop's
    thread waits meanwhile (about 90 ms for a second topic, here): the first alerts would queue
    the records behind them. A topic that does not exist (yet) is left to the first send, as before.
    """

    def learn() -> None:
        for topic in filter(None, (c.alert_topic, c.dlq_topic, c.scores_topic)):
            try:
                producer.partitions_for(topic)
            except Exception as exc:  # noqa: BLE001 - only a head start: the send reports real trouble
                logger.debug("metadata of %s not fetched ahead: %s", topic, exc)

    threading.Thread(target=learn, name="fraud-topic-metadata", daemon=True).start()


def _event_time(decoded: DecodedBatch, records: list, row: int) -> int:
    t = decoded.event_times[row]
    return t if t is not None else records[decoded.index[row]].timestamp


def _describe_offsets(offsets: dict) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{o.offset}" for tp, o in offsets.items())
