"""Small stand-ins for the Kafka clients in the worker's unit tests: what they return is the script."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from tests.unit.worker.conftest import SPEC


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic, key=None, value=None, headers=None):
        from kafka.future import Future

        self.sent.append((topic, key, value))
        return Future().success(None)  # acknowledged at once

    def flush(self, timeout=None) -> None:
        pass

    def close(self, timeout=None) -> None:
        pass


class FakeTransactionalProducer(FakeProducer):
    """A transactional producer: records what each transaction held; ``fail_commit``, ``fail_send`` script failures."""

    def __init__(self, fail_commit: BaseException | None = None, fail_send: BaseException | None = None) -> None:
        super().__init__()
        self.fail_commit, self.fail_send = fail_commit, fail_send
        self.events: list[str] = []
        self.offsets: list[dict] = []  # offsets sent with each committed transaction

    def send(self, topic, key=None, value=None, headers=None):
        if self.fail_send is not None:
            raise self.fail_send
        return super().send(topic, key, value, headers)

    def init_transactions(self) -> None:
        self.events.append("init")

    def begin_transaction(self) -> None:
        self.events.append("begin")

    def send_offsets_to_transaction(self, offsets, group_metadata) -> None:
        self.events.append("offsets")
        self.pending_offsets = offsets

    def commit_transaction(self) -> None:
        if self.fail_commit is not None:
            self.events.append("commit failed")
            raise self.fail_commit
        self.events.append("commit")
        self.offsets.append(self.pending_offsets)


class FakeConsumer:
    def __init__(self, ends: dict, positions: dict) -> None:
        self.ends, self.positions = ends, positions
        self.commits: list[dict] = []
        self.seeks: list[tuple] = []
        self.committed_offsets: dict = {}  # what committed() answers (exactly-once restarts)

    def assignment(self):
        return set(self.ends)

    def end_offsets(self, partitions, timeout_ms=None):
        return {tp: self.ends[tp] for tp in partitions}

    def position(self, tp, timeout_ms=None):
        return self.positions[tp]

    def highwater(self, tp):
        return self.ends[tp]

    def commit(self, offsets, timeout_ms=None) -> None:
        self.commits.append(offsets)

    def commit_async(self, offsets, callback=None):
        from kafka.future import Future

        self.commit(offsets)
        if callback is not None:
            callback(offsets, None)
        return Future().success(None)

    def seek(self, tp, offset) -> None:
        self.seeks.append((tp, offset))

    def committed(self, tp, timeout_ms=None):
        return self.committed_offsets.get(tp)

    def seek_to_beginning(self, *partitions) -> None:
        self.seeks.extend((tp, "beginning") for tp in partitions)

    def group_metadata(self):
        return "group-metadata"

    def close(self, autocommit=True) -> None:
        pass


class FakeClients:
    """What ``Worker`` builds its Kafka clients with (worker/edges/clients.py), returning the stand-ins."""

    def __init__(self, consumer, producer, cannot_read=(), cannot_write=(), refusal=None) -> None:
        self.stand_in_consumer, self.stand_in_producer = consumer, producer
        # What check_access and diagnose answer: the broker's ACLs and a refusal, as the test sets them.
        self.cannot_read, self.cannot_write, self.refusal = list(cannot_read), list(cannot_write), refusal
        self.connections = 0  # consumers handed out: 1 after connecting, one more for each rejoin
        self.discarded: list = []  # the errors producers were discarded for

    def check_access(self, also=()):
        return self.cannot_read, self.cannot_write

    def diagnose(self, error):
        return self.refusal

    def producer(self):
        if hasattr(self.stand_in_producer, "init_transactions"):  # as KafkaClients does in exactly-once mode
            self.stand_in_producer.init_transactions()
        return self.stand_in_producer

    def learn_topics(self, producer) -> None:
        pass

    def discard(self, producer, error, throttle) -> None:
        self.discarded.append(error)

    def ensure_topics(self, topics, producer) -> None:
        pass

    def consumer(self, listener, also=()):
        from worker.kafka_compat import KafkaCompat

        self.connections += 1
        return self.stand_in_consumer, KafkaCompat()


def event(i: int, features: np.ndarray) -> bytes:
    doc = {"transaction_id": f"tx-{i}", **dict(zip(SPEC["feature_names"], features.tolist(), strict=True))}
    return json.dumps(doc).encode()
