"""reconcile and tail-alerts read committed transactions only, unless told to read uncommitted ones.

On the real broker a transactional producer writes score records and alerts the way an
exactly-once worker would: a transaction aborted (a batch that failed and was retried), the
committed one that replaced it, another aborted one, one more committed alert and, while the
tools run, a transaction still open. Read with the default (read_committed) the output is exactly
once and agrees with its thresholds; read with ``--isolation-level read_uncommitted`` the records
of the aborted and the open transactions show up: duplicates, a low alert, alerts printed twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from tests.support.broker import REPO
from worker.programs.subcommands.reconcile import main as reconcile_main

N = 6
THRESHOLD = 0.9


def _result(tx: str, score: float) -> bytes:
    doc = {"transaction_id": tx, "score": score, "threshold": THRESHOLD, "model_version": "v1", "reasons": [],
           "event_time": 0, "scored_at": 0}  # fmt: skip
    return json.dumps(doc).encode()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}


def _reconcile(capsys, argv: list[str]) -> tuple[int, dict]:
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("FRAUD_")]}
    try:
        rc = reconcile_main(["--json", "--end", "latest", "--timeout", "60", *argv])
    finally:
        os.environ.update(saved)
    out = capsys.readouterr()
    assert out.out, f"reconcile printed no report (exit {rc}): {out.err}"
    return rc, json.loads(out.out)


def _tail(bootstrap: str, topic: str, max_alerts: int, *argv: str) -> list[str]:
    """The transaction ids of the first ``max_alerts`` alerts tail-alerts prints from the beginning."""
    cmd = [sys.executable, "-m", "worker", "tail-alerts", "--bootstrap-servers", bootstrap, "--topic", topic,
           "--from-beginning", "--json", "--max-alerts", str(max_alerts), *argv]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["transaction_id"] for line in done.stdout.splitlines()]


def test_aborted_and_open_transactions_are_seen_only_when_reading_uncommitted(kafka, topics, capsys):
    source = kafka.producer()
    offsets = [
        source.send(topics["input_topic"], value=b"{}", partition=0).get(timeout=30).offset for _ in range(N)
    ]  # fmt: skip
    scores, alerts = topics["scores_topic"], topics["alert_topic"]
    scored = {i: 0.95 if i in (0, 3) else 0.2 for i in range(N)}  # tx-0 and tx-3 alert

    def score(producer, i: int) -> None:
        headers = [("source_topic", topics["input_topic"].encode()), ("source_partition", b"0"),
                   ("source_offset", str(offsets[i]).encode())]  # fmt: skip
        producer.send(scores, key=f"tx-{i}".encode(), value=_result(f"tx-{i}", scored[i]), headers=headers)

    def alert(producer, tx: str, value: float) -> None:
        producer.send(alerts, key=tx.encode(), value=_result(tx, value))

    tx = kafka.producer(transactional_id=f"test-isolation-{uuid.uuid4().hex[:12]}")
    tx.init_transactions()
    # Aborted: the first try of a batch (tx-0..tx-2, tx-0 alerting).
    tx.begin_transaction()
    for i in range(3):
        score(tx, i)
    alert(tx, "tx-0", scored[0])
    tx.flush(timeout=30)  # written to the log before the abort (unsent records would just be dropped)
    tx.abort_transaction()
    # Committed: the batch again, and the next one (tx-0..tx-5, alerts tx-0 and tx-3).
    tx.begin_transaction()
    for i in range(N):
        score(tx, i)
    alert(tx, "tx-0", scored[0])
    alert(tx, "tx-3", scored[3])
    tx.commit_transaction()
    # Aborted: tx-3..tx-5 once more, with an alert below its threshold.
    tx.begin_transaction()
    for i in range(3, N):
        score(tx, i)
    alert(tx, "tx-4", 0.1)
    tx.flush(timeout=30)  # written to the log before the abort (unsent records would just be dropped)
    tx.abort_transaction()
    # Committed: one more alert, after the aborted ones.
    tx.begin_transaction()
    alert(tx, "tx-9", 0.97)
    tx.commit_transaction()
    # Still open while the tools read: tx-1 scored again and an alert.
    tx.begin_transaction()
    score(tx, 1)
    alert(tx, "tx-open", 0.99)
    tx.flush(timeout=30)
    try:
        argv = ["--bootstrap-servers", kafka.bootstrap, "--group-id", kafka.group()]
        for key, topic in topics.items():
            argv += ["--" + key.replace("_", "-"), topic]

        rc, report = _reconcile(capsys, argv)
        assert rc == 0, report
        assert report["isolation_level"] == "read_committed"
        assert report["records"] == N and report["scored"] == N and report["lost"] == 0
        assert report["duplicates"] == 0 and report["alerts"] == 3, report
        assert report["wrong_alerts"] == 0 and report["missing_alerts"] == 0, report

        rc, report = _reconcile(capsys, [*argv, "--isolation-level", "read_uncommitted"])
        assert rc == 1, report
        assert report["isolation_level"] == "read_uncommitted"
        assert report["records"] == N and report["scored"] == N and report["lost"] == 0
        # 3 + 3 aborted scores and 1 still open; alerts: 3 committed, 2 aborted, 1 open.
        assert report["duplicates"] == 7 and report["alerts"] == 6, report
        assert report["wrong_alerts"] == 1 and report["samples"]["wrong"][0]["transaction_id"] == "tx-4"

        # tail-alerts: the committed alerts only, in order; with read_uncommitted every one written.
        assert _tail(kafka.bootstrap, alerts, 3) == ["tx-0", "tx-3", "tx-9"]
        every = _tail(kafka.bootstrap, alerts, 6, "--isolation-level", "read_uncommitted")
        assert every == ["tx-0", "tx-0", "tx-3", "tx-4", "tx-9", "tx-open"]
    finally:
        tx.abort_transaction()
    # Once the open transaction is aborted it stays unseen at the default level.
    rc, report = _reconcile(capsys, argv)
    assert rc == 0 and report["duplicates"] == 0 and report["alerts"] == 3, report
