"""tail-alerts and reconcile read with isolation level read_committed unless told otherwise.

No broker: kafka-python's consumer is replaced by one that records its settings and then fails
as a broker that cannot be reached would, so each tool's ``main`` stops with exit status 1 after
building its consumer from the command line. The ACL check before it (``require_access``, which
asks the broker; tests/integration/test_secured_kafka.py) is left out.
"""

from __future__ import annotations

import pytest

from worker.programs.subcommands import reconcile
from worker.programs.subcommands import tail_alerts as tail

# tool -> (module, argv a run needs besides the flag)
TOOLS = {"tail-alerts": (tail, []), "reconcile": (reconcile, ["--scores-topic", "s"])}


@pytest.fixture(autouse=True)
def no_fraud_environment(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)
    for module in (tail, reconcile):
        monkeypatch.setattr(module, "require_access", lambda *args, **kwargs: None)


@pytest.fixture
def consumers(monkeypatch) -> list[dict]:
    """The keyword arguments of every KafkaConsumer a tool builds; building one fails."""
    import kafka
    from kafka.errors import KafkaConnectionError

    built: list[dict] = []

    class Consumer(kafka.KafkaConsumer):  # its DEFAULT_CONFIG is the real one, which worker.edges.config reads
        def __init__(self, *topics, **config):
            built.append(config)
            raise KafkaConnectionError("no broker here")

    monkeypatch.setattr(kafka, "KafkaConsumer", Consumer)
    return built


def _run(name: str, argv: list[str]) -> int:
    module, base = TOOLS[name]
    return module.main(base + ["--bootstrap-servers", "127.0.0.1:1", *argv])


@pytest.mark.parametrize("name", TOOLS)
def test_the_consumer_reads_committed_records_by_default(name, consumers, capsys):
    assert _run(name, []) == 1
    (config,) = consumers
    assert config["isolation_level"] == "read_committed"
    assert config["group_id"] is None and config["bootstrap_servers"] == "127.0.0.1:1"


@pytest.mark.parametrize("name", TOOLS)
@pytest.mark.parametrize("level", ["read_uncommitted", "read_committed"])
def test_the_flag_reaches_the_consumer(name, level, consumers, capsys):
    assert _run(name, ["--isolation-level", level]) == 1
    (config,) = consumers
    assert config["isolation_level"] == level


@pytest.mark.parametrize("name", TOOLS)
def test_the_options_builders_default_to_read_committed_and_take_the_level(name):
    from worker.edges.config import config_from_args

    module, base = TOOLS[name]
    args = module.build_parser().parse_args(base)
    assert args.isolation_level == "read_committed"
    config = config_from_args(args, {})
    assert module.consumer_options(config)["isolation_level"] == "read_committed"
    assert module.consumer_options(config, "read_uncommitted")["isolation_level"] == "read_uncommitted"


@pytest.mark.parametrize("name", TOOLS)
@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--isolation-level", "committed"], "--isolation-level"),
        (["--isolation-level", "READ_COMMITTED"], "--isolation-level"),
        # The key is the worker's own: the flag is the one way to set it.
        (["--kafka-option", "isolation_level=read_uncommitted"], "isolation_level"),
    ],
)
def test_a_bad_level_exits_2_with_one_line(name, argv, needle, consumers, capsys):
    assert _run(name, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err and "bad setting" in err, err
    assert consumers == []


@pytest.mark.parametrize("name", TOOLS)
def test_a_bad_level_from_the_environment_exits_2(name, consumers, monkeypatch, capsys):
    monkeypatch.setenv("FRAUD_KAFKA_ISOLATION_LEVEL", "read_uncommitted")
    assert _run(name, []) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "isolation_level" in err, err


@pytest.mark.parametrize("name", TOOLS)
def test_help_says_why_read_committed_and_when_read_uncommitted(name, capsys):
    module, _ = TOOLS[name]
    assert module.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--isolation-level {read_committed,read_uncommitted}" in text
    assert "(default: read_committed)" in text
    assert "exactly-once only for read_committed readers" in text
    assert "aborted and still-open transactions" in text and "debug" in text
