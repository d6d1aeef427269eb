"""How the tests reach a real Apache Kafka broker.

In this order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; a testcontainers Kafka container where a
Docker engine answers; else ``scripts/local-kafka`` (the Maven Central broker on Java 17), with
its own state directory and free ports, stopped when the session ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCAL_KAFKA = REPO / "scripts" / "local-kafka"


def free_port_pair() -> int:
    """A port p such that p and p + 1 are both free on 127.0.0.1 (client and controller)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65000:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


@dataclass
class Broker:
    """A running broker the tests may use. ``restartable`` only for the local launcher."""

    bootstrap: str
    description: str
    restartable: bool = False
    _state_dir: str | None = None
    _port: int | None = None
    _container: object | None = None
    _env: dict = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the broker (local launcher only); its data is kept for ``start``."""
        if self._container is not None:
            self._container.stop()
            return
        if self._state_dir:
            subprocess.run([str(LOCAL_KAFKA), "stop"], env=self._env, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Start the local broker again on the same port, keeping its topics and offsets."""
        if not self.restartable:
            raise RuntimeError(f"{self.description} cannot be restarted by the tests")
        _run_launcher(["start", "--port", str(self._port), "--keep-data"], self._env)

    def close(self) -> None:
        if self._container is not None:
            self._container.stop()
        elif self._state_dir:
            self.stop()


def _run_launcher(args: list[str], env: dict) -> str:
    proc = subprocess.run([str(LOCAL_KAFKA), *args], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/local-kafka {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    last = proc.stdout.strip().splitlines()[-1]
    return last.split("=", 1)[1]


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
    state = tempfile.mkdtemp(prefix="fraud-test-kafka-")
    port = free_port_pair()
    env = dict(os.environ, KAFKA_STATE_DIR=state)
    bootstrap = _run_launcher(["start", "--port", str(port)], env)
    version = (REPO / "scripts" / "kafka" / "pom.xml").read_text().split("<kafka.version>")[1].split("<")[0]
    return Broker(
        bootstrap=bootstrap,
        description=f"Apache Kafka {version} (kafka_2.13-{version}.jar, KRaft) via scripts/local-kafka",
        restartable=True,
        _state_dir=state,
        _port=port,
        _env=env,
    )
