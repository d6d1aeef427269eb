"""Config: defaults, flags over environment, unknown and contradictory settings, Kafka pass-through."""

from __future__ import annotations

import pytest

from worker.core.errors import ConfigError
from worker.edges.config import SETTINGS, WorkerConfig, build_parser, load_config


def test_defaults_work_against_a_local_broker():
    c = load_config([], {})
    assert c == WorkerConfig()
    assert (c.bootstrap_servers, c.input_topic, c.alert_topic, c.dlq_topic) == (
        "127.0.0.1:9092", "transactions", "fraud-alerts", "transactions-dlq",
    )  # fmt: skip
    assert c.scores_topic == "" and c.group_id == "fraud-worker" and c.max_batch_size == 500


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        load_config([], {}).input_topic = "x"  # type: ignore[misc]


def test_environment_then_flags_win():
    env = {"FRAUD_INPUT_TOPIC": "from-env", "FRAUD_MAX_BATCH_SIZE": "64", "FRAUD_GROUP_ID": "g-env"}
    c = load_config(["--input-topic", "from-flag"], env)
    assert c.input_topic == "from-flag"
    assert c.max_batch_size == 64
    assert c.group_id == "g-env"


def test_unknown_fraud_variable_fails_naming_it():
    with pytest.raises(ConfigError, match="FRAUD_INPUT_TOPICS"):
        load_config([], {"FRAUD_INPUT_TOPICS": "x"})


def test_unrelated_variables_are_ignored():
    assert load_config([], {"PATH": "/bin", "FRAUDX": "1"}) == WorkerConfig()


def test_malformed_number_names_its_source():
    with pytest.raises(ConfigError, match="FRAUD_MAX_BATCH_SIZE"):
        load_config([], {"FRAUD_MAX_BATCH_SIZE": "lots"})
    with pytest.raises(ConfigError, match="--metrics-port"):
        load_config(["--metrics-port", "x"], {})


@pytest.mark.parametrize(
    "argv,names",
    [
        (["--alert-topic", "transactions"], ["alert_topic", "input_topic"]),
        (["--dlq-topic", "transactions"], ["dlq_topic", "input_topic"]),
        (["--scores-topic", "transactions"], ["scores_topic", "input_topic"]),
        (["--dlq-topic", "fraud-alerts"], ["alert_topic", "dlq_topic"]),
        (["--max-batch-size", "0"], ["max_batch_size"]),
        (["--poll-timeout-ms", "-5"], ["poll_timeout_ms"]),
        (["--metrics-port", "70000"], ["metrics_port"]),
        (["--log-level", "LOUD"], ["log_level"]),
        (["--health-stall-seconds", "0.1"], ["health_stall_seconds", "poll_timeout_ms"]),
        (["--reasons", "0"], ["reasons"]),
        (["--decoder-processes", "2"], ["decoder_processes"]),
    ],
)
def test_contradictions_fail_naming_the_settings(argv, names):
    with pytest.raises(ConfigError) as exc:
        load_config(argv, {})
    for name in names:
        assert name in str(exc.value)


def test_kafka_options_pass_through_typed():
    env = {"FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FRAUD_KAFKA_SASL_MECHANISM": "PLAIN"}
    argv = ["--kafka-option", "request_timeout_ms=5000", "--kafka-option", "ssl_check_hostname=false",
            "--kafka-option", "linger_ms=20", "--kafka-option", "api_version=3.7"]  # fmt: skip
    c = load_config(argv, env)
    opts = dict(c.kafka_options)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "PLAIN"
    assert opts["request_timeout_ms"] == 5000 and opts["ssl_check_hostname"] is False
    assert opts["api_version"] == (3, 7)
    assert "linger_ms" in c.producer_options() and "linger_ms" not in c.consumer_options()
    assert c.consumer_options()["security_protocol"] == "SASL_SSL"


def test_kafka_flag_overrides_kafka_env():
    c = load_config(["--kafka-option", "client_id=flag"], {"FRAUD_KAFKA_CLIENT_ID": "env"})
    assert dict(c.kafka_options)["client_id"] == "flag"


