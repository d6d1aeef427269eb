"""What every benchmark shares: the broker, topics, load generation, the worker as a process, the data,
timing helpers, the environment, result writing and the printed table; and a Prometheus for metrics_run.

The benchmarks (one module each, run by ``bench.py``) are built on this and on nothing of the test
suite: the broker launcher both use is ``scripts/local_kafka.py``. Import it as ``benchmarks.harness``
with the repository root on ``sys.path`` (``bench.py`` and ``metrics_run.py`` put it there).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for scripts.local_kafka, the broker launcher the tests use too

from scripts.local_kafka import LocalKafka, kafka_version  # noqa: E402

ULB = REPO.parent / "shared" / "datasets" / "creditcard.csv.gz"
BATCH = 500  # the worker's default max batch size; the ceiling uses the same
FETCH_KEYS = ("max_poll_records", "fetch_max_bytes", "max_partition_fetch_bytes", "fetch_min_bytes",
              "fetch_max_wait_ms", "check_crcs")  # fmt: skip
DEPLOY = REPO / "deploy" / "prometheus"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- timing: medians, ratios, alternation ---------------------------------------------------------


def median_runs(runs: list[float]) -> dict:
    """``{"median", "runs"}``, the shape every measured figure has in results.json."""
    return {"median": statistics.median(runs), "runs": runs}


def pair_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """``num[i] / den[i]`` for runs measured in pairs (alternating, so each pair saw the same machine)."""
    return [a / b for a, b in zip(num, den, strict=True)]


def in_turn(names: Sequence[str], r: int) -> list[str]:
    """The order of round ``r``: as given on even rounds, reversed on odd ones (which goes first alternates)."""
    return list(names) if r % 2 == 0 else list(reversed(names))


# --- the broker and its topics ------------------------------------------------------------------


@contextlib.contextmanager
def broker(prefix: str) -> Iterator[str]:
    """The bootstrap servers: KAFKA_BOOTSTRAP_SERVERS if set, else a scripts/local-kafka broker on free ports,
    stopped (and its state removed) on leaving."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if bootstrap:
        yield bootstrap
        return
    local = LocalKafka(prefix=prefix)
    try:
        yield local.start()
    finally:
        local.close()


def create_topics(bootstrap: str, specs: dict[str, tuple[int, dict]]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(n, p, 1, topic_configs=c) for n, (p, c) in specs.items()])
    admin.close()
    time.sleep(1.0)


def fetch_settings() -> dict:
    """The worker's own consumer settings that shape fetching (worker.edges.clients.client_configs)."""
    from worker.edges.clients import client_configs
    from worker.edges.config import WorkerConfig

    consumer, _ = client_configs(WorkerConfig(max_batch_size=BATCH))
    return {k: v for k, v in consumer.items() if k in FETCH_KEYS}


def committed_total(admin, group: str) -> int:
    from kafka.errors import KafkaError

    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:
        return 0
    return sum(max(0, meta.offset) for meta in offsets.values())


# --- load generation ----------------------------------------------------------------------------


def produce_all(bootstrap: str, topic: str, values: list[bytes], rate: float = 0.0, linger_ms: int = 20) -> float:
    """Produce every value (no key), as fast as possible or at ``rate``/s; returns the seconds taken.

    The load generator is librdkafka (confluent-kafka), not kafka-python: it offers 16,000
    events/s for about a fifth of a core where kafka-python's producer needs a whole one, so on
    two cores the figures are the worker's, not those of a fight with its own load generator.
    """
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": linger_ms})
    start = time.monotonic()
    paced(producer, topic, values, rate)
    if producer.flush(60):
        raise RuntimeError(f"records for {topic} not delivered within 60 s")
    return time.monotonic() - start


def paced(producer, topic: str, values: list[bytes], rate: float) -> None:
    """Hand ``values`` to a confluent-kafka producer, as fast as it takes them or at ``rate``/s."""
    start = time.monotonic()
    for i, v in enumerate(values):
        if rate:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0.001:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(topic, v)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)


GENERATOR_NICE = 10  # the load generator's scheduling priority (see LoadGenerator)


