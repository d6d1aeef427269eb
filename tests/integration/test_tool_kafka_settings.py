"""Each operator tool hands its Kafka settings to the real kafka-python client it builds, on a real broker.

The client classes are wrapped (a subclass that records each instance, then behaves exactly as
kafka-python's own): each tool runs to completion against the test broker with a client_id given
by flag (over one given by variable) and a request timeout given by ``FRAUD_KAFKA_*``, and the
client it built must hold them in its own ``config``.
"""

from __future__ import annotations

import json
import os
import uuid

import kafka as kafka_python
import pytest

from worker.programs import fraud_replay as replay
from worker.programs.subcommands import create_topics as create_topics
from worker.programs.subcommands import reconcile
from worker.programs.subcommands import tail_alerts as tail

TIMEOUT_MS = 41_000  # above every default session timeout, unlike any client's own default


@pytest.fixture
def env(monkeypatch):
    """No FRAUD_* variable but the ones a test sets: the pass-through ones of every run here."""
    for key in [k for k in os.environ if k.startswith("FRAUD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FRAUD_KAFKA_CLIENT_ID", "from-env-loses")
    monkeypatch.setenv("FRAUD_KAFKA_REQUEST_TIMEOUT_MS", str(TIMEOUT_MS))
    # A consumer-only key: a producer or admin client given it would refuse to start.
    monkeypatch.setenv("FRAUD_KAFKA_FETCH_MAX_WAIT_MS", "30")


@pytest.fixture
def built(monkeypatch):
    """class name -> the instances of that kafka-python client built while the test ran."""
    made: dict[str, list] = {"KafkaAdminClient": [], "KafkaConsumer": [], "KafkaProducer": []}
    for name, instances in made.items():
        real = getattr(kafka_python, name)

        def init(self, *args, _real=real, _instances=instances, **kwargs):
            _real.__init__(self, *args, **kwargs)
            _instances.append(self)

        monkeypatch.setattr(kafka_python, name, type(name, (real,), {"__init__": init}))
    return made


def _client_id(tool: str) -> str:
    return f"{tool}-{uuid.uuid4().hex[:8]}"


def _ours(instances: list, client_id: str) -> list:
    assert all(c.config["client_id"] != "from-env-loses" for c in instances), "the variable won over the flag"
    return [c for c in instances if c.config["client_id"] == client_id]


def _assert_settings(client, bootstrap: str) -> None:
    assert client.config["request_timeout_ms"] == TIMEOUT_MS
    servers = client.config["bootstrap_servers"]
    assert (servers if isinstance(servers, str) else ",".join(servers)) == bootstrap


def test_create_topics_admin_client_gets_the_settings(kafka, env, built, capsys):
    client_id = _client_id("create-topics")
    names = {flag: f"{flag.strip('-')}-{uuid.uuid4().hex[:8]}" for flag in ("--input-topic", "--alert-topic",
                                                                              "--dlq-topic")}  # fmt: skip
    argv = ["--bootstrap-servers", kafka.bootstrap, "--kafka-option", f"client_id={client_id}", "--partitions", "2"]
    try:
        assert create_topics.main(argv + [x for pair in names.items() for x in pair]) == 0
        (admin,) = _ours(built["KafkaAdminClient"], client_id)
        _assert_settings(admin, kafka.bootstrap)
        assert capsys.readouterr().out.count(": created") == 3
        metas = kafka.admin().describe_topics(list(names.values()))
        described = {m.get("name") or m.get("topic"): len(m["partitions"]) for m in metas}
        assert described == {names["--input-topic"]: 2, names["--alert-topic"]: 2, names["--dlq-topic"]: 2}
    finally:
        kafka.admin().delete_topics(list(names.values()))


def test_tail_alerts_consumer_gets_the_settings(kafka, env, built, capsys):
    topic = kafka.topic(partitions=2)
    alert = {"transaction_id": "tx-settings", "score": 0.99, "threshold": 0.9, "model_version": "v1", "reasons": []}
    producer = kafka.producer()
    producer.send(topic, key=b"tx-settings", value=json.dumps(alert).encode()).get(timeout=30)
    client_id = _client_id("tail-alerts")
    argv = ["--bootstrap-servers", kafka.bootstrap, "--topic", topic, "--from-beginning", "--max-alerts", "1",
            "--kafka-option", f"client_id={client_id}"]  # fmt: skip
    assert tail.main(argv) == 0
    assert "ALERT tx-settings" in capsys.readouterr().out
    (consumer,) = _ours(built["KafkaConsumer"], client_id)
    _assert_settings(consumer, kafka.bootstrap)
    assert consumer.config["fetch_max_wait_ms"] == 30 and consumer.config["group_id"] is None


def test_replay_producer_gets_the_settings(kafka, env, built, capsys):
    topic = kafka.topic(partitions=1)
    client_id = _client_id("replay")
    argv = ["--synthetic", "20", "--topic", topic, "--bootstrap-servers", kafka.bootstrap, "--quiet",
            "--kafka-option", f"client_id={client_id}", "--kafka-option", "linger_ms=3"]  # fmt: skip
    assert replay.main(argv) == 0
    assert "20 events" in capsys.readouterr().out
    (producer,) = _ours(built["KafkaProducer"], client_id)
    _assert_settings(producer, kafka.bootstrap)
    assert producer.config["linger_ms"] == 3 and producer.config["acks"] in ("all", -1)
    consumer = kafka.consumer(topic, group_id=kafka.group())
    read = 0
    while read < 20 and (polled := consumer.poll(timeout_ms=5000)):
        read += sum(len(batch) for batch in polled.values())
    assert read == 20


def test_reconcile_consumer_and_admin_get_the_settings(kafka, topics, env, built, capsys):
    client_id = _client_id("reconcile")
    argv = ["--json", "--bootstrap-servers", kafka.bootstrap, "--group-id", kafka.group(),
            "--kafka-option", f"client_id={client_id}"]  # fmt: skip
    for key, topic in topics.items():
        argv += ["--" + key.replace("_", "-"), topic]
    assert reconcile.main(argv) == 0  # nothing committed, nothing in the topics: nothing to account for
    assert json.loads(capsys.readouterr().out)["ok"] is True
    (consumer,) = _ours(built["KafkaConsumer"], client_id)
    admins = _ours(built["KafkaAdminClient"], client_id)
    assert len(admins) == 2, "the ACL check's admin client and the one reading committed offsets"
    for client in (consumer, *admins):
        _assert_settings(client, kafka.bootstrap)
    assert consumer.config["fetch_max_wait_ms"] == 30