@pytest.mark.parametrize(
    "argv,env,needle",
    [
        ([], {"FRAUD_KAFKA_SECURITY_PROTOCL": "SSL"}, "security_protocl"),
        (["--kafka-option", "sasl_mechanizm=PLAIN"], {}, "sasl_mechanizm"),
        (["--kafka-option", "enable_auto_commit=true"], {}, "enable_auto_commit"),
        (["--kafka-option", "group_id=x"], {}, "group_id"),
        (["--kafka-option", "request_timeout_ms=soon"], {}, "request_timeout_ms"),
        (["--kafka-option", "novalue"], {}, "number 1 of 1 is not KEY=VALUE"),  # its text may be a secret
        (["--kafka-option", "selector=x"], {}, "selector"),
    ],
)
def test_bad_kafka_options_fail_naming_the_key(argv, env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(argv, env)


def test_help_documents_every_setting():
    text = build_parser().format_help()
    for s in SETTINGS:
        assert s.flag in text and s.env in text
    assert "--kafka-option" in text and "FRAUD_KAFKA_" in text


def test_every_setting_is_a_config_field_with_its_one_default():
    from dataclasses import fields

    by_field = {f.name: f for f in fields(WorkerConfig) if f.name != "kafka_options"}
    assert [s.name for s in SETTINGS] == list(by_field)
    for s in SETTINGS:
        assert s.default == by_field[s.name].default == getattr(WorkerConfig(), s.name)
        assert isinstance(s.default, s.kind) and s.help == by_field[s.name].metadata["help"]
    assert "fast_paths" in by_field and WorkerConfig().fast_paths == "all"


def test_a_tool_parser_with_some_settings_gets_the_rest_from_environment_and_defaults():
    import argparse

    from worker.edges.config import add_settings, config_from_args

    parser = argparse.ArgumentParser()
    add_settings(parser, ["input_topic"], aliases={"input_topic": ["--topic"]})
    env = {"FRAUD_INPUT_TOPIC": "env-in", "FRAUD_GROUP_ID": "env-group", "FRAUD_KAFKA_CLIENT_ID": "env-id"}
    c = config_from_args(parser.parse_args(["--topic", "flag-in", "--kafka-option", "client_id=flag-id"]), env)
    assert (c.input_topic, c.group_id, c.alert_topic) == ("flag-in", "env-group", "fraud-alerts")
    assert dict(c.kafka_options)["client_id"] == "flag-id"
    with pytest.raises(ConfigError, match="FRAUD_INPUT_TOPICS"):
        config_from_args(parser.parse_args([]), {"FRAUD_INPUT_TOPICS": "x"})


def test_client_options_filter_per_client_and_passed_through_settings_win_over_tool_defaults():
    from worker.edges.config import client_options

    argv = ["--bootstrap-servers", "h:1", "--kafka-option", "linger_ms=7", "--kafka-option", "fetch_max_wait_ms=9",
            "--kafka-option", "client_id=mine", "--kafka-option", "security_protocol=SSL"]  # fmt: skip
    c = load_config(argv, {})
    producer = client_options(c, "producer", client_id="tool", linger_ms=20, batch_size=1024)
    assert producer == {"bootstrap_servers": "h:1", "client_id": "mine", "linger_ms": 7, "batch_size": 1024,
                        "security_protocol": "SSL"}  # fmt: skip
    consumer = client_options(c, "consumer", client_id="tool")
    assert consumer == {"bootstrap_servers": "h:1", "client_id": "mine", "fetch_max_wait_ms": 9,
                        "security_protocol": "SSL"}  # fmt: skip
    admin = client_options(load_config([], {}), "admin", client_id="tool")
    assert admin == {"bootstrap_servers": "127.0.0.1:9092", "client_id": "tool"}


def test_a_malformed_command_line_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        load_config(["--no-such-flag"], {})
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--no-such-flag" in err and "fraud-worker --help" in err


def test_a_switch_setting_takes_no_value_as_a_flag_and_true_or_false_as_a_variable():
    from worker.edges.config import load_config

    assert load_config(["--scores-topic", "s", "--scores-include-features"], {}).scores_include_features is True
    env = {"FRAUD_SCORES_TOPIC": "s"}
    assert load_config([], {**env, "FRAUD_SCORES_INCLUDE_FEATURES": "false"}).scores_include_features is False
    assert load_config([], {**env, "FRAUD_SCORES_INCLUDE_FEATURES": "yes"}).scores_include_features is True
    with pytest.raises(ConfigError, match="FRAUD_SCORES_INCLUDE_FEATURES='maybe' is not true or false"):
        load_config(["--scores-topic", "s"], {"FRAUD_SCORES_INCLUDE_FEATURES": "maybe"})
    with pytest.raises(ConfigError, match="scores_topic is empty"):
        load_config(["--scores-include-features"], {})
