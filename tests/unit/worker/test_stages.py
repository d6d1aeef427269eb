"""Entities other than the input topic's key: the spec split into stages (worker/core/stages.py) and a
batch's rows through them (worker/pipeline/repartition.py), the repartition topics played by lists."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from worker.core.decode import Decoder
from worker.core.features import compute_columns, from_mapping
from worker.core.stages import KeyReader, assemble, digest, header, plan, read_header
from worker.offline import synthetic
from worker.pipeline.repartition import Repartition
from worker.state.feature_state import FeatureState

SPEC = from_mapping(
    {
        "entity": [
            {"field": "terminal_id", "windows": ["1d"], "aggregates": ["count"]},
            {"field": "customer_id", "windows": ["1h", "1d"], "aggregates": ["count", "mean(amount)"]},
            {"field": "terminal_id", "windows": ["7d"], "delay": "1d", "aggregates": ["sum(amount)"]},
        ],
        "categorical": [{"field": "channel"}],
    },
    "ms",
)


def test_one_stage_without_a_key_field_or_when_every_block_is_on_it():
    assert [s.spec for s in plan(SPEC, "")] == [SPEC]
    only = from_mapping({"entity": [{"field": "card", "windows": ["1h"], "aggregates": ["count"]}]}, "ms")
    assert len(plan(only, "card")) == 1


def test_stages_split_the_blocks_by_entity_and_cover_every_feature_once():
    stages = plan(SPEC, "customer_id")
    assert [s.field for s in stages] == [None, "terminal_id"]
    assert [b.entity for b in stages[0].spec.entities] == ["customer_id"]
    assert [b.entity for b in stages[1].spec.entities] == ["terminal_id", "terminal_id"]
    assert stages[1].spec.categoricals == SPEC.categoricals and not stages[0].spec.categoricals
    positions = [p for s in stages for p in s.positions]
    assert sorted(positions) == list(range(len(SPEC.names)))
    for s in stages:
        assert [SPEC.names[p] for p in s.positions] == list(s.spec.names)
    # A key field with no block of its own: stage 0 computes nothing and only forwards.
    stages = plan(SPEC, "card")
    assert [s.field for s in stages] == [None, "terminal_id", "customer_id"]
    assert stages[0].spec.names == ()


def test_assemble_puts_each_stage_back_in_the_specs_order():
    stages = plan(SPEC, "customer_id")
    full = np.arange(len(SPEC.names), dtype=np.float32)[None, :] + 100
    earlier = full[:, list(stages[0].positions)]
    last = full[:, list(stages[1].positions)]
    assert np.array_equal(assemble(stages, earlier, last), full)


def test_a_header_is_read_back_only_for_its_spec_and_stage():
    row = np.array([1.5, np.float32(0.1), 3.0], dtype=np.float32)
    name, value = header("abc", 1, row)
    assert np.array_equal(read_header([("x", b"1"), (name, value)], "abc", 1, 3), row)
    assert read_header([(name, value)], "other", 1, 3) is None
    assert read_header([(name, value)], "abc", 2, 3) is None
    assert read_header([(name, value)], "abc", 1, 4) is None
    assert read_header([(name, b"\xff\x00junk")], "abc", 1, 3) is None
    assert read_header(None, "abc", 1, 3) is None


def test_the_next_stages_key_is_the_entity_as_the_state_keys_it():
    keys = KeyReader("terminal_id")
    assert keys.key(b'{"terminal_id": 17}') == b"17"
    assert keys.key(b'{"terminal_id": "T-1"}') == b"T-1"
    assert keys.key(b'{"terminal_id": null}') is None
    assert keys.key(b'{"amount": 1}') is None


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes
    headers: list | None = None


class Topic:
    """A topic as lists of records, partitioned by key as the producer's partitioner would (a hash)."""

    def __init__(self, name: str, partitions: int) -> None:
        self.name, self.logs = name, [[] for _ in range(partitions)]

    def send(self, key: bytes | None, value: bytes, headers=None) -> None:
        p = (sum(key) if key else 0) % len(self.logs)
        self.logs[p].append(Rec(self.name, p, len(self.logs[p]), value, headers))


FIELDS = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "channel")


@pytest.mark.parametrize("partitions", [1, 3])
def test_terminal_features_through_a_repartition_topic_equal_the_offline_ones(tmp_path, partitions):
    """Events keyed by customer on ``partitions`` partitions, each polled as it arrives (the order of event
    time, one record at a time: a worker keeping up): every feature, terminals included, equals the
    offline computation over the file; a stage-0 row reaching stage 1 for another spec is dead-lettered."""
    columns = synthetic.generate_behavioural(1500, 5)
    spec = from_mapping(
        {
            "entity": [
                {"field": "customer_id", "windows": ["1h", "1d"], "aggregates": ["count", "mean(amount)"]},
                {"field": "terminal_id", "windows": ["1d", "7d"], "aggregates": ["count", "sum(amount)"]},
            ],
        },
        "ms",
    )
    offline = compute_columns(spec, columns["event_time"], columns).astype(np.float32)
    rows = [dict(zip(FIELDS, r, strict=True)) for r in zip(*(columns[f].tolist() for f in FIELDS), strict=True)]
    plan_ = Repartition(spec, "customer_id", "in", "g")
    state = FeatureState(tmp_path / "state", 100)
    inbox, repart = Topic("in", partitions), Topic(plan_.topics[1], partitions)
    decoder = Decoder(["amount"])
    got: dict[str, np.ndarray] = {}

    def poll(rec: Rec) -> None:
        decoded = decoder.decode_batch([rec.value])
        final, forwards = plan_.features(state, [rec], decoded)
        for topic, key, value, headers in forwards:
            assert topic == repart.name
            repart.send(key, value, headers)
            poll(repart.logs[(sum(key) if key else 0) % partitions][-1])
        for j, i in enumerate(final.index):
            got[json.loads([rec][i].value)["transaction_id"]] = final.features[j, 1:]

    for row in rows:
        inbox.send(str(row["customer_id"]).encode(), json.dumps(row).encode())
        p = sum(str(row["customer_id"]).encode()) % partitions
        poll(inbox.logs[p][-1])
    online = np.array([got[r["transaction_id"]] for r in rows])
    assert np.array_equal(online, offline)

    # Without the repartition topic (no input_key_field, as before): each input partition counts only its
    # own events of a terminal, which differs from the offline computation once there is more than one.
    alone = Repartition(spec, "", "in", "g")
    per_partition = FeatureState(tmp_path / "alone", 100)
    values = [r.value for log in inbox.logs for r in log]
    by_partition = alone.features(per_partition, [r for log in inbox.logs for r in log], decoder.decode_batch(values))
    got = {json.loads(values[i])["transaction_id"]: by_partition[0].features[j, 1:]
           for j, i in enumerate(by_partition[0].index)}  # fmt: skip
    before = np.array([got[r["transaction_id"]] for r in rows])
    assert np.array_equal(before, offline) == (partitions == 1)

    stale = Rec(plan_.topics[1], 0, 10**6, json.dumps(rows[0]).encode(), [header("another", 1, offline[0, :4])])
    final, forwards = plan_.features(state, [stale], decoder.decode_batch([stale.value]))
    assert final.index == [] and forwards == [] and [e.reason for _, e in final.errors] == ["stale_features"]
    assert digest(spec) != "another"