def serve_load(bootstrap: str, pools: str) -> None:
    """The load generator's process: offers what each line of stdin asks for, answers a line on stdout.

    ``pools`` is a directory with ``normal.jsonl`` and ``alerting.jsonl`` (one event a line). A
    request ``{"topic", "rate", "n", "every"}`` produces ``n`` events at ``rate``/s, every
    ``every``-th one from the alerting pool, the others from the normal pool, each pool in order and
    from its start again once it runs out; the answer is ``{"started_ms", "seconds"}`` (epoch ms of
    the first event, seconds until the last was delivered).
    """
    os.nice(GENERATOR_NICE)
    from confluent_kafka import Producer

    normal = Path(pools, "normal.jsonl").read_bytes().splitlines()
    alerting = Path(pools, "alerting.jsonl").read_bytes().splitlines()
    # Lingering 1 ms, as an upstream producer would, so records arrive in small, frequent batches.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 1})
    print("{}", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        n, every = req["n"], req["every"]
        values = [alerting[(i // every) % len(alerting)] if i % every == 0 else normal[i % len(normal)]
                  for i in range(n)]  # fmt: skip
        producer.list_topics(req["topic"], timeout=10)  # metadata before the clock starts
        started_ms, t0 = time.time() * 1000, time.monotonic()
        paced(producer, req["topic"], values, req["rate"])
        if producer.flush(60):
            raise RuntimeError(f"records for {req['topic']} not delivered within 60 s")
        print(json.dumps({"started_ms": started_ms, "seconds": time.monotonic() - t0}), flush=True)


def python_code(statements: str) -> list[str]:
    """``python -c`` running ``statements`` with the repository root on sys.path, for ``benchmarks.*`` imports."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); {statements}"]


class LoadGenerator:
    """A separate process offering ULB events at a given rate (``serve_load``), one request at a time.

    The generator stands for producers on other machines: it runs at a lower priority (nice 10), so
    that on two shared cores it waits for the broker and the process measured rather than they for
    it; the rate it reached is reported. It is librdkafka (see ``produce_all``).
    """

    def __init__(self, bootstrap: str, pools: str) -> None:
        code = f"from benchmarks.harness import serve_load; serve_load({bootstrap!r}, {pools!r})"
        self.proc = subprocess.Popen(python_code(code), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)  # fmt: skip
        self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited ({self.proc.wait()})")
        return json.loads(line)

    def start(self, topic: str, rate: float, n: int, every: int) -> None:
        self.proc.stdin.write(json.dumps({"topic": topic, "rate": rate, "n": n, "every": every}) + "\n")
        self.proc.stdin.flush()

    def finished(self) -> dict | None:
        """The answer to the request under way once it is done, else None (without waiting)."""
        if select.select([self.proc.stdout], [], [], 0)[0]:
            return self._answer()
        return None

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# --- the worker as a process --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_options(guarantee: str = "at-least-once", extra: Sequence[str] = ()) -> list[str]:
    """The benchmarks' worker: batches of BATCH, one processing guarantee, warnings only, its defaults otherwise."""
    return ["--max-batch-size", str(BATCH), "--processing-guarantee", guarantee, "--log-level", "WARNING", *extra]


class Worker:
    """The worker as a real process (``python -m worker``) on its own metrics port.

    ``options`` follow the topics, group and port (``bench_options`` for the benchmarks). Its
    environment is this one without FRAUD_* settings (except those named in ``keep_env``). Its
    stderr is a pipe (keep it to warnings), or with ``log`` its stdout and stderr go to that file.
    """

    def __init__(self, bootstrap: str, models: str | Path, topics: dict, group: str, options: Sequence[str],
                 keep_env: Sequence[str] = (), log: Path | None = None) -> None:  # fmt: skip
        self.port = free_port()
        args = [sys.executable, "-m", "worker", "--bootstrap-servers", bootstrap, "--models-dir", str(models),
                "--input-topic", topics["input"], "--alert-topic", topics["alerts"], "--dlq-topic", topics["dlq"],
                "--group-id", group, "--metrics-port", str(self.port), *options]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_") or k in keep_env}
        self.log = log
        out = open(log, "wb") if log is not None else None  # noqa: SIM115 - the child holds it; closed below
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.STDOUT if out else subprocess.PIPE,
                                     stdout=out or subprocess.DEVNULL)  # fmt: skip
        if out is not None:
            out.close()

    def output(self) -> str:
        """The last of what the worker wrote (its stderr pipe once it has exited, or its log file)."""
        if self.log is not None:
            return self.log.read_text(errors="replace")[-2000:]
        return self.proc.stderr.read().decode()[-2000:]

    def exited(self) -> RuntimeError | None:
        """An error carrying the worker's last output if it has exited, else None."""
        return RuntimeError(self.output()) if self.proc.poll() is not None else None

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def wait_up(self) -> float:
        """Until /healthz answers: the seconds from process start to then (start-up: model and metrics)."""
        while self.get("/healthz") is None:
            if err := self.exited():
                raise err
            time.sleep(0.005)
        return time.monotonic() - self.t0

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until /readyz says ready (a model loaded and partitions assigned)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (self.get("/readyz") or "").find('"ready"') < 0:
            if err := self.exited():
                raise err
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def transactions(self) -> dict:
        """Exactly-once: transactions committed and aborted so far, and the seconds their commits took."""
        text = self.get("/metrics") or ""

        def value(series: str) -> float:
            m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
            return float(m.group(1)) if m else 0.0

        return {
            "committed": value('fraud_transactions_total{outcome="committed"}'),
            "aborted": value('fraud_transactions_total{outcome="aborted"}'),
            "commit_seconds": value("fraud_transaction_commit_seconds_sum"),
        }

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the worker plus its decoder child process (each one's VmHWM)."""
        pids = [self.proc.pid]
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
            pids += [int(p) for p in fh.read().split()]
        total = 0.0
        for pid in pids:
            with open(f"/proc/{pid}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def close(self) -> None:
        """Killed if still running (after an error), and its log file removed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.log is not None:
            self.log.unlink(missing_ok=True)


def transaction_stats(tx: dict, seconds: float, events: int) -> dict:
    """Transactions committed (and aborted) over ``seconds`` and ``events``, and their mean commit time."""
    n = tx["committed"]
    return {**tx, "per_s": n / seconds, "events_per_transaction": events / n if n else None,
            "mean_commit_ms": 1000 * tx["commit_seconds"] / (n + tx["aborted"]) if n else None}  # fmt: skip


def worker_run(bootstrap: str, models: str, topics: dict, n: int, guarantee: str = "at-least-once",
               extra: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """One worker over a backlog of ``n`` events: its events/s, its start to ready, its peak memory.

    The rate runs from its first committed record to the last. Progress is read from the group's
    committed offsets on the broker every 50 ms (the input topic starts at offset 0), not from the
    worker's /metrics: a scrape takes the worker's GIL for a few milliseconds, which would slow what
    is being measured. Under exactly-once the offsets are committed with each transaction, so they
    count what read_committed readers see.
    """
    from kafka.admin import KafkaAdminClient

    group = f"worker-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    w = Worker(bootstrap, models, topics, group, bench_options(guarantee, extra))
    up = w.wait_up()
    t1 = c1 = None
    while True:
        c = committed_total(admin, group)
        now = time.perf_counter()
        if c > 0 and t1 is None:
            t1, c1 = now, c
        if c >= n:
            break
        if err := w.exited():
            raise err
        time.sleep(0.05)
    rate = (n - c1) / (now - t1)
    peak = w.peak_rss_mb()
    out = {"rate": rate, "start_to_ready_s": up, "peak_rss_mb": peak}
    if guarantee == "exactly-once":  # scraped once the run is measured
        out["transactions"] = transaction_stats(w.transactions(), now - w.t0, n)
    w.stop()
    admin.close()
    return out


# --- data and models ----------------------------------------------------------------------------


def load_events(limit: int) -> tuple[list[bytes], np.ndarray]:
    """ULB rows as transaction events (pre-encoded JSON) and their raw feature matrix."""
    import msgspec

    enc = msgspec.json.Encoder().encode
    values, rows = [], []
    with gzip.open(ULB, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        names = header[:30]
        for i, row in enumerate(reader):
            if i >= limit:
                break
            feats = [float(x) for x in row[:30]]
            doc = {"transaction_id": f"b-{i:07d}", **dict(zip(names, feats, strict=True))}
            values.append(enc(doc))
            rows.append(feats)
    return values, np.asarray(rows)


def train_model(models: str) -> tuple[str, dict]:
    """fraud-train on the ULB data into ``models``: the bundle's version and manifest."""
    subprocess.run([sys.executable, "-m", "training", "--data", str(ULB), "--models-dir", models, "-q"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)  # fmt: skip
    version = (Path(models) / "CURRENT").read_text().strip()
    return version, json.loads((Path(models) / version / "manifest.json").read_text())


def fixed_weights_model(n: int) -> tuple[dict, bytes]:
    """A manifest and TFLite model with fixed weights, for steps run alone (their cost does not depend on them)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from training.export import dense_model, to_tflite
    from worker.core.bundle import Manifest, sha256_hex

    weights = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    model = dense_model(n)
    model.set_weights([weights.reshape(n, 1), np.array([-3.0], dtype=np.float32)])
    blob = to_tflite(model)
    names = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")[:n]
    manifest = Manifest(
        version="bench", created_at="2026-01-01T00:00:00Z", feature_names=names, scaler_mean=(0.0,) * n,
        scaler_scale=(1.0,) * n, weights=tuple(weights.tolist()), bias=-3.0, threshold=0.5, threshold_policy={},
        model_sha256=sha256_hex(blob),
    )  # fmt: skip
    return json.loads(manifest.to_json()), blob


# --- the environment, results and the printed table ---------------------------------------------


def cpu_name() -> str:
    return next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")


def versions(bootstrap: str) -> dict:
    import importlib.metadata as md

    return {
        "cores": os.cpu_count(),
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "kafka-python": md.version("kafka-python"),
        "crc32c": md.version("crc32c"),
        "ai-edge-litert": md.version("ai-edge-litert"),
        "numpy": md.version("numpy"),
        "kafka_broker": f"Apache Kafka {kafka_version()} (local-kafka)"
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        else f"external at {bootstrap}",
    }


def environment_rows(r: dict) -> list[tuple[str, str]]:
    """The summary table's last rows: the machine, the versions, when and how long."""
    env = r["environment"]
    return [
        ("machine", f"{env['cores']} cores, {env['cpu']}"),
        (
            "versions",
            f"Python {env['python']}, kafka-python {env['kafka-python']} (crc32c {env['crc32c']}), "
            f"LiteRT {env['ai-edge-litert']}, {env['kafka_broker']}",
        ),  # fmt: skip
        ("run", f"{r['date']}, {r['bench_seconds']:.0f} s"),
    ]


def print_table(rows: list[tuple[str, str]]) -> None:
    """Two columns between rules: each figure's name, then its value."""
    width = max(len(k) for k, _ in rows)
    print("-" * (width + 40))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 40))


def write_results(path: str | None, results: dict) -> None:
    """``results`` as indented JSON at ``path`` (nothing when no path is given)."""
    if path:
        Path(path).write_text(json.dumps(results, indent=2) + "\n")


def rate_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


# --- Prometheus (metrics_run.py) ----------------------------------------------------------------


@functools.cache
def ensure_prometheus() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool``, installing the Debian package ``prometheus`` if needed."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if all(found):
        return found  # type: ignore[return-value]
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]):
        done = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    found = shutil.which("prometheus"), shutil.which("promtool")
    if not all(found):
        raise RuntimeError("the Debian package prometheus is installed but prometheus/promtool are not on PATH")
    return found  # type: ignore[return-value]


class PrometheusServer:
    """``prometheus`` scraping ``targets`` every second, with copies of ``rule_files`` loaded."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: tuple[Path, ...] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        rules = []
        for path in rule_files:
            shutil.copy(path, workdir / path.name)
            rules.append(path.name)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [{"job_name": "fraud-worker", "static_configs": [{"targets": targets}]}],
        }
        # JSON is YAML: no YAML library needed to write the config.
        (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        binary = ensure_prometheus()[0]
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.workdir / 'prometheus.yml'}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        if body["status"] != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector of ``expr``: a list of {"metric": labels, "value": [time, "text"]}."""
        return self.api("query", query=expr)["result"]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
