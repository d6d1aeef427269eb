"""The one home of the worker's uses of kafka-python internals: five fast paths and a cap, each switchable.

| fast path             | module        | what it saves                       | without it (kafka-python's own way)    |
|-----------------------|---------------|-------------------------------------|----------------------------------------|
| ``record_reader``     | records.py    | two thirds of the per-record cost   | kafka-python's reader                  |
| ``inflate_cap``       | inflate.py    | memory: a compressed batch inflates | kafka-python inflates each batch whole |
|                       |               | to ``max_inflated_batch_bytes``     | (and a batch it cannot read stalls)    |
| ``handoff_shortcuts`` | handoffs.py   | two IO-thread hand-offs per poll    | every poll hands both to the IO thread |
| ``metadata_wait``     | metadata.py   | a metadata request for one topic    | ``partitions_for_topic`` (all topics)  |
| ``revocation_commit`` | revocation.py | retries of the revocation commit    | one ``commit_async``, not retried      |
| ``batch_send``        | sends.py      | half the producer's per-record cost | ``KafkaProducer.send`` for each record |
|                       |               | (outputs; the feature changelog's   |                                        |
|                       |               | records, to an explicit partition)  |                                        |

``install(consumer, wanted)`` checks at start that every internal each wanted fast path relies on
is there and behaves (``batch_send`` checks each new producer's too, on its first batch); one
that is not is logged in one line and left off, and the worker runs on
plain kafka-python for it: slower, never wrong. The ``fast_paths`` setting (``FRAUD_FAST_PATHS``:
``all``, ``none`` or a comma-separated list) chooses which are wanted. The version pin on
kafka-python in pyproject.toml names these internals; tests/unit/worker/kafka_compat/ and
tests/integration/test_kafka_compat*.py check them. No other module of the worker touches a
private kafka-python name.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from worker.kafka_compat import handoffs, inflate, metadata, records, revocation, sends
from worker.kafka_compat.counters import TAKEN

logger = logging.getLogger(__name__)

FAST_PATHS = ("record_reader", "inflate_cap", "handoff_shortcuts", "metadata_wait", "revocation_commit", "batch_send")

__all__ = ["FAST_PATHS", "TAKEN", "KafkaCompat", "parse_fast_paths", "install_record_reader"]


def parse_fast_paths(text: str) -> frozenset[str]:
    """``all``, ``none`` or a comma-separated list of FAST_PATHS names -> the set of names."""
    words = {w.strip().lower() for w in text.split(",") if w.strip()}
    if words == {"all"}:
        return frozenset(FAST_PATHS)
    if words in (set(), {"none"}):
        return frozenset()
    unknown = sorted(words - set(FAST_PATHS))
    if unknown:
        raise ValueError(f"unknown fast path {', '.join(unknown)!s} (known: all, none, {', '.join(FAST_PATHS)})")
    return frozenset(words)


def install_record_reader(consumer: KafkaConsumer) -> None:
    """The record reader alone, checked first (the benchmark's bare consumer uses it)."""
    records.check_reader()
    records.install_reader(consumer)


_INSTALL: dict[str, Callable[[KafkaConsumer], None]] = {
    "record_reader": install_record_reader,
    "handoff_shortcuts": handoffs.install_handoff_shortcuts,
    "metadata_wait": metadata.check_metadata,
    "revocation_commit": revocation.check_revocation,
    "batch_send": lambda consumer: sends.check_classes(),
}


class KafkaCompat:
    """The fast paths one consumer runs with; each of the others goes kafka-python's own way."""

    def __init__(self, active: frozenset[str] = frozenset()) -> None:
        self.active = active
        # The producers whose internals send_all and send_to checked (the outputs', the changelog's).
        self._vetted: weakref.WeakSet[KafkaProducer] = weakref.WeakSet()

    @classmethod
    def install(
        cls, consumer: KafkaConsumer, wanted: frozenset[str], inflate_cap: int = inflate.DEFAULT_CAP
    ) -> KafkaCompat:
        """Check and install each wanted fast path in ``consumer``; log one line for each that cannot be.

        ``inflate_cap``: the most bytes a compressed record batch inflates to (inflate.py)."""
        active = set()
        steps = {**_INSTALL, "inflate_cap": lambda consumer: inflate.install_cap(consumer, inflate_cap)}
        for name in FAST_PATHS:
            if name not in wanted:
                continue
            try:
                steps[name](consumer)
            except Exception as exc:  # noqa: BLE001 - any surprise means kafka-python changed: use its own path
                logger.warning("kafka-python fast path %s is off, kafka-python's own path is used (slower, same "
                               "results): %s: %s", name, type(exc).__name__, exc)  # fmt: skip
                continue
            active.add(name)
        if active != set(FAST_PATHS):
            off = ", ".join(n for n in FAST_PATHS if n not in active)
            logger.info("kafka-python fast paths off: %s (kafka-python's own code runs instead)", off)
        return cls(frozenset(active))

    def await_partitions(self, consumer: KafkaConsumer, topic: str, timeout_ms: int) -> None:
        """Wait at most ``timeout_ms`` until ``consumer`` knows ``topic``'s partitions (metadata.py)."""
        if "metadata_wait" in self.active:
            metadata.await_partitions(consumer, topic, timeout_ms)
        else:
            metadata.await_partitions_plain(consumer, topic, timeout_ms)

    async def commit_on_revocation(self, consumer: KafkaConsumer, offsets: dict, timeout_ms: int) -> None:
        """Commit ``offsets`` from inside the rebalance listener (revocation.py); raises on failure."""
        if "revocation_commit" in self.active:
            await revocation.commit_on_revocation(consumer, offsets, timeout_ms)
        else:
            await revocation.commit_on_revocation_plain(consumer, offsets, timeout_ms)

    def send_all(self, producer: KafkaProducer, records: Sequence[sends.Record]) -> list[Any]:
        """Send ``records`` (topic, key, value, headers) in order; their futures (sends.py)."""
        if self._batch_send(producer):
            return sends.send_all(producer, records)
        return sends.send_all_plain(producer, records)

    def send_to(self, producer: KafkaProducer, topic: str, partition: int,
                records: Sequence[tuple[bytes, bytes]]) -> list[Any]:  # fmt: skip
        """Send ``records`` (key, value) to ``partition`` of ``topic`` in order; their futures (sends.py)."""
        if self._batch_send(producer):
            return sends.send_to(producer, topic, partition, records)
        return sends.send_to_plain(producer, topic, partition, records)

    def _batch_send(self, producer: KafkaProducer) -> bool:
        """Whether the batch_send fast path is on for ``producer`` (its internals checked once per producer)."""
        if "batch_send" in self.active and producer not in self._vetted:
            try:
                sends.check_sends(producer)
                self._vetted.add(producer)
            except Exception as exc:  # noqa: BLE001 - kafka-python changed: its own path from now on
                logger.warning("kafka-python fast path batch_send is off, kafka-python's own path is used "
                               "(slower, same results): %s: %s", type(exc).__name__, exc)  # fmt: skip
                self.active = self.active - {"batch_send"}
        return "batch_send" in self.active
