"""A polled batch (worker/delivery/batch.py): what it keeps once partitions are revoked."""

from __future__ import annotations

import numpy as np
from kafka import TopicPartition

from tests.unit.worker.conftest import SPEC
from tests.unit.worker.standins import Record, event
from worker.core.decode import Decoder
from worker.delivery.batch import Batch, without

TOPIC = "transactions"


def test_a_batch_loses_the_records_of_revoked_partitions_and_nothing_else():
    """Results of a batch polled before a rebalance are not sent for the partitions it revoked."""
    names = SPEC["feature_names"]
    rng = np.random.default_rng(5)
    values = [event(i, f) for i, f in enumerate(rng.normal(0, 1, (6, len(names))))]
    values[1] = b"{broken"
    values[4] = b"[]"
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    polled = {p0: [Record(TOPIC, 0, 10 + i, 0, None, values[i], []) for i in range(3)],
              p1: [Record(TOPIC, 1, 20 + i, 0, None, values[3 + i], []) for i in range(3)]}  # fmt: skip
    batch = Batch.of(polled, epoch=0)
    batch.decoded = Decoder(names).decode_batch([r.value for r in batch.records])
    kept = without(batch, frozenset({p0}))
    assert [r.offset for r in kept.records] == [20, 21, 22]
    assert kept.first_offsets == {p1: 20} and kept.next_offsets == {p1: 23}
    assert kept.decoded.transaction_ids == ["tx-3", "tx-5"] and kept.decoded.index == [0, 2]
    assert [(i, e.reason) for i, e in kept.decoded.errors] == [(1, "not_an_object")]
    np.testing.assert_array_equal(kept.decoded.features, batch.decoded.features[[2, 3]])


def test_a_rewind_goes_back_to_the_lowest_first_offset_of_each_partition():
    from worker.delivery.batch import first_offsets

    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)

    def polled(partition: int, offsets: range) -> Batch:
        tp = TopicPartition(TOPIC, partition)
        return Batch.of({tp: [Record(TOPIC, partition, o, 0, None, b"{}", []) for o in offsets]}, epoch=0)

    batches = [polled(0, range(5, 9)), polled(1, range(30, 32)), polled(0, range(2, 4)), polled(1, range(40, 41))]
    assert first_offsets(batches) == {p0: 2, p1: 30}
    assert first_offsets([]) == {}
