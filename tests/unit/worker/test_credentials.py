"""Kafka secrets: read from a file or a variable, usable by kafka-python, shown nowhere."""

from __future__ import annotations

import logging

import pytest

from worker.core.errors import ConfigError
from worker.edges.config import WorkerConfig, load_config
from worker.edges.credentials import MASK, Secret, read_secret_file, redact

PASSWORD = "s3cr3t-Pa55-word"


def options(config: WorkerConfig) -> dict:
    return dict(config.kafka_options)


def test_a_secret_is_its_value_to_kafka_python_and_masked_everywhere_else(caplog):
    secret = Secret(PASSWORD)
    assert secret == PASSWORD and secret.encode() == PASSWORD.encode() and secret.reveal() == PASSWORD
    assert "\0".join(["u", "u", secret]) == f"u\0u\0{PASSWORD}"  # how the SASL PLAIN message is built
    assert PASSWORD not in repr(secret) and PASSWORD not in str(secret) and PASSWORD not in f"{secret}"
    assert PASSWORD not in repr({"sasl_plain_password": secret})  # a logged settings dict
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").debug("config %s %r %s", {"p": secret}, secret, secret)
    assert PASSWORD not in caplog.text and MASK in caplog.text


def test_the_password_comes_from_its_file(tmp_path):
    f = tmp_path / "password"
    f.write_text(PASSWORD + "\n")
    config = load_config([], {"FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE": str(f)})
    value = options(config)["sasl_plain_password"]
    assert isinstance(value, Secret) and value.reveal() == PASSWORD  # one trailing newline removed
    assert PASSWORD not in repr(config)
    flag = load_config(["--kafka-option", f"sasl_plain_password_file={f}"], {})
    assert options(flag)["sasl_plain_password"].reveal() == PASSWORD


def test_a_password_from_the_environment_is_a_secret_too():
    config = load_config([], {"FRAUD_KAFKA_SASL_PLAIN_PASSWORD": PASSWORD})
    assert isinstance(options(config)["sasl_plain_password"], Secret)
    assert PASSWORD not in repr(config)


def test_a_password_and_its_file_together_are_refused(tmp_path):
    f = tmp_path / "password"
    f.write_text(PASSWORD)
    env = {"FRAUD_KAFKA_SASL_PLAIN_PASSWORD": PASSWORD, "FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE": str(f)}
    with pytest.raises(ConfigError, match="both set sasl_plain_password") as err:
        load_config([], env)
    assert PASSWORD not in str(err.value)


def test_a_flag_overrides_the_variable(tmp_path):
    f = tmp_path / "password"
    f.write_text("from-the-file")
    config = load_config(["--kafka-option", f"sasl_plain_password_file={f}"], {"FRAUD_KAFKA_SASL_PLAIN_PASSWORD": "x"})
    assert options(config)["sasl_plain_password"].reveal() == "from-the-file"


@pytest.mark.parametrize(
    "content, problem",
    [(None, "cannot read"), ("", "is empty"), (b"\xff\xfe", "not UTF-8")],
    ids=["missing", "empty", "binary"],
)
def test_a_bad_password_file_is_one_line_naming_it(tmp_path, content, problem):
    f = tmp_path / "password"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_config([], {"FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE": str(f)})
    message = str(err.value)
    assert problem in message and str(f) in message and "FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE" in message
    assert "\n" not in message


def test_a_file_suffix_on_a_setting_that_is_no_secret_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="client_id_file"):
        load_config([], {"FRAUD_KAFKA_CLIENT_ID_FILE": str(tmp_path)})


def test_read_secret_file_keeps_inner_whitespace(tmp_path):
    f = tmp_path / "p"
    f.write_text(" a b \r\n")
    assert read_secret_file(str(f), "src").reveal() == " a b "


def test_redact_removes_every_known_secret():
    text = f"failed for {PASSWORD} and again {PASSWORD}"
    assert redact(text, [Secret(PASSWORD), ""]) == f"failed for {MASK} and again {MASK}"


def test_the_help_shows_no_secret_value(capsys):
    from worker.edges.config import build_parser

    build_parser().print_help()
    out = capsys.readouterr().out
    assert "FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE" in out
