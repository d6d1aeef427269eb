"""Entity risk in fraud-feedback: the fraud entries a store makes from score records that name their
entities and from labels, exactly once per change of a transaction's truth (whatever the order, the
repeats and a crash), what it marks dirty and prunes, what the consumer publishes, and the export's
``label_time`` and input columns."""

from __future__ import annotations

import csv
import logging
from types import SimpleNamespace

import msgspec
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from worker.core.risk import decode_entries, parse_key
from worker.feedback.consumer import FeedbackConsumer, FeedbackSettings
from worker.feedback.export import cell, export
from worker.feedback.metrics import FeedbackMetrics
from worker.feedback.records import BadRecord, Label, Score, decode_score, encode_label
from worker.feedback.store import DAY_MS, Store, store_path

WINDOW = 120 * DAY_MS
NOW = 1_800_000_000_000
T = NOW - DAY_MS  # the transactions' time
ENTITIES = {"terminal_id": "t-1", "customer_id": "c-9"}


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def score(txn: str, version: str = "v1", entity_time: int = T, entities: dict | None = None, inputs=None,
          features=None) -> Score:  # fmt: skip
    return Score(txn, version, 0.9, 0.5, entity_time, features, entity_time,
                 dict(ENTITIES) if entities is None else entities, inputs)  # fmt: skip


def label(txn: str, is_fraud: bool, label_time: int) -> Label:
    return Label(txn, is_fraud, label_time, "analyst")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "partition-0.sqlite", WINDOW, clock=Clock())
    yield s
    s.close()


def entries(store: Store, field: str = "terminal_id", entity: str = "t-1") -> list[tuple[int, int, int]]:
    return store.risk_entries(field, entity)


# -- the store's rules -------------------------------------------------------------------------------------


def test_a_fraud_label_before_or_after_its_score_makes_one_entry_per_entity(store):
    store.apply([], [label("a", True, T + 3600_000)], {})
    assert store.dirty_records() == []  # no context yet: nothing known of its entities
    store.apply([score("a")], [], {})
    store.apply([score("b")], [], {})
    store.apply([], [label("b", True, T + 7200_000)], {})
    assert entries(store) == [(T, T + 3600_000, 1), (T, T + 7200_000, 1)]
    assert entries(store, "customer_id", "c-9") == [(T, T + 3600_000, 1), (T, T + 7200_000, 1)]
    assert sorted((f, k) for f, k, _ in store.dirty_records()) == [("customer_id", "c-9"), ("terminal_id", "t-1")]


def test_a_label_timed_before_its_transaction_counts_from_the_transaction_s_time(store):
    store.apply([score("a")], [label("a", True, T - 5000)], {})
    assert entries(store) == [(T, T, 1)]


def test_a_genuine_label_makes_no_entry_and_a_correction_takes_a_fraud_back(store):
    store.apply([score("g"), score("a")], [label("g", False, T + 10), label("a", True, T + 10)], {})
    store.apply([], [label("a", False, T + 20)], {})  # fraud -> genuine, a later decision
    assert entries(store) == [(T, T + 10, 1), (T, T + 20, -1)]
    store.apply([], [label("a", True, T + 30)], {})  # and back: a chargeback
    assert entries(store) == [(T, T + 10, 1), (T, T + 20, -1), (T, T + 30, 1)]


def test_a_repeated_score_or_a_stale_label_adds_nothing(store):
    store.apply([score("a")], [label("a", True, T + 10)], {})
    store.apply([score("a"), score("a", version="v2")], [label("a", True, T + 10), label("a", False, T + 5)], {})
    assert entries(store) == [(T, T + 10, 1)]
    store.apply([score("b", version="v2")], [label("b", True, T + 10)], {})
    store.apply([score("b", version="v1")], [], {})  # the champion's record after the challenger's
    assert entries(store, "customer_id", "c-9") == [(T, T + 10, 1), (T, T + 10, 1)]


