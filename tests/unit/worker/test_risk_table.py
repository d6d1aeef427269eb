"""The worker's entity-risk table (worker/state/risk_table.py) without a broker: records in, entries out, and
the score records' context (worker/core/score_context.py) that fraud-feedback makes the entries from."""

from __future__ import annotations

import json
import math

import msgspec

from worker.core.features import from_mapping
from worker.core.risk import encode_entries, record_key
from worker.core.score_context import ScoreContext
from worker.state.risk_table import RiskTable

SPEC = from_mapping(
    {
        "entity": [
            {"field": "customer_id", "windows": ["1h"], "aggregates": ["count"]},
            {"field": "terminal_id", "windows": ["1d"], "delay": "1d", "aggregates": ["fraud_rate"]},
        ],
        "categorical": [{"field": "channel"}],
    },
    "spec",
)


def test_an_entitys_entries_are_every_feedback_partitions_merged():
    table = RiskTable("fraud-entity-risk", {}, max_age=60)
    table.apply(record_key("terminal_id", "t1", 0), encode_entries([(10, 20, 1)]))
    table.apply(record_key("terminal_id", "t1", 1), encode_entries([(5, 30, 1), (5, 40, -1)]))
    assert list(table.entries("terminal_id", "t1")) == [(5, 30, 1), (5, 40, -1), (10, 20, 1)]
    table.apply(record_key("terminal_id", "t1", 1), encode_entries([(5, 30, 1)]))  # a newer record replaces
    assert list(table.entries("terminal_id", "t1")) == [(5, 30, 1), (10, 20, 1)]
    table.apply(record_key("terminal_id", "t1", 0), None)  # a tombstone: partition 0 has none left
    assert list(table.entries("terminal_id", "t1")) == [(5, 30, 1)]
    table.apply(record_key("terminal_id", "t1", 1), None)
    assert list(table.entries("terminal_id", "t1")) == [] and len(table.history) == 0
    assert table.records == 5 and table.bad == 0


def test_a_record_it_cannot_read_is_counted_and_skipped():
    table = RiskTable("fraud-entity-risk", {}, max_age=60)
    table.apply(b"no separators", encode_entries([(1, 2, 1)]))
    table.apply(record_key("terminal_id", "t1", 0), b"\xff\x00 not msgpack")
    table.apply(None, b"")
    table.apply(record_key("terminal_id", "t1", 0), msgspec.msgpack.encode([[1, 2, 1000]]))  # not +1 or -1
    table.apply(record_key("terminal_id", "t1", 0), msgspec.msgpack.encode([[1, "x", 1]]))
    table.apply(record_key("terminal_id", "t2", 0), encode_entries([(1, 2, 1)]))
    assert table.bad == 5 and table.records == 6 and table.frauds() == 1


def test_the_table_is_stale_until_it_has_read_its_topic_and_once_it_falls_behind():
    now = [100.0]
    table = RiskTable("fraud-entity-risk", {}, max_age=60, clock=lambda: now[0])
    assert table.age() == math.inf and table.stale()
    table.caught_up_at = 100.0
    now[0] = 150.0
    assert table.age() == 50.0 and not table.stale()
    now[0] = 161.0
    assert table.stale()


def _record(fragment: bytes) -> dict:
    return json.loads(b'{"transaction_id":"x"' + fragment + b"}")


def test_score_records_carry_the_entities_whose_risk_the_spec_reads():
    events = [
        b'{"event_time": 5000, "customer_id": "c1", "terminal_id": 42, "channel": "web", "amount": 3}',
        b'{"event_time": 6000, "customer_id": "c1", "channel": {"x": 1}}',
    ]
    plain = ScoreContext(SPEC, inputs=False)
    first, second = plain.fragments(events)
    assert _record(first) == {"transaction_id": "x", "entity_time": 5000, "entities": {"terminal_id": "42"}}
    assert _record(second) == {"transaction_id": "x", "entity_time": 6000, "entities": {}}
    with_inputs = ScoreContext(SPEC, inputs=True).fragments(events)
    assert _record(with_inputs[0])["inputs"] == {
        "customer_id": "c1", "terminal_id": 42, "channel": "web", "event_time": 5000
    }  # fmt: skip
    assert _record(with_inputs[1])["inputs"]["channel"] is None  # not a scalar: null
    no_labels = from_mapping({"entity": [{"field": "customer_id", "windows": ["1h"], "aggregates": ["count"]}]}, "s")
    assert not ScoreContext(no_labels, inputs=False).active
    assert ScoreContext(no_labels, inputs=False).fragments(events) == [b"", b""]
