"""fraud-worker reconcile accounts for every record of a clean run, and catches lost and wrong ones."""

from __future__ import annotations

import json
import os

from tests.support.workers import WorkerProcess, produce, wait_committed
from worker.programs.subcommands.reconcile import main as reconcile_main


def _args(kafka, topics, group):
    return [
        "--bootstrap-servers", kafka.bootstrap, "--group-id", group,
        "--input-topic", topics["input_topic"], "--alert-topic", topics["alert_topic"],
        "--dlq-topic", topics["dlq_topic"], "--scores-topic", topics["scores_topic"],
    ]  # fmt: skip


def _reconcile(capsys, *args) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if k.startswith("FRAUD_")}
    for k in env:
        os.environ.pop(k)
    try:
        rc = reconcile_main(["--json", *args])
    finally:
        os.environ.update(env)
    out = capsys.readouterr()
    assert out.out, f"reconcile printed no report (exit {rc}): {out.err}"
    return rc, json.loads(out.out)


def test_clean_run_reconciles_with_nothing_lost(kafka, topics, models_dir, ulb, workers, capsys):
    group = kafka.group()
    n = 3000
    bad = [(None, b"not json"), (b"k", b"[1, 2]"), (None, b'{"transaction_id": "x"}')]
    produce(kafka.producer(), topics["input_topic"], [(None, ulb.event(i)) for i in range(n)] + bad)
    w = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics).start()
    workers.append(w)
    wait_committed(kafka, group, topics["input_topic"], workers=[w])
    rc, report = _reconcile(capsys, *_args(kafka, topics, group))
    assert rc == 0, report
    assert report["records"] == n + len(bad)
    assert report["scored"] == n and report["dead_lettered"] == len(bad)
    assert report["lost"] == 0 and report["duplicates"] == 0 and report["wrong_alerts"] == 0
    assert report["alerts"] > 0 and report["missing_alerts"] == 0


def test_unscored_records_are_lost_and_a_low_alert_is_wrong(kafka, topics, ulb, capsys):
    group = kafka.group()
    produce(kafka.producer(), topics["input_topic"], [(None, ulb.event(i)) for i in range(50)])
    fake = {"transaction_id": "tx-1", "score": 0.1, "threshold": 0.9, "model_version": "v1", "reasons": [],
            "event_time": 0, "scored_at": 0}  # fmt: skip
    produce(kafka.producer(), topics["alert_topic"], [(b"tx-1", json.dumps(fake).encode())])
    # Nothing scored them: with --end latest every record is lost; the alert is below its threshold.
    rc, report = _reconcile(capsys, "--end", "latest", *_args(kafka, topics, group))
    assert rc == 1
    assert report["lost"] == 50 and report["records"] == 50
    assert report["wrong_alerts"] == 1
    assert report["samples"]["lost"][0] == {"offset": report["samples"]["lost"][0]["offset"],
                                            "partition": report["samples"]["lost"][0]["partition"]}  # fmt: skip
    # Against the (absent) committed offsets nothing was promised, so nothing is lost.
    rc, report = _reconcile(capsys, *_args(kafka, topics, group))
    assert report["records"] == 0 and report["lost"] == 0 and rc == 1  # still wrong: the low alert


def test_reconcile_without_a_scores_topic_is_a_settings_error(capsys):
    rc = reconcile_main(["--scores-topic", ""])
    assert rc == 2
    assert "scores-topic" in capsys.readouterr().err
