"""fraud-train --segment-field: a threshold per value of a field, chosen on that value's validation rows by
the global threshold's policy; values below --segment-min-support (or without a fraud) keep the global one;
the manifest carries the table, the worker's Scorer applies it, and the test rows are measured both ways."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from tests.unit.training.conftest import FAST
from training import segments
from training.errors import DataError
from training.split import stratified_split
from training.thresholds import Policy
from worker.core.bundle import Manifest, load_bundle
from worker.core.decisions import MAX_SEGMENT_CHARS, SegmentThresholds
from worker.core.scoring import Scorer
from worker.offline import synthetic

# v3 data whose validation rows hold merchant categories above and below the support, and one with no fraud.
ROWS, SEED, FIELD, SUPPORT = 6000, 2, "merchant_category", 100
POLICY = Policy("cost", cost_missed_fraud=20.0, cost_false_alarm=1.0)
POLICY_FLAGS = ["--threshold-policy", "cost", "--cost-missed-fraud", "20", "--cost-false-alarm", "1"]


def _train(models, *extra: str, rows: int = ROWS, seed: int = SEED) -> int:
    from training.fraud_train import main

    return main([
        "--synthetic", str(rows), "--generator", "v3", "--seed", str(seed), "--models-dir", str(models),
        *FAST, *POLICY_FLAGS, *extra,
    ])  # fmt: skip


def _current(models):
    return load_bundle(models, (models / "CURRENT").read_text().strip())


def _expected(values, y, scores, min_support, policy=POLICY):
    """The thresholds the policy gives each qualifying value on its own rows, computed here from scratch."""
    out = {}
    for v in sorted(set(values.tolist())):
        rows = values == v
        if rows.sum() >= min_support and y[rows].sum() >= 1:
            out[str(v)] = policy.choose(y[rows], scores[rows]).threshold
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    models = tmp_path_factory.mktemp("segments")
    assert _train(models, "--segment-field", FIELD, "--segment-min-support", str(SUPPORT)) == 0
    return _current(models)


@pytest.fixture(scope="module")
def rows(trained):
    """The run's data, split and scores rebuilt from the seed: (field values, labels, scores, split)."""
    cols = synthetic.generate_behavioural(ROWS, SEED)
    y = cols["Class"].astype(np.int64)
    split = stratified_split(y, SEED, 0.2, 0.2)
    X = np.column_stack([cols[n] for n in trained.manifest.feature_names]).astype(np.float64)
    scores = Scorer(trained).score(X)
    return cols[FIELD], y, scores, split


def test_each_segment_threshold_is_the_policys_on_that_segments_validation_rows(trained, rows):
    values, y, scores, split = rows
    m = trained.manifest
    assert FIELD not in m.feature_names  # only read, never a model input
    expected = _expected(values[split.val], y[split.val], scores[split.val], SUPPORT)
    assert expected and m.segment_thresholds is not None
    assert m.segment_thresholds["field"] == FIELD and m.segment_thresholds["min_support"] == SUPPORT
    assert m.segment_thresholds["thresholds"] == pytest.approx(expected, abs=1e-9)
    # The same policy, the same parameters, as the global threshold.
    assert m.threshold == pytest.approx(POLICY.choose(y[split.val], scores[split.val]).threshold, abs=1e-9)
    assert (
        m.training["segments"]["policy"]
        == POLICY.params()
        == {k: v for k, v in m.threshold_policy.items() if k not in ("chosen_on", "validation")}
    )


def test_values_below_the_support_or_without_a_fraud_get_no_entry(trained, rows):
    values, y, _, split = rows
    val, y_val = values[split.val], y[split.val]
    counts = {str(v): (int((val == v).sum()), int(y_val[val == v].sum())) for v in set(val.tolist())}
    below = {v for v, (n, _) in counts.items() if n < SUPPORT}
    no_fraud = {v for v, (n, f) in counts.items() if n >= SUPPORT and f == 0}
    assert below and no_fraud  # the data is chosen to have both
    table = trained.manifest.segment_thresholds["thresholds"]
    assert set(table) == set(counts) - below - no_fraud
    facts = trained.manifest.training["segments"]
    assert (facts["chosen"], facts["below_support"], facts["no_fraud"]) == (len(table), len(below), len(no_fraud))