def test_an_entity_field_named_first_by_a_later_record_gets_its_entries_once(store):
    """A challenger whose spec reads one more entity than the champion's: each field's first record wins."""
    store.apply([score("a", entities={"terminal_id": "t-1"})], [label("a", True, T + 10)], {})
    store.apply([score("a", version="v2", entities={"terminal_id": "t-other", "device_id": "d-1"})], [], {})
    store.apply([score("a", version="v3", entities={"device_id": "d-2"})], [], {})
    assert entries(store) == [(T, T + 10, 1)] and entries(store, "terminal_id", "t-other") == []
    assert entries(store, "device_id", "d-1") == [(T, T + 10, 1)] and entries(store, "device_id", "d-2") == []
    store.apply([], [label("a", False, T + 20)], {})
    assert entries(store, "device_id", "d-1") == [(T, T + 10, 1), (T, T + 20, -1)]
    assert entries(store) == [(T, T + 10, 1), (T, T + 20, -1)]


def test_records_without_entities_make_no_entries(store):
    store.apply([Score("a", "v1", 0.9, 0.5, T, None), score("b", entities={})], [label("a", True, T),
                label("b", True, T)], {})  # fmt: skip
    assert store.dirty_records() == [] and store.watermark() == T


def test_the_same_records_after_a_crash_add_no_entry_twice(tmp_path):
    """The entries are made in the transaction that records the offsets: a batch is in the store whole or
    not at all, and a batch read again (after a crash, before the consumer's commit) changes nothing."""
    path = tmp_path / "partition-0.sqlite"
    first = Store(path, WINDOW, clock=Clock())
    batch1 = ([score("a"), score("b")], [label("a", True, T + 10)], {"scores": 2, "labels": 1})
    first.apply(*batch1)

    def labels():
        yield label("b", True, T + 20)
        raise OSError("killed")  # the process dies inside the transaction

    with pytest.raises(OSError):
        first.apply([score("c")], labels(), {"scores": 3, "labels": 2})
    # A crash: the first connection is never closed; a new Store opens the same file.
    again = Store(path, WINDOW, clock=Clock())
    assert again.next_offsets() == {"scores": 2, "labels": 1}
    assert entries(again) == [(T, T + 10, 1)]
    again.apply(*batch1)  # records before the stored offsets, delivered again
    again.apply([score("c")], [label("b", True, T + 20)], {"scores": 3, "labels": 2})
    again.apply([score("c")], [label("b", True, T + 20)], {"scores": 3, "labels": 2})
    assert entries(again) == [(T, T + 10, 1), (T, T + 20, 1)]
    assert again.next_offsets() == {"scores": 3, "labels": 2}
    again.close()
    first.close()


def test_a_store_from_before_the_entity_risk_gets_its_tables(tmp_path):
    import sqlite3

    path = tmp_path / "partition-0.sqlite"
    Store(path, WINDOW, clock=Clock()).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE context; DROP TABLE risk_entries; DROP TABLE risk_dirty;")
    db.close()
    store = Store(path, WINDOW, clock=Clock())
    store.apply([score("a")], [label("a", True, T)], {})
    assert entries(store) == [(T, T, 1)]
    store.close()


def test_dirty_records_hold_every_entry_of_the_entity_and_clear_dirty_forgets_them(store):
    store.apply([score("a"), score("b", entity_time=T - 50)], [label("a", True, T + 10), label("b", True, T)], {})
    dirty = {(f, k): e for f, k, e in store.dirty_records()}
    assert dirty[("terminal_id", "t-1")] == [(T - 50, T, 1), (T, T + 10, 1)]
    assert len(store.dirty_records(limit=1)) == 1
    store.clear_dirty([("terminal_id", "t-1")])
    assert [(f, k) for f, k, _ in store.dirty_records()] == [("customer_id", "c-9")]
    store.clear_dirty([("customer_id", "c-9")])
    assert store.dirty_records() == []
    store.apply([score("c", entities={"terminal_id": "t-1"})], [label("c", True, T + 5)], {})
    assert store.dirty_records() == [("terminal_id", "t-1", [(T - 50, T, 1), (T, T + 5, 1), (T, T + 10, 1)])]


