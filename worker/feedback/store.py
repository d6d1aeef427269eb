"""One partition's join of scores and labels, in a SQLite file that survives restarts.

Per transaction and model version (``scored``): the score, the threshold it was scored at, the
event time and its outcome (``tp``/``fp``/``fn``/``tn``, or NULL while its truth is unknown);
per transaction: its latest label (``labels``) and, when the score record carried them, its raw
feature values (``features``, for ``fraud-feedback export``). ``outcomes`` holds the counts per
model version and outcome (and ``pending``, the scored transactions without a truth yet), changed
in the same SQLite transaction as the rows, so the counts are exactly the rows' and a restart shows
the same totals. ``offsets`` holds the next offset of each topic partition read into the store,
also in that transaction: after a crash the store resumes exactly where its last commit ended,
whatever Kafka's committed offsets say, so no record counts twice or is missed.

The rules (docs/feedback.md): a score record repeated for the same transaction
and model version is ignored; the label with the latest ``label_time`` wins (a repeat, or an older
one arriving late, changes nothing; on a tie the one read first stays); a transaction without a
label is genuine once its event is older than the label window (``expire``); a label overrides
that. Rows whose event is older than the label window plus a day are pruned (their counts stay),
so the file holds about one label window of traffic. Writes are durable (WAL,
``synchronous=FULL``) before ``apply`` returns.

A store that SQLite finds damaged or cannot open (``damaged``: not a database, corrupt, a
directory or an unreadable file in its place) is moved aside by the consumer (``move_aside``) and
rebuilt from the topics; any other SQLite failure (a full disk, an I/O error) is a ``StoreError``.
``Store(path, readonly=True)`` (the export) never writes to the store it reads (``_connect_readonly``).

Entity risk (worker/core/risk.py): a score record that names its entities (``entities``, ``entity_time``)
and its raw inputs leaves them in ``context``, per transaction (the first record to name an entity
field wins; a later one adds only fields not held yet). Each change of a transaction's truth, a fraud
label meeting its context or a later label overturning the one held, adds one fraud entry per entity
(``risk_entries``) and marks the entity ``risk_dirty``, in the same SQLite transaction as the offsets:
a record read again after a crash adds nothing. The consumer publishes the dirty entities' entries and
then clears them (``dirty_records``, ``clear_dirty``). ``prune`` drops the entries of transactions older
than the risk horizon before the newest ``entity_time`` held (the watermark), marking their entities
dirty, and the context rows as it drops the feature rows.

Decisions (docs/feedback.md, "Precision and recall per rule"): a score record whose ``decision`` or
``shadow_decision`` names a rule set leaves, per transaction and role (``serving``, ``shadow``), a row in
``decisions`` for its action and one for each rule that matched, in the same SQLite transaction as its
``scored`` row. Each row names a ``decision_keys`` row: the record's model version, the role, the rule set,
``action`` or ``rule`` and the action or rule id. A decision takes its outcome from the ``scored`` row of
that model version, so ``decision_window`` reads the transactions ``window`` reads, grouped by key (an
integer: this keeps it cheap). The first record to carry a decision of a role for a transaction wins; a
repeated one adds nothing. A transaction's decision rows go when the last of its ``scored`` rows is pruned,
and a key with no transaction newer than the pruning cutoff and none left is pruned too (key ids are never
used again). A store written before these tables existed gets them, empty, when opened: its older
transactions have no decisions.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.core.risk import Entry, change
from worker.feedback.quality import Tally, outcome, truth
from worker.feedback.records import Decision, Label, Score

PENDING = "pending"
DAY_MS = 86_400_000
PRUNE_GRACE_MS = DAY_MS
DEFAULT_RISK_HORIZON_MS = 40 * DAY_MS  # fraud entries of transactions older than this (before the watermark) go
SCHEMA_VERSION = "1"
WATERMARK = "risk_watermark"  # meta: the newest entity_time applied, epoch ms

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scored (
    transaction_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    score REAL NOT NULL,
    threshold REAL NOT NULL,
    event_time INTEGER NOT NULL,
    outcome TEXT,
    resolved_at INTEGER,
    PRIMARY KEY (transaction_id, model_version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scored_pending ON scored (event_time) WHERE outcome IS NULL;
CREATE INDEX IF NOT EXISTS scored_resolved ON scored (model_version, resolved_at) WHERE outcome IS NOT NULL;
CREATE INDEX IF NOT EXISTS scored_event_time ON scored (event_time);
CREATE TABLE IF NOT EXISTS labels (
    transaction_id TEXT PRIMARY KEY,
    is_fraud INTEGER NOT NULL,
    label_time INTEGER NOT NULL,
    source TEXT NOT NULL,
    joined INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS labels_time ON labels (label_time);
CREATE TABLE IF NOT EXISTS feature_sets (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS features (
    transaction_id TEXT PRIMARY KEY,
    event_time INTEGER NOT NULL,
    feature_set INTEGER NOT NULL,
    vals BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS features_time ON features (event_time);
CREATE TABLE IF NOT EXISTS outcomes (
    model_version TEXT NOT NULL, outcome TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (model_version, outcome)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (topic TEXT PRIMARY KEY, next_offset INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS context (
    transaction_id TEXT PRIMARY KEY,
    entity_time INTEGER,
    entities TEXT,
    inputs TEXT,
    event_time INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS context_time ON context (event_time);
CREATE TABLE IF NOT EXISTS risk_entries (
    field TEXT NOT NULL, entity TEXT NOT NULL, tx_time INTEGER NOT NULL, label_time INTEGER NOT NULL,
    delta INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS risk_entries_entity ON risk_entries (field, entity);
CREATE INDEX IF NOT EXISTS risk_entries_time ON risk_entries (tx_time);
CREATE TABLE IF NOT EXISTS risk_dirty (field TEXT NOT NULL, entity TEXT NOT NULL, PRIMARY KEY (field, entity))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decision_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_version TEXT NOT NULL,
    role TEXT NOT NULL,
    rule_set TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    last_event_time INTEGER NOT NULL,
    UNIQUE (model_version, role, rule_set, kind, name)
);
CREATE TABLE IF NOT EXISTS decisions (
    transaction_id TEXT NOT NULL, key INTEGER NOT NULL, PRIMARY KEY (transaction_id, key)
) WITHOUT ROWID;
"""
ACTION_KEY, RULE_KEY = "action", "rule"  # decision_keys.kind


