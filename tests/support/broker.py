"""How the tests reach a real Apache Kafka broker.

In this order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; a testcontainers Kafka container where a
Docker engine answers; else ``scripts/local-kafka`` (the Maven Central broker on Java 17), with
its own state directory and free ports, stopped (and its state directory removed) when the session
ends. Starting and stopping local brokers is ``scripts/local_kafka.py``, the launcher the benchmarks
use too; its names are re-exported here for the tests.

Under pytest-xdist the run's workers share one broker (``acquire_shared``): the first worker that
needs it starts it under a file lock in a directory the controller made, and records it there; the
others adopt it; the controller stops it once every worker is done (``release_shared``), because a
worker that runs out of tests ends its session while the others still use the broker.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from scripts.local_kafka import LOCAL_KAFKA, LocalKafka, free_port_pair, run_launcher

REPO = Path(__file__).resolve().parents[2]
__all__ = [
    "LOCAL_KAFKA", "REPO", "Broker", "acquire", "acquire_shared", "free_port_pair", "release_shared", "run_launcher",
]  # fmt: skip


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


def acquire(*, reap: bool = True) -> Broker:
    """``reap`` False: a container is not removed when this process ends (another process removes it)."""
    env_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env_servers:
        return Broker(bootstrap=env_servers, description=f"KAFKA_BOOTSTRAP_SERVERS={env_servers}")
    if _docker_answers():
        if not reap:
            os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"  # read when testcontainers is first imported
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer("apache/kafka:4.1.0").with_kraft()
        container.start()
        return Broker(
            bootstrap=container.get_bootstrap_server(),
            description="testcontainers apache/kafka:4.1.0",
            _container=container,
        )
    local = LocalKafka(prefix="fraud-test-kafka-")
    for attempt in range(3):
        try:
            bootstrap = local.start()
            break
        except RuntimeError as exc:  # a free port is an ephemeral one: another client may take it first
            if "already in use" not in str(exc) or attempt == 2:
                raise
            local.port = free_port_pair()
    return Broker(
        bootstrap=bootstrap,
        description=local.description,
        restartable=True,
        _state_dir=local.state_dir,
        _port=local.port,
        _env=local.env,
        _local=local,
    )


RECORD = "broker.json"


def acquire_shared(shared_dir: str | os.PathLike[str]) -> Broker:
    """The broker every xdist worker of this run uses: started by the first to ask, adopted by the others.

    ``close`` on the returned object leaves the broker running; ``release_shared`` stops it.
    """
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return acquire()
    shared = Path(shared_dir)
    with open(shared / "broker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait here while the first one starts it
        record = shared / RECORD
        if not record.exists():
            broker = acquire(reap=False)
            container = getattr(broker._container, "_container", None)
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps({
                "bootstrap": broker.bootstrap, "description": broker.description,
                "state_dir": broker._state_dir, "port": broker._port,
                "container_id": getattr(container, "id", None),
            }))  # fmt: skip
            tmp.replace(record)
        found = json.loads(record.read_text())
    return Broker(bootstrap=found["bootstrap"], description=found["description"])


def release_shared(shared_dir: str | os.PathLike[str]) -> None:
    """Stop the broker ``acquire_shared`` started in ``shared_dir`` (if any) and remove its state directory."""
    record = Path(shared_dir) / RECORD
    if not record.exists():
        return
    found = json.loads(record.read_text())
    if found.get("container_id"):
        import docker

        try:
            docker.from_env().containers.get(found["container_id"]).remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
    elif found.get("state_dir"):
        LocalKafka(found["state_dir"], found["port"]).stop(check=False)
        shutil.rmtree(found["state_dir"], ignore_errors=True)