def test_pruning_drops_entries_older_than_the_horizon_before_the_watermark(tmp_path):
    store = Store(tmp_path / "p.sqlite", WINDOW, clock=Clock(), risk_horizon_ms=10 * DAY_MS)
    old, recent = T - 20 * DAY_MS, T - 5 * DAY_MS
    store.apply([score("old", entity_time=old, entities={"terminal_id": "t-old"}),
                 score("mixed-old", entity_time=old), score("mixed-new", entity_time=recent), score("now")],
                [label(t, True, T) for t in ("old", "mixed-old", "mixed-new")], {})  # fmt: skip
    assert store.watermark() == T
    store.clear_dirty([(f, k) for f, k, _ in store.dirty_records()])
    store.prune()
    dirty = {(f, k): e for f, k, e in store.dirty_records()}
    assert dirty == {("terminal_id", "t-old"): [], ("terminal_id", "t-1"): [(recent, T, 1)],
                     ("customer_id", "c-9"): [(recent, T, 1)]}  # fmt: skip
    store.clear_dirty(dirty)
    store.prune()
    assert store.dirty_records() == []  # nothing more to drop
    store.close()


def test_the_watermark_is_the_newest_entity_time_and_survives_reopening(tmp_path):
    path = tmp_path / "p.sqlite"
    store = Store(path, WINDOW, clock=Clock())
    assert store.watermark() is None
    store.apply([score("a", entity_time=T), score("b", entity_time=T - 10)], [], {})
    store.apply([score("c", entity_time=T - 5)], [], {})
    store.close()
    store = Store(path, WINDOW, clock=Clock())
    assert store.watermark() == T
    store.close()


def test_context_rows_are_pruned_by_the_datas_clock_not_the_wall_clock(tmp_path):
    # An old transaction (a replay of last year's data) keeps its entities while it is inside the risk
    # horizon of the newest transaction held: its label, however late on the wall clock, still counts.
    clock = Clock()
    store = Store(tmp_path / "p.sqlite", WINDOW, clock=clock)
    store.apply([score("a", inputs={"amount": 3.5})], [], {})
    clock.now = NOW + WINDOW + 2 * DAY_MS
    store.expire()
    store.prune()
    store.apply([], [label("a", True, T + DAY_MS)], {})
    assert entries(store) == [(T, T + DAY_MS, 1)]
    # Once newer transactions put it beyond the horizon, its context and its entries go.
    later = T + store.risk_horizon_ms + DAY_MS
    store.apply([score("b", entity_time=later, entities={"terminal_id": "t-2"})], [], {})
    store.prune()
    assert entries(store) == []
    assert store.db.execute("SELECT transaction_id FROM context").fetchall() == [("b",)]
    store.close()


# -- score records -------------------------------------------------------------------------------------------


def record(**extra) -> bytes:
    return msgspec.json.encode({"transaction_id": "t1", "score": 0.7, "threshold": 0.5, "model_version": "v1",
                                "event_time": NOW, **extra})  # fmt: skip


def test_score_records_carry_entities_and_inputs():
    inputs = {"amount": 1.5, "n": 3, "terminal_id": "t-1", "x": None, "flag": True}
    s = decode_score(record(entity_time=NOW - 5, entities={"terminal_id": "t-1"}, inputs=inputs), NOW)
    assert s.entity_time == NOW - 5 and s.entities == {"terminal_id": "t-1"}
    assert s.inputs == {"amount": 1.5, "n": 3, "terminal_id": "t-1", "x": None, "flag": True}
    plain = decode_score(record(), NOW)
    assert (plain.entity_time, plain.entities, plain.inputs) == (None, None, None)
    assert decode_score(record(entity_time=NOW, entities={}), NOW).entities is None


@pytest.mark.parametrize(
    ("extra", "reason"),
    [({"entity_time": NOW, "entities": {"t": ""}}, "schema"),
     ({"entity_time": NOW, "entities": {"t": "x" * 257}}, "schema"),
     ({"entity_time": NOW, "entities": {f"f{i}": "x" for i in range(17)}}, "schema"),
     ({"entity_time": NOW, "entities": {"a\x1fb": "x"}}, "schema"),
     ({"entity_time": NOW, "entities": {"t": 5}}, "schema"),
     ({"entities": {"t": "x"}}, "schema"),
     ({"inputs": {f"f{i}": 1 for i in range(65)}}, "schema"),
     ({"inputs": {"a": [1]}}, "schema"),
     ({"entity_time": -1}, "out_of_range"),
     ({"entity_time": NOW + 2 * DAY_MS}, "future")],
)  # fmt: skip
def test_bad_entities_inputs_or_entity_time_are_refused_with_a_reason(extra, reason):
    with pytest.raises(BadRecord) as err:
        decode_score(record(**extra), NOW)
    assert err.value.reason == reason


