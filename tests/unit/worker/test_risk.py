"""Label-derived features (worker/core/risk.py and ``fraud_count`` / ``fraud_rate`` in worker/core/features.py)
against a brute-force reference that reads every fraud entry of the entity by the documented rule."""

from __future__ import annotations

import random

import numpy as np
import pytest

from worker.core.errors import BundleError
from worker.core.features import (
    BUCKETS,
    FeatureEngine,
    FeatureSpec,
    SpecError,
    compute_columns,
    fit_priors,
    from_mapping,
)
from worker.core.risk import FraudHistory, change, decode_entries, encode_entries, frauds_in, parse_key, record_key

HOUR = 3_600_000
SPEC = {
    "time_field": "event_time",
    "entity": [
        {
            "field": "terminal",
            "windows": ["1d", "7d"],
            "delay": "2d",
            "fraud_prior_weight": 5,
            "aggregates": ["count", "fraud_count", "fraud_rate"],
        },  # fmt: skip
    ],
}


def _stream(n: int, seed: int) -> tuple[list[dict], FraudHistory, list[tuple[str, int, int, int]]]:
    """Events at random terminals, each fraud labelled some hours to days later, some labels taken back."""
    rng = random.Random(seed)
    t = 1_700_000_000_000
    events, raw = [], []
    for _ in range(n):
        t += rng.choice([0, 60_000, HOUR, 5 * HOUR])
        terminal = rng.choice(["t1", "t2", "t3", 4, None])
        events.append({"event_time": t, "terminal": terminal})
        if terminal is not None and rng.random() < 0.3:
            label_time = t + rng.choice([0, HOUR, 30 * HOUR, 60 * HOUR, 9 * 24 * HOUR])
            raw.append((str(terminal), t, label_time, 1))
            if rng.random() < 0.2:  # a correction: not fraud after all, later
                raw.append((str(terminal), t, label_time + rng.choice([HOUR, 50 * HOUR]), -1))
    history = FraudHistory()
    for key in {r[0] for r in raw}:
        history.put("terminal", key, [(tx, lab, d) for k, tx, lab, d in raw if k == key])
    return events, history, raw


def _reference(spec: FeatureSpec, events: list[dict], raw: list[tuple[str, int, int, int]]) -> list[list[float]]:
    block = spec.entities[0]
    rows = []
    for i, e in enumerate(events):
        key = None if e["terminal"] is None else str(e["terminal"])
        past = [p for p in events[:i] if key is not None and p["terminal"] is not None and str(p["terminal"]) == key]
        t = e["event_time"]
        row = []
        for a in block.aggregates:
            assert a.window is not None
            width = a.window * 1000 // BUCKETS
            top = (t - block.delay * 1000) // width - 1
            lo, hi = (top - BUCKETS + 1) * width, (top + 1) * width
            count = sum(1 for p in past if lo <= p["event_time"] < hi)
            frauds = sum(d for k, tx, lab, d in raw if k == key and lo <= tx < hi and lab <= t)
            if a.function == "count":
                row.append(float(count))
            elif a.function == "fraud_count":
                row.append(float(frauds))
            else:
                w, r = block.prior_weight, block.prior_rate or 0.0
                row.append(min(max((frauds + r * w) / (count + w), 0.0), 1.0))
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fraud_count_and_rate_equal_the_brute_force_reference(seed):
    spec = fit_priors(from_mapping(SPEC, "spec"), 0.02)
    events, history, raw = _stream(400, seed)
    engine = FeatureEngine(spec, risk=history)
    out: list[float] = []
    for e in events:
        engine.step(e["event_time"], [e["terminal"]], out)
    got = np.asarray(out).reshape(len(events), -1)
    assert np.allclose(got, np.asarray(_reference(spec, events, raw)), rtol=0, atol=1e-12)
    assert got[:, 2].max() > 0 and got[:, 4].min() < 0.02  # frauds seen, and rates under the prior too


def test_a_label_counts_only_once_its_time_has_come():
    entries = [(10, 50, 1), (20, 100, 1), (20, 200, -1), (30, 10, 1)]
    assert frauds_in(entries, 0, 40, 49) == 1  # only the label known at 10
    assert frauds_in(entries, 0, 40, 150) == 3
    assert frauds_in(entries, 0, 40, 200) == 2  # the correction at 200 takes one back
    assert frauds_in(entries, 15, 30, 1000) == 0  # the window: 15 <= tx < 30
    assert frauds_in([], 0, 10, 10) == 0


