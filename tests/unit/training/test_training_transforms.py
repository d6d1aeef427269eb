"""A training run chooses transforms on its training rows, writes them in the manifest, and the
worker's Scorer reads them and scores as an independent computation does."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import from_columns
from training.export import outside_rows
from training.pipeline import TRANSFORMS_LOSS_MARGIN, TrainConfig, run
from training.split import stratified_split
from worker.core.bundle import read_manifest
from worker.core.scoring import load_scorer
from worker.offline import synthetic

from .conftest import train


def independent_scores(m, raw: np.ndarray) -> np.ndarray:
    """clip -> transform -> scale -> weights -> sigmoid, in float64, from the manifest alone."""
    x = np.array(raw, dtype=np.float64)
    for j, t in enumerate(m.feature_transforms):
        if t.clip is not None:
            lo, hi = t.clip
            x[:, j] = np.clip(x[:, j], -np.inf if lo is None else lo, np.inf if hi is None else hi)
        if t.kind == "log1p":
            x[:, j] = np.log1p(x[:, j])
        elif t.kind == "signed_log1p":
            x[:, j] = np.sign(x[:, j]) * np.log1p(np.abs(x[:, j]))
    z = ((x - np.array(m.scaler_mean)) / np.array(m.scaler_scale)) @ np.array(m.weights) + m.bias
    return 1.0 / (1.0 + np.exp(-z))


def test_the_manifest_carries_the_chosen_transforms_and_the_scorer_applies_them(trained):
    scorer = load_scorer(str(trained))
    m = scorer.bundle.manifest
    facts = m.training["transforms"]
    assert facts["used"] is True  # on this data the transforms win on validation
    assert facts["validation_pr_auc"]["with"] >= facts["validation_pr_auc"]["without"]
    kinds = dict(zip(m.feature_names, (t.kind for t in m.feature_transforms), strict=True))
    assert [f["kind"] for f in facts["features"]] == list(kinds.values())
    assert all(kinds[name] == "log1p" for name in ("Amount", *synthetic.HEAVY_COLUMNS))
    assert kinds["Time"] == "identity" and kinds["V14"] == "signed_log1p"
    assert all(t.clip is not None and t.clip[0] >= 0 for t in m.feature_transforms if t.kind == "log1p")

    cols = synthetic.generate(6000, 7, 0.03)
    X = np.column_stack([cols[n] for n in m.feature_names])
    split = stratified_split(cols["Class"].astype(int), m.training["seed"], 0.2, 0.2)
    train_rows = X[split.train]
    for j, t in enumerate(m.feature_transforms):  # every feature's clip bounds are the training rows' range
        assert t.clip == (train_rows[:, j].min(), train_rows[:, j].max()), m.feature_names[j]
    outside = outside_rows(train_rows.min(axis=0), train_rows.max(axis=0), rows=300, seed=1)
    for rows in (X[split.test], outside):
        served = scorer.score(rows)
        assert np.isfinite(served).all()
        assert np.max(np.abs(served - independent_scores(m, rows))) <= 1e-5
    assert m.metrics["parity_max_abs_diff"] <= 1e-5

    report = (scorer.bundle.path / "report.html").read_text()
    assert "<h2>Feature transforms</h2>" in report
    assert f"with the transforms {facts['validation_pr_auc']['with']:.4f}" in report
    assert "<td>account_age_days</td><td>log1p</td><td>never negative, upper tail" in report


def test_a_value_only_in_the_test_split_moves_no_bound(tmp_path):
    cols = synthetic.generate(3000, 2, 0.03)
    y = cols["Class"].astype(int)
    split = stratified_split(y, 42, 0.2, 0.2)
    cols["Amount"] = cols["Amount"].copy()
    cols["Amount"][split.test[0]] = 1e9
    cols["Amount"][split.val[0]] = 5e8
    ds = from_columns(cols, "Class", None, "mem", "0" * 64, min_rows=500)
    cfg = TrainConfig(synthetic_rows=3000, models_dir=str(tmp_path), epochs=2, batch_size=1024, min_rows=500)
    result = run(cfg, dataset=ds)
    j = ds.feature_names.index("Amount")
    facts = read_manifest(result.bundle_path).training["transforms"]["features"][j]
    assert facts["kind"] == "log1p"
    assert facts["clip"] == [float(ds.X[split.train, j].min()), float(ds.X[split.train, j].max())]
    assert facts["clip"][1] < 1e5


@pytest.mark.parametrize("with_, without, used", [(0.1, 0.9, False), (0.5, 0.51, True)])
def test_the_transforms_are_dropped_when_they_lose_on_validation(tmp_path, monkeypatch, with_, without, used):
    """Without transforms is kept when it wins on validation by more than the margin (then every feature
    is identity); a smaller loss keeps the transforms."""
    import training.model as model

    real = model.fit
    calls = []

    def fit(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(result)
        result.best_val_pr_auc = with_ if len(calls) == 1 else without  # the first fit is the transformed one
        return result

    monkeypatch.setattr(model, "fit", fit)
    assert train(tmp_path, "--epochs", "2") == 0
    bundle = next(p for p in tmp_path.iterdir() if p.is_dir())
    m = read_manifest(bundle)
    assert len(calls) == 2
    assert without - with_ > TRANSFORMS_LOSS_MARGIN if not used else without - with_ < TRANSFORMS_LOSS_MARGIN
    kinds = {t.kind for t in m.feature_transforms}
    if used:
        assert {"log1p", "signed_log1p"} <= kinds
    else:
        assert kinds == {"identity"} and all(t.clip is not None for t in m.feature_transforms)  # still clipped
    assert m.training["transforms"]["used"] is used
    assert m.training["transforms"]["validation_pr_auc"] == {"with": with_, "without": without}
    assert ("dropped (they lose by more than 0.02)" in (bundle / "report.html").read_text()) is not used


def test_the_run_summary_says_how_many_features_are_transformed_and_why_the_transforms_were_kept():
    from types import SimpleNamespace

    from training.fraud_train import transforms_summary
    from worker.core.transforms import FeatureTransform

    kept = SimpleNamespace(
        n_features=3,
        feature_transforms=(FeatureTransform("log1p", (0.0, 9.0)), FeatureTransform(), FeatureTransform()),
        training={"transforms": {"used": True, "validation_pr_auc": {"with": 0.8, "without": 0.75}}},
    )
    assert transforms_summary(kept) == "1 of 3 features (kept: val PR AUC 0.8000 with, 0.7500 without)"
    dropped = SimpleNamespace(
        n_features=2, feature_transforms=(FeatureTransform(), FeatureTransform()),
        training={"transforms": {"used": False, "validation_pr_auc": {"with": 0.5, "without": 0.6}}},
    )  # fmt: skip
    assert transforms_summary(dropped) == "0 of 2 features (dropped: val PR AUC 0.5000 with, 0.6000 without)"
    old = SimpleNamespace(n_features=2, feature_transforms=(), training={})
    assert transforms_summary(old) == "0 of 2 features"