def test_the_limits_are_inclusive():
    s = decode_score(record(entity_time=NOW, entities={f"f{i}": "x" * 256 for i in range(16)},
                            inputs={f"f{i}": i for i in range(64)}), NOW)  # fmt: skip
    assert len(s.entities or {}) == 16 and len(s.inputs or {}) == 64


# -- publishing ------------------------------------------------------------------------------------------------


class FakeFuture:
    def __init__(self, error: Exception | None = None) -> None:
        self.exception = error

    def succeeded(self) -> bool:
        return self.exception is None

    def failed(self) -> bool:
        return self.exception is not None


class FakeProducer:
    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.fail = fail
        self.flushed = 0
        self.closed = False

    def send(self, topic, key, value):  # type: ignore[no-untyped-def]
        self.sent.append((topic, key, value))
        return FakeFuture(self.fail)

    def flush(self, timeout=None) -> None:  # type: ignore[no-untyped-def]
        self.flushed += 1

    def close(self, timeout=None) -> None:  # type: ignore[no-untyped-def]
        self.closed = True


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.committed: dict = {}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp, offset) -> None:
        pass

    def seek_to_beginning(self, tp) -> None:
        pass

    def commit(self, offsets) -> None:
        self.committed.update(offsets)


def make(tmp_path, producer: FakeProducer, topic: str = "risk") -> tuple[FeedbackConsumer, FakeConsumer,
                                                                          CollectorRegistry]:  # fmt: skip
    settings = FeedbackSettings("x:9092", "scores", "labels", "g", str(tmp_path), WINDOW, DAY_MS, 1000,
                                entity_risk_topic=topic)  # fmt: skip
    registry = CollectorRegistry()
    fc = FeedbackConsumer(settings, FeedbackMetrics(registry), clock=lambda: NOW)
    fake = FakeConsumer()
    fc._consumer = fake  # type: ignore[assignment]
    fc._producer = producer
    fc.risk_publishing = True  # as connect() sets it
    return fc, fake, registry


def assign(fc: FeedbackConsumer, fake: FakeConsumer, *partitions: int) -> None:
    tps = [TopicPartition(t, p) for t in ("scores", "labels") for p in partitions]
    fake.assigned |= set(tps)
    fc._assigned(tps)


def score_record(offset: int, txn: str, entities: dict[str, str]):
    value = msgspec.json.encode({"transaction_id": txn, "score": 0.9, "threshold": 0.5, "model_version": "v1",
                                 "event_time": T, "entity_time": T, "entities": entities})  # fmt: skip
    return SimpleNamespace(offset=offset, value=value)


def label_record(offset: int, txn: str, is_fraud: bool, label_time: int):
    return SimpleNamespace(offset=offset, value=encode_label(txn, is_fraud, label_time, "x"))


def published(producer: FakeProducer) -> dict[tuple[str, int, str], list | None]:
    return {parse_key(k): (None if v is None else decode_entries(v)) for _, k, v in producer.sent}


def test_each_batch_publishes_the_entities_it_changed_keyed_by_partition(tmp_path):
    producer = FakeProducer()
    fc, fake, registry = make(tmp_path, producer)
    assign(fc, fake, 0, 1)
    polled = {
        TopicPartition("scores", 1): [score_record(0, "a", {"terminal_id": "t-1"})],
        TopicPartition("labels", 1): [label_record(0, "a", True, T + 10)],
    }
    fc.take(fake, polled)  # type: ignore[arg-type]
    assert published(producer) == {("terminal_id", 1, "t-1"): [(T, T + 10, 1)]}
    assert {t for t, _, _ in producer.sent} == {"risk"} and producer.flushed == 1
    assert registry.get_sample_value("fraud_feedback_entity_risk_records_total") == 1
    assert fc.stores[1].dirty_records() == []
    producer.sent.clear()
    fc.take(fake, {TopicPartition("labels", 0): [label_record(0, "zz", True, T)]})  # type: ignore[arg-type]
    assert producer.sent == []  # nothing changed


