"""The pipeline: poll -> submit to the decoder -> take the rows back -> score -> emit -> commit.

Pipelined while there is a backlog, so that the loop's thread (where every record is parsed:
worker/kafka_compat/records.py) does little else:

    loop thread   poll N+1 ............ | submit N+1, take N's rows | score N, send its results | poll N+2
    decoder       decode N ...............| decode N+1 ...............................................
    IO threads    earlier batches' results acknowledged (acks.py) -> committer thread commits (committer.py)

With time to spare (a poll returns at most a third of max_batch_size records), a batch is
submitted, taken back and sent before the next poll: its alerts do not wait for that poll.

At-least-once: a batch's offsets are committed only after every alert, score and DLQ record
produced for it, and for every batch before it, has been acknowledged by the broker (acks.py;
what is committed when: committer.py). A batch's results are sent only once every earlier batch
with results is committed, so a crash repeats the results of at most one batch. If producing
fails, nothing from that batch on is committed: the consumer is rewound to its first offsets,
the batches behind it are dropped (they will be polled again) and it is retried after a backoff.
Offsets acknowledged but not committed are committed again on the next pass, on partition
revocation (rebalance.py) and on shutdown; partitions lost to a forced eviction are never committed.

The parts: batch.py (a polled batch), outputs.py (pure: scores -> records to send), acks.py,
committer.py, rebalance.py, clients.py (the Kafka clients), lag.py, trouble.py (backoff).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future as KafkaFuture

from worker.acks import AckChain
from worker.batch import Batch, describe_offsets, without
from worker.clients import KafkaClients
from worker.committer import COMMIT_TIMEOUT_MS, Committer, Offsets
from worker.config import WorkerConfig
from worker.decoder_process import DecoderProcess, InlineDecoder
from worker.health import HealthState
from worker.kafka_compat import KafkaCompat
from worker.lag import LagReporter
from worker.metrics import WorkerMetrics
from worker.models import ModelWatcher
from worker.outputs import Output, build_outputs
from worker.rebalance import RebalanceListener, Revocations
from worker.trouble import TROUBLE_LOG_INTERVAL, Trouble

logger = logging.getLogger(__name__)

ACK_REPORT_SECONDS = 5.0  # results unacknowledged this long count as a broker error


class Worker:
    """Runs until ``request_stop``; then lets the batches in flight finish, commits and closes."""

    def __init__(
        self,
        config: WorkerConfig,
        models: ModelWatcher,
        metrics: WorkerMetrics,
        health: HealthState,
        clients: KafkaClients | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config, self.models, self.metrics, self.health = config, models, metrics, health
        self.clients = clients or KafkaClients(config)
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self.compat = KafkaCompat()
        self.trouble = Trouble(metrics, health, self._stop, config.retry_backoff_max_seconds, clock)
        self.lag = LagReporter(metrics, self.trouble.throttle, clock)
        self.revocations = Revocations()
        self.committer = Committer(self._commit, metrics.committed)
        self.chain = AckChain(self.committer, self._account, self.revocations.since)
        self.listener = RebalanceListener(
            self.revocations, self.committer, lambda: self.chain.tail, self._commit_on_revocation,
            lambda: self.consumer.assignment(), health, metrics,
        )  # fmt: skip
        self._decoder = DecoderProcess() if config.decoder_processes else InlineDecoder()
        self._decoding: Batch | None = None  # submitted to the decoder
        self._unsettled: deque[Batch] = deque()  # emitted, in order, not yet accounted for
        self._last_with_results: Batch | None = None  # the last batch that sent anything
        # Waiting for acknowledgements lasts at most the producer's own delivery timeout, plus a margin.
        self._ack_timeout = config.producer_options().get("delivery_timeout_ms", 30_000) / 1000 + 5

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def consumer(self) -> KafkaConsumer:
        assert self._consumer is not None, "not connected"
        return self._consumer

    def run(self) -> int:
        if isinstance(self._decoder, DecoderProcess):
            self._decoder.start()  # now, not with the first batch: starting takes a few hundred ms
        if not self.connect():
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
                batch = Batch.of(polled, self.revocations.epoch) if polled else None
                self._step(batch)
                if batch is not None and len(batch.records) <= self.config.max_batch_size // 3:
                    self._step(None)  # well caught up: finished now, not behind the next poll (see _step)
                if not polled and self._decoding is None:
                    self._wait_settled(self.chain.tail)
                    if self.committer.has_pending:
                        self._commit_pending()
                else:
                    self._collect()
                self.lag.maybe_update(self.consumer)
        finally:
            self._close()
        return 0

    def process(self, polled: dict) -> bool:
        """One poll's records all the way through: sent, acknowledged, committed; False if that failed."""
        self._step(Batch.of(polled, self.revocations.epoch))
        self._step(None)
        return self._wait_settled(self.chain.tail)

    # -- connecting and closing ----------------------------------------------------------------

    def connect(self) -> bool:
        """Build the Kafka clients, retrying with backoff; False if stopped first."""
        while not self._stop.is_set():
            try:
                if self._producer is None:
                    self._producer = self.clients.producer()
                    self.clients.learn_topics(self._producer)
                self._consumer, self.compat = self.clients.consumer(self.listener)
                self.trouble.recovered()
                logger.info("connected to %s; consuming %s as group %s", self.config.bootstrap_servers,
                            self.config.input_topic, self.config.group_id)  # fmt: skip
                return True
            except KafkaError as exc:
                self.trouble.report("connect", f"cannot reach the broker at {self.config.bootstrap_servers}: {exc}")
        return False

    def _close(self) -> None:
        # Batches already emitted are finished; one still in the decoder is left to the next run.
        self._wait_settled(self.chain.tail, rewind=False)
        if self._decoding is not None:
            if self._decoding.decoded is None:
                self._decoder.result()
            self._decoding = None
        self._decoder.close()
        self.committer.stop()
        if self._consumer is not None:
            if self.committer.has_pending:
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
            self.trouble.report("poll", f"poll failed: {exc}")
            return {}
        self.metrics.last_poll.set(time.time())
        return polled

    def _step(self, new: Batch | None) -> None:
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

    def _emit(self, batch: Batch) -> None:
        """Score ``batch`` and send its results; its offsets are committed once they are acknowledged."""
        if not self._collect(behind=batch):
            return
        revoked = self.revocations.since(batch.epoch)
        if revoked:
            batch = without(batch, revoked)
            if not batch.records:
                return
        scorer, decoded = batch.scorer, batch.decoded
        assert scorer is not None and decoded is not None, "emitted before it was decoded"
        scaled = scores = None
        if decoded.index:
            t0 = time.perf_counter()
            scaled = scorer.scale(decoded.features)
            scores = scorer.score_scaled(scaled)
            self.metrics.scoring_seconds.observe(time.perf_counter() - t0)
        out = build_outputs(self.config, scorer, batch.records, decoded, scaled, scores, int(time.time() * 1000))
        batch.scores, batch.hits, batch.times = out.scores, out.hits, out.alert_times
        if out.records:
            # Results wait until every earlier batch with results is committed: a crash repeats one batch at most.
            if not self._wait_settled(self._last_with_results, behind=batch):
                return
            self._last_with_results = batch
            batch.urgent = True
        self._unsettled.append(batch)
        self.chain.emit(batch, self._send(out.records))

    def _send(self, records: list[Output]) -> Iterator[KafkaFuture]:
        if records and self._producer is None:
            self._producer = self.clients.producer()  # the retry of a failed batch (_replace_producer)
        for topic, key, value, headers in records:
            assert self._producer is not None
            yield self._producer.send(topic, key=key, value=value, headers=headers)

    def _account(self, batch: Batch) -> None:
        """The metrics of an acknowledged batch (any thread: the metric types take their own locks)."""
        decoded = batch.decoded
        assert decoded is not None, "accounted for before it was decoded"
        latency = None
        if batch.hits is not None and len(batch.hits):
            latency = (batch.acked_ms - np.asarray(batch.times, dtype=np.float64)) / 1000.0
        self.metrics.observe_batch(len(batch.records), batch.scores, latency, [e.reason for _, e in decoded.errors])
        if decoded.errors and logger.isEnabledFor(logging.DEBUG):
            for i, err in decoded.errors:
                r = batch.records[i]
                logger.debug("dead-lettered %s[%s]@%s: %s", r.topic, r.partition, r.offset, err)

    # -- waiting, failing, committing ----------------------------------------------------------

    def _collect(self, behind: Batch | None = None) -> bool:
        """Account for the settled batches at the front of the pipeline; False if one failed."""
        while self._unsettled and self._unsettled[0].settled.is_set():
            batch = self._unsettled.popleft()
            if batch.error is not None:
                self._fail(batch, batch.error, behind)
                return False
            self.trouble.recovered()
            if not batch.commit_ok:
                self._commit_pending()
        return True

    def _wait_settled(self, batch: Batch | None, behind: Batch | None = None, rewind: bool = True) -> bool:
        """Wait until ``batch`` and every batch before it is settled; False if one failed."""
        if batch is not None and not self._wait_for(batch):
            for b in self._unsettled:  # it and everything before it
                if not b.settled.is_set():
                    b.fail(KafkaTimeoutError("results not acknowledged in time"))
                    b.settle()
        if rewind:
            return self._collect(behind)
        for b in self._unsettled:
            if b.error is not None:
                logger.warning("results of %s not acknowledged: %s", b.describe(), b.error)
                return False
        self._unsettled.clear()
        return True

    def _wait_for(self, batch: Batch) -> bool:
        """Wait for ``batch`` to settle, at most the producer's delivery timeout; False if it did not.

        Alive while waiting (a restart would not bring the broker back), and a broker that has
        not answered for a while is counted and reported, once per interval.
        """
        if not batch.settled.is_set():
            self.committer.hurry(batch)
        waited = 0.0
        while not batch.settled.wait(min(ACK_REPORT_SECONDS, self._ack_timeout - waited)):
            waited += ACK_REPORT_SECONDS
            if waited >= self._ack_timeout:
                return False
            self.health.beat()
            self.metrics.broker_errors.labels(stage="produce").inc()
            if self.trouble.throttle.ready("ack"):
                logger.warning("results of %s not acknowledged after %.0fs; still waiting (reported once per %.0fs)",
                               batch.describe(), waited, TROUBLE_LOG_INTERVAL)  # fmt: skip
        return True

    def _fail(self, failed: Batch, error: BaseException, behind: Batch | None = None) -> None:
        """Rewind to the failed batch's first offsets, drop every batch behind it, back off."""
        batches = [failed, *self._unsettled]
        self._unsettled.clear()
        self.chain.reset()
        self._last_with_results = None
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
        revoked = self.revocations.since(failed.epoch)
        for tp, o in first.items():
            if tp in revoked:
                continue  # no longer ours: its new owner starts from the last commit
            try:
                self.consumer.seek(tp, o)
            except (KafkaError, AssertionError):
                pass
        self._replace_producer(error)
        self.trouble.report("produce", f"batch not acknowledged, will retry it ({failed.describe()}): {error}")

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
        if self.trouble.throttle.ready("producer"):
            logger.info("starting a new producer for the retry (the last one failed: %s)", error)
        try:
            old.close(timeout=0)
        except Exception as exc:  # noqa: BLE001 - it is being discarded anyway
            logger.debug("closing the failed producer: %s", exc)

    def _commit(self, offsets: Offsets) -> None:
        self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)

    async def _commit_on_revocation(self, offsets: Offsets) -> None:
        await self.compat.commit_on_revocation(self.consumer, offsets, COMMIT_TIMEOUT_MS)

    def _commit_pending(self, retry: bool = True) -> None:
        """Commit the acknowledged offsets and wait for the broker's answer (retry and shutdown path)."""
        offsets, error = self.committer.commit_pending()
        if error is None:
            return
        if not isinstance(error, KafkaError):
            raise error
        # Kept: retried on the next pass or by the revocation listener; lost partitions drop them.
        if retry:
            self.trouble.report("commit", f"commit of {describe_offsets(offsets)} failed: {error}")
        else:
            logger.warning("final commit of %s failed: %s", describe_offsets(offsets), error)
