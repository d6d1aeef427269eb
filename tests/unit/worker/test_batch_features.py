"""The worker's step from decoded rows to rows with behavioural features (worker/core/batch_features.py)."""

from __future__ import annotations

import json

import numpy as np

from worker.core.batch_features import BatchFeatures
from worker.core.decode import Decoder
from worker.core.features import from_mapping

SPEC = from_mapping({"entity": [{"field": "card", "windows": ["1h"], "aggregates": ["count", "sum(amount)"]}]}, "s")


def _events(*rows: tuple) -> list[bytes]:
    return [json.dumps({"transaction_id": f"t{i}", "amount": a, **({"event_time": t} if t is not None else {}),
                        "card": c}).encode() for i, (t, c, a) in enumerate(rows)]  # fmt: skip


def _run(features: BatchFeatures, values: list[bytes], offsets: list[int] | None = None):
    decoded = Decoder(["amount"]).decode_batch(values)
    parts = None if offsets is None else [0] * len(values)
    return features.extend(decoded, [values[i] for i in decoded.index], parts, offsets)


def test_features_follow_the_events_own_fields_in_batch_order():
    out = _run(BatchFeatures(SPEC), _events((1000, "a", 5.0), (2000, "a", 7.0), (3000, "b", 1.0), (4000, "a", 1.0)))
    assert out.features.dtype == np.float32
    assert out.features.tolist() == [[5.0, 0.0, 0.0], [7.0, 1.0, 5.0], [1.0, 0.0, 0.0], [1.0, 2.0, 12.0]]


def test_an_event_polled_again_is_not_counted_twice():
    features = BatchFeatures(SPEC)
    values = _events((1000, "a", 5.0), (2000, "a", 7.0), (3000, "a", 1.0))
    _run(features, values, offsets=[10, 11, 12])
    again = _run(features, values[1:], offsets=[11, 12])  # a rewind: polled again from offset 11
    assert features.replayed == 2
    after = _run(features, _events((4000, "a", 2.0)), offsets=[13])
    assert after.features.tolist() == [[2.0, 3.0, 13.0]]  # three events before it, each once
    assert again.features[:, 1].tolist() == [1.0, 2.0]  # the replayed ones get their first features back


def test_an_event_without_its_time_goes_to_the_errors_and_changes_nothing():
    features = BatchFeatures(SPEC)
    out = _run(features, _events((1000, "a", 5.0), (None, "a", 9.0), (3000, "a", 1.0)))
    assert out.index == [0, 2]
    assert [(i, e.reason) for i, e in out.errors] == [(1, "missing_field")]
    assert out.features.tolist() == [[5.0, 0.0, 0.0], [1.0, 1.0, 5.0]]


def test_late_events_stay_counted_when_their_partition_is_dropped():
    # The loop puts the difference of ``late`` around a batch into a counter: a partition given away (on
    # kafka-python's thread, meanwhile) took its late events out of the sum, a negative increment that
    # prometheus_client refuses, and the worker ended.
    features = BatchFeatures(SPEC)
    _run(features, _events((5000, "a", 1.0), (1000, "a", 2.0)), offsets=[0, 1])  # the second is late
    assert features.late == 1
    features.drop(0)
    assert features.late == 1