def test_the_manifest_round_trips_and_the_scorer_applies_the_table(trained):
    text = (trained.path / "manifest.json").read_text()
    again = Manifest.from_dict(json.loads(text))
    assert again == trained.manifest
    scorer = Scorer(trained)
    table = trained.manifest.segment_thresholds["thresholds"]
    some = sorted(table)[0]
    thresholds, applied = scorer.segments.apply([some, "no-such-category", None, 7], scorer.threshold)
    assert thresholds.tolist() == [table[some], scorer.threshold, scorer.threshold, scorer.threshold]
    assert applied == [some, None, None, None]


def test_the_test_rows_are_measured_at_the_global_threshold_and_with_the_segments(trained, rows):
    values, y, scores, split = rows
    m = trained.manifest
    y_t, s_t, v_t = y[split.test], scores[split.test], values[split.test]
    # metrics: every row at the global threshold, as without segments.
    flagged = s_t >= m.threshold
    assert m.metrics["confusion"]["tp"] == int((flagged & (y_t == 1)).sum())
    assert m.metrics["confusion"]["fp"] == int((flagged & (y_t == 0)).sum())
    # metrics.with_segment_thresholds: each row at its segment's threshold, the global one elsewhere.
    table = m.segment_thresholds["thresholds"]
    own = np.array([table.get(str(v), m.threshold) for v in v_t.tolist()])
    flagged = s_t >= own
    seg = m.metrics["with_segment_thresholds"]
    assert seg["confusion"]["tp"] == int((flagged & (y_t == 1)).sum())
    assert seg["confusion"]["fp"] == int((flagged & (y_t == 0)).sum())
    assert seg["rows_at_segment_threshold"] == sum(str(v) in table for v in v_t.tolist())
    assert m.training["segments"]["test"]["with_segment_thresholds"] == seg
    # Per segment: rows, frauds, threshold, and precision / recall at its threshold and at the global one.
    listed = {s["value"]: s for s in m.training["segments"]["segments"]}
    assert set(listed) == set(table)
    for v, s in listed.items():
        rows_v = v_t == v
        assert s["threshold"] == table[v]
        assert (s["test"]["rows"], s["test"]["frauds"]) == (int(rows_v.sum()), int(y_t[rows_v].sum()))
        for key, t in (("segment_threshold", table[v]), ("global_threshold", m.threshold)):
            tp = int(((s_t >= t) & rows_v & (y_t == 1)).sum())
            assert s["test"][key]["confusion"]["tp"] == tp
            assert s["test"][key]["recall"] == pytest.approx(tp / max(int(y_t[rows_v].sum()), 1))
        val_rows = values[split.val] == v
        assert s["validation"]["rows"] == int(val_rows.sum())
        assert s["validation"]["frauds"] == int(y[split.val][val_rows].sum())
    report = (trained.path / "report.html").read_text()
    assert "Per-segment thresholds" in report and all(f"<td>{v}</td>" in report for v in table)
    assert json.loads((trained.path / "metrics.json").read_text())["test"]["with_segment_thresholds"] == seg


def test_a_missing_column_is_refused_in_one_line(tmp_path, capsys):
    rc = _train(tmp_path / "m", "--segment-field", "region")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("fraud-train: ") and "'region'" in err[0], err
    assert "--segment-field" in err[0]
    assert not (tmp_path / "m").exists()
    path = synthetic.write_csv(tmp_path / "v3.csv", synthetic.generate_behavioural(ROWS, SEED))
    from training.fraud_train import main

    rc = main(["--data", str(path), "--models-dir", str(tmp_path / "m"), *FAST, "--segment-field", "region"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "'region'" in err[0] and str(path) in err[0], err


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--segment-field", FIELD, "--segment-min-support", "0"], "--segment-min-support"),
     (["--segment-field", "Class"], "label column")],
)  # fmt: skip
def test_a_bad_segment_flag_is_refused(tmp_path, capsys, flags, named):
    try:
        rc = _train(tmp_path / "m", *flags)
    except SystemExit as exc:  # a bad flag: usage, exit 2
        rc = int(exc.code or 0)
        assert rc == 2
    else:
        assert rc == 1
    assert named in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_csv_fields_text_is_the_segment_and_an_integer_field_may_be_a_feature(tmp_path):
    # An integer column that is also a model input: only read for the segments; its CSV text ("3") is what
    # segment_key makes of the event's JSON value (3, 3.0 or "3").
    cols = synthetic.generate_behavioural(ROWS, SEED)
    cols["region"] = np.unique(cols[FIELD], return_inverse=True)[1].astype(np.int64)
    path = synthetic.write_csv(tmp_path / "v3.csv", cols)
    models = tmp_path / "models"
    from training.fraud_train import main

    assert main([
        "--data", str(path), "--features", "amount,region", "--seed", str(SEED), "--models-dir", str(models),
        *FAST, *POLICY_FLAGS, "--segment-field", "region", "--segment-min-support", str(SUPPORT),
    ]) == 0  # fmt: skip
    bundle = _current(models)
    m = bundle.manifest
    assert m.feature_names == ("amount", "region")
    y = cols["Class"].astype(np.int64)
    split = stratified_split(y, SEED, 0.2, 0.2)
    scores = Scorer(bundle).score(np.column_stack([cols["amount"], cols["region"]]).astype(np.float64))
    expected = _expected(cols["region"][split.val], y[split.val], scores[split.val], SUPPORT)
    assert m.segment_thresholds["thresholds"] == pytest.approx(expected, abs=1e-9)
    key = sorted(expected)[0]
    thresholds, applied = Scorer(bundle).segments.apply([int(key), float(key), key], m.threshold)
    assert applied == [key] * 3 and thresholds.tolist() == [expected[key]] * 3


