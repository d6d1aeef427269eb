"""The acknowledgement chain (worker/delivery/acks.py) and the committer (worker/delivery/committer.py),
without a worker.

Batches are linked in the order they are emitted; each one's sends are stand-in futures the test
resolves. The consumer's commit is a stand-in that records what it is given. The loop marks a
batch that sends results as urgent (worker/pipeline/loop.py ``_emit``); these tests do so by hand.
"""

from __future__ import annotations

import threading
import time

from kafka import TopicPartition
from kafka.future import Future

from tests.unit.worker.standins import Record
from worker.delivery.acks import AckChain
from worker.delivery.batch import Batch
from worker.delivery.committer import Committer

TOPIC = "transactions"
P0 = TopicPartition(TOPIC, 0)


class Commits:
    """The consumer's commit: records the offsets of partition 0 it is asked to commit."""

    def __init__(self) -> None:
        self.offsets: list[int] = []

    def __call__(self, offsets) -> None:
        self.offsets.append(offsets[P0].offset)


def parts(commit, interval: float = 0.2) -> tuple[AckChain, Committer]:
    committer = Committer(commit, on_result=lambda ok: None, interval=interval)
    return AckChain(committer, account=lambda batch: None, revoked_since=lambda epoch: frozenset()), committer


def batch_of(offsets: range, urgent: bool = False) -> Batch:
    batch = Batch.of({P0: [Record(TOPIC, 0, o, 0, None, b"{}", []) for o in offsets]}, epoch=0)
    batch.urgent = urgent
    return batch


def settled(committer: Committer, batch: Batch) -> bool:
    """As the loop waits for a batch: its commit is hurried, then awaited."""
    committer.hurry(batch)
    return batch.settled.wait(5)


def test_offsets_are_committed_in_order_when_acknowledgements_arrive_out_of_order():
    """A batch without results sent after one still waiting for its alerts is committed only after it."""
    commits = Commits()
    chain, committer = parts(commits)
    futures = [Future() for _ in range(3)]
    chain.emit(batch_of(range(0, 3), urgent=True), futures)  # three DLQ records: results
    chain.emit(batch_of(range(3, 7)), [])  # scored below the threshold: none
    time.sleep(0.3)  # time enough for the committer thread, were anything acknowledged
    assert commits.offsets == [] and chain.tail is not None and not chain.tail.settled.is_set()
    for f in futures:
        f.success(None)
    assert settled(committer, chain.tail)
    assert commits.offsets[-1] == 7
    assert sorted(commits.offsets) == commits.offsets
    committer.stop()


def test_a_failed_batch_fails_every_batch_behind_it_and_commits_nothing():
    commits = Commits()
    chain, committer = parts(commits)
    failing = Future()
    first, second = batch_of(range(0, 3), urgent=True), batch_of(range(3, 5))
    chain.emit(first, [failing])
    chain.emit(second, [])
    failing.failure(RuntimeError("not acknowledged"))
    assert first.settled.wait(5) and second.settled.wait(5)
    assert first.error is not None and second.error is not None
    assert not committer.has_pending and commits.offsets == []
    committer.stop()


def test_commits_without_results_are_coalesced_and_hurried_when_waited_for():
    """Batches without results wait for the commit interval; results, and whatever the loop waits for, do not."""
    commits = Commits()
    chain, committer = parts(commits, interval=30.0)
    next_offset = [0]

    def batch(n: int, results: bool) -> Batch:
        start = next_offset[0]
        next_offset[0] += n
        return batch_of(range(start, start + n), urgent=results)

    chain.emit(batch(2, True), [Future().success(None)])  # a DLQ record is a result: committed at once
    deadline = time.monotonic() + 5
    while commits.offsets != [2] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert commits.offsets == [2]
    chain.emit(batch(3, False), [])
    chain.emit(batch(3, False), [])
    time.sleep(0.3)
    assert commits.offsets == [2]  # acknowledged, waiting for the interval
    start = time.monotonic()
    assert chain.tail is not None and settled(committer, chain.tail)
    assert commits.offsets == [2, 8] and time.monotonic() - start < 5  # one commit for both, without the interval
    chain.emit(batch(1, True), [Future().success(None)])
    assert settled(committer, chain.tail) and commits.offsets == [2, 8, 9]
    committer.stop()


def test_the_loop_and_the_committer_thread_never_commit_at_once():
    """A commit from the loop (a retry) waits for the committer thread's, so commits never go backwards."""
    lock = threading.Lock()
    in_flight, most = [0], [0]
    commits = Commits()

    def slow_commit(offsets) -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.02)  # the broker's answer is on its way
        commits(offsets)
        with lock:
            in_flight[0] -= 1

    chain, committer = parts(slow_commit)
    for i in range(10):
        chain.emit(batch_of(range(i, i + 1), urgent=True), [Future().success(None)])  # a DLQ record: at once
        time.sleep(0.005)  # the committer thread has taken the offsets and waits for the broker
        committer.commit_pending()  # the loop's own commit
    assert chain.tail is not None and settled(committer, chain.tail)
    committer.stop()
    assert most[0] == 1, f"{most[0]} commits in flight at once"
    assert commits.offsets == sorted(commits.offsets) and commits.offsets[-1] == 10
