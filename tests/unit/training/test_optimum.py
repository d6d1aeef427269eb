"""The fit reaches its own optimum: the objective is convex, so an independent solver's optimum
(scikit-learn's LogisticRegression, same class weights and L2) is the bar it is held to."""

from __future__ import annotations

import numpy as np

from training.model import class_weights, fit, objective, reference_optimum


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 5] = np.exp(2.5 * rng.normal(size=n))  # one heavy-tailed column: far-out rows with saturated sigmoids
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    logit = -4.5 + X[:, :4] @ np.array([1.5, -1.0, 0.7, 0.3]) + 0.4 * X[:, 5]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return X.astype(np.float32), y


def _fit_and_optimum(epochs: int):
    """The fit with ``epochs`` at most, and the reference optimum's objective, on the same rows."""
    X, y = _rows(20_000, seed=3)
    X_val, y_val = _rows(5_000, seed=4)
    weights, l2 = class_weights(y), 1e-4
    fitted = fit(X, y, X_val, y_val, l2=l2, epochs=epochs, learning_rate=0.05, batch_size=0, weights=weights, seed=1)
    kernel, bias = reference_optimum(X, y, weights, l2)
    return fitted, objective(kernel, bias, X, y, weights, l2)


def test_the_fit_ends_within_half_a_percent_of_the_reference_optimum() -> None:
    fitted, best = _fit_and_optimum(epochs=5000)
    assert fitted.stopped == "converged"
    assert fitted.objective <= best * 1.005, (fitted.objective, best)
    assert fitted.objective >= best * (1 - 1e-6), "below the optimum: the two objectives differ"


def test_an_early_stop_on_a_few_epochs_is_far_from_it() -> None:
    """The bar above can fail: a fit cut short (as early stopping on validation PR AUC cut it) is not within it."""
    fitted, best = _fit_and_optimum(epochs=24)
    assert fitted.stopped == "max epochs"
    assert fitted.objective > best * 1.005


def test_the_objective_is_the_clipped_free_log_loss_plus_l2() -> None:
    X = np.array([[0.0], [40.0], [-40.0]])
    y = np.array([0, 0, 1])
    value = objective(np.array([1.0]), 0.0, X, y, {0: 1.0, 1: 2.0}, 0.5)
    expected = (np.log(2.0) + 40.0 + 2.0 * 40.0) / 3 + 0.5  # no clip: a far-out wrong row costs its whole logit
    assert abs(value - expected) < 1e-9


def test_the_report_and_manifest_show_the_gap(trained) -> None:
    import json

    bundle = next(p for p in trained.iterdir() if p.is_dir())
    manifest = json.loads((bundle / "manifest.json").read_text())
    optimum = manifest["training"]["optimum"]
    assert optimum["reference_objective"] > 0 and np.isfinite(optimum["gap"])
    html = (bundle / "report.html").read_text()
    assert "Distance to the optimum" in html and f"{100 * optimum['gap']:+.3f}" in html
