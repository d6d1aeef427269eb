"""Every tool reads the one config: worker flags, FRAUD_* variables and Kafka pass-through, in that order.

No broker: the options each tool would hand to its kafka-python client are built from parsed flags
and an environment, and bad settings are refused before any client exists.
"""

from __future__ import annotations

import pytest

from worker.edges.config import config_from_args
from worker.programs import fraud_replay as replay
from worker.programs.subcommands import create_topics as topics
from worker.programs.subcommands import reconcile
from worker.programs.subcommands import tail_alerts as tail

# (main, argv a run needs besides the settings, [(options builder, client kind, the tool's own client_id)])
TOOLS = {
    "create-topics": (topics, [], [(topics.admin_options, "admin", "fraud-create-topics")]),
    "tail-alerts": (tail, [], [(tail.consumer_options, "consumer", "fraud-tail-alerts")]),
    "fraud-replay": (
        replay, ["--synthetic", "5"], [(lambda c: replay.producer_options(c, paced=False), "producer", "fraud-replay")]
    ),
    "reconcile": (
        reconcile, ["--scores-topic", "s"],
        [(reconcile.consumer_options, "consumer", "fraud-reconcile"), (reconcile.admin_options, "admin",
                                                                       "fraud-reconcile")],
    ),
}  # fmt: skip


@pytest.fixture(autouse=True)
def no_fraud_environment(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)


def _options(name: str, argv: list[str], env: dict[str, str]) -> list[dict]:
    module, base, builders = TOOLS[name]
    config = config_from_args(module.build_parser().parse_args(base + argv), env)
    return [build(config) for build, _, _ in builders]


@pytest.mark.parametrize("name", TOOLS)
def test_defaults_are_the_worker_defaults_and_the_tools_own_client_id(name):
    for options, (_, kind, client_id) in zip(_options(name, [], {}), TOOLS[name][2], strict=True):
        assert options["bootstrap_servers"] == "127.0.0.1:9092"
        assert options["client_id"] == client_id, kind


