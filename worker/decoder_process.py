"""JSON decoding in a child process, so it runs on a second core while the loop polls Kafka.

kafka-python parses every record in pure Python on the polling thread; decoding the JSON on the
same thread adds about a third to the cost of each event. With a child process the loop hands a
batch's values over (one message on a pipe), polls the next batch while the child decodes, and
takes the result back; the two stages overlap and the loop's own cost per event stays close to a
bare consumer's.

The pipe carries msgspec MessagePack (no pickle): values in, a ``DecodedBatch`` out. Only
``worker.decode`` is imported in the child, nothing touching Kafka, models or metrics. The child
exits when the pipe closes, so it never outlives the worker, even one killed with SIGKILL.
``InlineDecoder`` has the same interface and decodes in the calling process.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import signal
from collections.abc import Sequence

import msgspec
import numpy as np

from worker.decode import DecodedBatch, Decoder
from worker.errors import DecodeError

logger = logging.getLogger(__name__)


class _Request(msgspec.Struct, array_like=True):
    feature_names: list[str] | None  # sent when they change (a new model); None = as before
    max_bytes: int
    values: list[bytes | None]


class _Reply(msgspec.Struct, array_like=True):
    features: bytes  # float32, row-major, len(index) x n_features
    n_features: int
    transaction_ids: list[str]
    event_times: list[int | None]
    index: list[int]
    errors: list[tuple[int, str, str]]  # (position, reason, detail)


def _to_reply(d: DecodedBatch) -> _Reply:
    return _Reply(
        np.ascontiguousarray(d.features, dtype=np.float32).tobytes(),
        int(d.features.shape[1]) if d.features.ndim == 2 else 0,
        d.transaction_ids,
        d.event_times,
        d.index,
        [(i, e.reason, e.detail) for i, e in d.errors],
    )


def _from_reply(r: _Reply) -> DecodedBatch:
    features = np.frombuffer(r.features, dtype=np.float32).reshape(len(r.index), r.n_features)
    errors = [(i, DecodeError(reason, detail)) for i, reason, detail in r.errors]
    return DecodedBatch(features, r.transaction_ids, r.event_times, r.index, errors)


PIPE_BYTES = 1 << 20  # a whole batch fits in the pipe: the loop writes it and goes on polling


def _widen(conn) -> None:
    try:
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size: the default works, with more waiting
        pass


def serve(requests, replies) -> None:
    """The child's loop: a request in, a reply out, until the worker closes its end."""
    # Ctrl-C reaches the whole process group; the worker decides when to stop, then closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    read = msgspec.msgpack.Decoder(_Request).decode
    write = msgspec.msgpack.Encoder().encode
    decoder: Decoder | None = None
    while True:
        try:
            request = read(requests.recv_bytes())
        except (EOFError, OSError):
            return
        if decoder is None or request.feature_names is not None or decoder.max_bytes != request.max_bytes:
            decoder = Decoder(request.feature_names or decoder.feature_names, request.max_bytes)
        try:
            replies.send_bytes(write(_to_reply(decoder.decode_batch(request.values))))
        except (BrokenPipeError, OSError):
            return


class InlineDecoder:
    """Decodes in the calling process: ``submit`` does the work, ``result`` hands it back."""

    def __init__(self) -> None:
        self._decoder: Decoder | None = None
        self._result: DecodedBatch | None = None

    def submit(self, values: Sequence[bytes | None], feature_names: Sequence[str], max_bytes: int) -> None:
        d = self._decoder
        if d is None or d.feature_names != tuple(feature_names) or d.max_bytes != max_bytes:
            d = self._decoder = Decoder(feature_names, max_bytes)
        self._result = d.decode_batch(values)

    def result(self) -> DecodedBatch:
        result, self._result = self._result, None
        assert result is not None, "result() without submit()"
        return result

    def close(self) -> None:
        pass


class DecoderProcess:
    """One child process decoding one batch at a time; ``submit`` returns at once.

    If the child dies (it should not: it only runs the decoder, which raises nothing), the batch
    in hand is decoded in this process and a new child is started for the next one.
    """

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process running Kafka IO threads
        self._proc = None
        self._requests = None  # our writing end
        self._replies = None  # our reading end
        self._names: tuple[str, ...] | None = None
        self._pending: tuple[list, tuple[str, ...], int] | None = None
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(_Reply).decode
        self._inline = InlineDecoder()

    def start(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                return
            self._lost(f"it exited with code {self._proc.exitcode}")
        their_requests, requests = self._ctx.Pipe(duplex=False)
        replies, their_replies = self._ctx.Pipe(duplex=False)
        _widen(requests)
        _widen(replies)
        proc = self._ctx.Process(target=serve, args=(their_requests, their_replies), name="fraud-worker-decoder",
                                 daemon=True)  # fmt: skip
        proc.start()
        their_requests.close()
        their_replies.close()
        self._proc, self._requests, self._replies, self._names = proc, requests, replies, None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self, values: Sequence[bytes | None], feature_names: Sequence[str], max_bytes: int) -> None:
        names = tuple(feature_names)
        self._pending = (list(values), names, max_bytes)
        try:
            self.start()
            send_names = list(names) if names != self._names else None
            self._requests.send_bytes(self._encode(_Request(send_names, max_bytes, self._pending[0])))
            self._names = names
        except (OSError, ValueError) as exc:
            self._lost(exc)

    def result(self) -> DecodedBatch:
        assert self._pending is not None, "result() without submit()"
        values, names, max_bytes = self._pending
        self._pending = None
        if self._replies is not None:
            try:
                return _from_reply(self._decode(self._replies.recv_bytes()))
            except (EOFError, OSError, msgspec.DecodeError) as exc:
                self._lost(exc)
        self._inline.submit(values, names, max_bytes)
        return self._inline.result()

    def _lost(self, why: object) -> None:
        logger.warning("decoder process lost (%s); starting a new one", why or type(why).__name__)
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()  # the child sees the end of its pipe and returns
        self._requests = self._replies = None
        if proc is not None:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
