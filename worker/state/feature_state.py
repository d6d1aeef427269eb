"""The worker's behavioural-feature state (docs/features.md, "State"): one ``BatchFeatures`` per feature
spec served, each input partition's state in a SQLite file (``PartitionStore``) under
``<feature_state_dir>/<spec id>/<topic>-<partition>.sqlite``. The spec id is a digest of the spec's
entity blocks, so bundles whose aggregates are the same share their state across a model switch.

The consumer slot calls ``before_commit`` before it commits input offsets (and the exactly-once
transaction before it adds them), which flushes the partitions being committed; ``forget`` closes
the stores of partitions that went to another member. One lock keeps the loop's ``extend`` and a
flush on another thread (the committer's, the transaction's, kafka-python's on revocation) apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import msgspec

from worker.core.batch_features import BatchFeatures, MemoryPartition, PartitionState
from worker.core.decode import DecodedBatch
from worker.core.errors import ConfigError
from worker.core.features import FeatureSpec
from worker.core.risk import RiskSource
from worker.state.changelog import Changelog
from worker.state.feature_store import PartitionStore

logger = logging.getLogger(__name__)


def spec_id(spec: FeatureSpec) -> str:
    """A digest of what the state depends on: the entity blocks (not the categoricals)."""
    blocks = [b.to_dict() for b in spec.entities]
    return hashlib.sha256(json.dumps(blocks, sort_keys=True).encode()).hexdigest()[:16]


_pack = msgspec.msgpack.Encoder().encode


class FeatureState:
    def __init__(self, directory: str | Path, cache_entities: int, changelog: Changelog | None = None,
                 partitions_of: Callable[[str], int] | None = None) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.cache_entities = cache_entities
        self.changelog = changelog
        self.partitions_of = partitions_of  # the input topic's partition count, for the changelog topic
        self.restored = 0  # entities restored from the changelog (a metric)
        self.restoring = 0  # changelog records read by the restore under way, 0 when none (a metric's progress)
        self._unconfirmed: list[PartitionStore] = []  # flushed into the open transaction
        self._gone: set[Hashable] = set()  # revoked, not assigned again since
        self._committed: dict[Hashable, int] = {}  # per partition: the last offset known committed
        self.restore_seconds = 0.0
        self.lock = threading.RLock()
        self._flushing = threading.Lock()  # one flush (and its changelog records) at a time
        self._by_spec: dict[FeatureSpec, BatchFeatures] = {}
        self._serving: dict[str, FeatureSpec] = {}  # topic -> the spec its events are computed with
        self._to_open: set[tuple[str, int]] = set()  # assigned, their stores to open on the loop's thread
        self._stores: dict[tuple[str, Hashable], PartitionStore] = {}  # (spec id, partition)
        self.risk: RiskSource | None = None  # the entity-risk table, for specs reading labels (set by the worker)
        self.flushed_entities = 0  # entity states written (a metric)
        self.flushes = 0
        self.resets = 0  # stores moved aside as damaged

    def features_for(self, spec: FeatureSpec) -> BatchFeatures:
        features = self._by_spec.get(spec)
        if features is None:
            sid = spec_id(spec)
            risk = self.risk if spec.risk_fields else None
            features = self._by_spec[spec] = BatchFeatures(spec, lambda p: self._store(sid, p), risk)
        return features

    def _store(self, sid: str, partition: Hashable) -> PartitionState:
        if partition in self._gone:
            # Revoked while the loop still held a batch of it: its events are not ours to count (another
            # member owns the partition now). A state of their own, dropped when it is assigned again.
            return MemoryPartition()
        store = self._stores.get((sid, partition))
        if store is None:
            topic, number = cast("tuple[str, int]", partition)
            name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', str(topic))}-{int(number)}.sqlite"
            try:
                store = PartitionStore(self.directory / sid / name, self.cache_entities)
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(
                    f"feature_state_dir {self.directory}: cannot keep the feature state there ({exc})"
                ) from None
            self.resets += store.reset
            if self.changelog is not None:
                self._restore(sid, int(number), str(topic), store)
            self._stores[(sid, partition)] = store
            logger.info("feature state of %s-%s: %d entities, next offset %d (%s)", topic, number, len(store),
                        store.next_offset, store.path)  # fmt: skip
        return store

    def extend(self, spec: FeatureSpec, records: Sequence[Any], decoded: DecodedBatch) -> DecodedBatch:
        """The batch's rows with their features; ``records``: the polled records, ``decoded.index`` into them."""
        rows = [records[i] for i in decoded.index]
        with self.lock:
            return self.features_for(spec).extend(
                decoded, [r.value for r in rows], [(r.topic, r.partition) for r in rows], [r.offset for r in rows]
            )

    def _restore(self, sid: str, number: int, topic: str, store: PartitionStore) -> None:
        """The changelog is the state whenever a partition's store is opened (the local file may be behind
        it, or ahead of what was committed): the file is rebuilt from it."""
        assert self.changelog is not None
        self.changelog.ensure(self.partitions_of(topic) if self.partitions_of else number + 1)
        start = time.perf_counter()
        prefix = f"{sid}/"

        def records() -> Iterator[tuple[str, str, bytes | None]]:
            for _, key, value in self.changelog.read(number, 0):  # type: ignore[union-attr]
                self.restoring += 1
                text = key.decode("utf-8", "replace") if key else ""
                if text.startswith(prefix):
                    kind, _, entity = text[len(prefix):].partition("/")
                    yield kind, entity, value

        try:
            n = store.restore(records())
        finally:
            self.restoring = 0
        seconds = time.perf_counter() - start
        self.restored += n
        self.restore_seconds += seconds
        logger.info("feature state of %s-%d restored from %s: %d entities, next offset %d in %.1f s", topic, number,
                    self.changelog.topic, n, store.next_offset, seconds)  # fmt: skip

    def before_commit(self, offsets: Mapping[Any, Any], producer: Any = None) -> None:
        """Flush the state of the partitions whose offsets are about to be committed, to the file and the
        changelog (in ``producer``'s transaction when given, else waiting until the broker has it).

        The state lock is held only while the stores are written (the loop waits for that); the changelog
        is written under ``_flushing`` alone, which keeps one flush's records ahead of the next one's."""
        with self._flushing:
            batches: list[tuple[int, PartitionStore, list[tuple[bytes, bytes]]]] = []
            with self.lock:
                if producer is not None:
                    # One transaction commits at a time, this call first: the stores its after_commit
                    # confirms. An aborted one is never confirmed: its entities go with the next flush.
                    self._unconfirmed = []
                for (sid, partition), store in self._stores.items():
                    for tp in offsets:
                        if (tp.topic, tp.partition) != partition:
                            continue
                        changed = store.flush(committed=self._committed.get(partition))
                        self.flushed_entities += len(changed)
                        self.flushes += 1
                        if self.changelog is None:
                            store.confirm()  # no changelog to wait for: the file is all there is
                        else:
                            records = [(f"{sid}/s/{k}".encode(), v) for k, v in changed]
                            records.append((f"{sid}/p".encode(), _pack(store.next_offset)))
                            records.append((f"{sid}/r".encode(), _pack(store.pending_recorded)))
                            batches.append((tp.partition, store, records))
            for number, store, records in batches:
                assert self.changelog is not None
                self.changelog.write(number, records, producer)
                if producer is None:  # the broker has them; in a transaction: once it commits
                    store.confirm()
                else:
                    self._unconfirmed.append(store)

    def after_commit(self, offsets: Mapping[Any, Any]) -> None:
        """``offsets`` are committed (by the consumer, or with a transaction carrying the changelog records of
        ``before_commit``): the recorded features below them can go at the next flush."""
        with self.lock:
            for store in self._unconfirmed:
                store.confirm()
            self._unconfirmed.clear()
            for tp, meta in offsets.items():
                key = (tp.topic, tp.partition)
                self._committed[key] = max(meta.offset, self._committed.get(key, meta.offset))


    def serve(self, specs: Mapping[str, FeatureSpec]) -> None:
        """The spec each topic's events are computed with (the serving model's; per stage with repartition
        topics): the stores of partitions assigned from now on are opened, and restored, at assignment."""
        with self.lock:
            self._serving = dict(specs)

    def assigned(self, partitions: Iterable[Any]) -> None:
        """``partitions`` are this member's (again): their stores open afresh, restored from the changelog, at
        the loop's next ``open_assigned`` (as Kafka Streams restores before processing), not at their first
        event. Called on kafka-python's IO thread, which must not wait for a restore (its heartbeats would)."""
        back = {(tp.topic, tp.partition) for tp in partitions}
        with self.lock:
            for features in self._by_spec.values():
                for p in back & self._gone:
                    features.drop(p)
            self._gone -= back
            self._to_open |= back

    def open_assigned(self) -> None:
        """Open (and restore) the stores of the partitions assigned since the last call (the loop's thread)."""
        if not self._to_open:
            return
        with self.lock:
            pending, self._to_open = sorted(self._to_open, key=str), set()
            for topic, number in pending:
                spec = self._serving.get(topic)
                if spec is None or (topic, number) in self._gone:
                    continue
                try:
                    self.features_for(spec).partition((topic, number))
                except Exception as exc:  # noqa: BLE001 - opened again at its first event, where it is reported
                    logger.warning("feature state of %s-%d not opened at assignment: %s", topic, number, exc)

    def forget(self, partitions: Iterable[Any]) -> None:
        """Close the stores of ``partitions`` (gone to another member); reopened from disk if they come back."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        with self.lock:
            self._gone |= gone
            self._to_open -= gone
            for features in self._by_spec.values():
                for p in gone:
                    features.drop(p)
            for key in [k for k in self._stores if k[1] in gone]:
                self._stores.pop(key).close()

    def close(self) -> None:
        with self.lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
            if self.changelog is not None:
                self.changelog.close()

    @property
    def stores(self) -> int:
        """Partition stores open (over the specs served)."""
        return len(self._stores)

    def counts(self, specs: Sequence[FeatureSpec]) -> tuple[int, int, float, int]:
        """(late events, replayed events, seconds computing) over ``specs``, and the entities held: read under
        the lock, since the rebalance listener drops partitions on kafka-python's thread meanwhile."""
        with self.lock:
            features = [self.features_for(s) for s in specs]
            return (sum(f.late for f in features), sum(f.replayed for f in features),
                    sum(f.seconds for f in features), sum(len(s) for s in self._stores.values()))  # fmt: skip

    def partition_sizes(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Per partition held: (entities, bytes on disk), over the specs served."""
        sizes: dict[tuple[str, int], tuple[int, int]] = {}
        with self.lock:
            for (_, partition), store in self._stores.items():
                topic, number = cast("tuple[str, int]", partition)
                entities, size = sizes.get((topic, number), (0, 0))
                sizes[(topic, number)] = (entities + len(store), size + store.size_bytes)
        return sizes

    @property
    def entities(self) -> int:
        return sum(len(s) for s in self._stores.values())