# SQLite's primary result codes that moving the file aside and rebuilding it can cure: PERM, READONLY,
# CORRUPT, CANTOPEN (a directory or an unreadable file in its place), NOTADB (garbage bytes).
_DAMAGED = {3, 8, 11, 14, 26}


class StoreError(Exception):
    """A store that can neither be used nor rebuilt; the message names its file."""


def damaged(exc: BaseException) -> bool:
    """Whether this SQLite error says the file itself is bad (rebuilding from the topics can cure it)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # an error raised before SQLite ran (the file unreadable as the user, a bad path)
        return isinstance(exc, (PermissionError, IsADirectoryError, NotADirectoryError))
    return (code & 0xFF) in _DAMAGED


def move_aside(path: str | os.PathLike[str], clock: Callable[[], int] | None = None) -> Path:
    """Rename the store (and its ``-wal``, ``-shm``) to ``<name>.corrupt-<UTC time>``; the new name.

    Kept for inspection (delete it once done); the export's ``partition-*.sqlite`` never matches it.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime((clock or now_ms)() / 1000))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(os.path.lexists(f"{target}{s}") for s in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        if os.path.lexists(f"{path}{suffix}"):
            os.replace(f"{path}{suffix}", f"{target}{suffix}")
    return target


def now_ms() -> int:
    return int(time.time() * 1000)


def store_path(state_dir: str | os.PathLike[str], partition: int) -> Path:
    return Path(state_dir) / f"partition-{partition}.sqlite"


@dataclass
class Applied:
    """What one ``apply`` changed: records taken, duplicates ignored, label lags first seen (seconds)."""

    scores: int = 0
    labels: int = 0
    duplicates: int = 0
    stale_labels: int = 0
    label_lags: list[float] = field(default_factory=list)


