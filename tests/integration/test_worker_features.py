"""Behavioural features on the real broker: a worker serving a bundle with a feature spec computes each
event's features as the offline computation does (docs/features.md).

Synthetic v3 payments keyed by customer go to a 3-partition input topic: each customer's events stay in
order on one partition, so every customer feature and categorical in the score records equals the
offline value. The same events on a 1-partition topic, read by a second worker: every feature equals,
terminals included, as ``fraud-worker parity --scores`` checks on the records read back from Kafka.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.support.bundles import make_bundle
from tests.support.workers import WorkerProcess, produce, read_topic, wait_committed
from worker.core.features import compute_columns, fit_categoricals, load_spec
from worker.offline import synthetic

ROOT = Path(__file__).resolve().parents[2]
N = 6000
FIELDS = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "channel", "merchant_category")


def _bundle(models: Path, columns: dict) -> tuple[list[str], np.ndarray]:
    spec = fit_categoricals(load_spec(str(ROOT / "examples" / "behavioural.toml")), columns)
    names = ["amount", *spec.names]
    rng = np.random.default_rng(1)
    make_bundle(models, "f1", feature_names=names, mean=[0.0] * len(names), scale=[1.0] * len(names),
                weights=(rng.normal(0, 0.01, len(names))).tolist(), bias=-2.0, threshold=0.5,
                feature_spec=spec.to_manifest())  # fmt: skip
    return list(spec.names), compute_columns(spec, columns["event_time"], columns).astype(np.float32)


def _events(columns: dict) -> list[tuple[bytes, bytes]]:
    rows = zip(*(columns[f].tolist() for f in FIELDS), strict=True)
    return [(r[2].encode(), json.dumps(dict(zip(FIELDS, r, strict=True))).encode()) for r in rows]


def test_a_worker_computes_the_offline_features(kafka, topics, workers, tmp_path):
    columns = synthetic.generate_behavioural(N, 11)
    models = tmp_path / "models"
    names, offline = _bundle(models, columns)
    events = _events(columns)
    assert produce(kafka.producer(linger_ms=20), topics["input_topic"], events) == N
    group = kafka.group()
    extra = ("--scores-include-features", "--feature-state-dir", str(tmp_path / "state"))
    worker = WorkerProcess(kafka.bootstrap, models, group=group, extra=extra, **topics).start()
    workers.append(worker)
    worker.wait_ready()
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])
    assert worker.metric("fraud_events_scored_total") == N
    assert worker.metric("fraud_feature_entities") > 0
    for p in range(3):  # each partition's state, measured for the metrics every 5 s
        labels = {"topic": topics["input_topic"], "partition": str(p)}
        assert worker.wait_metric("fraud_feature_state_entities", 1, timeout=15, labels=labels) > 0
        assert worker.metric("fraud_feature_state_bytes", labels) > 4096  # a SQLite file holding them
    assert worker.stop() == 0

    docs = {d["transaction_id"]: d for d in (json.loads(r.value) for r in read_topic(kafka, topics["scores_topic"]))}
    assert len(docs) == N
    row_of = {tid: i for i, tid in enumerate(columns["transaction_id"].tolist())}
    got = np.array([[docs[tid]["features"][n] for n in names] for tid in row_of], dtype=np.float32)
    keyed = [k for k, n in enumerate(names) if not n.startswith("terminal_id.")]
    assert np.array_equal(got[:, keyed], offline[:, keyed])
    assert np.array_equal(np.array([docs[t]["features"]["amount"] for t in row_of], np.float32),
                          columns["amount"].astype(np.float32))  # fmt: skip

    # One partition: the worker sees the file's order, terminals included; checked by the parity command.
    one = dict(topics, input_topic=kafka.topic(partitions=1, prefix="transactions"),
               scores_topic=kafka.topic(partitions=1, prefix="scores"))  # fmt: skip
    produce(kafka.producer(linger_ms=20), one["input_topic"], events)
    group = kafka.group()
    extra = ("--scores-include-features", "--feature-state-dir", str(tmp_path / "state2"))
    second = WorkerProcess(kafka.bootstrap, models, group=group, extra=extra, **one).start()
    workers.append(second)
    second.wait_ready()
    wait_committed(kafka, group, one["input_topic"], workers=[second])
    assert second.stop() == 0
    data = synthetic.write_csv(tmp_path / "events.csv", {f: columns[f] for f in FIELDS}, quote_header=False)
    scores = tmp_path / "scores.jsonl"
    scores.write_bytes(b"".join(r.value + b"\n" for r in read_topic(kafka, one["scores_topic"])))
    from worker.programs.fraud_worker import main

    assert main(["parity", "--input", str(data), "--models-dir", str(models), "--scores", str(scores)]) == 0
