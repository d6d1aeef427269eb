"""Label-derived features offline (docs/entity-risk.md): fraud-train computes fraud_count and fraud_rate from
the file's labels at their label times, chooses the prior on the training rows, and the backtest and
``fraud-worker parity --labels`` compute the same values from the same labelled file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.unit.training.conftest import FAST
from worker.core.bundle import load_bundle
from worker.core.features import compute_columns
from worker.core.risk import FraudHistory
from worker.feedback.records import encode_label
from worker.offline import synthetic

ROWS, SEED = 30000, 42
SPEC = """\
time_field = "event_time"

[[entity]]
field = "customer_id"
windows = ["1d"]
aggregates = ["count", "mean(amount)"]

[[entity]]
field = "terminal_id"
windows = ["1d", "7d"]
delay = "2d"
aggregates = ["count", "fraud_count", "fraud_rate"]
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from training.fraud_train import main

    tmp = tmp_path_factory.mktemp("risk")
    spec = tmp / "spec.toml"
    spec.write_text(SPEC)
    assert main([
        "--synthetic", str(ROWS), "--generator", "v3", "--feature-spec", str(spec), "--split", "time",
        "--models-dir", str(tmp / "models"), *FAST, "--batch-size", "0", "--epochs", "200", "--seed", str(SEED),
    ]) == 0  # fmt: skip
    models = tmp / "models"
    return load_bundle(models, (models / "CURRENT").read_text().strip())


def _offline(spec, cols, label_times=True):
    history = FraudHistory.from_rows(spec.risk_fields, cols, cols["event_time"].tolist(), cols["Class"].tolist(),
                                     cols["label_time"].tolist() if label_times else None)  # fmt: skip
    return compute_columns(spec, cols["event_time"], cols, risk=history)


def test_the_prior_is_the_training_fraud_share_and_the_features_read_the_labels_at_their_time(trained):
    m = trained.manifest
    block = m.spec.entities[1]
    assert block.reads_labels and block.prior_rate is not None and 0 < block.prior_rate < 0.1
    cols = synthetic.generate_behavioural(ROWS, SEED)
    names = list(m.spec.names)
    with_times = _offline(m.spec, cols)
    without = _offline(m.spec, cols, label_times=False)
    k = names.index("terminal_id.fraud_count.7d.delay_2d")
    # Labels known later than the event do not count: never more frauds with the label times than without.
    assert (with_times[:, k] <= without[:, k]).all() and (with_times[:, k] < without[:, k]).any()
    assert with_times[:, k].max() > 0
    # The bundle's scaler saw these values: its mean of the feature is theirs over the training rows.
    raw = with_times[: m.training["rows"]["train"], k]  # the generator's rows are in event-time order
    j = m.feature_names.index("terminal_id.fraud_count.7d.delay_2d")
    transform = m.feature_transforms[j].kind
    expected = {"identity": raw, "log1p": np.log1p(raw), "signed_log1p": np.sign(raw) * np.log1p(np.abs(raw))}
    assert m.scaler_mean[j] == pytest.approx(float(expected[transform].mean()), rel=1e-9)


def test_backtest_and_parity_compute_the_training_risk_values(trained, tmp_path, capsys):
    from worker.programs.fraud_worker import main as worker_main

    cols = synthetic.generate_behavioural(8000, 3)
    data = synthetic.write_csv(tmp_path / "v3.csv", cols, quote_header=False)
    models = str(Path(trained.path).parent)
    out = tmp_path / "scores.jsonl"
    assert worker_main(["backtest", "--input", str(data), "--models-dir", models, "--output", str(out),
                        "--scores-include-features", "--quiet"]) == 0  # fmt: skip
    want = _offline(trained.manifest.spec, cols).astype(np.float32)
    names = list(trained.manifest.spec.names)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    row_of = {t: i for i, t in enumerate(cols["transaction_id"].tolist())}
    got = np.array([[r["features"][n] for n in names] for r in records], dtype=np.float32)
    assert np.array_equal(got, want[[row_of[r["transaction_id"]] for r in records]])
    assert got[:, names.index("terminal_id.fraud_count.7d.delay_2d")].max() > 0

    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(b"".join(
        encode_label(t, bool(y), int(lt), "test") + b"\n"
        for t, y, lt in zip(cols["transaction_id"].tolist(), cols["Class"].tolist(), cols["label_time"].tolist(),
                            strict=True)
    ))  # fmt: skip
    capsys.readouterr()
    args = ["parity", "--input", str(data), "--models-dir", models, "--scores", str(out)]
    assert worker_main([*args, "--labels", str(labels)]) == 0
    assert "online equal; 8,000 score records equal" in capsys.readouterr().out
    assert worker_main(args) == 1  # without the labels the score records' risk values differ
    assert "terminal_id.fraud_count" in capsys.readouterr().out


def test_retraining_takes_the_serving_bundles_spec(trained, tmp_path):
    # make retrain: fraud-feedback export's columns (the inputs, is_fraud, event_time, label_time), then
    # fraud-train --feature-spec current: the next bundle computes the same features, its priors chosen again.
    import shutil

    from training.fraud_train import main

    models = tmp_path / "models"
    shutil.copytree(Path(trained.path).parent, models)
    cols = synthetic.generate_behavioural(ROWS, 5)
    export = {"amount": cols["amount"], "is_fraud": cols["Class"], "event_time": cols["event_time"],
              "transaction_id": cols["transaction_id"], "label_time": cols["label_time"],
              "customer_id": cols["customer_id"], "terminal_id": cols["terminal_id"]}  # fmt: skip
    data = synthetic.write_csv(tmp_path / "examples.csv", export, quote_header=False)
    assert main(["--data", str(data), "--label-column", "is_fraud", "--split", "time", "--feature-spec", "current",
                 "--models-dir", str(models), *FAST, "--batch-size", "0", "--epochs", "50"]) == 0  # fmt: skip
    versions = sorted(p.name for p in models.iterdir() if p.is_dir())
    newest = load_bundle(models, versions[-1]).manifest
    assert newest.version != trained.manifest.version
    assert newest.spec.names == trained.manifest.spec.names
    assert newest.own_features == ("amount",)  # label_time and event_time are never features
    assert newest.spec.entities[1].prior_rate == pytest.approx(
        float(cols["Class"][: newest.training["rows"]["train"]].mean())
    )