class Store:
    """The store of one partition number (of the scores topic and of the labels topic)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        label_window_ms: int,
        clock: Callable[[], int] = now_ms,
        cache_kib: int = 4096,
        readonly: bool = False,
        risk_horizon_ms: int = DEFAULT_RISK_HORIZON_MS,
    ) -> None:
        self.path = Path(path)
        self.existed = os.path.lexists(self.path)
        self.label_window_ms = label_window_ms
        self.risk_horizon_ms = risk_horizon_ms
        self.has_context = True  # False: a read-only store written before the context table existed
        self._clock = clock
        self._copy_dir: str | None = None
        self._feature_sets: dict[tuple[str, ...], int] = {}
        # (model version, role, rule set, kind, name) -> decision_keys.id
        self._keys: dict[tuple[str, str, str, str, str], int] = {}
        self._key_times: dict[int, int] = {}  # in ``apply``: decision key -> the newest event_time naming it
        if readonly:
            try:
                self.db = self._connect_readonly()
                self.db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
                tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"scored", "labels", "features", "feature_sets"} <= tables:
                    raise sqlite3.DatabaseError("not a fraud-feedback store (its tables are missing)")
                self.has_context = "context" in tables
            except BaseException:
                self.close()
                raise
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # bounded page cache per store
            self.db.executescript(_SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            self.db.execute("SELECT count(*) FROM offsets").fetchone()
        except BaseException:
            self.db.close()
            raise

    def _connect_readonly(self) -> sqlite3.Connection:
        """A connection that never writes to the store's files, nor creates one beside them.

        A store in use (its ``-shm`` exists): read-only, the WAL index read-only too (a live writer's
        latest commit is seen). A store closed cleanly (no ``-wal``): opened as immutable. One left
        by a crash with a ``-wal`` but no ``-shm``: its files are copied to a temporary directory
        and the copy is read (SQLite would otherwise have to create the index beside it).
        """
        path, wal, shm = self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        if not path.is_file():
            raise sqlite3.OperationalError("not a regular file")
        if shm.exists():
            params = "mode=ro&readonly_shm=1"
        elif not wal.exists():
            params = "mode=ro&immutable=1"
        else:
            self._copy_dir = tempfile.mkdtemp(prefix="fraud-feedback-export-")
            copy = Path(self._copy_dir) / path.name
            shutil.copyfile(path, copy)
            shutil.copyfile(wal, f"{copy}-wal")
            path, params = copy, "mode=ro"
        uri = f"file:{urllib.parse.quote(str(path.absolute()))}?{params}"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)

    def close(self) -> None:
        if hasattr(self, "db"):
            self.db.close()
        if self._copy_dir is not None:
            shutil.rmtree(self._copy_dir, ignore_errors=True)
            self._copy_dir = None

    # -- reading ---------------------------------------------------------------------------------

    def next_offsets(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT topic, next_offset FROM offsets"))

    def outcome_counts(self) -> dict[tuple[str, str], int]:
        return {(v, o): n for v, o, n in self.db.execute("SELECT model_version, outcome, n FROM outcomes")}

    def window(self, model_version: str, since_ms: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores, thresholds and truths of the newest resolved transactions of a version (resolved ≥ since)."""
        rows = self.db.execute(
            "SELECT score, threshold, outcome FROM scored WHERE model_version = ? AND outcome IS NOT NULL "
            "AND resolved_at >= ? ORDER BY resolved_at DESC LIMIT ?",
            (model_version, since_ms, limit),
        ).fetchall()
        scores = np.fromiter((r[0] for r in rows), np.float64, len(rows))
        thresholds = np.fromiter((r[1] for r in rows), np.float64, len(rows))
        truths = np.fromiter((r[2] in ("tp", "fn") for r in rows), bool, len(rows))
        return scores, thresholds, truths

    def paired(self, version_a: str, version_b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores of both versions and the truth, for the resolved transactions both scored."""
        rows = self.db.execute(
            "SELECT a.score, b.score, a.outcome FROM scored a JOIN scored b ON b.transaction_id = a.transaction_id "
            "WHERE a.model_version = ? AND b.model_version = ? AND a.outcome IS NOT NULL",
            (version_a, version_b),
        ).fetchall()
        a = np.fromiter((r[0] for r in rows), np.float64, len(rows))
        b = np.fromiter((r[1] for r in rows), np.float64, len(rows))
        truths = np.fromiter((r[2] in ("tp", "fn") for r in rows), bool, len(rows))
        return a, b, truths

    def decision_window(self, model_version: str, since_ms: int, limit: int) -> tuple[Tally, Tally]:
        """Over the transactions ``window`` reads (the newest resolved ones of a version, resolved ≥ since) whose
        record of that version carried a decision: per (role, rule set, action), the transactions, their frauds
        and the latest ``resolved_at``; per (role, rule set, rule), the transactions the rule matched, their
        frauds and the latest ``resolved_at``."""
        held = self.db.execute("SELECT 1 FROM decision_keys WHERE model_version = ? LIMIT 1", (model_version,))
        if held.fetchone() is None:  # no record of this version carried a decision: nothing to read
            return {}, {}
        rows = self.db.execute(
            "WITH w AS (SELECT transaction_id, outcome IN ('tp', 'fn') AS fraud, resolved_at FROM scored "
            "WHERE model_version = ? AND outcome IS NOT NULL AND resolved_at >= ? ORDER BY resolved_at DESC LIMIT ?), "
            "g AS (SELECT d.key, count(*) AS n, sum(w.fraud) AS frauds, max(w.resolved_at) AS latest FROM w "
            "JOIN decisions d ON d.transaction_id = w.transaction_id GROUP BY d.key) "
            "SELECT k.kind, k.role, k.rule_set, k.name, g.n, g.frauds, g.latest FROM g "
            "JOIN decision_keys k ON k.id = g.key WHERE k.model_version = ?",
            (model_version, since_ms, limit, model_version),
        ).fetchall()
        actions: Tally = {}
        rules: Tally = {}
        for kind, role, rule_set, name, n, frauds, latest in rows:
            (actions if kind == ACTION_KEY else rules)[(role, rule_set, name)] = (int(n), int(frauds), int(latest))
        return actions, rules

    def watermark(self) -> int | None:
        """The newest ``entity_time`` applied (epoch ms), or None before the first."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (WATERMARK,)).fetchone()
        return None if row is None else int(row[0])

    def risk_entries(self, field: str, entity: str) -> list[Entry]:
        """The entity's fraud entries in this store, sorted."""
        rows = self.db.execute(
            "SELECT tx_time, label_time, delta FROM risk_entries WHERE field = ? AND entity = ? "
            "ORDER BY tx_time, label_time, delta",
            (field, entity),
        )
        return [(int(t), int(lt), int(d)) for t, lt, d in rows]

    def dirty_records(self, limit: int | None = None) -> list[tuple[str, str, list[Entry]]]:
        """(field, entity, all its entries) of each entity whose entries changed since it was last cleared
        (at most ``limit`` of them); an empty list of entries: it has none left."""
        query = "SELECT field, entity FROM risk_dirty ORDER BY field, entity"
        keys = self.db.execute(query + (" LIMIT ?" if limit is not None else ""),
                               (limit,) if limit is not None else ()).fetchall()  # fmt: skip
        return [(f, k, self.risk_entries(f, k)) for f, k in keys]

    def clear_dirty(self, keys: Iterable[tuple[str, str]]) -> None:
        """Mark these (field, entity) published, in a transaction of its own."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM risk_dirty WHERE field = ? AND entity = ?", list(keys))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def rows(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM scored").fetchone()[0])

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    # -- writing ---------------------------------------------------------------------------------

    def apply(
        self,
        scores: Iterable[Score],
        labels: Iterable[Label],
        next_offsets: dict[str, int],
    ) -> Applied:
        """Join the records into the store and record the offsets after them, in one durable transaction."""
        applied = Applied()
        cutoff = self._clock() - self.label_window_ms
        db = self.db
        self._key_times.clear()
        db.execute("BEGIN IMMEDIATE")
        try:
            newest = None
            for s in scores:
                self._score(s, cutoff, applied)
                if s.entity_time is not None and (newest is None or s.entity_time > newest):
                    newest = s.entity_time
            for lab in labels:
                self._label(lab, applied)
            db.executemany(
                "UPDATE decision_keys SET last_event_time = max(last_event_time, ?) WHERE id = ?",
                [(t, key) for key, t in self._key_times.items()],
            )
            if newest is not None:
                db.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                    "CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
                    (WATERMARK, str(newest)),
                )
            db.executemany(
                "INSERT INTO offsets VALUES (?, ?) "
                "ON CONFLICT (topic) DO UPDATE SET next_offset = excluded.next_offset",
                sorted(next_offsets.items()),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._keys.clear()  # it may hold keys made in the transaction undone
            raise
        return applied

    def expire(self, limit: int = 50_000) -> int:
        """Count transactions without a label and older than the label window as genuine; how many."""
        cutoff = self._clock() - self.label_window_ms
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                "SELECT transaction_id, model_version, score, threshold, event_time FROM scored "
                "WHERE outcome IS NULL AND event_time < ? LIMIT ?",
                (cutoff, limit),
            ).fetchall()
            for txn, version, score, threshold, event_time in rows:
                self._resolve(txn, version, None, outcome(score, threshold, False), event_time + self.label_window_ms)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(rows)

    def prune(self) -> int:
        """Drop rows whose event is older than the label window plus a day (their counts stay), and the fraud
        entries of transactions older than the risk horizon before the watermark (their entities marked
        dirty); how many scored rows."""
        before = self._clock() - self.label_window_ms - PRUNE_GRACE_MS
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            # The decisions of the transactions whose every scored row goes now.
            db.execute(
                "DELETE FROM decisions WHERE transaction_id IN "
                "(SELECT transaction_id FROM scored WHERE event_time < ? AND outcome IS NOT NULL) "
                "AND NOT EXISTS (SELECT 1 FROM scored s WHERE s.transaction_id = decisions.transaction_id "
                "AND (s.event_time >= ? OR s.outcome IS NULL))",
                (before, before),
            )
            gone = db.execute("DELETE FROM scored WHERE event_time < ? AND outcome IS NOT NULL", (before,)).rowcount
            # A key named by a newer transaction's record is newer; one of an older transaction still held (its
            # scored rows not all gone: pending) stays.
            keys = db.execute(
                "DELETE FROM decision_keys WHERE last_event_time < ? AND id NOT IN (SELECT d.key FROM scored s "
                "JOIN decisions d ON d.transaction_id = s.transaction_id WHERE s.event_time < ?)",
                (before, before),
            ).rowcount
            db.execute("DELETE FROM features WHERE event_time < ?", (before,))
            watermark = self.watermark()
            # A transaction's entities stay while its label can still make an entry inside the risk horizon
            # (the data's clock, not the wall clock: a replay of old data keeps them too).
            horizon = watermark - self.risk_horizon_ms if watermark is not None else before
            db.execute("DELETE FROM context WHERE event_time < ? AND (entity_time IS NULL OR entity_time < ?)",
                       (before, horizon))  # fmt: skip
            if watermark is not None:
                db.execute(
                    "INSERT OR IGNORE INTO risk_dirty "
                    "SELECT DISTINCT field, entity FROM risk_entries WHERE tx_time < ?",
                    (horizon,),
                )
                db.execute("DELETE FROM risk_entries WHERE tx_time < ?", (horizon,))
            db.execute(
                "DELETE FROM labels WHERE label_time < ? AND transaction_id NOT IN (SELECT transaction_id FROM scored)",
                (before,),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._keys.clear()
            raise
        if keys:
            self._keys.clear()
        return gone

    def _score(self, s: Score, cutoff: int, applied: Applied) -> None:
        db = self.db
        if s.entities is not None or s.inputs is not None:
            self._context(s)
        cur = db.execute(
            "INSERT OR IGNORE INTO scored (transaction_id, model_version, score, threshold, event_time) "
            "VALUES (?, ?, ?, ?, ?)",
            (s.transaction_id, s.model_version, s.score, s.threshold, s.event_time),
        )
        if cur.rowcount == 0:
            applied.duplicates += 1
            return
        applied.scores += 1
        for role, decision in s.decisions():
            if decision.rule_set is not None:  # without a rule set the model version's figures are its figures
                self._decision(s, role, decision)
        if s.features is not None:
            names, values = s.features
            db.execute(
                "INSERT OR IGNORE INTO features VALUES (?, ?, ?, ?)",
                (s.transaction_id, s.event_time, self._feature_set(names), np.asarray(values, "<f8").tobytes()),
            )
        row = db.execute(
            "SELECT is_fraud, label_time, joined FROM labels WHERE transaction_id = ?", (s.transaction_id,)
        )
        label = row.fetchone()
        is_fraud = None if label is None else bool(label[0])
        known = truth(is_fraud, s.event_time, cutoff)
        self._bump(s.model_version, PENDING, +1)
        if known is not None:
            resolved_at = label[1] if label is not None else s.event_time + self.label_window_ms
            self._resolve(s.transaction_id, s.model_version, None, outcome(s.score, s.threshold, known), resolved_at)
        if label is not None and not label[2]:
            applied.label_lags.append(max(0.0, (label[1] - s.event_time) / 1000))
            db.execute("UPDATE labels SET joined = 1 WHERE transaction_id = ?", (s.transaction_id,))

    def _decision(self, s: Score, role: str, d: Decision) -> None:
        db = self.db
        held = db.execute(
            "SELECT 1 FROM decisions d JOIN decision_keys k ON k.id = d.key WHERE d.transaction_id = ? AND k.role = ? "
            "LIMIT 1",
            (s.transaction_id, role),
        ).fetchone()
        if held is not None:  # another model version's record of this transaction carried one first
            return
        assert d.rule_set is not None
        v, rs = s.model_version, d.rule_set
        keys = [self._key(v, role, rs, ACTION_KEY, d.action), *(self._key(v, role, rs, RULE_KEY, r) for r in d.rules)]
        db.executemany("INSERT OR IGNORE INTO decisions VALUES (?, ?)", [(s.transaction_id, key) for key in keys])
        for key in keys:
            if self._key_times.get(key, -1) < s.event_time:
                self._key_times[key] = s.event_time

    def _key(self, model_version: str, role: str, rule_set: str, kind: str, name: str) -> int:
        """The id of this decision key, made on first use."""
        key = (model_version, role, rule_set, kind, name)
        cached = self._keys.get(key)
        if cached is not None:
            return cached
        row = self.db.execute(
            "SELECT id FROM decision_keys WHERE model_version = ? AND role = ? AND rule_set = ? AND kind = ? "
            "AND name = ?",
            key,
        ).fetchone()
        if row is None:
            cur = self.db.execute(
                "INSERT INTO decision_keys (model_version, role, rule_set, kind, name, last_event_time) "
                "VALUES (?, ?, ?, ?, ?, -1)",
                key,
            )
            row = (cur.lastrowid,)
        self._keys[key] = int(row[0])
        return self._keys[key]

    def _label(self, lab: Label, applied: Applied) -> None:
        db = self.db
        old = db.execute(
            "SELECT is_fraud, label_time, joined FROM labels WHERE transaction_id = ?", (lab.transaction_id,)
        ).fetchone()
        if old is not None and old[1] >= lab.label_time:
            applied.stale_labels += 1  # a repeat, or older than the one held
            return
        applied.labels += 1
        db.execute(
            "INSERT INTO labels VALUES (?, ?, ?, ?, ?) ON CONFLICT (transaction_id) DO UPDATE SET "
            "is_fraud = excluded.is_fraud, label_time = excluded.label_time, source = excluded.source",
            (lab.transaction_id, int(lab.is_fraud), lab.label_time, lab.source, 0 if old is None else old[2]),
        )
        context = db.execute(
            "SELECT entity_time, entities FROM context WHERE transaction_id = ?", (lab.transaction_id,)
        ).fetchone()
        if context is not None and context[0] is not None and context[1]:
            entity_time = context[0]
            was = False if old is None else bool(old[0])
            entry = change(was, lab.is_fraud, entity_time, max(lab.label_time, entity_time))
            if entry is not None:
                self._add_entries(json.loads(context[1]), entry)
        scored = db.execute(
            "SELECT model_version, score, threshold, event_time, outcome FROM scored WHERE transaction_id = ?",
            (lab.transaction_id,),
        ).fetchall()
        for version, score, threshold, _event_time, was in scored:
            new = outcome(score, threshold, lab.is_fraud)
            if new != was:
                self._resolve(lab.transaction_id, version, was, new, lab.label_time)
        if scored and (old is None or not old[2]):
            applied.label_lags.append(max(0.0, (lab.label_time - min(r[3] for r in scored)) / 1000))
            db.execute("UPDATE labels SET joined = 1 WHERE transaction_id = ?", (lab.transaction_id,))

    def _context(self, s: Score) -> None:
        """Hold the transaction's entities and inputs; a fraud label already held makes the entries of the
        entity fields it names for the first time."""
        db = self.db
        row = db.execute(
            "SELECT entity_time, entities, inputs FROM context WHERE transaction_id = ?", (s.transaction_id,)
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO context VALUES (?, ?, ?, ?, ?)",
                (s.transaction_id, s.entity_time, _json(s.entities), _json(s.inputs), s.event_time),
            )
            entity_time, added = s.entity_time, s.entities or {}
        else:
            held = json.loads(row[1]) if row[1] else {}
            added = {f: k for f, k in (s.entities or {}).items() if f not in held}
            entity_time = row[0] if row[0] is not None else s.entity_time
            if added or (row[2] is None and s.inputs is not None):
                db.execute(
                    "UPDATE context SET entity_time = ?, entities = ?, inputs = coalesce(inputs, ?) "
                    "WHERE transaction_id = ?",
                    (entity_time, _json({**held, **added} or None), _json(s.inputs), s.transaction_id),
                )
        if not added or entity_time is None:
            return
        label = db.execute(
            "SELECT is_fraud, label_time FROM labels WHERE transaction_id = ?", (s.transaction_id,)
        ).fetchone()
        if label is not None:
            entry = change(False, bool(label[0]), entity_time, max(label[1], entity_time))
            if entry is not None:
                self._add_entries(added, entry)

    def _add_entries(self, entities: dict[str, str], entry: Entry) -> None:
        self.db.executemany(
            "INSERT INTO risk_entries VALUES (?, ?, ?, ?, ?)", [(f, k, *entry) for f, k in entities.items()]
        )
        self.db.executemany("INSERT OR IGNORE INTO risk_dirty VALUES (?, ?)", list(entities.items()))

    def _resolve(self, txn: str, version: str, was: str | None, new: str | None, resolved_at: int) -> None:
        self.db.execute(
            "UPDATE scored SET outcome = ?, resolved_at = ? WHERE transaction_id = ? AND model_version = ?",
            (new, resolved_at, txn, version),
        )
        self._bump(version, was if was is not None else PENDING, -1)
        self._bump(version, new if new is not None else PENDING, +1)

    def _bump(self, version: str, key: str, by: int) -> None:
        self.db.execute(
            "INSERT INTO outcomes VALUES (?, ?, ?) ON CONFLICT (model_version, outcome) DO UPDATE SET n = n + ?",
            (version, key, by, by),
        )

    def _feature_set(self, names: Sequence[str]) -> int:
        key = tuple(names)
        cached = self._feature_sets.get(key)
        if cached is not None:
            return cached
        text = json.dumps(list(key))
        self.db.execute("INSERT OR IGNORE INTO feature_sets (names) VALUES (?)", (text,))
        fid = int(self.db.execute("SELECT id FROM feature_sets WHERE names = ?", (text,)).fetchone()[0])
        self._feature_sets[key] = fid
        return fid

    # -- export ----------------------------------------------------------------------------------

    def examples(
        self, since_ms: int | None, until_ms: int | None
    ) -> Iterable[tuple[str, int, bool, list[str], bytes, int | None, dict | None]]:
        """(transaction_id, event_time, is_fraud, feature names, values, label_time, inputs) of each resolved
        transaction with features; ``label_time`` None without a label, ``inputs`` None without them.

        Resolved: labelled, or genuine by the label window. One row per transaction, whatever the
        number of model versions that scored it.
        """
        cutoff = self._clock() - self.label_window_ms
        sets = {fid: json.loads(names) for fid, names in self.db.execute("SELECT id, names FROM feature_sets")}
        inputs, join = ("c.inputs", "LEFT JOIN context c ON c.transaction_id = f.transaction_id ")
        if not self.has_context:
            inputs, join = "NULL", ""
        query = (
            f"SELECT f.transaction_id, f.event_time, f.feature_set, f.vals, l.is_fraud, l.label_time, {inputs} "
            f"FROM features f LEFT JOIN labels l ON l.transaction_id = f.transaction_id {join}"
            "WHERE f.event_time >= ? AND f.event_time < ? ORDER BY f.event_time"
        )
        lo = since_ms if since_ms is not None else -(2**62)
        hi = until_ms if until_ms is not None else 2**62
        for txn, event_time, fid, vals, is_fraud, label_time, raw in self.db.execute(query, (lo, hi)):
            known = truth(None if is_fraud is None else bool(is_fraud), event_time, cutoff)
            if known is None:
                continue
            yield txn, event_time, known, sets[fid], vals, label_time, None if raw is None else json.loads(raw)


def _json(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, allow_nan=False)


def label_counts_total(stores: Iterable[Store]) -> dict[tuple[str, str], int]:
    total: dict[tuple[str, str], int] = {}
    for store in stores:
        for key, n in store.outcome_counts().items():
            total[key] = total.get(key, 0) + n
    return total
