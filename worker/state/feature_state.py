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
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from worker.core.batch_features import BatchFeatures
from worker.core.decode import DecodedBatch
from worker.core.features import FeatureSpec
from worker.state.feature_store import PartitionStore

logger = logging.getLogger(__name__)


def spec_id(spec: FeatureSpec) -> str:
    """A digest of what the state depends on: the entity blocks (not the categoricals)."""
    blocks = [b.to_dict() for b in spec.entities]
    return hashlib.sha256(json.dumps(blocks, sort_keys=True).encode()).hexdigest()[:16]


class FeatureState:
    def __init__(self, directory: str | Path, cache_entities: int) -> None:
        self.directory = Path(directory)
        self.cache_entities = cache_entities
        self.lock = threading.RLock()
        self._by_spec: dict[FeatureSpec, BatchFeatures] = {}
        self._stores: dict[tuple[str, Hashable], PartitionStore] = {}  # (spec id, partition)
        self.flushed_entities = 0  # entity states written (a metric)
        self.flushes = 0
        self.resets = 0  # stores moved aside as damaged

    def features_for(self, spec: FeatureSpec) -> BatchFeatures:
        features = self._by_spec.get(spec)
        if features is None:
            sid = spec_id(spec)
            features = self._by_spec[spec] = BatchFeatures(spec, lambda p: self._store(sid, p))
        return features

    def _store(self, sid: str, partition: Hashable) -> PartitionStore:
        store = self._stores.get((sid, partition))
        if store is None:
            topic, number = cast("tuple[str, int]", partition)
            name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', str(topic))}-{int(number)}.sqlite"
            store = PartitionStore(self.directory / sid / name, self.cache_entities)
            self.resets += store.reset
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

    def before_commit(self, offsets: Mapping[Any, Any]) -> None:
        """Flush the state of the partitions whose offsets are about to be committed."""
        with self.lock:
            for (_, partition), store in self._stores.items():
                for tp, meta in offsets.items():
                    if (tp.topic, tp.partition) == partition:
                        self.flushed_entities += store.flush(committing=meta.offset)
                        self.flushes += 1

    def forget(self, partitions: Iterable[Any]) -> None:
        """Close the stores of ``partitions`` (gone to another member); reopened from disk if they come back."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        with self.lock:
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

    @property
    def entities(self) -> int:
        return sum(len(s) for s in self._stores.values())
