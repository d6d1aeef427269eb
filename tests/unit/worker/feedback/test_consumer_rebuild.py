"""A damaged store, at assignment or while in use, is moved aside, counted and rebuilt from the
topics (its partitions read again from the beginning); one that cannot be rebuilt stops the loop
with one line naming the file. No polled record is dropped without a count."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from worker.feedback.consumer import FeedbackConsumer, FeedbackSettings
from worker.feedback.metrics import FeedbackMetrics
from worker.feedback.records import encode_label
from worker.feedback.store import DAY_MS, StoreError, damaged, move_aside, store_path

NOW = 1_800_000_000_000


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.sought: list[tuple[TopicPartition, int | None]] = []
        self.committed: dict = {}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp, offset) -> None:
        self.sought.append((tp, offset))

    def seek_to_beginning(self, tp) -> None:
        self.sought.append((tp, None))

    def commit(self, offsets) -> None:
        self.committed.update(offsets)


def make(tmp_path) -> tuple[FeedbackConsumer, FakeConsumer, CollectorRegistry]:
    settings = FeedbackSettings("x:9092", "scores", "labels", "g", str(tmp_path), 120 * DAY_MS, DAY_MS, 1000)
    registry = CollectorRegistry()
    fc = FeedbackConsumer(settings, FeedbackMetrics(registry), clock=lambda: NOW)
    fake = FakeConsumer()
    fc._consumer = fake  # type: ignore[assignment]
    return fc, fake, registry


def store_rebuilds(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("fraud_feedback_store_rebuilds_total")


def assign(fc: FeedbackConsumer, fake: FakeConsumer, *partitions: int) -> list[TopicPartition]:
    tps = [TopicPartition(t, p) for t in ("scores", "labels") for p in partitions]
    fake.assigned |= set(tps)
    fc._assigned(tps)
    return tps


def label_record(offset: int, txn: str = "t1"):
    return SimpleNamespace(offset=offset, value=encode_label(txn, True, NOW, "x"))


def test_a_garbage_store_is_moved_aside_and_read_from_the_beginning(tmp_path):
    fc, fake, registry = make(tmp_path)
    path = store_path(tmp_path, 0)
    path.write_bytes(b"not a database" * 500)
    assign(fc, fake, 0)
    assert fc._fatal is None and 0 in fc.stores
    assert store_rebuilds(registry) == 1
    assert all(offset is None for _, offset in fake.sought), "both topics of the partition from the beginning"
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.glob("*.corrupt-*")] == ["partition-0.sqlite"]
    fc.take(fake, {TopicPartition("labels", 0): [label_record(0)]})  # type: ignore[arg-type]
    assert fc.stores[0].next_offsets() == {"labels": 1}


def test_a_store_failing_in_use_is_rebuilt_and_its_records_read_again(tmp_path):
    fc, fake, registry = make(tmp_path)
    assign(fc, fake, 0, 1)
    l0, l1 = TopicPartition("labels", 0), TopicPartition("labels", 1)
    fc.take(fake, {l0: [label_record(0)], l1: [label_record(0, "t2")]})  # type: ignore[arg-type]
    fake.sought.clear()
    fake.committed.clear()
    corrupt = sqlite3.DatabaseError("database disk image is malformed")
    corrupt.sqlite_errorcode = 11  # type: ignore[attr-defined]

    def fail(*_a, **_k):
        raise corrupt

    fc.stores[0].apply = fail  # type: ignore[method-assign]
    fc.take(fake, {l0: [label_record(1)], l1: [label_record(1, "t3")]})  # type: ignore[arg-type]
    assert store_rebuilds(registry) == 1
    assert sorted((tp.topic, off) for tp, off in fake.sought) == [("labels", None), ("scores", None)]
    assert all(tp.partition == 0 for tp, _ in fake.sought)
    assert [tp.partition for tp in fake.committed] == [1], "no commit for the partition read again"
    assert fc.stores[0].next_offsets() == {} and fc.stores[1].next_offsets() == {"labels": 2}


def test_a_store_that_cannot_be_rebuilt_stops_with_its_name(tmp_path, monkeypatch):
    fc, fake, _ = make(tmp_path)
    store_path(tmp_path, 0).mkdir()

    def refuse(path, clock=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("worker.feedback.consumer.move_aside", refuse)
    assign(fc, fake, 0)
    assert isinstance(fc._fatal, StoreError)
    assert str(store_path(tmp_path, 0)) in str(fc._fatal) and "\n" not in str(fc._fatal)


def test_a_full_disk_is_not_a_rebuild_but_a_stop(tmp_path):
    fc, fake, _ = make(tmp_path)
    assign(fc, fake, 0)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    assert not damaged(full)

    def fail(*_a, **_k):
        raise full

    fc.stores[0].apply = fail  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="partition-0.sqlite failed: database or disk is full"):
        fc.take(fake, {TopicPartition("labels", 0): [label_record(0)]})  # type: ignore[arg-type]


def test_move_aside_keeps_the_wal_beside_its_store(tmp_path):
    path = tmp_path / "partition-2.sqlite"
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"partition-2.sqlite{suffix}").write_text(suffix)
    first = move_aside(path, clock=lambda: NOW)
    (tmp_path / "partition-2.sqlite").write_text("again")
    second = move_aside(path, clock=lambda: NOW)
    assert first.name == "partition-2.sqlite.corrupt-20270115T080000Z"
    assert second.name == "partition-2.sqlite.corrupt-20270115T080000Z-2"
    assert (tmp_path / f"{first.name}-wal").read_text() == "-wal"
    assert not path.exists()
