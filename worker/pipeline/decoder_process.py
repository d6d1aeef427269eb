"""JSON decoding in a child process, so it runs on a second core while the loop polls Kafka.

Records are parsed in Python on the polling thread (worker/records.py); decoding the JSON on the
same thread would about double the cost of each event there. With a child process the loop hands
a batch's values over (one message on a pipe), polls the next batch while the child decodes, and
takes the result back; the two stages overlap. The loop hands the next batch over before it takes
the previous one back, so the child always has work queued while the loop emits and polls.

The child is ``python -m worker.pipeline.decoder_process`` (a fixed command: nothing from the input or a
models directory reaches it), started with ``os.posix_spawn``, so it holds only msgspec and
``worker.core.decode``: no numpy, Kafka, model or metrics (about 16 MB). The pipes carry msgspec
MessagePack, not pickle: values in, the decoded rows out. The child exits when its pipe closes, so
it never outlives the worker, even one killed with SIGKILL. ``InlineDecoder`` has the same
interface and decodes in the calling process.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection

import msgspec

from worker.core.decode import DecodedBatch, DecodedRows, Decoder, Unread
from worker.core.errors import DecodeError

logger = logging.getLogger(__name__)

PIPE_BYTES = 1 << 20  # a whole batch fits in the pipe: the loop writes it and goes on polling


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


def set_aside(values: Sequence[bytes | None], max_bytes: int) -> tuple[Sequence[bytes | None], dict[int, DecodeError]]:
    """The values to decode, and the verdicts of those the decoder need not see, by position.

    A value longer than ``max_bytes`` is ``too_large`` here, before it is copied to the child
    (a record of many megabytes would be, whole); an ``Unread`` stand-in (a record of a batch the
    consumer could not inflate) carries its own verdict. Each becomes None in the values decoded.
    """
    if Unread not in set(map(type, values)) and max(map(len, filter(None, values)), default=0) <= max_bytes:
        return values, {}
    kept: list[bytes | None] = list(values)
    aside: dict[int, DecodeError] = {}
    for i, value in enumerate(values):
        if isinstance(value, Unread):
            aside[i] = value.error()
        elif value is not None and len(value) > max_bytes:
            aside[i] = DecodeError("too_large", f"value is {len(value)} bytes, limit {max_bytes}")
        else:
            continue
        kept[i] = None
    return kept, aside


def _with_aside(errors: list[tuple[int, DecodeError]], aside: dict[int, DecodeError]) -> list[tuple[int, DecodeError]]:
    """``errors`` with the verdicts set aside in place of the decoder's (of None) at their positions."""
    if not aside:
        return errors
    return sorted({**dict(errors), **aside}.items())


def _to_reply(d: DecodedRows) -> _Reply:
    errors = [(i, e.reason, e.detail) for i, e in d.errors]
    return _Reply(bytes(d.features), d.n_features, d.transaction_ids, d.event_times, d.index, errors)


def _from_reply(r: _Reply, aside: dict[int, DecodeError]) -> DecodedBatch:
    errors = _with_aside([(i, DecodeError(reason, detail)) for i, reason, detail in r.errors], aside)
    # The reply's bytes are the float32 rows already: numpy reads them in place, no copy.
    return DecodedRows(r.features, r.n_features, r.transaction_ids, r.event_times, r.index, errors).to_batch()


