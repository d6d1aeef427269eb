"""fraud-train with a feature spec: the aggregates computed point-in-time, rows before --fit-since only warm
the state, the spec carried in the manifest, the lift reported; bad specs and flags refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.unit.training.conftest import FAST
from worker.core.bundle import load_bundle
from worker.core.features import FeatureSpec, compute_columns
from worker.offline import synthetic

SPEC = """\
time_field = "event_time"

[[entity]]
field = "customer_id"
windows = ["1h", "1d", "30d"]
aggregates = ["count", "mean(amount)", "ratio(amount)", "since_previous"]

[[entity]]
field = "terminal_id"
windows = ["1d", "7d"]
aggregates = ["count"]

[[categorical]]
field = "channel"
"""


def _train(tmp_path: Path, *extra: str) -> int:
    from training.fraud_train import main

    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    return main([
        "--synthetic", "30000", "--generator", "v3", "--feature-spec", str(spec), "--split", "time",
        "--models-dir", str(tmp_path / "models"), *FAST, "--batch-size", "0", "--epochs", "300", *extra,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spec")
    assert _train(tmp, "--fit-since", "2026-01-15") == 0
    models = tmp / "models"
    version = (models / "CURRENT").read_text().strip()
    return load_bundle(models, version)


def test_the_bundle_carries_the_spec_and_its_features_follow_the_events_own(trained):
    m = trained.manifest
    spec = m.spec
    assert isinstance(spec, FeatureSpec)
    assert m.own_features == ("amount",)
    assert m.feature_names[1:] == spec.names
    assert spec.categoricals[0].values  # chosen on the training rows
    assert json.loads(m.to_json())["feature_spec"]["current_event_included"] is False


def test_rows_before_fit_since_only_warm_the_state_and_the_split_follows_event_time(trained):
    facts = trained.manifest.training
    rows = facts["rows"]
    cols = synthetic.generate_behavioural(30000, 42)
    since = synthetic.START_MS + 14 * 86_400_000
    assert facts["behaviour"]["warm_rows"] == int((cols["event_time"] < since).sum())
    assert rows["train"] + rows["val"] + rows["test"] == int((cols["event_time"] >= since).sum())
    assert facts["split"]["method"] == "time:event_time"


def test_the_training_features_are_the_point_in_time_ones_of_the_whole_file(trained):
    # The scaler's mean of each aggregate is its mean over the training rows, computed over every row of
    # the file (warm-up included) by the worker's function.
    m = trained.manifest
    cols = synthetic.generate_behavioural(30000, 42)
    features = compute_columns(m.spec, cols["event_time"], cols)
    since = synthetic.START_MS + 14 * 86_400_000
    kept = features[cols["event_time"] >= since]
    n_train = m.training["rows"]["train"]
    raw = kept[:n_train, m.feature_names.index("customer_id.count.1d") - 1]
    transform = m.feature_transforms[m.feature_names.index("customer_id.count.1d")]
    assert transform.kind in ("identity", "log1p", "signed_log1p")
    expected = {"identity": raw, "log1p": np.log1p(raw), "signed_log1p": np.sign(raw) * np.log1p(np.abs(raw))}[
        transform.kind
    ]
    j = m.feature_names.index("customer_id.count.1d")
    assert m.scaler_mean[j] == pytest.approx(float(expected.mean()), rel=1e-9)


def test_the_report_shows_each_aggregate_and_the_lift(trained):
    behaviour = trained.manifest.training["behaviour"]
    lift = behaviour["lift"]
    assert lift["with"]["pr_auc"] == trained.manifest.metrics["pr_auc"]
    assert 0.0 <= lift["without"]["pr_auc"] <= 1.0
    assert [f["name"] for f in behaviour["features"]] == list(trained.manifest.spec.names)
    page = (trained.path / "report.html").read_text()
    assert "Behavioural features" in page and "customer_id.ratio_amount.30d" in page


@pytest.mark.parametrize(
    ("spec", "flags", "named"),
    [
        ('[[entity]]\nfield = "customer_id"\nwindows = ["1h"]\naggregates = ["median(amount)"]\n', [], "median"),
        ('[[entity]]\nfield = "card_no"\nwindows = ["1h"]\naggregates = ["count"]\n', [], "card_no"),
        (None, ["--fit-since", "yesterday"], "--fit-since"),
    ],
)
def test_a_bad_spec_or_flag_fails_in_one_line(tmp_path, capsys, spec, flags, named):
    from training.fraud_train import main

    path = tmp_path / "bad.toml"
    path.write_text(spec if spec is not None else SPEC)
    code = main([
        "--synthetic", "5000", "--generator", "v3", "--feature-spec", str(path), "--models-dir", str(tmp_path / "m"),
        *FAST, *flags,
    ])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and named in err[0], err
    assert not (tmp_path / "m" / "CURRENT").exists()


def test_fit_since_needs_a_spec(tmp_path, capsys):
    from training.fraud_train import main

    code = main(["--synthetic", "5000", "--fit-since", "100", "--models-dir", str(tmp_path), *FAST])
    assert code == 1
    assert "--fit-since needs --feature-spec" in capsys.readouterr().err


def test_backtest_and_parity_compute_the_training_features(trained, tmp_path, capsys):
    # The worker's online path (decode, then BatchFeatures) over a v3 file in event-time order gives the
    # offline values; so do the score records the backtest writes with their features.
    from worker.programs.fraud_worker import main as worker_main

    data = synthetic.write_csv(tmp_path / "v3.csv", synthetic.generate_behavioural(8000, 3), quote_header=False)
    models = str(trained.path.parent)
    out = tmp_path / "scores.jsonl"
    assert worker_main(["backtest", "--input", str(data), "--models-dir", models, "--output", str(out),
                        "--scores-include-features", "--quiet"]) == 0  # fmt: skip
    assert sum(1 for _ in open(out)) == 8000  # no event rejected: spec features are never out of range
    capsys.readouterr()
    assert worker_main(["parity", "--input", str(data), "--models-dir", models, "--scores", str(out)]) == 0
    assert "online equal; 8,000 score records equal" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    record = json.loads(lines[4000])
    record["features"]["customer_id.mean_amount.30d"] += 0.5
    lines[4000] = json.dumps(record)
    out.write_text("\n".join(lines) + "\n")
    assert worker_main(["parity", "--input", str(data), "--models-dir", models, "--scores", str(out)]) == 1
    assert f"customer_id.mean_amount.30d: 1 values differ ({record['transaction_id']}" in capsys.readouterr().out


def test_an_extreme_spec_feature_is_scored_not_rejected(trained):
    # A ratio over a tiny mean is far beyond the training rows; the worker computed it, so the event is
    # scored (the value clipped to its training range), never dead-lettered as out_of_range.
    from worker.core.scoring import Scorer

    scorer = Scorer(trained)
    row = np.zeros((1, trained.manifest.n_features), dtype=np.float32)
    row[0, trained.manifest.feature_names.index("customer_id.ratio_amount.30d")] = 1e12
    assert scorer.out_of_range_rows(row) == []
    row[0, 0] = 1e30  # the event's own amount still is checked
    assert [e.reason for _, e in scorer.out_of_range_rows(row)] == ["out_of_range"]
