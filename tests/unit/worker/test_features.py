"""The feature spec and its one computation (worker/core/features.py), against a brute-force reference that
reads every earlier event of the entity by the documented rules, with no buckets kept between events."""

from __future__ import annotations

import math
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
    fit_categoricals,
    from_mapping,
    key_of,
    load_spec,
)

SPEC = {
    "time_field": "event_time",
    "entity": [
        {
            "field": "card",
            "windows": ["1h", "1d"],
            "aggregates": [
                "count",
                "sum(amount)",
                "mean(amount)",
                "min(amount)",
                "max(amount)",
                "ratio(amount)",
                "since_previous",
                "distinct(terminal)",
            ],
        },  # fmt: skip
        {"field": "terminal", "windows": ["1d", "7d"], "delay": "1d", "aggregates": ["count", "mean(amount)"]},
    ],
    "categorical": [{"field": "channel", "max_values": 2, "min_share": 0.1}],
}


def _events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    t = 1_700_000_000_000
    out = []
    for _ in range(n):
        t += rng.choice([0, 1000, 60_000, 3_600_000, 20 * 3_600_000])  # ties, seconds, minutes, hours, days
        out.append({
            "event_time": t,
            "card": rng.choice(["a", "b", "c", 7, None, ""]),
            "terminal": rng.choice(["t1", "t2", "t3"]),
            "amount": round(rng.lognormvariate(3, 1), 2),
            "channel": rng.choice(["web", "web", "pos", "atm", None]),
        })  # fmt: skip
    return out


