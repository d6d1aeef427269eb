"""The bundle the training job writes is one the worker loads and scores the same way."""

from __future__ import annotations

import json

import numpy as np

from training.pipeline import fit_scaler
from training.split import stratified_split
from worker.core.bundle import load_bundle, read_current
from worker.core.scoring import load_scorer
from worker.core.transforms import Transforms
from worker.offline import synthetic


def test_bundle_has_every_part_and_loads(trained):
    version = read_current(trained)
    assert version is not None
    bundle = load_bundle(trained, version)
    names = {p.name for p in bundle.path.iterdir()}
    assert {"model.tflite", "manifest.json", "metrics.json", "report.html", "pr_curve.png", "roc_curve.png",
            "score_distribution.png", "threshold_curves.png"} <= names
    m = bundle.manifest
    # account_id is text; the heavy-tailed account columns follow Amount
    assert m.feature_names == ("Time", *(f"V{i}" for i in range(1, 29)), "Amount", *synthetic.HEAVY_COLUMNS)
    assert m.threshold_policy["chosen_on"] == "validation"
    assert m.metrics["parity_max_abs_diff"] <= 1e-5
    for key in ("rows", "positives", "class_weights", "l2", "epochs_run", "learning_rate", "batch_size", "seed",
                "split", "data_sha256", "label_column"):
        assert key in m.training, key
    hist = m.score_histogram
    assert len(hist["counts"]) == len(hist["edges"]) - 1 and sum(hist["counts"]) == m.training["rows"]["train"]
    metrics = json.loads((bundle.path / "metrics.json").read_text())
    assert metrics["test"]["pr_auc"] == m.metrics["pr_auc"]
    assert (bundle.path / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="pr_curve.png"' in (bundle.path / "report.html").read_text()


def test_worker_scores_reproduce_the_recorded_test_metrics(trained):
    """Rebuild the test split from the recorded seed and check the worker's scorer gives the same PR AUC."""
    from sklearn.metrics import average_precision_score

    scorer = load_scorer(str(trained))
    m = scorer.bundle.manifest
    cols = synthetic.generate(6000, 7, 0.03)
    X = np.column_stack([cols[n] for n in m.feature_names])
    y = cols["Class"].astype(int)
    split = stratified_split(y, m.training["seed"], 0.2, 0.2)
    scores = scorer.score(X[split.test])
    assert np.all((scores >= 0) & (scores <= 1))
    assert abs(average_precision_score(y[split.test], scores) - m.metrics["pr_auc"]) < 1e-9
    # The scaler was fitted on the training rows only (after the transforms): the test or full-data
    # mean would differ.
    transformed = Transforms(m.feature_transforms, m.n_features).apply(X)
    mean, _ = fit_scaler(transformed[split.train])
    np.testing.assert_allclose(m.scaler_mean, mean, rtol=0, atol=1e-12)
    assert not np.allclose(m.scaler_mean, transformed.mean(axis=0), rtol=0, atol=1e-9)