def test_offline_history_counts_each_fraud_row_at_its_label_time():
    columns = {"terminal": ["a", "a", "b", None, 7]}
    history = FraudHistory.from_rows(["terminal"], columns, [1, 2, 3, 4, 5], [1, 0, 1, 1, 1], [9, 9, 8, 9, 6])
    assert list(history.entries("terminal", "a")) == [(1, 9, 1)]
    assert list(history.entries("terminal", "b")) == [(3, 8, 1)]
    assert list(history.entries("terminal", "7")) == [(5, 6, 1)]
    no_times = FraudHistory.from_rows(["terminal"], columns, [1, 2, 3, 4, 5], [1, 0, 1, 1, 1])
    assert list(no_times.entries("terminal", "a")) == [(1, 1, 1)]
    assert len(history) == 3 and history.total() == 3


def test_the_current_events_own_label_never_counts_for_it():
    spec = fit_priors(from_mapping(SPEC, "spec"), 0.0)
    t = np.array([0, 1, 3], dtype=np.int64) * 24 * HOUR + 1_700_000_000_000
    cols = {"terminal": np.array(["a", "a", "a"], dtype=object)}
    history = FraudHistory.from_rows(["terminal"], cols, t.tolist(), [1, 1, 1])
    x = compute_columns(spec, t, cols, risk=history)
    names = list(spec.names)
    # Day 3 sees the day before yesterday's window: the first payment's fraud, never its own or day 1's.
    assert x[:, names.index("terminal.fraud_count.1d.delay_2d")].tolist() == [0.0, 0.0, 1.0]
    assert x[:, names.index("terminal.fraud_count.7d.delay_2d")].tolist() == [0.0, 0.0, 1.0]


def test_a_label_change_is_an_entry_only_when_the_truth_changes():
    assert change(False, True, 5, 9) == (5, 9, 1)
    assert change(True, False, 5, 12) == (5, 12, -1)
    assert change(False, False, 5, 9) is None and change(True, True, 5, 9) is None


def test_records_round_trip():
    assert parse_key(record_key("terminal_id", "t/1\x00x", 3)) == ("terminal_id", 3, "t/1\x00x")
    assert decode_entries(encode_entries([(3, 4, -1), (1, 2, 1)])) == [(1, 2, 1), (3, 4, -1)]
    with pytest.raises(ValueError):
        parse_key(b"no separators")


@pytest.mark.parametrize(
    ("block", "named"),
    [
        ({"field": "t", "windows": ["1d"], "aggregates": ["fraud_rate"]}, "delay of at least 1h"),
        ({"field": "t", "windows": ["1d"], "delay": "30m", "aggregates": ["fraud_count"]}, "delay of at least 1h"),
        (
            {"field": "t", "windows": ["1d"], "delay": "7d", "aggregates": ["fraud_rate"], "fraud_prior_weight": -1},
            "fraud_prior_weight",
        ),  # fmt: skip
        (
            {"field": "t", "windows": ["1d"], "delay": "7d", "aggregates": ["fraud_rate"], "fraud_prior_rate": 2},
            "fraud_prior_rate",
        ),  # fmt: skip
        ({"field": "t", "windows": ["1d"], "delay": "7d", "aggregates": ["fraud_rate(amount)"]}, "takes no field"),
    ],
)
def test_a_bad_risk_block_is_refused_in_one_line(block, named):
    with pytest.raises(SpecError, match=named) as info:
        from_mapping({"entity": [block]}, "spec.toml")
    assert "\n" not in str(info.value)


def test_the_prior_is_chosen_in_training_and_required_in_a_manifest():
    spec = from_mapping(SPEC, "spec")
    assert spec.entities[0].prior_rate is None and spec.risk_fields == ("terminal",)
    fitted = fit_priors(spec, 0.013)
    assert fitted.entities[0].prior_rate == 0.013
    assert FeatureSpec.from_manifest(fitted.to_manifest()) == fitted
    with pytest.raises(BundleError, match="fraud_prior_rate"):
        FeatureSpec.from_manifest(spec.to_manifest())
    given = from_mapping({**SPEC, "entity": [{**SPEC["entity"][0], "fraud_prior_rate": 0.5}]}, "spec")
    assert fit_priors(given, 0.01).entities[0].prior_rate == 0.5


def test_a_label_stream_gives_the_entries_fraud_feedback_makes():
    from worker.core.risk import history_from_labels

    events = [("a", 100, {"terminal": "t1"}), ("b", 200, {"terminal": "t1"}), ("c", 300, {})]
    labels = [
        ("a", True, 150),
        ("a", True, 140),  # older than the one held: nothing
        ("b", False, 250),  # genuine from the first: no entry
        ("a", False, 400),  # a correction: -1 from its own time
        ("b", True, 180),  # older than b's genuine label: nothing
        ("z", True, 10),  # no such event: nothing
        ("c", True, 50),  # before its transaction: counted from the transaction's time, but it has no entity
    ]
    history = history_from_labels(events, labels)
    assert list(history.entries("terminal", "t1")) == [(100, 150, 1), (100, 400, -1)]
    assert len(history) == 1
