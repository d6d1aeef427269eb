"""Behavioural features survive SIGKILLs and rebalances (docs/features.md, "State"): synthetic v3 payments
streamed into a 3-partition topic while the worker is killed three times, each time replaced at once by a
worker with an empty state directory (it restores from the changelog topic), and a second instance joins
midway (a rebalance moves partitions to it), under each guarantee.

Every score record, those repeated after a kill included, carries exactly the features of the offline
computation over its partition's events in order (entities other than the key are per partition: docs), so
no event counted twice or was missed, and an event scored again got its first features back.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.bundles import make_bundle
from tests.support.exactly_once import read_committed, stable
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, headers, read_topic, wait_committed
from worker.core.features import compute_columns, fit_categoricals, load_spec
from worker.offline import synthetic

ROOT = Path(__file__).resolve().parents[2]
# 30,000 in the suite; FEATURE_RECOVERY_EVENTS=100000 for the full run (a few minutes per guarantee).
N = int(os.environ.get("FEATURE_RECOVERY_EVENTS", "30000"))
KILLS = 3
FIELDS = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "channel", "merchant_category")


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_features_after_three_sigkills_equal_the_offline_ones(kafka, topics, workers, tmp_path, guarantee):
    columns = synthetic.generate_behavioural(N, 21)
    spec = fit_categoricals(load_spec(str(ROOT / "examples" / "behavioural.toml")), columns)
    names = ["amount", *spec.names]
    models = tmp_path / "models"
    make_bundle(models, "f1", feature_names=names, mean=[0.0] * len(names), scale=[1.0] * len(names),
                weights=[0.001] * len(names), bias=-3.0, threshold=0.5, feature_spec=spec.to_manifest())  # fmt: skip
    rows = list(zip(*(columns[f].tolist() for f in FIELDS), strict=True))
    events = [(r[2].encode(), json.dumps(dict(zip(FIELDS, r, strict=True))).encode()) for r in rows]
    group = kafka.group()
    extra = ["--scores-include-features", "--max-batch-size", "200", "--processing-guarantee", guarantee,
             "--feature-changelog-topic", f"{group}-changelog", "--kafka-option", "session_timeout_ms=6000",
             "--kafka-option", "heartbeat_interval_ms=1000"]  # fmt: skip
    disks = iter(range(100))

    def start() -> WorkerProcess:  # each on an empty disk of its own
        state = ["--feature-state-dir", str(tmp_path / f"state-{next(disks)}")]
        w = WorkerProcess(kafka.bootstrap, models, group=group, extra=[*extra, *state], **topics).start()
        workers.append(w)
        return w

    rng = random.Random(5)
    worker = start()
    stream = Stream(kafka.producer(linger_ms=50), topics["input_topic"], events, rate=3000)  # the worker's pace
    stream.start()
    second = None
    for k in range(KILLS):
        worker.wait_ready(timeout=90)
        worker.wait_metric("fraud_events_scored_total", 1, timeout=90)
        time.sleep(rng.uniform(0.5, 2.5))
        if k == 1:  # a second instance joins: some partitions move to it, restored from the changelog
            second = start()
            second.wait_ready(timeout=90)
            time.sleep(1.0)
        worker.stop(signal.SIGKILL)
        worker = start()
    worker.wait_ready(timeout=90)  # the last replacement is up (else the second instance alone would finish)
    stream.finish()
    assert second is not None
    wait_committed(kafka, group, topics["input_topic"], timeout=180, workers=[worker, second])
    for w in (worker, second):  # both still serving: their metrics are read below
        assert w.proc.poll() is None, f"worker exited with {w.proc.returncode}:\n{w.output()[-4000:]}"
    replayed = sum(w.metric("fraud_feature_replayed_events_total") for w in (worker, second))
    # The last worker started on an empty disk: its partitions' entities came from the changelog.
    assert worker.wait_metric("fraud_feature_restored_entities_total", 1, timeout=60) > 0
    assert worker.stop() == 0 and second.stop() == 0

    if guarantee == "exactly-once":
        stable(kafka.bootstrap, topics["scores_topic"], timeout=120)  # a killed worker's transaction aborted
        records = read_committed(kafka.bootstrap, topics["scores_topic"])
    else:
        records = read_topic(kafka, topics["scores_topic"])
    by_partition: dict[int, list[int]] = {}
    row_of = {tid: i for i, tid in enumerate(columns["transaction_id"].tolist())}
    seen: list[tuple[int, list[float]]] = []
    where: list[tuple[int, int]] = []  # each record's source partition and offset
    for r in records:
        doc = json.loads(r.value)
        h = headers(r)
        p = int(h["source_partition"])
        i = row_of[doc["transaction_id"]]
        if i not in by_partition.setdefault(p, []):
            by_partition[p].append(i)
        seen.append((i, [doc["features"][n] for n in spec.names]))
        where.append((p, int(h["source_offset"])))
    assert len({i for i, _ in seen}) == N
    # The offline reference: each partition's events in the order they were produced (event time).
    offline = np.empty((N, len(spec.names)), dtype=np.float32)
    for idx in by_partition.values():
        idx = sorted(idx)
        part = {f: columns[f][idx] for f in spec.input_fields}
        offline[idx] = compute_columns(spec, columns["event_time"][idx], part).astype(np.float32)
    got = np.array([v for _, v in seen], dtype=np.float32)
    want = offline[[i for i, _ in seen]]
    bad = np.flatnonzero((got != want).any(axis=1))
    first = [(where[b], spec.names[int(k)], float(want[b, k]), float(got[b, k]))
             for b in bad[:5] for k in np.flatnonzero(got[b] != want[b])[:1]]  # fmt: skip
    assert bad.size == 0, f"{bad.size} records differ; first (partition, offset), feature, offline, worker: {first}"
    print(f"\n{guarantee}: {KILLS} SIGKILLs over {N:,} events, {len(seen) - N} score records repeated, "
          f"{replayed:.0f} events polled again by the last two workers; every feature equals the offline one")
