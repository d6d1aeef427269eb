"""Delivery guarantees: how a scored batch's records reach Kafka and its offsets get committed.

``guarantee.py`` (the hooks the loop calls and ``Next``, what they answer), ``at_least_once.py``
and ``exactly_once.py`` (the two guarantees; ``guarantee_for`` picks one from the settings),
``producer.py`` (the one producer, made on first need, discarded after a failure),
``consumer.py`` (the consumer as delivery sees it), ``batch.py`` (a polled batch as it moves
through), ``acks.py`` (the acknowledgement chain), ``committer.py`` (what is committed when),
``inflight.py`` (batches between send and commit), ``transactions.py`` (the exactly-once
transaction), ``rebalance.py`` (the rebalance listener).
"""

from __future__ import annotations

from collections.abc import Callable

from worker.delivery.at_least_once import AtLeastOnce
from worker.delivery.batch import Batch
from worker.delivery.exactly_once import ExactlyOnce
from worker.delivery.guarantee import Guarantee, Next, Shared
from worker.edges.config import WorkerConfig

__all__ = ["AtLeastOnce", "ExactlyOnce", "Guarantee", "Next", "Shared", "guarantee_for"]


def guarantee_for(config: WorkerConfig, shared: Shared, account: Callable[[Batch], None]) -> Guarantee:
    """The worker's delivery guarantee (``processing_guarantee``); ``account``: a delivered batch's metrics."""
    # Waiting for acknowledgements (or a commit) lasts at most the producer's own delivery timeout, plus a margin.
    ack_timeout = config.producer_options().get("delivery_timeout_ms", 30_000) / 1000 + 5
    kind = ExactlyOnce if config.exactly_once else AtLeastOnce
    return kind(shared, account, config.commit_interval, ack_timeout)