def _reference(spec: FeatureSpec, events: list[dict]) -> list[list[float]]:
    """Every feature of every event from the events before it, by the docstring's rules, recomputed from scratch."""
    rows = []
    for i, e in enumerate(events):
        row: list[float] = []
        for block in spec.entities:
            key = key_of(e[block.entity])
            past = [p for p in events[:i] if key is not None and key_of(p[block.entity]) == key]
            for a in block.aggregates:
                if a.function == "since_previous":
                    horizon = float(block.horizon)
                    row.append(min((e["event_time"] - past[-1]["event_time"]) / 1000, horizon) if past else horizon)
                    continue
                assert a.window is not None
                width = a.window * 1000 // BUCKETS
                d = block.delay * 1000
                top = (e["event_time"] - d) // width - 1 if d else e["event_time"] // width
                if d:  # whole buckets that end at or before t - d
                    assert all((k + 1) * width <= e["event_time"] - d for k in (top,))
                inside = [p for p in past if top - BUCKETS < p["event_time"] // width <= top]
                xs = [float(p[a.field]) for p in inside] if a.function not in ("count", "distinct") else []
                if a.function == "count":
                    row.append(float(len(inside)))
                elif a.function == "distinct":
                    row.append(float(len({key_of(p[a.field]) for p in inside} - {None})))
                elif a.function == "sum":
                    row.append(math.fsum(xs))
                elif a.function == "mean":
                    row.append(sum(xs) / len(xs) if xs else 0.0)
                elif a.function == "min":
                    row.append(min(xs) if xs else 0.0)
                elif a.function == "max":
                    row.append(max(xs) if xs else 0.0)
                else:
                    mean = sum(xs) / len(xs) if xs else 0.0
                    row.append(e[a.field] / mean if mean > 0 else 1.0)
        for c in spec.categoricals:
            hot = [0.0] * (len(c.values) + 1)
            v = key_of(e[c.field])
            hot[c.values.index(v) if v in c.values else len(c.values)] = 1.0
            row += hot
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_feature_equals_the_brute_force_reference(seed):
    events = _events(600, seed)
    spec = fit_categoricals(from_mapping(SPEC, "spec"), {"channel": [e["channel"] for e in events]})
    assert spec.categoricals[0].values == ("web", "pos")  # the two most frequent over min_share
    engine = FeatureEngine(spec)
    got: list[float] = []
    for e in events:
        engine.step(e["event_time"], [e[f] for f in spec.input_fields], got)
    want = _reference(spec, events)
    assert np.allclose(np.reshape(got, (len(events), -1)), want, rtol=1e-12, atol=0)


def test_offline_columns_sort_by_event_time_and_return_rows_in_file_order():
    events = _events(300, 5)
    spec = fit_categoricals(from_mapping(SPEC, "spec"), {"channel": [e["channel"] for e in events]})
    shuffled = list(events)
    random.Random(1).shuffle(shuffled)
    columns = {f: np.array([e[f] for e in shuffled], dtype=object) for f in spec.input_fields}
    got = compute_columns(spec, [e["event_time"] for e in shuffled], columns)
    # The reference over the time-sorted events, put back in the shuffled order (ties keep file order).
    ordered = sorted(range(len(shuffled)), key=lambda i: shuffled[i]["event_time"])
    want = np.empty_like(got)
    want[ordered] = _reference(spec, [shuffled[i] for i in ordered])
    assert np.allclose(got, want, rtol=1e-12, atol=0)


def test_a_late_event_is_computed_at_its_entitys_latest_time_and_counted():
    spec = from_mapping(
        {"entity": [{"field": "card", "windows": ["1h"], "aggregates": ["count", "since_previous"]}]}, "s"
    )
    engine = FeatureEngine(spec)
    out: list[float] = []
    for t in (10_000_000, 12_000_000, 11_000_000):
        engine.step(t, ["a"], out)
    assert engine.late == 1
    assert out[-2:] == [2.0, 0.0]  # seen at 12,000,000 ms: two before it, none between


def test_state_keeps_only_the_buckets_a_later_event_can_see():
    spec = from_mapping({"entity": [{"field": "card", "windows": ["1h"], "aggregates": ["count"]}]}, "s")
    engine = FeatureEngine(spec)
    out: list[float] = []
    for i in range(1000):
        engine.step(i * 600_000, ["a"], out)  # every 10 minutes for a week: 4 buckets of 2.5 min each hour
    (state,) = engine.store.values()
    assert len(state.windows[0].buckets) <= BUCKETS


def test_the_spec_names_its_features_and_round_trips_through_the_manifest(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(
        'time_field = "event_time"\n[[entity]]\nfield = "card"\nwindows = ["1h", "1d"]\n'
        'aggregates = ["count", "mean(amount)", "since_previous"]\n'
        '[[entity]]\nfield = "terminal"\nwindows = ["1d"]\ndelay = "7d"\naggregates = ["count"]\n'
        '[[categorical]]\nfield = "channel"\n'
    )
    spec = fit_categoricals(load_spec(str(path)), {"channel": ["web"] * 9 + ["pos"]})
    assert spec.names == (
        "card.count.1h", "card.count.1d", "card.mean_amount.1h", "card.mean_amount.1d", "card.since_previous",
        "terminal.count.1d.delay_7d", "channel=web", "channel=pos", "channel=other",
    )  # fmt: skip
    assert spec.input_fields == ("card", "amount", "terminal", "channel")
    assert FeatureSpec.from_manifest(spec.to_manifest()) == spec


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[entity]]\nfield = "card"\nwindows = ["1h"]\naggregates = ["median(amount)"]\n', "median(amount)"),
        ('[[entity]]\nfield = "card"\nwindows = ["1 hour"]\naggregates = ["count"]\n', "1 hour"),
        ('[[entity]]\nfield = "card"\nwindows = ["1h"]\naggregates = ["mean"]\n', "needs a field"),
        ('[[entity]]\nfield = "card"\nwindows = ["10s"]\naggregates = ["count"]\n', "whole-ms buckets"),
        ('[[entity]]\nfield = "card"\naggregates = ["count"]\n', "needs at least one window"),
        ('[[entity]]\nfield = "card"\nwindows = ["1h"]\naggregates = ["count"]\ncolour = 1\n', "colour"),
        ('[[categorical]]\nfield = "channel"\nmax_values = 0\n', "max_values"),
        ("windows = [\n", "not TOML"),
        ('time_unit = "us"\n[[categorical]]\nfield = "c"\n', "time_unit"),
        ("", "declares no"),
    ],
)
def test_a_bad_spec_is_refused_in_one_line_naming_the_problem(tmp_path, text, named):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    message = str(info.value)
    assert "\n" not in message and named in message and str(path) in message


def test_a_manifest_spec_that_does_not_match_its_features_is_a_bundle_error():
    spec = from_mapping({"entity": [{"field": "card", "windows": ["1h"], "aggregates": ["count"]}]}, "s")
    data = spec.to_manifest()
    data["features"] = ["card.count.2h"]
    with pytest.raises(BundleError, match="do not match"):
        FeatureSpec.from_manifest(data)


def test_keys_are_strings_or_integers_and_nothing_else():
    assert [key_of(v) for v in ("c1", 42, 42.0, np.int64(3).item(), "", None, True, 1.5)] == [
        "c1", "42", "42", "3", None, None, None, None,
    ]  # fmt: skip
