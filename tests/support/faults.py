"""Helpers shared by the fault-injection tests: reconcile a run, and a broker of the test's own."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.support.broker import Broker, free_port_pair, run_launcher
from worker.edges.config import load_config
from worker.programs.subcommands.reconcile import Report, format_report, reconcile


def reconcile_run(bootstrap: str, group: str, topics: dict, end: str = "committed") -> Report:
    """``fraud-worker reconcile`` over the topics of one test run (FRAUD_* variables ignored)."""
    args = ["--bootstrap-servers", bootstrap, "--group-id", group]
    for key in ("input_topic", "alert_topic", "dlq_topic", "scores_topic"):
        args += ["--" + key.replace("_", "-"), topics[key]]
    report = reconcile(load_config(args, {}), end=end, timeout=120)
    print("\n" + format_report(report))
    return report


class OwnBroker:
    """A broker from ``scripts/local-kafka`` that one test may stop and start (data kept).

    ``start`` first launches it (fresh data), later calls restart it with ``--keep-data``.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = str(state_dir or tempfile.mkdtemp(prefix="fraud-own-kafka-"))
        self.port = free_port_pair()
        self.env = dict(os.environ, KAFKA_STATE_DIR=self.state_dir)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._broker: Broker | None = None

    def start(self) -> None:
        if self._broker is None:
            for attempt in range(3):
                try:
                    self.bootstrap = run_launcher(["start", "--port", str(self.port)], self.env)
                    break
                except RuntimeError as exc:  # a free port is an ephemeral one: another client may take it first
                    if "already in use" not in str(exc) or attempt == 2:
                        raise
                    self.port = free_port_pair()
            self._broker = Broker(self.bootstrap, "own local-kafka", restartable=True,
                                  _state_dir=self.state_dir, _port=self.port, _env=self.env)  # fmt: skip
        else:
            self._broker.start()

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()


def fresh_topics(clients) -> dict:
    """New input (3 partitions), alert, DLQ and scores topics on ``clients``' broker (the ``topics`` fixture's kind)."""
    return dict(
        input_topic=clients.topic(partitions=3, prefix="transactions"),
        alert_topic=clients.topic(partitions=1, prefix="alerts"),
        dlq_topic=clients.topic(partitions=1, prefix="dlq"),
        scores_topic=clients.topic(partitions=1, prefix="scores"),
    )


BROKER_MAX_MESSAGE_BYTES = 1_048_588  # the broker's default max.message.bytes


def limit_message_bytes(kafka, topic: str, max_bytes: int) -> None:
    """Make ``topic`` refuse records (batches) larger than ``max_bytes``: a real refusal from the broker."""
    from kafka.admin import ConfigResource, ConfigResourceType

    kafka.admin().alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(max_bytes)})]
    )


def outage_producer(clients):
    """A test producer that waits out a broker outage: it blocks and retries instead of failing."""
    return clients.producer(linger_ms=20, max_block_ms=120_000, delivery_timeout_ms=180_000,
                            request_timeout_ms=10_000, reconnect_backoff_max_ms=1000)  # fmt: skip
