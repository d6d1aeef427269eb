"""create-topics plans exactly the topics the worker's own settings name."""

from __future__ import annotations

from worker.edges.config import load_config
from worker.programs.fraud_worker import main
from worker.programs.subcommands.create_topics import planned_topics


def test_default_topics_and_partitions() -> None:
    plan = planned_topics(load_config([], {}), 6, None)
    assert plan == {"transactions": 6, "fraud-alerts": 6, "transactions-dlq": 6}


def test_topics_follow_fraud_variables_and_scores_topic_is_added() -> None:
    env = {"FRAUD_INPUT_TOPIC": "tx", "FRAUD_ALERT_TOPIC": "al", "FRAUD_SCORES_TOPIC": "sc"}
    plan = planned_topics(load_config([], env), 12, 3)
    assert plan == {"tx": 12, "al": 3, "transactions-dlq": 3, "sc": 3}


def test_bad_settings_exit_2_without_touching_a_broker(monkeypatch, capsys) -> None:
    monkeypatch.setenv("FRAUD_NOT_A_SETTING", "1")
    assert main(["create-topics", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "FRAUD_NOT_A_SETTING" in capsys.readouterr().err
    monkeypatch.delenv("FRAUD_NOT_A_SETTING")
    assert main(["create-topics", "--partitions", "0"]) == 2


def test_a_labels_topic_gets_the_scores_topics_partition_count() -> None:
    plan = planned_topics(load_config([], {"FRAUD_SCORES_TOPIC": "sc"}), 12, 4, labels_topic="lab")
    assert plan["lab"] == plan["sc"] == 4


def test_a_labels_topic_without_a_scores_topic_is_refused(monkeypatch, capsys) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)
    assert main(["create-topics", "--bootstrap-servers", "127.0.0.1:1", "--labels-topic", "fraud-labels"]) == 2
    assert "--labels-topic needs the scores topic" in capsys.readouterr().err
