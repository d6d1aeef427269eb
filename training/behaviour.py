"""A feature spec applied to a training data set (docs/features.md).

The spec's input columns are read beside the numeric ones, its aggregates computed point-in-time over
every row in event-time order by the worker's own function (``worker.core.features.compute_columns``),
and the rows before ``--fit-since`` only warm the state: the split, the fit and the evaluation use the
rows from then on. Categorical values are chosen on the training rows. The lift is the same model
without the spec's features, at its optimum on the same rows (``training.model.reference_optimum``).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from training import data
from training.errors import DataError
from training.split import Split
from worker.core.features import FeatureSpec, compute_columns, fit_categoricals, fit_priors
from worker.core.risk import FraudHistory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """The data set with the spec's features appended (rows from ``--fit-since`` on), and what it took."""

    dataset: data.Dataset
    split: Split
    spec: FeatureSpec  # categorical values chosen
    own_features: int  # the data set's own columns come first in ``dataset.X``
    warm_rows: int
    seconds: float
    kept: np.ndarray  # the given data set's rows that ``dataset`` holds (from ``--fit-since`` on), in order


def parse_since(text: str, unit: str) -> float:
    """``--fit-since``: an ISO-8601 date or time (UTC unless it says otherwise), or a number in the time
    field's unit."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"--fit-since {text[:40]!r} is neither a date (2026-01-15) nor a number") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() * (1000.0 if unit == "ms" else 1.0)


def read_columns(path: str | Path, names: tuple[str, ...], numeric: frozenset[str]) -> dict[str, np.ndarray]:
    """The named columns of a CSV: ``numeric`` ones as float64, the others as text (an object array)."""
    header = data.read_header(path)
    for name in names:
        if name not in header:
            raise DataError(f"{path}: column {name!r} (named by the feature spec) not found")
    idx = [header.index(n) for n in names]
    values: list[list[str]] = [[] for _ in names]
    with data._open_text(Path(path)) as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            if not row:
                continue
            for out, i in zip(values, idx, strict=True):
                out.append(row[i].strip() if i < len(row) else "")
    columns: dict[str, np.ndarray] = {}
    for name, col in zip(names, values, strict=True):
        if name in numeric:
            try:
                columns[name] = np.array([float(v) if v else math.nan for v in col], dtype=np.float64)
            except ValueError:
                bad = next(v for v in col if v and not data._is_number(v))
                raise DataError(f"{path}: column {name!r} is not numeric (it holds {bad[:40]!r})") from None
        else:
            columns[name] = np.array(col, dtype=object)
    return columns


def apply(
    dataset: data.Dataset,
    spec: FeatureSpec,
    columns: Mapping[str, np.ndarray],
    fit_since: str | None,
    split_rows: Callable[[np.ndarray, np.ndarray], Split],
    label_time_column: str | None = None,
) -> Applied:
    """Compute the spec's features over every row; keep the rows from ``fit_since`` on; split them with
    ``split_rows(y, time)``; choose the categorical values, and the label-derived features' prior rate, on
    their training part. The labels of every row are the entity risk's history (``fraud_history``)."""
    import time as clock

    started = clock.perf_counter()
    times = np.asarray(columns[spec.time_field], dtype=np.float64)
    if times.shape[0] != dataset.n_rows:
        raise DataError(
            f"{dataset.source}: time field {spec.time_field!r} has {times.shape[0]} rows, not {dataset.n_rows}"
        )
    if not np.isfinite(times).all():
        raise DataError(f"{dataset.source}: time field {spec.time_field!r} has missing or non-finite values")
    keep = np.ones(dataset.n_rows, dtype=bool)
    if fit_since:
        keep = times >= parse_since(fit_since, spec.time_unit)
    y, t = dataset.y[keep], times[keep]
    if int(keep.sum()) < data.MIN_ROWS or y.sum() < data.MIN_PER_CLASS:
        raise DataError(
            f"{dataset.source}: {int(keep.sum())} rows ({int(y.sum())} frauds) from --fit-since {fit_since} on; "
            f"need {data.MIN_ROWS} rows and {data.MIN_PER_CLASS} frauds"
        )
    split = split_rows(y, t)
    kept_rows = np.flatnonzero(keep)
    train_cols = {
        c.field: np.asarray(columns[c.field], dtype=object)[kept_rows[split.train]] for c in spec.categoricals
    }
    spec = fit_categoricals(spec, train_cols)
    risk = None
    if spec.risk_fields:
        spec = fit_priors(spec, float(y[split.train].mean()))
        risk = fraud_history(spec, times, columns, dataset.y, label_time_column)
    features = compute_columns(spec, times, columns, risk=risk)
    seconds = clock.perf_counter() - started
    logger.info(
        "feature spec: %d features over %d rows (%d warming the state only) in %.1f s (%.0f rows/s)",
        len(spec.names), dataset.n_rows, dataset.n_rows - int(keep.sum()), seconds, dataset.n_rows / max(seconds, 1e-9),
    )  # fmt: skip
    X = np.hstack([dataset.X, features])[keep]
    extended = replace(
        dataset,
        X=X,
        y=y,
        feature_names=(*dataset.feature_names, *spec.names),
        time=t,
        time_column=spec.time_field,
    )
    return Applied(extended, split, spec, dataset.X.shape[1], dataset.n_rows - int(keep.sum()), seconds, kept_rows)


