"""Acceptance for fraud-worker backtest: its scores equal the worker's scores for the same events on
the real broker within 1e-6, and every malformed line gets a reject with the reason code (and
detail) the DLQ gives the same record."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.test_worker_bad_input import _bad_records
from tests.support.broker import REPO
from tests.support.workers import WorkerProcess, headers, produce, read_topic, wait_committed

EVENTS = 3000


def test_backtest_scores_and_rejects_equal_the_worker_on_the_real_broker(kafka, ulb, models_dir, topics, workers,
                                                                         tmp_path):  # fmt: skip
    # Every bad record that can be a line of a file (a null value cannot).
    bad = [value for _, _, value in _bad_records(ulb) if value is not None and b"\n" not in value]
    values: list[bytes] = []
    timed: set[str] = set()  # the events that carry an event_time
    for i in range(EVENTS):
        doc = json.loads(ulb.event(i, prefix="bt"))
        if i % 2:
            doc["event_time"] = 1_760_000_000_000 + i
            timed.add(doc["transaction_id"])
        values.append(json.dumps(doc).encode())
        if i % 101 == 0 and i // 101 < len(bad):
            values.append(bad[i // 101])
    assert sum(1 for v in values if v in bad) == len(bad) >= 16
    topic = kafka.topic(partitions=1, prefix="transactions")  # one partition: offset n is line n + 1
    topics = dict(topics, input_topic=topic)
    produce(kafka.producer(max_request_size=2_000_000), topic, ((b"acct", v) for v in values))
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics).start()
    workers.append(worker)
    worker.wait_ready()
    wait_committed(kafka, group, topic, workers=[worker])
    assert worker.stop() == 0
    scored = {d["transaction_id"]: d for d in (json.loads(r.value) for r in read_topic(kafka, topics["scores_topic"]))}
    dlq = {int(headers(r)["source_offset"]): headers(r) for r in read_topic(kafka, topics["dlq_topic"])}

    path, out, rejects = tmp_path / "events.jsonl", tmp_path / "scores.jsonl", tmp_path / "rejects.jsonl"
    path.write_bytes(b"\n".join(values) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "worker", "backtest", "--input", str(path), "--models-dir", str(models_dir),
         "--output", str(out), "--rejects", str(rejects), "--batch-size", "700", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    backtested = {d["transaction_id"]: d for d in map(json.loads, out.read_bytes().splitlines())}

    assert len(scored) == EVENTS and set(backtested) == set(scored)
    worst = max(abs(backtested[t]["score"] - scored[t]["score"]) for t in scored)
    assert worst <= 1e-6, worst
    for t, w in scored.items():
        b = backtested[t]
        # The same record, but for the clock: scored_at, and event_time where the event has none
        # (the worker takes the record timestamp, the backtest 0).
        assert b["event_time"] == (w["event_time"] if t in timed else 0)
        same = ("transaction_id", "threshold", "model_version", "reasons")
        assert {k: b[k] for k in same} == {k: w[k] for k in same}, t

    got = {r["line"] - 1: r for r in map(json.loads, rejects.read_bytes().splitlines())}
    assert set(got) == set(dlq) and len(got) == len(bad)
    for offset, h in dlq.items():
        assert (got[offset]["error"], got[offset]["error_detail"]) == (h["error"], h["error_detail"]), offset
    print(
        f"\n{EVENTS} events and {len(bad)} malformed lines: max |backtest - worker| score {worst:.2e}; "
        f"reject codes {sorted({h['error'] for h in dlq.values()})}"
    )
