"""Every metric the worker exports (namespace ``fraud_``), in one class that takes a registry.

Per-event histograms (scores, event latency) are fed a whole batch at once through
``ArrayHistogram.observe_many``: one numpy call per batch instead of one Python call per event.
Labels stay low-cardinality: a reason code, a partition, a model version; never an id.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# Fine resolution where thresholds usually sit (fraud is rare: thresholds are often above 0.5).
SCORE_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9,
    0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0,
)  # fmt: skip
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 750, 1000, 2000, 5000)


class ArrayHistogram:
    """A label-less histogram collector fed with numpy arrays (thread-safe, cheap per batch)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._upper = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self._upper) + 1, dtype=np.int64)  # last: above every bucket (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray | Iterable[float]) -> None:
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size == 0:
            return
        # side="left": a value equal to a bound falls into that bucket (le = less or equal).
        counts = np.bincount(np.searchsorted(self._upper, arr, side="left"), minlength=len(self._counts))
        total = float(arr.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(floatToGoString(b), float(c)) for b, c in zip(self._upper, cumulative[:-1])]
        buckets.append(("+Inf", float(cumulative[-1])))
        return [HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)]

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]


class WorkerMetrics:
    """The worker's metrics, registered in ``registry`` (a fresh ``CollectorRegistry`` in tests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.events_consumed = Counter("fraud_events_consumed", "Records taken from the input topic.", registry=r)
        self.events_scored = Counter("fraud_events_scored", "Valid events scored by the model.", registry=r)
        self.alerts = Counter("fraud_alerts", "Alerts published (score >= threshold) and acknowledged.", registry=r)
        self.events_invalid = Counter(
            "fraud_events_invalid", "Records sent to the dead-letter topic, by reason code.", ["reason"], registry=r
        )
        self.score = ArrayHistogram("fraud_score", "Scores of the events scored.", SCORE_BUCKETS, r)
        self.batch_size = Histogram("fraud_batch_size", "Records per poll batch.", buckets=BATCH_BUCKETS, registry=r)
        self.scoring_seconds = Histogram(
            "fraud_scoring_seconds", "Time to scale and score one batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.event_latency = ArrayHistogram(
            "fraud_event_latency_seconds",
            "From event time (or the record timestamp) to the alert being acknowledged.",
            LATENCY_BUCKETS,
            r,
        )
        self.consumer_lag = Gauge(
            "fraud_consumer_lag", "Records behind the end of each assigned input partition.", ["partition"], registry=r
        )
        self.model_info = Gauge(
            "fraud_model_info", "The model version serving (value 1) and its sha256.", ["version", "sha256"], registry=r
        )
        self.model_threshold = Gauge("fraud_model_threshold", "Alert threshold of the serving model.", registry=r)
        self.model_reloads = Counter(
            "fraud_model_reloads", "Attempts to switch to the model named by CURRENT, by result.", ["result"], registry=r
        )
        self.broker_errors = Counter(
            "fraud_broker_errors",
            "Failed broker operations (the worker backs off and retries), by stage.",
            ["stage"],
            registry=r,
        )
        self.last_poll = Gauge("fraud_last_poll_timestamp_seconds", "When the loop last polled.", registry=r)
        for result in ("ok", "failed"):
            self.model_reloads.labels(result=result)
        self._model_labels: tuple[str, str] | None = None

    def set_model(self, version: str, sha256: str, threshold: float) -> None:
        if self._model_labels is not None:
            self.model_info.remove(*self._model_labels)
        self._model_labels = (version, sha256)
        self.model_info.labels(version=version, sha256=sha256).set(1)
        self.model_threshold.set(threshold)

    def count_invalid(self, reasons: Iterable[str]) -> None:
        counts: dict[str, int] = {}
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
        for reason, n in counts.items():
            self.events_invalid.labels(reason=reason).inc(n)

    def set_lag(self, lag: dict[int, int]) -> None:
        for partition, value in lag.items():
            self.consumer_lag.labels(partition=str(partition)).set(value)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            try:
                self.consumer_lag.remove(str(partition))
            except KeyError:
                pass
