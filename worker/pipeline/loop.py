"""The pipeline: poll -> submit to the decoder -> take the rows back -> score -> emit -> commit.

Pipelined while there is a backlog, so that the loop's thread (where every record is parsed:
worker/kafka_compat/records.py) does little else:

    loop thread   poll N+1 ............ | submit N+1, take N's rows | score N, send its results | poll N+2
    decoder       decode N ...............| decode N+1 ...............................................
    IO threads    earlier batches' results acknowledged (acks.py) -> committer thread commits (committer.py)

With time to spare (a poll of at most a third of max_batch_size), a batch is sent before the next poll.

At-least-once (docs/design.md, "Delivery semantics"): a batch's offsets are committed only after
every result of it and of every batch before it is acknowledged (acks.py; what is committed when:
committer.py). A batch's results are sent only once every earlier batch with results is
committed, so a crash repeats the results of at most one batch. If producing fails, the consumer
is rewound to the failed batch's first offsets, the batches behind it are dropped (they will be
polled again) and it is retried after a backoff.

Exactly-once (``processing_guarantee``; docs/design.md, "Delivery semantics"): the same pipeline
up to the outputs, which go into the open Kafka transaction with the batch's offsets
(transactions.py) instead of through acks.py and committer.py; the transaction commits every
``commit_interval_ms`` on a thread of its own, and a failed one is rewound like a failed batch.

The parts: batch.py (a polled batch), outputs.py (pure: scores -> records to send), acks.py,
committer.py, transactions.py, inflight.py, rebalance.py, clients.py (the Kafka clients), lag.py,
trouble.py.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import FencedInstanceIdError, KafkaError
from kafka.future import Future as KafkaFuture

from worker.core.errors import AccessError
from worker.core.outputs import Output, build_outputs, truncated_count
from worker.core.scoring import OUT_OF_RANGE_SCORE
from worker.delivery.acks import AckChain
from worker.delivery.batch import Batch, describe_offsets, first_offsets, without
from worker.delivery.committer import COMMIT_TIMEOUT_MS, Committer, Offsets
from worker.delivery.inflight import InFlight
from worker.delivery.rebalance import RebalanceListener, Restarts, Revocations
from worker.delivery.transactions import PartitionsLost, Transaction
from worker.edges import access
from worker.edges.clients import KafkaClients
from worker.edges.config import WorkerConfig
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics
from worker.edges.trouble import Trouble
from worker.kafka_compat import KafkaCompat
from worker.models.watcher import ModelWatcher
from worker.pipeline.decoder_process import DecoderProcess, InlineDecoder
from worker.pipeline.lag import LagReporter
from worker.pipeline.shadow import ChallengerWatcher, shadow_outputs

logger = logging.getLogger(__name__)


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
        shadow: ChallengerWatcher | None = None,
    ) -> None:
        self.config, self.models, self.metrics, self.health = config, models, metrics, health
        self.shadow = shadow or ChallengerWatcher(
            config.models_dir, metrics, config.reload_interval_seconds, trusted_keys=models.trusted_keys,
            min_version=models.min_version,
        )
        self.clients = clients or KafkaClients(config)
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self.compat = KafkaCompat()
        self.trouble = Trouble(metrics, health, self._stop, config.retry_backoff_max_seconds, clock)
        self.lag = LagReporter(metrics, self.trouble.throttle, clock)
        self.revocations = Revocations()
        self.restarts = Restarts()
        self.committer = Committer(self._commit, metrics.committed, config.commit_interval)
        self.chain = AckChain(self.committer, self._account, self.revocations.since)
        # Exactly-once: the open transaction (worker/delivery/transactions.py); None at-least-once.
        self.transaction = Transaction(config.commit_interval, self.restarts.committed) if config.exactly_once else None
        self._rejoin = False  # fenced: rejoin the group with new clients
        self._reposition = False  # a transaction failed: start over from the committed offsets
        self.exit_code = 0  # 1 once another instance took this one's group_instance_id
        self._access_checked = False  # the topics' ACLs, asked once before the first poll
        self.listener = RebalanceListener(
            self.revocations, self.committer, lambda: self.chain.tail, self._commit_on_revocation,
            lambda: self.consumer.assignment(), health, metrics, self.restarts, lambda tp, o: self.consumer.seek(tp, o),
            self._end_transaction if self.transaction is not None else None,
        )  # fmt: skip
        self._decoder = DecoderProcess() if config.decoder_processes else InlineDecoder()
        self._decoding: Batch | None = None  # submitted to the decoder
        # Waiting for acknowledgements lasts at most the producer's own delivery timeout, plus a margin.
        ack_timeout = config.producer_options().get("delivery_timeout_ms", 30_000) / 1000 + 5
        self.in_flight = InFlight(self.committer, health, metrics, self.trouble, ack_timeout)
        self._ack_timeout = ack_timeout

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def consumer(self) -> KafkaConsumer:
        assert self._consumer is not None, "not connected"
        return self._consumer

    def run(self) -> int:
        if isinstance(self._decoder, DecoderProcess):
            self._decoder.start()  # now, not with the first batch: starting takes a few hundred ms
        try:
            connected = self.connect()
        except AccessError:
            self._decoder.close()
            raise
        if not connected:
            self._decoder.close()
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
                self.shadow.maybe_reload(self.models.scorer)
                if self._rejoin and not self._rejoin_group():
                    break
                if self._reposition and not self._reposition_at_committed():
                    continue
                polled = self._poll()
                batch = self._polled(polled) if polled else None
                self._step(batch)
                if batch is not None and len(batch.records) <= self.config.max_batch_size // 3:
                    self._step(None)  # well caught up: finished now, not behind the next poll (see _step)
                if self.transaction is not None:
                    self._drive_transaction(idle=not polled and self._decoding is None)
                if not polled and self._decoding is None:
                    self._wait_settled(self.chain.tail)
                    if self.committer.has_pending:
                        self._commit_pending()
                else:
                    self._collect()
                self.lag.maybe_update(self.consumer)
        finally:
            self._close()
        return self.exit_code

    def process(self, polled: dict) -> bool:
        """One poll's records all the way through: sent, acknowledged, committed; False if that failed."""
        self._step(self._polled(polled))
        self._step(None)
        if self.transaction is not None:
            if self.transaction.is_open and self._producer is not None:
                self.transaction.start_commit(self._producer)
            return self._finish_transaction()
        return self._wait_settled(self.chain.tail)

    # -- connecting and closing ----------------------------------------------------------------

    def connect(self) -> bool:
        """Build the Kafka clients, retrying with backoff; False if stopped first.

        Raises AccessError when the cluster refuses this worker (a wrong password, an untrusted
        certificate, a plaintext client at a TLS listener, no ACL to read the input topic or its
        group, or to use its transactional id): retrying would meet the same refusal. A missing
        write ACL on an output topic is logged and left to the retries: its batches wait,
        uncommitted, until it is granted.
        """
        while not self._stop.is_set():
            try:
                if not self._access_checked:
                    self._check_access()
                if self._producer is None:
                    self._producer = self.clients.producer()
                    self.clients.learn_topics(self._producer)
                self._consumer, self.compat = self.clients.consumer(self.listener)
                self.trouble.recovered()
                logger.info("connected to %s; consuming %s as group %s", self.config.bootstrap_servers,
                            self.config.input_topic, self.config.group_id)  # fmt: skip
                return True
            except KafkaError as exc:
                problem = self.clients.diagnose(exc)
                if problem is not None:
                    raise AccessError(problem) from None
                self.trouble.report("connect", f"cannot reach the broker at {self.config.bootstrap_servers}: {exc}")
        return False

    def _check_access(self) -> None:
        cannot_read, cannot_write = self.clients.check_access()
        if cannot_read:
            raise AccessError("; ".join(cannot_read))
        for line in cannot_write:
            logger.warning("%s: its records are retried, and nothing is committed, until the ACL is granted", line)
        self._access_checked = True

    def _close(self) -> None:
        # Batches already emitted are finished; one still in the decoder is left to the next run.
        self._wait_settled(self.chain.tail, rewind=False)
        if self.transaction is not None:
            if self.transaction.is_open and self._producer is not None:
                self.transaction.start_commit(self._producer)
            self._finish_transaction(rewind=False)
        self._drop_decoding()
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
        if self.transaction is not None and self.transaction.is_open:
            timeout = min(timeout, int(self.transaction.remaining() * 1000))  # it commits on time
        try:
            polled = self.consumer.poll(timeout_ms=timeout, max_records=self.config.max_batch_size)
        except KafkaError as exc:
            problem = access.refusal(exc, self.config.group_id)
            if problem is not None:  # the group's or the input topic's ACL (revoked meanwhile)
                raise AccessError(problem) from None
            if not self._replaced(exc):
                self.trouble.report("poll", f"poll failed: {exc}")
            return {}
        self.metrics.last_poll.set(time.time())
        return polled

    def _polled(self, polled: dict) -> Batch:
        batch = Batch.of(polled, self.revocations.epoch)
        self.restarts.polled(batch.first_offsets)
        return batch

    def _step(self, new: Batch | None) -> None:
        """Hand the new batch to the decoder, take the previous one's rows back, then emit it.

        A batch is emitted on the next step, after the next poll, so that polling and decoding
        overlap. A poll of at most a third of max_batch_size means the worker has time to spare,
        and the loop takes that batch back at once (``_step(None)``); decoding stays in the
        decoder process even then. The latencies behind both choices: benchmarks/README.md.
        """
        prev, self._decoding = self._decoding, None
        if new is not None:
            # Submitted before ``prev`` is taken back, so the decoder has it while ``prev`` is
            # emitted and the next poll runs.
            new.scorer = self.models.scorer
            new.challenger = self.shadow.for_champion(new.scorer)
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
        # Rows beyond the model's range become out_of_range errors: dead-lettered and counted like the decoder's.
        decoded = batch.decoded = scorer.admit(decoded)
        scaled = scores = None
        if decoded.index:
            t0 = time.perf_counter()
            scored = scorer.score_batch(decoded.features)
            scaled, scores = scored.scaled, scored.scores
            self.metrics.scoring_seconds.observe(time.perf_counter() - t0)
            self.metrics.observe_guards(scored.clipped_training, scored.clipped_scaled, scored.out_of_range)
            if scored.out_of_range:
                logger.error("model %s gave %d outputs that are not probabilities (NaN or inf): each published as "
                             "score %g, an alert", scorer.version, scored.out_of_range, OUT_OF_RANGE_SCORE)  # fmt: skip
        scored_at = int(time.time() * 1000)
        out = build_outputs(self.config, scorer, batch.records, decoded, scaled, scores, scored_at)
        batch.scores, batch.hits, batch.times = out.scores, out.hits, out.alert_times
        if batch.challenger is not None and out.hits is not None:
            c = self.config
            shadow, batch.shadow = shadow_outputs(c.shadow_topic, batch.challenger, batch.records, decoded, out.hits,
                                                  scored_at, c.reasons, c.scores_include_features)  # fmt: skip
            out.records += shadow
        if self.transaction is not None:
            self._emit_in_transaction(batch, out.records)
            return
        if out.records:
            # Results wait until every earlier batch with results is committed: a crash repeats one batch at most.
            if not self._wait_settled(self.in_flight.last_with_results, behind=batch):
                return
            self.in_flight.last_with_results = batch
            batch.urgent = True
        self.in_flight.append(batch)
        self.chain.emit(batch, self._send(out.records))

    def _send(self, records: list[Output]) -> Iterator[KafkaFuture]:
        if records and self._producer is None:
            self._producer = self.clients.producer()  # the retry of a failed batch (clients.discard)
        if records:
            assert self._producer is not None
            yield from self.compat.send_all(self._producer, records)

    # -- exactly-once (worker/delivery/transactions.py) --------------------------------------------------

    def _emit_in_transaction(self, batch: Batch, records: list[Output]) -> None:
        """Send ``batch``'s results in the open transaction (begun if none is); commit it when due."""
        txn = self.transaction
        assert txn is not None
        if txn.ending and not self._finish_transaction():
            return  # the transaction before it failed: this batch is polled again
        try:
            if self._producer is None:
                self._producer = self.clients.producer()  # after a failure (or fencing): a new one
            txn.begin(self._producer)
            for future in self.compat.send_all(self._producer, records):
                txn.sent(future)
        except KafkaError as exc:
            if txn.is_open:
                self.metrics.transactions.labels(outcome="aborted").inc()
            self._restart_transactions([*txn.drop(), batch], exc)
            return
        txn.add(batch, self.consumer.group_metadata())
        if txn.due():
            txn.start_commit(self._producer)

    def _drive_transaction(self, idle: bool) -> None:
        """Between polls: take an ended commit's outcome; start the open transaction's commit when due.

        An idle stream commits at once: nothing would join the transaction, and its alerts wait.
        """
        txn = self.transaction
        assert txn is not None
        if txn.ended():
            self._finish_transaction()
        if txn.is_open and not txn.ending and (idle or txn.due()) and self._producer is not None:
            txn.start_commit(self._producer)
        if idle and txn.ending:
            self._finish_transaction()

    def _finish_transaction(self, rewind: bool = True) -> bool:
        """Wait for the commit in progress and take its outcome; False if it failed (then restarted)."""
        txn = self.transaction
        assert txn is not None
        ended = txn.wait(self._ack_timeout, self.health.beat)
        if ended is None:
            return True
        if ended.error is None:
            for b in ended.batches:
                b.acked_ms = ended.finished_ms
                self._account(b)
                b.records, b.decoded, b.scores, b.hits, b.times = [], None, None, None, []
                b.settle()
            self.metrics.transactions.labels(outcome="committed").inc()
            self.metrics.transaction_seconds.observe(ended.seconds)
            self.metrics.committed(True)
            self.trouble.recovered()
            return True
        self.metrics.transactions.labels(outcome="aborted").inc()
        self.metrics.committed(False)
        if self._replaced(ended.error):
            self._drop_producer(ended.error)
            return False
        if isinstance(ended.error, PartitionsLost) or ended.fenced:
            # Not ours any more: nothing of it may become visible. A new producer (same
            # transactional id) aborts it for good; the partitions' next owner scores the records.
            # Whatever was polled meanwhile is polled again, from the committed offsets.
            logger.warning("transaction of %s aborted: %s; %s", ended.describe(), ended.error,
                           "rejoining the group" if ended.fenced else "their next owner scores them")  # fmt: skip
            self._drop_producer(ended.error)
            self._drop_decoding()
            if ended.fenced:
                self._rejoin = True
            else:
                self._reposition = True
            return False
        if not rewind:
            logger.warning("final transaction of %s not committed: %s", ended.describe(), ended.error)
            return False
        self._restart_transactions(ended.batches, ended.error)
        return False

    def _restart_transactions(self, batches: list[Batch], error: BaseException) -> None:
        """After a failed transaction: a new producer, then on from the group's committed offsets.

        Not from the batches' own first offsets: a commit that timed out may still have gone
        through. The new producer's ``init_transactions`` first ends what its predecessor left
        (aborted, or committed if that commit got through), and the committed offsets are then
        read stable (read_committed), so they say exactly what became visible.
        """
        self._drop_decoding()
        self._drop_producer(error)
        self._reposition = True
        self.trouble.report("produce", f"transaction not committed, will retry from the committed offsets "
                                       f"({batches[0].describe()}): {error}")  # fmt: skip

    def _reposition_at_committed(self) -> bool:
        """Seek every assigned partition to its committed offset (exactly-once, after a failure)."""
        try:
            if self._producer is None:
                self._producer = self.clients.producer()
            for tp in self.consumer.assignment():
                offset = self.consumer.committed(tp, timeout_ms=COMMIT_TIMEOUT_MS)
                if offset is None:
                    self.consumer.seek_to_beginning(tp)  # nothing committed yet (auto_offset_reset)
                else:
                    self.consumer.seek(tp, offset)
        except KafkaError as exc:
            if not self._replaced(exc):
                self.trouble.report("produce", f"cannot restart transactions yet: {exc}")
            return False
        self._reposition = False
        return True

    def _end_transaction(self, why: str) -> None:
        """The rebalance listener's hook: commit the open transaction before partitions go, or give it up."""
        txn = self.transaction
        assert txn is not None
        if why == "revoked" and self._producer is not None:
            txn.commit_now(self._producer)
        else:
            txn.give_up()

    def _replaced(self, error: BaseException) -> bool:
        """Another instance joined with this one's group_instance_id: this one stops, exit status 1.

        Rejoining would fence the other in turn, and both would score every event.
        """
        if not isinstance(error, FencedInstanceIdError):
            return False
        if not self._stop.is_set():
            logger.error("another worker joined group %s as group_instance_id %r, so this one stops: each "
                         "instance needs its own id (%s)", self.config.group_id, self.config.group_instance_id,
                         error)  # fmt: skip
        self.exit_code = 1
        self._stop.set()
        return True

    def _rejoin_group(self) -> bool:
        """Fenced: leave with the consumer and start over from the group's committed offsets."""
        self._rejoin = False
        self._drop_decoding()
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:  # noqa: BLE001 - replaced anyway
                logger.debug("closing the fenced consumer: %s", exc)
            self._consumer = None
        return self.connect()

    def _drop_producer(self, error: object) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            self.clients.discard(old, error, self.trouble.throttle)

    def _drop_decoding(self) -> Batch | None:
        dropped, self._decoding = self._decoding, None
        if dropped is not None and dropped.decoded is None:
            self._decoder.result()  # keeps the decoder in step; the rows are not used
        return dropped

    def _account(self, batch: Batch) -> None:
        """The metrics of an acknowledged batch (any thread: the metric types take their own locks)."""
        decoded = batch.decoded
        assert decoded is not None, "accounted for before it was decoded"
        latency = None
        if batch.hits is not None and len(batch.hits):
            latency = (batch.acked_ms - np.asarray(batch.times, dtype=np.float64)) / 1000.0
        self.metrics.observe_batch(len(batch.records), batch.scores, latency, [e.reason for _, e in decoded.errors])
        if decoded.errors:
            truncated = truncated_count(self.config, batch.records, decoded)
            if truncated:
                self.metrics.dlq_truncated.inc(truncated)
        if batch.shadow is not None:
            self.metrics.observe_shadow(batch.shadow.scored, batch.shadow.alerts, batch.shadow.agreement)
        if decoded.errors and logger.isEnabledFor(logging.DEBUG):
            for i, err in decoded.errors:
                r = batch.records[i]
                logger.debug("dead-lettered %s[%s]@%s: %s", r.topic, r.partition, r.offset, err)

    # -- waiting, failing, committing ----------------------------------------------------------

    def _collect(self, behind: Batch | None = None) -> bool:
        """Account for the settled batches at the front of the pipeline; False if one failed."""
        for batch in self.in_flight.settled():
            if batch.error is not None:
                self._fail(batch, batch.error, behind)
                return False
            self.trouble.recovered()
            if not batch.commit_ok:
                self._commit_pending()
        return True

    def _wait_settled(self, batch: Batch | None, behind: Batch | None = None, rewind: bool = True) -> bool:
        """Wait until ``batch`` and every batch before it is settled; False if one failed."""
        if batch is not None:
            self.in_flight.wait(batch)
        return self._collect(behind) if rewind else self.in_flight.finish()

    def _fail(self, failed: Batch, error: BaseException, behind: Batch | None = None) -> None:
        """Rewind to the failed batch's first offsets, drop every batch behind it, back off."""
        batches = [failed, *self.in_flight.take_all()]
        self.chain.reset()
        if behind is not None:
            batches.append(behind)
        self._rewind(batches, error)

    def _rewind(self, batches: list[Batch], error: BaseException) -> None:
        """Seek back to the first offsets of ``batches`` and the one in the decoder, new producer, back off."""
        failed = batches[0]
        decoding = self._drop_decoding()
        if decoding is not None:
            batches.append(decoding)
        revoked = self.revocations.since(failed.epoch)
        for tp, o in first_offsets(batches).items():
            if tp in revoked:
                continue  # no longer ours: its new owner starts from the last commit
            try:
                self.consumer.seek(tp, o)
            except (KafkaError, AssertionError):
                pass
        self._drop_producer(error)
        self.trouble.report("produce", f"batch not acknowledged, will retry it ({failed.describe()}): {error}")

    def _commit(self, offsets: Offsets) -> None:
        self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        self.restarts.committed(offsets)

    async def _commit_on_revocation(self, offsets: Offsets) -> None:
        await self.compat.commit_on_revocation(self.consumer, offsets, COMMIT_TIMEOUT_MS)
        self.restarts.committed(offsets)

    def _commit_pending(self, retry: bool = True) -> None:
        """Commit the acknowledged offsets and wait for the broker's answer (retry and shutdown path)."""
        offsets, error = self.committer.commit_pending()
        if error is None:
            return
        if not isinstance(error, KafkaError):
            raise error
        if self._replaced(error):
            return
        # Kept: retried on the next pass or by the revocation listener; lost partitions drop them.
        if retry:
            self.trouble.report("commit", f"commit of {describe_offsets(offsets)} failed: {error}")
        else:
            logger.warning("final commit of %s failed: %s", describe_offsets(offsets), error)
