"""The behavioural features' state of one input partition, in a SQLite file that survives restarts
(docs/features.md, "State").

What the engine (worker/core/features.py) reads and writes is a mapping of entity keys to
``EntityState``; ``PartitionStore`` is that mapping: a dict in memory in front of the file's ``state``
table, each entity read from the file the first time it is needed. Changes stay in memory, marked
dirty, until ``flush``, which writes them in one SQLite transaction together with

- ``position``: the offset after the last event applied, so the store knows which events are in it;
- ``recorded``: the features computed for each event from the last offset known committed on, by offset.

The worker flushes right before it commits the input offsets (at-least-once: the consumer's commit;
exactly-once: the transaction's), so the committed offset is never past the state: after a crash the
events from the committed offset on are polled again, the ones the state already holds get their
recorded features back (the values they had the first time) and change nothing, and the ones after
them are computed and applied as new. Rows of ``recorded`` below the last offset known committed are
deleted at the next flush (not below one being committed: that commit may fail, and the events after
the older committed offset would then be polled again without their features).

After a flush the memory holds only the entities read since, up to ``cache_entities`` (the oldest
are dropped first), so memory does not grow with the number of entities; the file does. A file
SQLite cannot open or finds damaged is moved aside and the partition starts with no state (a log
line and ``fraud_feature_state_reset_total`` say so).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import msgspec

from worker.core.features import EntityState, Window

logger = logging.getLogger(__name__)

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 0), next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recorded (offset INTEGER PRIMARY KEY, features BLOB NOT NULL);
"""


def encode_state(state: EntityState) -> bytes:
    """MessagePack ``[last, [[buckets, n_in, count, sums, distinct], ...]]``, a bucket ``[index, count, sum,
    min, max, ..., {value: count}, ...]`` (its numbers, then its value counts per distinct field)."""
    windows = []
    for w in state.windows:
        buckets: list[list[Any]] = [[int(b[0]), *b[1:]] for b in w.buckets]
        if w.sets:
            buckets = [[*b, *s] for b, s in zip(buckets, w.sets, strict=True)]
        windows.append([buckets, w.n_in, w.count, list(w.sums), list(w.distinct)])
    return _encode([state.last, windows])


def decode_state(data: bytes) -> EntityState:
    last, windows = _decode(data)
    out = []
    for buckets, n_in, count, sums, distinct in windows:
        w = Window(len(sums), len(distinct))
        width = 2 + 3 * len(sums)
        # msgpack keeps ints and floats apart: a bucket's numbers are floats but for its index.
        w.buckets = [(int(b[0]), *(float(x) for x in b[1:width])) for b in buckets]
        if distinct:
            w.sets = [b[width:] for b in buckets]
            w.distinct = distinct
        w.n_in, w.count, w.sums = n_in, float(count), tuple(float(x) for x in sums)
        out.append(w)
    return EntityState(last, out)


