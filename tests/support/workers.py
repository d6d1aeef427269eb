"""Run the worker as a real subprocess (``python -m worker``) so signals are real, and read topics back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence

from prometheus_client.parser import text_string_to_metric_families

from tests.support.broker import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoggedProcess:
    """A program of this repository run as ``python -m <module> ...`` with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_prefix: str) -> None:
        self.args, self.env = args, env
        self.log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    def start(self):
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)


class WorkerProcess(LoggedProcess):
    """One ``python -m worker`` process with its own metrics port and log file."""

    def __init__(self, bootstrap: str, models_dir, input_topic: str, alert_topic: str, dlq_topic: str, group: str,
                 scores_topic: str = "", extra: Sequence[str] = (), env: dict | None = None) -> None:  # fmt: skip
        self.port = free_port()
        args = [
            sys.executable, "-m", "worker",
            "--bootstrap-servers", bootstrap, "--models-dir", str(models_dir),
            "--input-topic", input_topic, "--alert-topic", alert_topic, "--dlq-topic", dlq_topic,
            "--scores-topic", scores_topic, "--group-id", group,
            "--metrics-port", str(self.port), "--poll-timeout-ms", "200", "--reload-interval-seconds", "0.2",
            *extra,
        ]  # fmt: skip
        # The test's own settings only; FRAUD_FAST_PATHS=none runs every worker on plain kafka-python.
        own = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_") or k == "FRAUD_FAST_PATHS"}
        super().__init__(args, {**own, **(env or {})}, "fraud-worker-")

    def start(self) -> WorkerProcess:
        return super().start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.output()[-3000:]}")

    def metric(self, name: str, labels: dict | None = None) -> float:
        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and (
                    labels is None or all(sample.labels.get(k) == v for k, v in labels.items())
                ):
                    return sample.value
        return 0.0

    def wait_metric(self, name: str, at_least: float, timeout: float = 60.0, labels: dict | None = None) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.metric(name, labels)
            if value >= at_least:
                return value
            time.sleep(0.05)
        raise AssertionError(f"{name} stayed below {at_least}:\n{self.output()[-3000:]}")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def mapped_files(self) -> str:
        with open(f"/proc/{self.pid}/maps") as fh:
            return fh.read()


def produce(producer, topic: str, values: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    n = 0
    for key, value in values:
        producer.send(topic, key=key, value=value)
        n += 1
    producer.flush(timeout=60)
    return n


def event_bytes(transaction_id: str, features: dict[str, float], **extra) -> bytes:
    return json.dumps({"transaction_id": transaction_id, **features, **extra}).encode()


def end_offsets(kafka, topic: str) -> dict:
    from kafka import TopicPartition

    consumer = kafka.consumer()
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    return consumer.end_offsets(tps)


def wait_committed(kafka, group: str, topic: str, timeout: float = 60.0, workers: Sequence[WorkerProcess] = ()) -> None:
    """Until the group's committed offsets reach the end of every partition of ``topic``."""
    want = {tp.partition: o for tp, o in end_offsets(kafka, topic).items()}
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        got = committed(kafka, group, topic)
        if all(got.get(p, 0) >= o for p, o in want.items()):
            return
        for w in workers:
            if w.proc.poll() is not None:
                raise AssertionError(f"worker exited with {w.proc.returncode}:\n{w.output()[-3000:]}")
        time.sleep(0.1)
    logs = "\n".join(w.output()[-2000:] for w in workers)
    raise AssertionError(f"group {group} committed {got}, end offsets {want}\n{logs}")


def committed(kafka, group: str, topic: str) -> dict[int, int]:
    from kafka.errors import KafkaError

    try:
        offsets = kafka.admin().list_group_offsets(group).get(group, {})
    except KafkaError as exc:
        if not exc.retriable:  # e.g. the coordinator is still being elected on a fresh broker
            raise
        return {}
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


def read_topic(kafka, topic: str) -> list:
    """Every record of ``topic`` up to its current end offsets."""
    from kafka import TopicPartition

    ends = {tp: o for tp, o in end_offsets(kafka, topic).items() if o > 0}
    if not ends:
        return []
    consumer = kafka.consumer(consumer_timeout_ms=1000)
    consumer.assign(list(ends))
    consumer.seek_to_beginning(*ends)
    records: list = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(consumer.position(tp) < o for tp, o in ends.items()):
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    assert all(consumer.position(TopicPartition(tp.topic, tp.partition)) >= o for tp, o in ends.items())
    return records


def headers(record) -> dict[str, str]:
    return {k: v.decode() for k, v in (record.headers or [])}