@pytest.mark.parametrize("name", TOOLS)
def test_flags_win_over_variables_which_win_over_defaults(name):
    env = {
        "FRAUD_BOOTSTRAP_SERVERS": "env-host:1",
        "FRAUD_KAFKA_CLIENT_ID": "from-env",
        "FRAUD_KAFKA_REQUEST_TIMEOUT_MS": "41000",
        "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    }
    assert all(o["bootstrap_servers"] == "env-host:1" and o["client_id"] == "from-env" for o in _options(name, [], env))
    argv = ["--bootstrap-servers", "flag-host:2", "--kafka-option", "client_id=from-flag"]
    for options in _options(name, argv, env):
        assert options["bootstrap_servers"] == "flag-host:2" and options["client_id"] == "from-flag"
        assert options["request_timeout_ms"] == 41000 and options["security_protocol"] == "SASL_SSL"


@pytest.mark.parametrize("name", TOOLS)
def test_each_client_gets_only_the_keys_it_accepts(name):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    accepted = {"admin": KafkaAdminClient, "consumer": KafkaConsumer, "producer": KafkaProducer}
    argv = ["--kafka-option", "linger_ms=7", "--kafka-option", "fetch_max_wait_ms=30"]
    for options, (_, kind, _) in zip(_options(name, argv, {}), TOOLS[name][2], strict=True):
        assert set(options) <= set(accepted[kind].DEFAULT_CONFIG), kind
        assert ("linger_ms" in options) == (kind == "producer")
        assert ("fetch_max_wait_ms" in options) == (kind == "consumer")


def test_tools_own_settings_are_kept():
    (consumer,) = _options("tail-alerts", [], {})
    assert consumer["group_id"] is None and consumer["enable_auto_commit"] is False
    (producer,) = _options("fraud-replay", ["--kafka-option", "linger_ms=7", "--kafka-option", "max_block_ms=3000"], {})
    assert producer["acks"] == "all" and producer["linger_ms"] == 7 and producer["max_block_ms"] == 3000
    reader, _ = _options("reconcile", [], {})
    assert reader["group_id"] is None and reader["enable_auto_commit"] is False


def test_topic_names_come_from_the_config():
    env = {"FRAUD_INPUT_TOPIC": "tx-env", "FRAUD_ALERT_TOPIC": "al-env"}
    assert config_from_args(tail.build_parser().parse_args([]), env).alert_topic == "al-env"
    assert config_from_args(tail.build_parser().parse_args(["--alert-topic", "al"]), env).alert_topic == "al"
    replay_args = replay.build_parser().parse_args(["--synthetic", "5"])
    assert config_from_args(replay_args, env).input_topic == "tx-env"
    replay_args = replay.build_parser().parse_args(["--synthetic", "5", "--topic", "tx"])
    assert config_from_args(replay_args, env).input_topic == "tx"
    plan = topics.planned_topics(config_from_args(topics.build_parser().parse_args(["--dlq-topic", "d"]), env), 2, 1)
    assert plan == {"tx-env": 2, "al-env": 1, "d": 1}


BAD = [
    ([], {"FRAUD_KAFKA_SECURITY_PROTOCL": "SSL"}, "security_protocl"),
    (["--kafka-option", "request_timeout_ms=soon"], {}, "request_timeout_ms"),
    (["--kafka-option", "group_id=x"], {}, "group_id"),
    (["--kafka-option", "novalue"], {}, "number 1 of 1 is not KEY=VALUE"),  # its text may be a secret
    ([], {"FRAUD_BOOTSTRAP_SERVER": "x:1"}, "FRAUD_BOOTSTRAP_SERVER"),
    ([], {"FRAUD_KAFKA_REQUEST_TIMEOUT_MS": "later"}, "FRAUD_KAFKA_REQUEST_TIMEOUT_MS"),
    (["--bootstrap-servers", " "], {}, "bootstrap_servers"),
    (["--no-such-flag"], {}, "--no-such-flag"),
]


@pytest.mark.parametrize("name", TOOLS)
@pytest.mark.parametrize("argv,env,needle", BAD)
def test_bad_settings_exit_2_with_one_line_naming_them(name, argv, env, needle, monkeypatch, capsys):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    module, base, _ = TOOLS[name]
    # 127.0.0.1:1 answers nothing: a tool that got past its settings would fail with 1, not 2.
    assert module.main(base + ["--bootstrap-servers", "127.0.0.1:1"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


@pytest.mark.parametrize(
    "name,argv,needle",
    [
        ("create-topics", ["--partitions", "0"], "--partitions"),
        ("create-topics", ["--replication-factor", "0"], "--replication-factor"),
        ("create-topics", ["--partitions", "many"], "--partitions"),
        ("tail-alerts", ["--max-alerts", "-1"], "--max-alerts"),
        ("tail-alerts", ["--summary-seconds", "0"], "--summary-seconds"),
        ("fraud-replay", ["--rate", "-1"], "--rate"),
        ("reconcile", ["--timeout", "0"], "--timeout"),
        ("reconcile", ["--end", "soon"], "--end"),
    ],
)
def test_bad_tool_flags_exit_2_with_one_line(name, argv, needle, capsys):
    module, base, _ = TOOLS[name]
    assert module.main(base + ["--bootstrap-servers", "127.0.0.1:1"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


@pytest.mark.parametrize("name", TOOLS)
def test_help_shows_the_settings_and_the_kafka_pass_through(name, capsys):
    module, _, _ = TOOLS[name]
    assert module.main(["--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("--bootstrap-servers", "FRAUD_BOOTSTRAP_SERVERS", "--kafka-option", "FRAUD_KAFKA_", "Exit codes"):
        assert needle in text, needle
    topic_flags = {"create-topics": ["--input-topic", "--alert-topic", "--dlq-topic", "--scores-topic"],
                   "tail-alerts": ["--alert-topic", "--topic", "FRAUD_ALERT_TOPIC"],
                   "fraud-replay": ["--input-topic", "--topic", "FRAUD_INPUT_TOPIC"],
                   "reconcile": ["--group-id", "--input-topic", "--scores-topic", "FRAUD_SCORES_TOPIC"]}  # fmt: skip
    for flag in topic_flags[name]:
        assert flag in text, flag