def fraud_history(
    spec: FeatureSpec,
    times: np.ndarray,
    columns: Mapping[str, np.ndarray],
    y: np.ndarray,
    label_time_column: str | None,
) -> FraudHistory:
    """Every fraud row's entry for the label-derived features: at its label time when the file has the column
    (a missing one: the transaction's time), else at the transaction's time (docs/entity-risk.md)."""
    to_ms = 1000.0 if spec.time_unit == "s" else 1.0
    tx_ms = np.round(times * to_ms).astype(np.int64)
    label_ms = None
    if label_time_column is not None and label_time_column in columns:
        raw = np.asarray(columns[label_time_column], dtype=np.float64)  # epoch ms, as label records carry it
        label_ms = np.where(np.isfinite(raw), np.round(raw), tx_ms).astype(np.int64)
        late = int(((label_ms < tx_ms) & (y == 1)).sum())
        if late:
            logger.info("%d fraud labels are timed before their transaction: counted from the transaction's time", late)
        label_ms = np.maximum(label_ms, tx_ms)
    history = FraudHistory.from_rows(
        spec.risk_fields, columns, tx_ms.tolist(), y.tolist(), None if label_ms is None else label_ms.tolist()
    )
    logger.info("entity risk: %d entities with confirmed fraud, %d frauds", len(history), history.total())
    return history


def feature_table(applied: Applied, weights: np.ndarray) -> list[dict[str, Any]]:
    """Per spec feature: its mean on genuine and on fraud training rows, and the model's (scaled) weight."""
    ds, split, k = applied.dataset, applied.split, applied.own_features
    X, y = ds.X[split.train], ds.y[split.train]
    rows = []
    for j, name in enumerate(ds.feature_names[k:], start=k):
        rows.append({
            "name": name,
            "mean_genuine": float(X[y == 0, j].mean()) if (y == 0).any() else 0.0,
            "mean_fraud": float(X[y == 1, j].mean()) if (y == 1).any() else 0.0,
            "weight": float(weights[j]),
        })  # fmt: skip
    return rows


def lift_without(
    applied: Applied,
    class_weights: dict[int, float],
    l2: float,
    evaluate_scores: Callable[[np.ndarray], dict[str, float]],
) -> dict[str, float]:
    """The same model on the data set's own columns only (transforms chosen the same way, its optimum by
    the reference solver), scored on the test rows by ``evaluate_scores``."""
    from training.model import reference_optimum
    from training.transforms import choose as choose_transforms
    from worker.core.transforms import Transforms

    ds, split, k = applied.dataset, applied.split, applied.own_features
    X = ds.X[:, :k]
    choices = choose_transforms(X[split.train], ds.feature_names[:k])
    transforms = Transforms([c.transform for c in choices], k)
    X_t = transforms.apply(X)
    mean, scale = X_t[split.train].mean(axis=0), X_t[split.train].std(axis=0)
    scale[~(scale > 1e-12)] = 1.0
    X_s = (X_t - mean) / scale
    kernel, bias = reference_optimum(X_s[split.train], ds.y[split.train], class_weights, l2)
    logit = X_s[split.test] @ kernel + bias
    scores = 1.0 / (1.0 + np.exp(-logit))
    return evaluate_scores(scores)