def test_an_entity_with_no_entries_left_is_a_tombstone(tmp_path):
    producer = FakeProducer()
    fc, fake, _ = make(tmp_path, producer)
    assign(fc, fake, 0)
    fc.take(fake, {TopicPartition("scores", 0): [score_record(0, "a", {"terminal_id": "t-1"})],  # type: ignore[arg-type]
                   TopicPartition("labels", 0): [label_record(0, "a", True, T + 10)]})  # fmt: skip
    producer.sent.clear()
    fc.stores[0].risk_horizon_ms = 1
    fc.stores[0].apply([score("later", entity_time=T + 10, entities={"terminal_id": "t-2"})], [], {})
    fc.stores[0].prune()
    fc._risk_pending.add(0)
    fc.publish_risk()
    assert published(producer) == {("terminal_id", 0, "t-1"): None}


def test_a_failed_send_keeps_the_entities_dirty_counts_and_warns_once(tmp_path, caplog):
    failing = FakeProducer(fail=KafkaTimeoutError("no broker"))
    fc, fake, registry = make(tmp_path, failing)
    assign(fc, fake, 0)
    caplog.set_level(logging.WARNING, "worker.feedback.consumer")
    fc.take(fake, {TopicPartition("scores", 0): [score_record(0, "a", {"terminal_id": "t-1", "d": "x"})],  # type: ignore[arg-type]
                   TopicPartition("labels", 0): [label_record(0, "a", True, T + 10)]})  # fmt: skip
    assert registry.get_sample_value("fraud_feedback_entity_risk_errors_total") == 2
    assert not registry.get_sample_value("fraud_feedback_entity_risk_records_total")
    assert len(fc.stores[0].dirty_records()) == 2 and failing.closed and fc._producer is None
    assert fake.committed, "the offsets are committed: the store holds the entities until they are sent"
    warnings = [r for r in caplog.records if "entity risk" in r.getMessage()]
    assert len(warnings) == 1 and "no broker" in warnings[0].getMessage()
    fc.publish_risk()  # too soon: no attempt
    assert registry.get_sample_value("fraud_feedback_entity_risk_errors_total") == 2
    working = FakeProducer()
    fc._producer = working
    fc._risk_retry_at = 0.0
    fc.publish_risk()
    assert published(working) == {("terminal_id", 0, "t-1"): [(T, T + 10, 1)], ("d", 0, "x"): [(T, T + 10, 1)]}
    assert fc.stores[0].dirty_records() == []
    assert registry.get_sample_value("fraud_feedback_entity_risk_records_total") == 2


def test_a_store_opened_with_dirty_entities_publishes_them(tmp_path):
    store = Store(store_path(tmp_path, 2), WINDOW, clock=lambda: NOW)
    store.apply([score("a")], [label("a", True, T)], {"scores": 1, "labels": 1})  # then a crash: never published
    store.close()
    producer = FakeProducer()
    fc, fake, _ = make(tmp_path, producer)
    assign(fc, fake, 2)
    fc.publish_risk()  # the loop's call after each poll
    assert published(producer) == {("terminal_id", 2, "t-1"): [(T, T, 1)], ("customer_id", 2, "c-9"): [(T, T, 1)]}


def test_publishing_off_sends_nothing_and_leaves_the_store_as_it_is(tmp_path):
    producer = FakeProducer()
    fc, fake, _ = make(tmp_path, producer, topic="")
    assign(fc, fake, 0)
    fc.take(fake, {TopicPartition("scores", 0): [score_record(0, "a", {"terminal_id": "t-1"})],  # type: ignore[arg-type]
                   TopicPartition("labels", 0): [label_record(0, "a", True, T)]})  # fmt: skip
    assert producer.sent == [] and len(fc.stores[0].dirty_records()) == 1


