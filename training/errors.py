"""Errors raised by the training job, under the project's one root::

    FraudScoringError                 (worker.core.errors)
     └── TrainingError                the training job cannot produce a bundle
          ├── DataError               the input data is missing, malformed or unusable (one clear line)
          └── ParityError             the TFLite model does not score like the Keras model

Every one of them means "no bundle was written"; ``fraud-train`` prints the message and exits 1.
"""

from __future__ import annotations

from worker.core.errors import FraudScoringError


class TrainingError(FraudScoringError):
    """The training job stopped before writing a bundle."""


class DataError(TrainingError):
    """The training data cannot be used; the message names the file, column and rows concerned."""


class ParityError(TrainingError):
    """TFLite scores differ from Keras scores by more than the allowed tolerance."""