def _widen(fd: int, size: int) -> int:
    """Ask for a pipe of ``size`` bytes; returns the size it has."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:  # above /proc/sys/fs/pipe-max-size: the default works, with more waiting
        pass
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


class _Submitted:
    """A batch handed to the decoder whose result is not taken yet."""

    __slots__ = ("values", "sent", "aside", "names", "max_bytes", "replies", "size", "reply")

    def __init__(self, values: list, names: tuple[str, ...], max_bytes: int) -> None:
        self.values, self.names, self.max_bytes = values, names, max_bytes
        self.sent, self.aside = set_aside(values, max_bytes)  # what the child decodes; verdicts given here
        self.replies: Connection | None = None  # the reply pipe of the child that has it; None: not sent
        self.size = 0  # bytes of the request on the pipe
        self.reply: bytes | None = None  # read ahead of result(), to free the child


def serve(requests: Connection, replies: Connection) -> None:
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
            names: Sequence[str] | None = request.feature_names
            if not names:  # the same names as before
                assert decoder is not None, "the first request names the features"
                names = decoder.feature_names
            decoder = Decoder(names, request.max_bytes)
        try:
            replies.send_bytes(write(_to_reply(decoder.decode_rows(request.values))))
        except OSError:
            return


class InlineDecoder:
    """Decodes in the calling process: ``submit`` does the work, ``result`` hands it back (oldest first)."""

    def __init__(self) -> None:
        self._decoder: Decoder | None = None
        self._results: deque[DecodedBatch] = deque()

    def submit(self, values: Sequence[bytes | None], feature_names: Sequence[str], max_bytes: int) -> None:
        d = self._decoder
        if d is None or d.feature_names != tuple(feature_names) or d.max_bytes != max_bytes:
            d = self._decoder = Decoder(feature_names, max_bytes)
        sent, aside = set_aside(values, max_bytes)
        decoded = d.decode_batch(sent)
        if aside:
            decoded = dataclasses.replace(decoded, errors=_with_aside(decoded.errors, aside))
        self._results.append(decoded)

    def result(self) -> DecodedBatch:
        assert self._results, "result() without submit()"
        return self._results.popleft()

    def close(self) -> None:
        pass


class DecoderProcess:
    """One child process decoding batches in turn; ``submit`` returns at once.

    Batches can be submitted before the results of earlier ones are taken; ``result`` returns
    them oldest first. If the child dies (it should not: it only runs the decoder, which raises
    nothing), the batches it had are decoded in this process and a new child is started for the
    next one.
    """

    def __init__(self, pipe_bytes: int = PIPE_BYTES) -> None:
        self.pid: int | None = None
        self._pipe_bytes = pipe_bytes
        self._capacity = 0  # of the request pipe, as the kernel gave it
        self._requests: Connection | None = None  # our writing end
        self._replies: Connection | None = None  # our reading end
        self._names: tuple[str, ...] | None = None
        self._pending: deque[_Submitted] = deque()
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(_Reply).decode
        self._inline = InlineDecoder()

    def start(self) -> None:
        if self.pid is not None:
            status = self._exit_status()
            if status is None:
                return
            self._lost(f"it exited with status {status}")
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self._capacity = _widen(req_w, self._pipe_bytes)
        _widen(rep_w, self._pipe_bytes)
        # Only the child's two ends are inherited (os.pipe() descriptors are not, by default).
        os.set_inheritable(req_r, True)
        os.set_inheritable(rep_w, True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        argv = [sys.executable, "-m", "worker.pipeline.decoder_process", str(req_r), str(rep_w)]
        try:
            self.pid = os.posix_spawn(sys.executable, argv, env)
        finally:
            os.close(req_r)
            os.close(rep_w)
        self._requests = Connection(req_w, readable=False)
        self._replies = Connection(rep_r, writable=False)
        self._names = None

    def submit(self, values: Sequence[bytes | None], feature_names: Sequence[str], max_bytes: int) -> None:
        entry = _Submitted(list(values), tuple(feature_names), max_bytes)
        self._pending.append(entry)
        try:
            self.start()
            data = self._request(entry)
            if self._unanswered_bytes() + len(data) + 8 > self._capacity:
                # The child may be waiting to write a reply we have not read; a request the pipe
                # cannot hold would then wait for it forever. Read its replies first.
                self._read_replies()
                self.start()
                data = self._request(entry)
            assert self._requests is not None  # start() leaves a running child and its pipe
            self._requests.send_bytes(data)
            self._names = entry.names
            entry.replies, entry.size = self._replies, len(data)
        except OSError as exc:
            self._lost(exc)

    def result(self) -> DecodedBatch:
        assert self._pending, "result() without submit()"
        entry = self._pending.popleft()
        if self._unread(entry):
            self._read(entry)
        if entry.reply is not None:
            try:
                return _from_reply(self._decode(entry.reply), entry.aside)
            except msgspec.DecodeError as exc:
                self._lost(exc)
        # This batch, here; the next one in a new child.
        self._inline.submit(entry.values, entry.names, entry.max_bytes)
        return self._inline.result()

    def _request(self, entry: _Submitted) -> bytes:
        send_names = list(entry.names) if entry.names != self._names else None
        return self._encode(_Request(send_names, entry.max_bytes, list(entry.sent)))

    def _unread(self, entry: _Submitted) -> bool:
        """The running child has ``entry``, and its reply is not read yet."""
        return entry.reply is None and entry.replies is not None and entry.replies is self._replies

    def _waiting(self) -> list[_Submitted]:
        """Batches the running child has, whose replies are not read yet (oldest first)."""
        return [e for e in self._pending if self._unread(e)]

    def _unanswered_bytes(self) -> int:
        return sum(e.size + 8 for e in self._waiting())

    def _read_replies(self) -> None:
        for entry in self._waiting():
            if not self._read(entry):
                return

    def _read(self, entry: _Submitted) -> bool:
        """Read ``entry``'s reply from the running child; False if the child is gone."""
        assert self._replies is not None
        try:
            entry.reply = self._replies.recv_bytes()
        except (EOFError, OSError) as exc:
            self._lost(exc or type(exc).__name__)
            return False
        return True

    def _lost(self, why: object) -> None:
        logger.warning("decoder process lost (%s); starting a new one", why)
        self.close()

    def _exit_status(self) -> int | None:
        """None while the child runs; its wait status once it has exited (and is reaped)."""
        assert self.pid is not None, "no child to wait for"
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return -1
        return None if pid == 0 else status

    def close(self) -> None:
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()  # the child sees the end of its pipe and returns
        self._requests = self._replies = None
        if self.pid is None:
            return
        deadline = time.monotonic() + 5
        while self._exit_status() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)
        self.pid = None


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