def test_with_a_feature_spec_the_segments_follow_the_rows_from_fit_since_on(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('time_field = "event_time"\n\n[[entity]]\nfield = "customer_id"\nwindows = ["1d"]\n'
                    'aggregates = ["count", "mean(amount)"]\n')  # fmt: skip
    since = "2026-01-15"
    rows, seed = 8000, 5
    models = tmp_path / "models"
    assert _train(
        models, "--feature-spec", str(spec), "--fit-since", since, "--segment-field", "channel",
        "--segment-min-support", "100", rows=rows, seed=seed,
    ) == 0  # fmt: skip
    bundle = _current(models)
    m = bundle.manifest
    from worker.core.features import compute_columns

    cols = synthetic.generate_behavioural(rows, seed)
    kept = cols["event_time"] >= datetime(2026, 1, 15, tzinfo=timezone.utc).timestamp() * 1000
    X = np.column_stack([
        *(np.asarray(cols[n], dtype=np.float64) for n in m.own_features),
        compute_columns(m.spec, cols["event_time"], cols),
    ])[kept]  # fmt: skip
    y = cols["Class"].astype(np.int64)[kept]
    split = stratified_split(y, seed, 0.2, 0.2)
    scores = Scorer(bundle).score(X)
    expected = _expected(cols["channel"][kept][split.val], y[split.val], scores[split.val], 100)
    assert expected and m.segment_thresholds["thresholds"] == pytest.approx(expected, abs=1e-9)


def test_support_counts_each_value_once_and_says_why_a_value_has_no_threshold():
    values = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 2 + [None] * 3 + ["x" * (MAX_SEGMENT_CHARS + 1)] * 5,
                      dtype=object)  # fmt: skip
    y = np.array([1, 0, 0, 0, 0] + [0] * 5 + [1, 1] + [1, 1, 1] + [1] * 5)
    sup = segments.support("f", 3, values, y)
    assert list(sup.chosen) == ["a"] and sup.chosen["a"].tolist() == [0, 1, 2, 3, 4]
    assert (sup.below_support, sup.no_fraud, sup.too_long) == (("c",), ("b",), ("x" * (MAX_SEGMENT_CHARS + 1),))
    scores = np.linspace(0.9, 0.1, values.size)
    choices = segments.choose(sup, POLICY, y, scores)
    assert choices["a"].threshold == POLICY.choose(y[:5], scores[:5]).threshold


def test_values_of_generated_data_are_segment_keys():
    ds = type("D", (), {})()  # the few attributes read_values reads
    ds.raw, ds.n_rows, ds.label_column, ds.source = {"k": np.array([3, 4, 3], dtype=np.int64)}, 3, "Class", "gen"
    assert segments.read_values("k", ds).tolist() == ["3", "4", "3"]
    with pytest.raises(DataError, match="no column 'z' for --segment-field"):
        segments.read_values("z", ds)
    assert SegmentThresholds("k", 1, {"3": 0.2}).apply([3], 0.5)[1] == ["3"]
