"""Fitting the one-layer model: class weights, Adam to the objective's optimum (early stopping on
validation log-loss), and the reference optimum it is checked against."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def import_tensorflow():
    """Import TensorFlow quietly (its C++ start-up chatter is not our output)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def class_weights(y: np.ndarray, mode: str = "balanced") -> dict[int, float]:
    """``balanced``: n / (2 n_c) per class; ``none``: 1 and 1; a number: the fraud class's weight."""
    n = y.size
    pos = int(y.sum())
    if mode == "balanced":
        return {0: n / (2.0 * (n - pos)), 1: n / (2.0 * pos)}
    if mode == "none":
        return {0: 1.0, 1: 1.0}
    try:
        w = float(mode)
    except ValueError:
        raise ValueError(f"class weight {mode!r} is not 'balanced', 'none' or a positive number") from None
    if not w > 0:
        raise ValueError("class weight must be positive")
    return {0: 1.0, 1: w}


DIVERGED = 2.0  # the validation log-loss this many times its best, for ``patience`` epochs, ends a fit


@dataclass
class FitResult:
    model: Any
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_pr_auc: float
    objective: float  # the training objective at the kept weights (see ``objective``)
    stopped: str  # why the fit ended: "converged", "validation loss diverged" or "max epochs"
    history: list[dict[str, float]] = field(default_factory=list)


def objective(
    kernel: np.ndarray, bias: float, X: np.ndarray, y: np.ndarray, weights: dict[int, float], l2: float
) -> float:
    """What the fit minimises: the class-weighted mean log-loss over the rows, plus ``l2`` times the
    kernel's sum of squares (the bias is not penalised). In float64, from the logits."""
    z = np.asarray(X, dtype=np.float64) @ np.asarray(kernel, dtype=np.float64).reshape(-1) + float(bias)
    yy = np.asarray(y, dtype=np.float64)
    w = np.where(yy == 1, weights[1], weights[0])
    log_loss = np.logaddexp(0.0, z) - yy * z
    return float(np.sum(w * log_loss) / yy.size + l2 * np.sum(np.square(np.asarray(kernel, dtype=np.float64))))


