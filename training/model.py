"""Fitting the one-layer model: class weights, Adam, early stopping on validation PR AUC."""

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


@dataclass
class FitResult:
    model: Any
    epochs_run: int
    best_epoch: int
    best_val_pr_auc: float
    history: list[dict[str, float]] = field(default_factory=list)


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
    patience: int = 3,
    lr_decay: float = 0.85,
    callbacks: list[Any] | None = None,
) -> FitResult:
    """Train ``dense_model`` on scaled float32 rows; keep the weights of the best validation epoch."""
    tf = import_tensorflow()
    from sklearn.metrics import average_precision_score

    from training.export import dense_model

    tf.keras.utils.set_random_seed(seed)
    model = dense_model(X_train.shape[1], l2=l2)
    # The rate shrinks by ``lr_decay`` each epoch, so the weights settle near the optimum instead of
    # jittering around it (a jittering model makes validation PR AUC, and early stopping, noisy).
    steps_per_epoch = max(1, -(-X_train.shape[0] // batch_size))
    schedule = tf.keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=steps_per_epoch, decay_rate=lr_decay
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=schedule),
        loss=tf.keras.losses.BinaryCrossentropy(),
    )

    Callback: Any = tf.keras.callbacks.Callback  # TensorFlow has no type information

    class EarlyStopOnPrAuc(Callback):
        """Average precision on the validation rows after each epoch (exact, unlike binned AUC)."""

        def __init__(self) -> None:
            super().__init__()
            self.best = -1.0
            self.best_epoch = 0
            self.best_weights: list[np.ndarray] | None = None
            self.wait = 0
            self.history: list[dict[str, float]] = []
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            scores = np.asarray(self.model(X_val, training=False)).reshape(-1)
            ap = float(average_precision_score(y_val, scores))
            loss = float((logs or {}).get("loss", float("nan")))
            self.history.append({"epoch": epoch + 1, "loss": loss, "val_pr_auc": ap})
            mark = ""
            if ap > self.best + 1e-6:
                self.best, self.best_epoch, self.wait = ap, epoch + 1, 0
                self.best_weights = [w.copy() for w in self.model.get_weights()]
                mark = " *"
            else:
                self.wait += 1
                if self.wait >= patience:
                    self.model.stop_training = True
            logger.info(
                "epoch %2d/%d  loss %.4f  val PR AUC %.4f%s  (%.1f s)",
                epoch + 1, epochs, loss, ap, mark, time.perf_counter() - self.started,
            )

    stopper = EarlyStopOnPrAuc()
    model.fit(
        X_train.astype(np.float32),
        y_train.astype(np.float32),
        batch_size=batch_size,
        epochs=epochs,
        class_weight=weights,
        callbacks=[stopper, *(callbacks or [])],
        shuffle=True,
        verbose=0,
    )
    if stopper.best_weights is not None:
        model.set_weights(stopper.best_weights)
    return FitResult(
        model=model,
        epochs_run=len(stopper.history),
        best_epoch=stopper.best_epoch,
        best_val_pr_auc=stopper.best,
        history=stopper.history,
    )