# -- the export ---------------------------------------------------------------------------------------------------


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_export_carries_label_time_and_the_input_columns(tmp_path):
    state = tmp_path / "state"
    f = (("amount", "f1"), (1.5, -2.0))
    store = Store(state / "partition-0.sqlite", WINDOW)  # the export reads with the wall clock
    t = store._clock() - DAY_MS
    store.apply([score("a", entity_time=t, inputs={"terminal_id": "t-1", "amount": 1.5, "event_time": 5,
                                                   "mcc": "5411"}, features=f),
                 score("b", entity_time=t + 1, inputs={"terminal_id": 77.0, "channel": None, "extra": True,
                                                       "n": 3}, features=f),
                 score("c", entity_time=t - WINDOW, features=f),
                 score("d", entity_time=t + 2, inputs={"pending": 1}, features=f)],
                [label("a", True, t + 99), label("b", False, t + 5)], {})  # fmt: skip
    store.close()
    out = tmp_path / "x.csv"
    summary = export(state, out, WINDOW)
    assert summary.rows == 3  # a and b labelled, c genuine by the label window; d not known yet
    rows = read_csv(out)
    assert [r["transaction_id"] for r in rows] == ["c", "a", "b"]
    assert list(rows[0]) == ["amount", "f1", "is_fraud", "event_time", "transaction_id", "label_time",
                             "terminal_id", "mcc", "channel", "extra", "n"]  # fmt: skip
    c, a, b = rows
    assert (a["label_time"], a["terminal_id"], a["mcc"], a["channel"], a["amount"]) == (str(t + 99), "t-1", "5411",
                                                                                       "", "1.5")  # fmt: skip
    assert (b["label_time"], b["terminal_id"], b["channel"], b["extra"], b["n"]) == (str(t + 5), "77", "", "", "3")
    assert c["label_time"] == "" and c["terminal_id"] == "" and c["is_fraud"] == "0"


def test_export_cells_read_as_the_engine_reads_the_event():
    from worker.core.features import key_of

    assert [cell(v) for v in (None, True, False, "x", 7, 7.0, 1.5, -0.25)] == ["", "", "", "x", "7", "7", "1.5",
                                                                             "-0.25"]  # fmt: skip
    assert cell(123456789.0) == key_of(123456789.0) and cell(42) == key_of(42)


def test_an_export_of_a_store_from_before_the_entity_risk_has_empty_input_columns(tmp_path):
    import sqlite3

    state = tmp_path / "state"
    path = state / "partition-0.sqlite"
    store = Store(path, WINDOW, clock=lambda: NOW)
    f = (("f0",), (1.0,))
    store.apply([Score("a", "v1", 0.9, 0.5, T, f)], [label("a", True, T + 1)], {})
    store.close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE context; DROP TABLE risk_entries; DROP TABLE risk_dirty;")
    db.close()
    export(state, tmp_path / "x.csv", WINDOW)  # read-only: the tables are not created
    assert read_csv(tmp_path / "x.csv") == [{"f0": "1.0", "is_fraud": "1", "event_time": str(T),
                                              "transaction_id": "a", "label_time": str(T + 1)}]  # fmt: skip
    names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "context" not in names


# -- the flags ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "topic", "horizon"),
    [((), "fraud-entity-risk", 40 * DAY_MS), (("--entity-risk-topic", "none", "--risk-horizon", "12h"), "", 43_200_000),
     (("--entity-risk-topic", "risk-a"), "risk-a", 40 * DAY_MS)],
)  # fmt: skip
def test_the_entity_risk_flags_reach_the_consumer(monkeypatch, tmp_path, flags, topic, horizon):
    from worker.programs.fraud_feedback import main

    seen = []
    monkeypatch.setattr(FeedbackConsumer, "run", lambda self: seen.append(self.settings) or 0)
    monkeypatch.setattr("signal.signal", lambda *_: None)  # the test process keeps its own handlers
    monkeypatch.setattr("worker.edges.logs.configure", lambda *_: None)
    assert main(["--metrics-port", "0", "--state-dir", str(tmp_path), *flags]) == 0
    assert (seen[0].entity_risk_topic, seen[0].risk_horizon_ms) == (topic, horizon)


@pytest.mark.parametrize(
    "flags",
    [("--risk-horizon", "0d"), ("--risk-horizon", "soon"), ("--entity-risk-topic", ""),
     ("--entity-risk-topic", "fraud-labels"), ("--entity-risk-topic", "fraud-scores")],
)  # fmt: skip
def test_bad_entity_risk_flags_are_bad_settings(capsys, flags):
    from worker.programs.fraud_feedback import main

    assert main(["--metrics-port", "0", *flags]) == 2
    assert "bad setting" in capsys.readouterr().err