class PartitionStore(MutableMapping[str, EntityState]):
    """One input partition's feature state: a cache in memory over a SQLite file."""

    def __init__(self, path: str | os.PathLike[str], cache_entities: int = 2_000) -> None:
        self.path = Path(path)
        self.cache_entities = cache_entities
        self.reset = False  # the file was damaged and moved aside: the partition starts with no state
        self.db = self._open()
        self._cache: dict[str, EntityState] = {}
        self._absent: set[str] = set()  # keys ``get`` found in neither the cache nor the file
        self._dirty: set[str] = set()
        self._recorded: list[tuple[int, bytes]] = []
        # Every recorded feature vector not yet below a committed offset, for the changelog's "r" record.
        self.pending_recorded: dict[int, bytes] = {}
        self.unlogged: set[str] = set()  # entities flushed to the file but not confirmed in the changelog
        row = self.db.execute("SELECT next_offset FROM position").fetchone()
        self.next_offset: int = row[0] if row else -1  # the offset after the last event applied; -1: none
        self.flushed_offset = self.next_offset
        self.entities: int = self.db.execute("SELECT COUNT(*) FROM state").fetchone()[0]

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            logger.error("feature state %s cannot be used (%s): moved to %s; the partition starts with no state",
                         self.path, exc, aside.name)  # fmt: skip
            os.replace(self.path, aside)
            self.reset = True
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a process crash loses nothing written; see the docs
            db.executescript(SCHEMA)
            db.execute("SELECT COUNT(*) FROM state").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    # -- the mapping the engine uses ---------------------------------------------------------------

    def __getitem__(self, key: str) -> EntityState:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state

    def get(self, key: str, default: Any = None) -> Any:
        state = self._cache.get(key)
        if state is not None:
            return state
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        if row is None:
            self._absent.add(key)  # the engine sets it next: a new entity, counted then without asking again
            return default
        state = self._cache[key] = decode_state(row[0])
        return state

    def __setitem__(self, key: str, state: EntityState) -> None:
        if key in self._absent:
            self._absent.discard(key)
            self.entities += 1
        elif key not in self._cache and key not in self._dirty:
            if self.db.execute("SELECT 1 FROM state WHERE key = ?", (key,)).fetchone() is None:
                self.entities += 1
        self._cache[key] = state
        self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        raise TypeError("feature state is never deleted by the engine")

    def __iter__(self) -> Iterator[str]:
        return (k for (k,) in self.db.execute("SELECT key FROM state"))

    def __len__(self) -> int:
        return self.entities

    # -- positions, recorded features, flush --------------------------------------------------------

    def record(self, offset: int, features: bytes) -> None:
        """The features computed for the event at ``offset`` (applied: ``next_offset`` moves past it)."""
        self._recorded.append((offset, features))
        self.next_offset = offset + 1

    def recorded(self, offset: int) -> bytes | None:
        """The features recorded for the event at ``offset`` (one the state holds), or None."""
        for o, f in reversed(self._recorded):
            if o == offset:
                return f
        row = self.db.execute("SELECT features FROM recorded WHERE offset = ?", (offset,)).fetchone()
        return None if row is None else row[0]

    def flush(self, committed: int | None = None) -> list[tuple[str, bytes]]:
        """Write every change since the last flush in one transaction; ``committed``: the partition's last
        offset known committed (recorded features below it are no longer needed; those above it are kept
        even past a commit in progress, which may fail). Returns the entities written,
        (key, encoded state), for the changelog; ``pending_recorded`` holds the features still needed."""
        encoded = {k: encode_state(self._cache[k]) for k in self._dirty}
        dirty = list(encoded.items())
        self.pending_recorded.update(self._recorded)
        if committed is not None:
            self.pending_recorded = {o: f for o, f in self.pending_recorded.items() if o >= committed}
        db = self.db
        db.execute("BEGIN")
        try:
            if dirty:
                db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", dirty)
            if self._recorded:
                db.executemany("INSERT OR REPLACE INTO recorded (offset, features) VALUES (?, ?)", self._recorded)
            if self.next_offset >= 0:
                db.execute("INSERT OR REPLACE INTO position (id, next_offset) VALUES (0, ?)", (self.next_offset,))
            if committed is not None:
                db.execute("DELETE FROM recorded WHERE offset < ?", (committed,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.unlogged.update(self._dirty)
        self._dirty.clear()
        self._absent.clear()  # looked up by replayed events only (nothing set them): no need to remember
        self._recorded.clear()
        self.flushed_offset = self.next_offset
        if len(self._cache) > self.cache_entities:  # every entry is clean now: keep the newest half
            keep = list(self._cache)[-(self.cache_entities // 2) :]
            self._cache = {k: self._cache[k] for k in keep}
        # The changelog gets every entity written since it last confirmed one (a failed write or an aborted
        # transaction leaves them unlogged), each as it is now.
        return [(k, encoded[k] if k in encoded else encode_state(self[k])) for k in self.unlogged]

    def confirm(self) -> None:
        """The changelog has every entity ``flush`` returned."""
        self.unlogged.clear()

    def restore(self, records: Iterator[tuple[str, str, bytes | None]], batch: int = 10_000) -> int:
        """Replace everything with what ``records`` say, (kind, entity, value) in changelog order: ``s`` an
        entity's state, ``p`` the position, ``r`` the recorded features. Returns the entities restored."""
        db = self.db
        db.execute("BEGIN")
        try:
            for table in ("state", "position", "recorded"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            rows: dict[str, bytes] = {}
            recorded: dict[int, bytes] = {}
            position = -1
            for kind, entity, value in records:
                if kind == "s" and value is not None:
                    rows[entity] = value
                    if len(rows) >= batch:
                        db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", rows.items())
                        rows.clear()
                elif kind == "p" and value is not None:
                    position = int(_decode(value))
                elif kind == "r" and value is not None:
                    recorded = {int(o): bytes(f) for o, f in _decode(value).items()}
            db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", rows.items())
            db.executemany("INSERT INTO recorded (offset, features) VALUES (?, ?)", recorded.items())
            if position >= 0:
                db.execute("INSERT INTO position (id, next_offset) VALUES (0, ?)", (position,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._cache.clear()
        self._absent.clear()
        self._dirty.clear()
        self._recorded.clear()
        self.unlogged.clear()
        self.pending_recorded = dict(recorded)
        self.next_offset = self.flushed_offset = position
        self.entities = db.execute("SELECT COUNT(*) FROM state").fetchone()[0]
        return self.entities

    @property
    def size_bytes(self) -> int:
        """Bytes on disk: the SQLite file and its write-ahead log."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def close(self) -> None:
        self.db.close()
