"""The decoder child process gives exactly what decoding in the worker gives, and survives its child."""

from __future__ import annotations

import json
import os
import signal
import threading

import numpy as np
import pytest

from worker.core.decode import Decoder
from worker.pipeline.decoder_process import DecoderProcess, InlineDecoder

NAMES = ("V1", "V2", "Amount")


def values(n: int, seed: int = 0) -> list[bytes | None]:
    rng = np.random.default_rng(seed)
    out: list[bytes | None] = []
    for i in range(n):
        doc = {"transaction_id": f"tx-{i}", **dict(zip(NAMES, rng.normal(0, 3, 3).tolist(), strict=True))}
        if i % 3 == 0:
            doc["event_time"] = 1_700_000_000_000 + i
        out.append(json.dumps(doc).encode())
    # One of each kind of trouble, so the errors cross the pipe too.
    out += [b"{not json", None, b"", json.dumps({"transaction_id": "x", "V1": 1, "V2": "a", "Amount": 1}).encode(),
            b'{"transaction_id": "y", "V1": 1e300, "V2": 0, "Amount": 0}']  # fmt: skip
    return out


def same(a, b) -> None:
    assert a.features.dtype == b.features.dtype == np.float32
    np.testing.assert_array_equal(a.features, b.features)
    assert (a.transaction_ids, a.event_times, a.index) == (b.transaction_ids, b.event_times, b.index)
    assert [(i, e.reason, e.detail) for i, e in a.errors] == [(i, e.reason, e.detail) for i, e in b.errors]


@pytest.fixture
def child():
    d = DecoderProcess()
    d.start()
    yield d
    d.close()


def test_the_child_decodes_exactly_as_the_worker_would(child):
    batch = values(300)
    child.submit(batch, NAMES, 4096)
    got = child.result()
    same(got, Decoder(NAMES, 4096).decode_batch(batch))
    assert len(got.errors) == 5 and got.errors[0][1].reason == "invalid_json"
    # A clean batch takes the fast path, and a new model's feature names reach the child.
    child.submit(values(50, seed=1)[:50], NAMES[::-1], 4096)
    same(child.result(), Decoder(NAMES[::-1], 4096).decode_batch(values(50, seed=1)[:50]))


@pytest.mark.parametrize("kind", [DecoderProcess, InlineDecoder])
def test_batches_submitted_before_earlier_results_are_taken_come_back_in_order(kind):
    d = kind()
    try:
        batches = [values(30, seed=s) for s in range(3)]
        for b in batches[:2]:
            d.submit(b, NAMES, 4096)
        same(d.result(), Decoder(NAMES, 4096).decode_batch(batches[0]))
        d.submit(batches[2], NAMES[::-1], 4096)
        same(d.result(), Decoder(NAMES, 4096).decode_batch(batches[1]))
        same(d.result(), Decoder(NAMES[::-1], 4096).decode_batch(batches[2]))
    finally:
        d.close()


def test_batches_larger_than_the_pipes_never_deadlock():
    """The child can be blocked writing a reply nobody reads while the worker writes a batch that
    does not fit in the pipe: the worker then reads the replies first."""
    d = DecoderProcess(pipe_bytes=4096)  # the smallest pipes the kernel gives
    batches = [values(600, seed=s) for s in range(3)]  # about 45 KB each way per batch
    got: list = []

    def run() -> None:
        d.submit(batches[0], NAMES, 4096)
        d.submit(batches[1], NAMES, 4096)
        got.append(d.result())
        d.submit(batches[2], NAMES, 4096)
        got.extend([d.result(), d.result()])

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=30)
    alive = t.is_alive()
    d.close()  # unblocks a deadlocked thread: its pipes close
    assert not alive, "submit and result deadlocked on full pipes"
    assert len(got) == 3
    for b, g in zip(batches, got, strict=True):
        same(g, Decoder(NAMES, 4096).decode_batch(b))


def test_a_child_that_dies_with_two_batches_leaves_both_to_this_process(child, caplog):
    first, second = values(40, seed=1), values(40, seed=2)
    os.kill(child.pid, signal.SIGSTOP)  # so that it dies with both batches unanswered
    child.submit(first, NAMES, 4096)
    child.submit(second, NAMES, 4096)
    os.kill(child.pid, signal.SIGKILL)
    got = [child.result(), child.result()]
    assert caplog.text.count("decoder process lost") == 1
    same(got[0], Decoder(NAMES, 4096).decode_batch(first))
    same(got[1], Decoder(NAMES, 4096).decode_batch(second))
    child.submit(first, NAMES, 4096)  # and a new child takes the next one
    same(child.result(), Decoder(NAMES, 4096).decode_batch(first))
    assert child.pid is not None


def test_a_dead_child_costs_nothing_but_a_warning(child, caplog):
    batch = values(40)
    expected = Decoder(NAMES, 4096).decode_batch(batch)
    first = child.pid
    os.kill(first, signal.SIGKILL)
    child.submit(batch, NAMES, 4096)  # between batches: a new child takes this one
    same(child.result(), expected)
    assert "decoder process lost" in caplog.text and child.pid != first
    child.submit(batch, NAMES, 4096)
    os.kill(child.pid, signal.SIGKILL)  # while decoding: the batch is decoded in this process instead
    same(child.result(), expected)
    child.submit(batch, NAMES, 4096)
    same(child.result(), expected)


def test_the_child_exits_when_the_worker_closes_the_pipe():
    d = DecoderProcess()
    d.start()
    pid = d.pid
    d.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
