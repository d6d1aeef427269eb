"""The pipeline: poll -> submit to the decoder -> take the rows back -> score -> hand to the delivery guarantee.

Pipelined while there is a backlog, so that the loop's thread (where every record is parsed:
worker/kafka_compat/records.py) does little else:

    loop thread   poll N+1 ............ | submit N+1, take N's rows | score N, hand it over | poll N+2
    decoder       decode N ...............| decode N+1 ...............................................
    delivery      earlier batches' results acknowledged and their offsets committed (worker/delivery/)

With time to spare (a poll of at most a third of max_batch_size), a batch is handed over before
the next poll.

How results reach Kafka and offsets are committed is the delivery guarantee's job
(worker/delivery/guarantee.py: ``AtLeastOnce`` or ``ExactlyOnce``, chosen once from
``processing_guarantee``; docs/delivery.md). Each of its hooks answers what the loop does next
(``Next``): go on; or drop the batch still in the decoder, to be polled again, and before the next
poll reposition at the committed offsets or rejoin the group. The loop never asks which guarantee
it runs. The other parts: decoder_process.py, worker/core/ (scoring, the records to send),
shadow.py, worker/edges/clients.py (the Kafka clients), lag.py, worker/edges/trouble.py.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from kafka import KafkaConsumer
from kafka.errors import KafkaError

from worker.core.batch_decisions import Judge
from worker.core.batch_scoring import score_decoded
from worker.core.decisions import decision_counts
from worker.core.decode import DecodedBatch
from worker.core.errors import AccessError
from worker.core.features import FeatureSpec
from worker.core.outputs import Output, build_outputs, truncated_count
from worker.core.score_context import ScoreContext
from worker.core.scoring import OUT_OF_RANGE_SCORE
from worker.delivery import Next, Shared, guarantee_for
from worker.delivery.batch import Batch, without
from worker.delivery.consumer import ConsumerSlot
from worker.delivery.producer import ProducerSlot
from worker.delivery.rebalance import RebalanceListener, Restarts, Revocations
from worker.edges import access
from worker.edges.clients import KafkaClients, client_configs
from worker.edges.config import WorkerConfig, client_options
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics
from worker.edges.trouble import Trouble
from worker.models.challenger import ChallengerWatcher
from worker.models.rules import RulesWatcher
from worker.models.watcher import ModelWatcher
from worker.pipeline.decoder_process import DecoderProcess, InlineDecoder
from worker.pipeline.lag import LagReporter
from worker.pipeline.repartition import Repartition
from worker.pipeline.shadow import shadow_outputs
from worker.state.changelog import Changelog
from worker.state.feature_state import FeatureState
from worker.state.risk_table import RiskTable

logger = logging.getLogger(__name__)
SIZES_EVERY_S = 5.0  # how often the feature state's size per partition is measured for the metrics


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
        rules: RulesWatcher | None = None,
        shadow_rules: RulesWatcher | None = None,
    ) -> None:
        self.config, self.models, self.metrics, self.health = config, models, metrics, health
        # The rule sets (docs/rules.md): the one deciding (models/RULES) and one in shadow (models/RULES_SHADOW).
        self.rules = rules or RulesWatcher(config.models_dir, config.lists_directory, metrics,
                                           config.reload_interval_seconds, models.trusted_keys, "serving",
                                           not config.rules_interpreted)  # fmt: skip
        self.shadow_rules = shadow_rules or RulesWatcher(config.models_dir, config.lists_directory, metrics,
                                                         config.reload_interval_seconds, models.trusted_keys,
                                                         "shadow", not config.rules_interpreted)  # fmt: skip
        self.judge = Judge()
        self.shadow = shadow or ChallengerWatcher(
            config.models_dir, metrics, config.reload_interval_seconds, trusted_keys=models.trusted_keys,
            min_version=models.min_version,
        )
        self.clients = clients or KafkaClients(config)
        self._stop = threading.Event()
        self.trouble = Trouble(metrics, health, self._stop, config.retry_backoff_max_seconds, clock,
                               group=(config.group_id, config.group_instance_id))  # fmt: skip
        self.lag = LagReporter(metrics, self.trouble.throttle, clock)
        self.source = ConsumerSlot()  # connected by ``connect``
        self.producer = ProducerSlot(self.clients, self.trouble.throttle)
        self.revocations, self.restarts = Revocations(), Restarts()
        shared = Shared(self.source, self.producer, self.revocations, self.restarts, self.trouble, metrics, health)
        self.delivery = guarantee_for(config, shared, self._account)  # the one place the guarantee is chosen
        self.committer, self.chain = self.delivery.committer, self.delivery.chain  # at-least-once's, else None
        self.listener = RebalanceListener(self.source, self.delivery, self.restarts, health, metrics)
        self._then = Next.GO_ON  # REPOSITION or REJOIN: done before the next poll
        self._access_checked = False  # the topics' ACLs, asked once before the first poll
        self._decoder = DecoderProcess() if config.decoder_processes else InlineDecoder()
        self._decoding: Batch | None = None  # submitted to the decoder
        # Behavioural features' state (worker/state/), flushed before every commit of input offsets.
        self.feature_state = FeatureState(config.feature_state_dir, config.feature_cache_entities,
                                          self._changelog(config), self._partitions_of)  # fmt: skip
        self.source.state = self.feature_state
        if self.feature_state.changelog is not None:
            self.feature_state.changelog.compat = lambda: self.source.compat
        # Read at each scrape: a restore blocks the loop, not the metrics server.
        metrics.feature_restoring.set_function(lambda: self.feature_state.restoring)
        self._changelog_seen = 0  # changelog records counted in the metrics so far
        self._restored_seen, self._restore_seconds_seen = 0, 0.0  # restores counted so far (any thread's)
        self._sizes_at = 0.0  # when the feature state's size per partition was last put in the metrics
        self._sizes_held = 0  # the number of partition stores held then
        # Label-derived features: the entity-risk table fraud-feedback publishes, read once a spec needs it.
        self.risk_table = RiskTable(config.entity_risk_topic, client_configs(config)[0],
                                    config.entity_risk_max_age_seconds)  # fmt: skip
        self.feature_state.risk = self.risk_table
        metrics.entity_risk_age.set_function(self.risk_table.age)
        metrics.entity_risk_entities.set_function(lambda: len(self.risk_table.history))
        metrics.entity_risk_frauds.set_function(self.risk_table.frauds)
        self._risk_records_seen = 0
        self._contexts: dict[FeatureSpec, ScoreContext] = {}  # what score records carry beside the score
        # Entities other than the input topic's key: their stages and repartition topics (per spec served).
        self._plans: dict[FeatureSpec, Repartition] = {}
        self._subscribed: tuple[str, ...] = ()  # the repartition topics the consumer is subscribed to

    @staticmethod
    def _changelog(config: WorkerConfig) -> Changelog | None:
        topic = config.changelog_topic()
        if topic is None:
            return None
        consumer, producer = client_configs(config)
        return Changelog(topic, consumer, producer, client_options(config, "admin", client_id="fraud-worker"),
                         config.exactly_once)  # fmt: skip

    def _partitions_of(self, topic: str) -> int:
        return len(self.source.consumer.partitions_for_topic(topic) or ()) or 1

    def _plan(self, spec: FeatureSpec) -> Repartition:
        plan = self._plans.get(spec)
        if plan is None:
            c = self.config
            plan = self._plans[spec] = Repartition(spec, c.input_key_field, c.input_topic, c.group_id)
        return plan

    def _repartition_topics(self) -> tuple[str, ...]:
        """The repartition topics of the serving model's spec (none without ``input_key_field``)."""
        spec = self.models.scorer.spec
        if spec is None or not self.config.input_key_field:
            return ()
        return tuple(self._plan(spec).topics[1:])

    def _serve_spec(self) -> None:
        """Tell the feature state which spec each topic's events are computed with, so that it opens (and
        restores) a partition's store when the partition is assigned."""
        spec = self.models.scorer.spec
        specs: dict[str, FeatureSpec] = {}
        if spec is not None and spec.risk_fields and not self.risk_table.started:
            wait = self.config.entity_risk_wait_seconds
            if not self.risk_table.start(wait, self.health.beat, self._stop) and wait > 0:
                logger.warning("entity risk table: %s not read to its end within %g s; scoring with what it holds "
                               "(fraud_entity_risk_age_seconds)", self.risk_table.topic, wait)  # fmt: skip
        if spec is not None:
            plan = self._plan(spec) if self.config.input_key_field else None
            if plan is None:
                specs[self.config.input_topic] = spec
            else:
                specs = {t: s.spec for t, s in zip(plan.topics, plan.stages, strict=True) if s.spec.names}
        self.feature_state.serve(specs)

    def _follow_spec(self) -> None:
        """A model with another spec took over: its stores open at assignment; with other repartition topics,
        the consumer subscribes to them too (the old ones stay until the records in them are scored)."""
        self._serve_spec()
        topics = self._repartition_topics()
        if set(topics) <= set(self._subscribed):
            return
        self.clients.ensure_topics(topics, self.producer.get())
        self._subscribed = tuple(dict.fromkeys((*self._subscribed, *topics)))
        self.consumer.subscribe([self.config.input_topic, *self._subscribed], listener=self.listener)
        logger.info("now also consuming %s", ", ".join(self._subscribed))

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def consumer(self) -> KafkaConsumer:
        return self.source.consumer

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
                    self._follow_spec()
                self.shadow.maybe_reload(self.models.scorer)
                self.rules.maybe_reload()
                self.shadow_rules.maybe_reload()
                if self._then is Next.REJOIN and not self._rejoin_group():
                    break
                if self._then is Next.REPOSITION:
                    self._then = self.delivery.reposition()  # GO_ON once back at the committed offsets
                    if self._then is not Next.GO_ON:
                        continue
                polled = self._poll()
                batch = self._polled(polled) if polled else None
                self._step(batch)
                if batch is not None and len(batch.records) <= self.config.max_batch_size // 3:
                    self._step(None)  # well caught up: finished now, not behind the next poll (see _step)
                idle = not polled and self._decoding is None
                self._obey(self.delivery.between_polls(idle, self._decoding))
                self.lag.maybe_update(self.consumer)
                self._measure_feature_state()
        finally:
            self._close()
        return self.trouble.exit_code  # 1 once another instance took this one's group_instance_id

    def process(self, polled: dict) -> bool:
        """One poll's records all the way through: sent, acknowledged, committed; False if that failed."""
        self._step(self._polled(polled))
        self._step(None)
        return self._obey(self.delivery.finish())

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
                topics = self._repartition_topics()
                if topics:
                    self.clients.ensure_topics(topics, self.producer.get())
                if not self._access_checked:
                    self._check_access(topics)
                if self.producer.current is None:
                    self.clients.learn_topics(self.producer.get())
                self._subscribed = tuple(dict.fromkeys((*self._subscribed, *topics)))
                self._serve_spec()
                self.source.attach(*self.clients.consumer(self.listener, self._subscribed))
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

    def _check_access(self, repartition_topics: tuple[str, ...]) -> None:
        cannot_read, cannot_write = self.clients.check_access(repartition_topics)
        if cannot_read:
            raise AccessError("; ".join(cannot_read))
        for line in cannot_write:
            logger.warning("%s: its records are retried, and nothing is committed, until the ACL is granted", line)
        self._access_checked = True

    def _close(self) -> None:
        # Batches already emitted are finished; one still in the decoder is left to the next run.
        self.delivery.finish(final=True)
        self._drop_decoding()
        self._decoder.close()
        self.delivery.close()
        self.source.close()
        self.producer.close()
        self.feature_state.close()
        self.risk_table.stop()
        logger.info("worker stopped")

    def _rejoin_group(self) -> bool:
        """Fenced: leave with the consumer and start over from the group's committed offsets."""
        self._then = Next.GO_ON
        self._drop_decoding()
        self.source.close(quiet=True)
        return self.connect()

    # -- the pipeline --------------------------------------------------------------------------

    def _poll(self) -> dict:
        # With a batch in the decoder, only take what is already fetched: waiting for more would
        # hold that batch's alerts back.
        timeout = self.delivery.poll_timeout(0 if self._decoding is not None else self.config.poll_timeout_ms)
        try:
            polled = self.consumer.poll(timeout_ms=timeout, max_records=self.config.max_batch_size)
        except KafkaError as exc:
            problem = access.refusal(exc, self.config.group_id)
            if problem is not None:  # the group's or the input topic's ACL (revoked meanwhile)
                raise AccessError(problem) from None
            if not self.trouble.replaced(exc):
                self.trouble.report("poll", f"poll failed: {exc}")
            return {}
        self.metrics.last_poll.set(time.time())
        self.feature_state.open_assigned()  # partitions assigned in that poll: their state restored now
        self._report_restores()
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
            new.rules, new.shadow_rules = self.rules.serving, self.shadow_rules.serving
            values = [r.value for r in new.records]
            self._decoder.submit(values, new.scorer.input_names, self.config.max_message_bytes)
            self._decoding = new  # until emitted: a rewind before then drops it too
        if prev is not None and prev.decoded is None:
            prev.decoded = self._decoder.result()
        if prev is not None:
            self._emit(prev)

    def _emit(self, batch: Batch) -> None:
        """Score ``batch`` and hand its results to the delivery guarantee, which commits its offsets."""
        if not self._obey(self.delivery.ready(batch, self._decoding)):
            return
        revoked = self.revocations.since(batch.epoch)
        if revoked:
            batch = without(batch, revoked)
            if not batch.records:
                return
        records = self._score(batch)
        self._obey(self.delivery.emit(batch, records, self._decoding))

    def _score(self, batch: Batch) -> list[Output]:
        """Score ``batch`` (worker/core/batch_scoring.py) and build the records to send for it, shadow ones included."""
        scorer, decoded = batch.scorer, batch.decoded
        assert scorer is not None and decoded is not None, "emitted before it was decoded"
        forwards: list[Output] = []
        if scorer.spec is not None:
            decoded, forwards = self._with_features(scorer.spec, batch, decoded)
            batch.decoded = decoded
        # Rows beyond the model's range become out_of_range errors: dead-lettered and counted like the decoder's.
        scored = score_decoded(scorer, decoded)
        decoded = batch.decoded = scored.decoded
        if decoded.index:
            self.metrics.scoring_seconds.observe(scored.seconds)
            self.metrics.observe_guards(scored.clipped_training, scored.clipped_scaled, scored.out_of_range)
            if scored.out_of_range:
                logger.error("model %s gave %d outputs that are not probabilities (NaN or inf): each published as "
                             "score %g, an alert", scorer.version, scored.out_of_range, OUT_OF_RANGE_SCORE)  # fmt: skip
        scored_at = int(time.time() * 1000)
        settings = self.config.output_settings
        context = self._context(scorer.spec, batch, decoded) if settings.scores_topic else None
        if decoded.index and scored.scores is not None and (batch.rules or batch.shadow_rules or scorer.segments):
            start = time.perf_counter()
            values = [batch.records[i].value for i in decoded.index]
            batch.decisions, batch.shadow_decisions = self.judge.decide(scorer, decoded, values, scored.scores,
                                                                        batch.rules, batch.shadow_rules)  # fmt: skip
            self.metrics.decision_seconds.inc(time.perf_counter() - start)
        out = build_outputs(settings, scorer, batch.records, decoded, scored.scaled, scored.scores, scored_at, context,
                            batch.decisions, batch.shadow_decisions)  # fmt: skip
        batch.scores, batch.hits, batch.times = out.scores, out.hits, out.alert_times
        if batch.challenger is not None and out.hits is not None:
            shadow, batch.shadow = shadow_outputs(settings, batch.challenger, batch.records, decoded, out.hits,
                                                  scored_at)  # fmt: skip
            out.records += shadow
        return out.records + forwards

    def _context(self, spec: FeatureSpec | None, batch: Batch, decoded: DecodedBatch) -> list[bytes] | None:
        """What each score record carries beside the score (worker/core/score_context.py), or None."""
        if spec is None or not decoded.index:
            return None
        context = self._contexts.get(spec)
        if context is None:
            context = self._contexts[spec] = ScoreContext(spec, self.config.scores_include_features)
        if not context.active:
            return None
        return context.fragments([batch.records[i].value for i in decoded.index])

    def _with_features(
        self, spec: FeatureSpec, batch: Batch, decoded: DecodedBatch
    ) -> tuple[DecodedBatch, list[Output]]:
        """The batch's behavioural features appended to its rows (worker/core/batch_features.py), and with
        entities other than the input topic's key, the records forwarding rows to their next stage
        (worker/pipeline/repartition.py)."""
        state, records = self.feature_state, batch.records
        plan = self._plan(spec) if self.config.input_key_field else None
        stages = plan.stages if plan is not None else ()
        counted = [s.spec for s in stages if s.spec.entities] or [spec]
        late, replayed, seconds, _ = state.counts(counted)
        forwards: list[Output] = []
        if plan is not None and plan.chained:
            extended, forwards = plan.features(state, records, decoded)
            batch.forwarded = len(forwards)
            batch.repartitioned = sum(1 for r in records if r.topic != self.config.input_topic)
        else:
            extended = state.extend(spec, records, decoded)
        # Changelog records are written by flushes on the committer's or the transaction's thread.
        logged = state.changelog.records_written if state.changelog is not None else 0
        late_now, replayed_now, seconds_now, entities = state.counts(counted)
        self.metrics.observe_features(
            late_now - late, replayed_now - replayed, seconds_now - seconds, entities, logged - self._changelog_seen,
            len(forwards),
        )  # fmt: skip
        self._changelog_seen = logged
        if spec.risk_fields:
            if self.risk_table.stale():
                self.metrics.entity_risk_stale_events.inc(len(extended.index))
            records_now = self.risk_table.records
            self.metrics.entity_risk_records.inc(records_now - self._risk_records_seen)
            self._risk_records_seen = records_now
        self._report_restores()  # a store first needed by this batch was restored in its extend
        return extended, forwards

    def _report_restores(self) -> None:
        """Restores since the last report into the metrics: they happen when a store opens, right after the
        poll that assigned its partition (``open_assigned``) or at the first event that needs it."""
        state = self.feature_state
        restored, seconds = state.restored, state.restore_seconds
        if restored != self._restored_seen or seconds != self._restore_seconds_seen:
            self.metrics.observe_restores(restored - self._restored_seen, seconds - self._restore_seconds_seen)
            self._restored_seen, self._restore_seconds_seen = restored, seconds

    def _measure_feature_state(self) -> None:
        """The feature state's size per partition into the metrics: every few seconds (a stat() of each file),
        idle or not, and at once when the partitions held change."""
        held = self.feature_state.stores
        if held == self._sizes_held and time.monotonic() - self._sizes_at < SIZES_EVERY_S:
            return
        self._sizes_at, self._sizes_held = time.monotonic(), held
        self.metrics.set_feature_partitions(self.feature_state.partition_sizes())

    def _obey(self, then: Next) -> bool:
        """Do what the delivery guarantee answered; False if the batches in hand are dropped (polled again)."""
        if then is Next.GO_ON:
            return True
        self._drop_decoding()
        if then in (Next.REPOSITION, Next.REJOIN) and self._then is not Next.REJOIN:
            self._then = then  # before the next poll
        return False

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
        # An event forwarded to a repartition topic is consumed again there: counted once, at the input topic.
        consumed = len(batch.records) - batch.repartitioned
        self.metrics.observe_batch(consumed, batch.scores, latency, [e.reason for _, e in decoded.errors])
        if decoded.errors:
            truncated = truncated_count(self.config.output_settings, batch.records, decoded)
            if truncated:
                self.metrics.dlq_truncated.inc(truncated)
        if batch.shadow is not None:
            self.metrics.observe_shadow(batch.shadow.scored, batch.shadow.alerts, batch.shadow.agreement)
        for role, decisions in (("serving", batch.decisions), ("shadow", batch.shadow_decisions)):
            if decisions is not None:
                self.metrics.observe_decisions(role, *decision_counts(decisions))
        if batch.decisions is None and batch.scores is not None:  # no rule set, no segment: the threshold decided
            alerts = len(batch.hits) if batch.hits is not None else 0
            self.metrics.observe_decisions("serving", {"review": alerts, "allow": len(batch.scores) - alerts}, {}, {})
        if decoded.errors and logger.isEnabledFor(logging.DEBUG):
            for i, err in decoded.errors:
                r = batch.records[i]
                logger.debug("dead-lettered %s[%s]@%s: %s", r.topic, r.partition, r.offset, err)