def fit(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    l2: float,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    weights: dict[int, float],
    seed: int,
    patience: int = 50,
    lr_decay: float = 1.0,
    tolerance: float = 1e-7,
) -> FitResult:
    """Train ``dense_model`` on scaled float32 rows to the optimum of its (convex) objective.

    Adam, by default on every training row at once (``batch_size`` 0: one step per epoch, so the
    objective falls smoothly and the fit can run until it no longer moves). It stops at the first of:
    the objective improved by less than ``tolerance`` (relative) over ``patience`` epochs
    ("converged", the last weights kept); the class-weighted validation log-loss stayed above
    ``DIVERGED`` times its best for ``patience`` epochs ("validation loss diverged", the weights of its
    best epoch kept); ``epochs`` ("max epochs", the last weights kept).

    The validation log-loss guards against a fit that runs away; it does not stop a fit that is
    still descending towards the optimum. With an explicit L2 penalty the optimum is the model
    asked for, and stopping at the validation minimum would be a second, uncontrolled regulariser:
    on the ULB data (seed 42, 70/30) that minimum comes at epoch 188, 4.7 % above the optimum's
    objective, with test PR AUC 0.776 against 0.784 at the optimum (docs/training.md).
    """
    tf = import_tensorflow()
    from sklearn.metrics import average_precision_score

    from training.export import dense_model

    tf.keras.utils.set_random_seed(seed)
    n = X_train.shape[0]
    model = dense_model(X_train.shape[1], l2=l2)
    layer = model.get_layer("fraud")
    steps_per_epoch = 1 if batch_size <= 0 or batch_size >= n else -(-n // batch_size)
    rows_per_step = -(-n // steps_per_epoch)
    schedule = tf.keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=steps_per_epoch, decay_rate=lr_decay
    )
    optimizer = tf.keras.optimizers.Adam(learning_rate=schedule)
    X_all = tf.constant(np.asarray(X_train, dtype=np.float32))
    y_all = tf.constant(np.asarray(y_train, dtype=np.float64))
    w_all = tf.constant(np.where(np.asarray(y_train) == 1, weights[1], weights[0]).astype(np.float64))
    X_v = tf.constant(np.asarray(X_val, dtype=np.float32))
    y_v = tf.constant(np.asarray(y_val, dtype=np.float64))
    w_v = tf.constant(np.where(np.asarray(y_val) == 1, weights[1], weights[0]).astype(np.float64))

    def weighted_log_loss(X: Any, y: Any, w: Any) -> Any:
        """Mean class-weighted log-loss from the logits (exact where the sigmoid saturates: Keras' loss on
        probabilities clips them to [1e-7, 1 - 1e-7], which flattens the objective for far-out rows and
        moves its optimum), summed in float64 (a relative tolerance of 1e-7 is below float32's
        resolution of a sum over many rows)."""
        z = tf.cast(tf.reshape(tf.matmul(X, layer.kernel) + layer.bias, [-1]), tf.float64)
        return tf.reduce_sum(w * tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)) / tf.cast(
            tf.size(y), tf.float64
        )

    @tf.function
    def step(rows: Any) -> Any:
        """One Adam step on ``rows``; returns the objective over them before the step."""
        X, y, w = tf.gather(X_all, rows), tf.gather(y_all, rows), tf.gather(w_all, rows)
        with tf.GradientTape() as tape:
            loss = weighted_log_loss(X, y, w) + tf.cast(tf.add_n(model.losses), tf.float64)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def full_objective() -> Any:
        return weighted_log_loss(X_all, y_all, w_all) + tf.cast(tf.add_n(model.losses), tf.float64)

    @tf.function
    def val_loss() -> Any:
        return weighted_log_loss(X_v, y_v, w_v)

    rng = np.random.default_rng(seed)
    all_rows = tf.range(n)
    best_val, best_epoch, best_weights = float("inf"), 0, layer.get_weights()
    objectives: list[float] = []
    history: list[dict[str, float]] = []
    stopped = "max epochs"
    above = 0  # consecutive epochs with the validation log-loss above DIVERGED times its best
    started = time.perf_counter()
    epoch = 0
    for epoch in range(1, epochs + 1):
        if steps_per_epoch == 1:
            before = float(step(all_rows))  # the objective at the previous epoch's weights
        else:
            order = rng.permutation(n)
            for i in range(steps_per_epoch):
                step(tf.constant(order[i * rows_per_step : (i + 1) * rows_per_step]))
            before = float(full_objective())
        if steps_per_epoch > 1 or epoch > 1:  # full batch: the objective before this epoch's step
            objectives.append(before)
        val = float(val_loss())
        kernel, bias = layer.get_weights()
        if val < best_val:
            best_val, best_epoch, best_weights = val, epoch, [kernel.copy(), bias.copy()]
        if epoch == 1 or epoch % 25 == 0:
            history.append({"epoch": epoch, "loss": before, "val_loss": val})
            logger.info(
                "epoch %4d/%d  objective %.6f  validation log-loss %.6f  (%.1f s)",
                epoch, epochs, before, val, time.perf_counter() - started,
            )
        if len(objectives) > patience and objectives[-1 - patience] - objectives[-1] <= tolerance * abs(objectives[-1]):
            stopped = "converged"
            break
        above = above + 1 if not val <= DIVERGED * best_val else 0
        if above >= patience:
            stopped = "validation loss diverged"
            break
    if history and history[-1]["epoch"] != epoch:
        history.append({"epoch": epoch, "loss": before, "val_loss": val})
    if stopped == "validation loss diverged":
        layer.set_weights(best_weights)
    kernel, bias = layer.get_weights()
    scores = np.asarray(model(np.asarray(X_val, dtype=np.float32), training=False)).reshape(-1)
    return FitResult(
        model=model,
        epochs_run=epoch,
        best_epoch=best_epoch,
        best_val_loss=best_val,
        best_val_pr_auc=float(average_precision_score(y_val, scores)),
        objective=objective(kernel, float(bias[0]), X_train, y_train, weights, l2),
        stopped=stopped,
        history=history,
    )


def reference_optimum(
    X_train: np.ndarray, y_train: np.ndarray, weights: dict[int, float], l2: float
) -> tuple[np.ndarray, float]:
    """The objective's optimum by another solver: scikit-learn's ``LogisticRegression`` (Newton-Cholesky) with
    the same class weights and the same L2, ``C = 1 / (2 l2 n)`` (its objective is ``objective``
    times ``C n``). Returns its kernel and bias."""
    from sklearn.linear_model import LogisticRegression

    n = X_train.shape[0]
    C = 1.0 / (2.0 * l2 * n) if l2 > 0 else np.inf  # no penalty
    # Newton-Cholesky: exact second-order steps, which converge on heavy-tailed, badly scaled columns too
    # (L-BFGS stopped short of the optimum on the ULB columns without transforms).
    reference = LogisticRegression(C=C, class_weight=weights, solver="newton-cholesky", max_iter=1000, tol=1e-12)
    reference.fit(np.asarray(X_train, dtype=np.float64), y_train)
    return reference.coef_.reshape(-1), float(reference.intercept_[0])
