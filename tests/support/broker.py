"""How the tests reach a real Apache Kafka broker.

In this order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; a testcontainers Kafka container where a
Docker engine answers; else ``scripts/local-kafka`` (the Maven Central broker on Java 17), with
its own state directory and free ports, stopped (and its state directory removed) when the session
ends. Starting and stopping local brokers is ``scripts/local_kafka.py``, the launcher the benchmarks
use too; its names are re-exported here for the tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from scripts.local_kafka import LOCAL_KAFKA, LocalKafka, free_port_pair, run_launcher

REPO = Path(__file__).resolve().parents[2]
__all__ = ["LOCAL_KAFKA", "REPO", "Broker", "acquire", "free_port_pair", "run_launcher"]


@dataclass
class Broker:
    """A running broker the tests may use. ``restartable`` only for the local launcher.

    A local broker is a ``LocalKafka``; one started elsewhere with ``run_launcher`` is adopted from
    ``_state_dir``, ``_port`` and ``_env`` (its state directory is then left in place by ``close``).
    """

    bootstrap: str
    description: str
    restartable: bool = False
    _state_dir: str | None = None
    _port: int | None = None
    _container: object | None = None
    _env: dict = field(default_factory=dict)
    _local: LocalKafka | None = None

    def __post_init__(self) -> None:
        if self._local is None and self._state_dir:
            self._local = LocalKafka(self._state_dir, self._port, env=self._env or None)

    def stop(self) -> None:
        """Stop the broker (local launcher only); its data is kept for ``start``."""
        if self._container is not None:
            self._container.stop()
            return
        if self._local is not None:
            self._local.stop()

    def start(self) -> None:
        """Start the local broker again on the same port, keeping its topics and offsets."""
        if not self.restartable or self._local is None:
            raise RuntimeError(f"{self.description} cannot be restarted by the tests")
        self._local.start(keep_data=True)

    def close(self) -> None:
        if self._container is not None:
            self._container.stop()
        elif self._local is not None:
            self._local.close()


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


def acquire() -> Broker:
    env_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env_servers:
        return Broker(bootstrap=env_servers, description=f"KAFKA_BOOTSTRAP_SERVERS={env_servers}")
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer("apache/kafka:4.1.0").with_kraft()
        container.start()
        return Broker(
            bootstrap=container.get_bootstrap_server(),
            description="testcontainers apache/kafka:4.1.0",
            _container=container,
        )
    local = LocalKafka(prefix="fraud-test-kafka-")
    bootstrap = local.start()
    return Broker(
        bootstrap=bootstrap,
        description=local.description,
        restartable=True,
        _state_dir=local.state_dir,
        _port=local.port,
        _env=local.env,
        _local=local,
    )
