"""The entity-risk table (docs/entity-risk.md): every worker instance reads the whole compacted topic
``fraud-feedback`` publishes (``entity_risk_topic``) into memory, as Kafka Streams keeps a GlobalKTable,
and the feature engine reads each event's entity from it (a ``RiskSource``, worker/core/risk.py).

A record is keyed by entity field, the fraud-feedback partition that wrote it, and the entity; its value is
that partition's fraud entries of the entity (a tombstone: none left). An entity's entries are those of
every partition, merged. The table is read on a thread of its own with its own consumer (no group, every
partition from the start), so scoring never waits for it: an event is scored with the entries the table
has. ``age`` is the time since the table last read the topic to its end; ``stale`` once that is over
``max_age`` (or it never has), and the loop counts the events it scores then.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from worker.core.risk import Entry, FraudHistory, decode_entries, parse_key

logger = logging.getLogger(__name__)

END_CHECK_S = 1.0  # how often the table compares its positions with the topic's end offsets
RETRY_S = 5.0  # after a failure (no topic yet, the broker away): the next attempt
WARN_EVERY_S = 60.0


class RiskTable:
    def __init__(self, topic: str, consumer_config: dict[str, Any], max_age: float,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.topic = topic
        own = ("group_id", "group_instance_id", "max_poll_records")
        self._config = {k: v for k, v in consumer_config.items() if k not in own}
        self._config.update(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                            client_id="fraud-worker-risk", max_poll_records=5_000)  # fmt: skip
        self.max_age = max_age
        self._clock = clock
        self.history = FraudHistory()
        self._parts: dict[tuple[str, str], dict[int, list[Entry]]] = {}
        self.records = 0  # records read (a metric)
        self.bad = 0  # records whose key or value this worker cannot read (skipped)
        self.caught_up_at: float | None = None
        self.ready = threading.Event()  # set once the table has read the topic to its end
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = -math.inf

    # -- the RiskSource the engine reads ---------------------------------------------------------------

    def entries(self, field: str, key: str, /) -> Sequence[Entry]:
        return self.history.entries(field, key)

    # -- its life ----------------------------------------------------------------------------------------

    def start(self, wait: float = 0.0, beat: Callable[[], None] | None = None,
              stop: threading.Event | None = None) -> bool:  # fmt: skip
        """Start reading (once); wait up to ``wait`` seconds for the first read to the end, calling ``beat`` every
        second meanwhile (the caller is waiting on purpose, not stalled) and giving up early once ``stop`` is set.
        True when the table has read its topic to the end."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="entity-risk-table", daemon=True)
            self._thread.start()
        deadline = self._clock() + wait
        while not self.ready.wait(min(1.0, max(0.0, deadline - self._clock()))):
            if beat is not None:
                beat()
            if self._clock() >= deadline or (stop is not None and stop.is_set()):
                break
        return self.ready.is_set()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def age(self) -> float:
        """Seconds since the table last read its topic to the end; +Inf when it never has."""
        return math.inf if self.caught_up_at is None else max(0.0, self._clock() - self.caught_up_at)

    def stale(self) -> bool:
        return self.age() > self.max_age

    def frauds(self) -> int:
        return self.history.total()

    # -- reading -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = KafkaConsumer(**self._config)
                parts = consumer.partitions_for_topic(self.topic)
                if not parts:
                    self._warn(f"entity risk topic {self.topic} does not exist (yet): scoring with the risk "
                               "table as it is; fraud-feedback creates the topic")  # fmt: skip
                else:
                    self._follow(consumer, [TopicPartition(self.topic, p) for p in sorted(parts)])
            except KafkaError as exc:
                self._warn(f"reading entity risk topic {self.topic} failed ({exc}); trying again in {RETRY_S:g} s")
            except Exception:  # noqa: BLE001 - the table must never take the worker down
                logger.exception("entity risk table: unexpected failure; trying again in %g s", RETRY_S)
            finally:
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # noqa: BLE001
                        pass
            self._stop.wait(RETRY_S)

    def _follow(self, consumer: KafkaConsumer, tps: list[TopicPartition]) -> None:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        checked = -math.inf
        while not self._stop.is_set():
            polled = consumer.poll(timeout_ms=500)
            for records in polled.values():
                for r in records:
                    self.apply(r.key, r.value)
            now = self._clock()
            if now - checked >= END_CHECK_S or not polled:
                checked = now
                ends = consumer.end_offsets(tps)
                if all(consumer.position(tp) >= ends[tp] for tp in tps):
                    if not self.ready.is_set():
                        logger.info("entity risk table: %d entities, %d frauds read from %s", len(self.history),
                                    self.frauds(), self.topic)  # fmt: skip
                    self.caught_up_at = now
                    self.ready.set()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic into the table (a bad one is counted and skipped)."""
        self.records += 1
        try:
            if key is None:
                raise ValueError("no key")
            field, source, entity = parse_key(key)
            entries = None if value is None else decode_entries(value)
        except (ValueError, UnicodeDecodeError, msgspec.DecodeError) as exc:
            self.bad += 1
            self._warn(f"entity risk topic {self.topic}: skipping a record this worker cannot read ({exc})")
            return
        parts = self._parts.setdefault((field, entity), {})
        if entries:
            parts[source] = entries
        else:
            parts.pop(source, None)
        merged = [e for p in parts.values() for e in p]
        if not parts:
            del self._parts[(field, entity)]
        self.history.put(field, entity, merged)

    def _warn(self, message: str) -> None:
        now = self._clock()
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            logger.warning("%s (reported once a minute)", message)
