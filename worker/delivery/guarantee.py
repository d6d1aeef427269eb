"""What a delivery guarantee does for the loop, and what it answers: the loop's next step (``Next``).

The loop (worker/pipeline/loop.py) polls, decodes and scores; a guarantee takes each scored
batch's records from there to Kafka and commits its offsets: ``AtLeastOnce`` (at_least_once.py)
or ``ExactlyOnce`` (exactly_once.py), chosen once from the settings (``guarantee_for`` in
worker/delivery/__init__.py). A guarantee never calls back into the loop: each hook returns what
the loop must do next, and the loop does it before the next poll. The rebalance listener
(rebalance.py) calls ``on_revocation`` and ``on_lost`` on kafka-python's IO thread, while the
loop's thread is inside ``poll``.

A hook that may have to give batches up is told which batch is still in the decoder (``held``:
polled after the batch being emitted, not yet handed over), so that a rewind goes back to its
offsets too; the loop then drops it, unscored, to be polled again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kafka import TopicPartition

from worker.delivery.acks import AckChain
from worker.delivery.batch import Batch
from worker.delivery.committer import Committer, Offsets
from worker.delivery.consumer import ConsumerSlot
from worker.delivery.producer import ProducerSlot
from worker.delivery.rebalance import Restarts, Revocations
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics
from worker.edges.trouble import Trouble


class Next(enum.Enum):
    """What the loop does after a guarantee's hook returns."""

    GO_ON = "go on"  # nothing: the batch was taken (or there was nothing to do)
    # A batch failed: the consumer is back at its first offsets and the held batch's; the batch
    # given and the held one are dropped (polled again), after the backoff.
    REWOUND = "rewound"
    # A transaction failed: the batches are dropped, and ``reposition`` runs before the next poll
    # until it answers GO_ON (the group's committed offsets say what became visible).
    REPOSITION = "reposition"
    # Fenced (the group moved on without this member): the batches are dropped, and the loop
    # leaves the group with its consumer and connects again.
    REJOIN = "rejoin"
    # Another instance took this one's group_instance_id (``Trouble.replaced`` has set the stop):
    # the batches are dropped and the loop ends.
    STOP = "stop"


@dataclass(eq=False)
class Shared:
    """What a guarantee shares with the loop and the rebalance listener."""

    source: ConsumerSlot  # the consumer the loop polls with
    producer: ProducerSlot
    revocations: Revocations
    restarts: Restarts
    trouble: Trouble  # backoff, and the stop when replaced
    metrics: WorkerMetrics
    health: HealthState


class Guarantee:
    """The hooks the loop calls, in the order of a batch's life; the defaults do nothing."""

    # At-least-once's committer and acknowledgement chain (None exactly-once), for a look from outside.
    committer: Committer | None = None
    chain: AckChain | None = None

    def __init__(self, shared: Shared) -> None:
        self.source, self.producer = shared.source, shared.producer
        self.revocations, self.restarts = shared.revocations, shared.restarts
        self.trouble, self.metrics, self.health = shared.trouble, shared.metrics, shared.health

    def poll_timeout(self, default_ms: int) -> int:
        """How long the next poll may wait, at most ``default_ms``."""
        return default_ms

    def ready(self, batch: Batch, held: Batch | None) -> Next:
        """Before ``batch`` is scored: GO_ON, or what the loop does instead (``batch`` is dropped)."""
        return Next.GO_ON

    def emit(self, batch: Batch, records: list, held: Batch | None) -> Next:
        """Send ``batch``'s scored ``records``; its offsets are committed once they are delivered."""
        raise NotImplementedError

    def between_polls(self, idle: bool, held: Batch | None) -> Next:
        """After each pass of the loop; ``idle``: the poll returned nothing and the decoder is empty."""
        return Next.GO_ON

    def finish(self, final: bool = False) -> Next:
        """Wait until everything emitted is delivered and committed.

        ``final`` (at stop): nothing is rewound or restarted; a failure is logged, and the loop
        ignores the answer.
        """
        raise NotImplementedError

    def reposition(self) -> Next:
        """Before the next poll, after REPOSITION: GO_ON once the consumer is back at the committed offsets."""
        return Next.GO_ON

    def close(self) -> None:
        """At stop, after ``finish(final=True)``: end the guarantee's threads, commit what is pending."""

    async def on_revocation(self, revoked: set[TopicPartition]) -> Offsets:
        """Partitions go (rebalance listener): settle what is theirs, count them revoked; offsets to commit now."""
        self.revocations.revoke(revoked)
        return {}

    def on_lost(self, lost: set[TopicPartition]) -> None:
        """Partitions were lost (forced eviction): count them revoked; nothing of theirs may be committed."""
        self.revocations.revoke(lost)
