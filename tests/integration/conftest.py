"""Fixtures for the worker's integration tests: a ULB slice, a model fitted on it, workers to run."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.broker import REPO
from tests.support.bundles import ULB_FEATURES, make_bundle
from tests.support.faults import OwnBroker
from tests.support.feedback import FeedbackProcess
from tests.support.workers import WorkerProcess

# The shared data folder sits beside the checkout (CI lays it out the same way).
ULB = REPO.parent / "shared" / "datasets" / "creditcard.csv.gz"
SLICE = 20_000


@dataclass(frozen=True)
class Ulb:
    """A contiguous slice of the ULB data (so every fraud inside it is included) and a model for it."""

    features: np.ndarray  # float64 (rows, 30), ULB_FEATURES order
    labels: np.ndarray
    model: dict  # make_bundle keyword arguments (feature_names, mean, scale, weights, bias, threshold)

    def event(self, i: int, prefix: str = "tx") -> bytes:
        import json

        doc = {"transaction_id": f"{prefix}-{i}"}
        doc.update(zip(ULB_FEATURES, self.features[i].tolist(), strict=True))
        return json.dumps(doc).encode()


@pytest.fixture(scope="session")
def ulb() -> Ulb:
    if not ULB.exists():
        pytest.skip(f"{ULB} is not present")
    rows, labels = [], []
    with gzip.open(ULB, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        assert tuple(header[:30]) == ULB_FEATURES and header[30] == "Class", header
        for row in reader:
            rows.append([float(x) for x in row[:30]])
            labels.append(int(row[30]))
            if len(rows) == SLICE:
                break
    x, y = np.asarray(rows), np.asarray(labels)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(class_weight="balanced", max_iter=500).fit((x - mean) / scale, y)
    model = dict(
        feature_names=ULB_FEATURES,
        mean=mean.tolist(),
        scale=scale.tolist(),
        weights=fit.coef_[0].tolist(),
        bias=float(fit.intercept_[0]),
        threshold=0.9,
    )
    return Ulb(x, y, model)


@pytest.fixture
def models_dir(tmp_path: Path, ulb: Ulb) -> Path:
    """A models directory serving version ``v1`` of the ULB model."""
    models = tmp_path / "models"
    make_bundle(models, "v1", **ulb.model)
    return models


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Append WorkerProcess objects; any still running at teardown is killed."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for w in started:
            w.close()


@pytest.fixture
def feedbacks() -> Iterator[list[FeedbackProcess]]:
    """Append FeedbackProcess objects; any still running at teardown is killed."""
    started: list[FeedbackProcess] = []
    try:
        yield started
    finally:
        for f in started:
            f.close()


@pytest.fixture
def topics(kafka):
    """Fresh input (3 partitions), alert, DLQ and scores topics."""
    return dict(
        input_topic=kafka.topic(partitions=3, prefix="transactions"),
        alert_topic=kafka.topic(partitions=1, prefix="alerts"),
        dlq_topic=kafka.topic(partitions=1, prefix="dlq"),
        scores_topic=kafka.topic(partitions=1, prefix="scores"),
    )


@pytest.fixture
def own_broker(tmp_path) -> Iterator[OwnBroker]:
    """A broker of the test's own, which it may stop and start (tests/support/faults.py); stopped in teardown."""
    broker = OwnBroker(tmp_path / "kafka")
    try:
        yield broker
    finally:
        broker.close()
