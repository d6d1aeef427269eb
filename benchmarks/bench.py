"""``make bench``: the worker against its ceiling and a naive baseline, side by side in one run.

On one topic of ULB-derived events (6 partitions) on the real local Apache Kafka broker:

1. ceiling: a bare kafka-python consumer in a group, same fetch settings and max_poll_records as
   the worker, touching only the value bytes (no decoding, no per-batch commit); and the same
   consumer reading records with the worker's record reader (worker/records.py), as a second
   reference;
2. the worker end to end (decode, validate, scale, score, alerts, commit) as a real process,
   under each processing guarantee (``--guarantees``: at-least-once, and exactly-once, where the
   alerts and the input offsets go in one Kafka transaction per commit interval), over the same
   backlog; (1) and (2) alternate several times (which guarantee goes first alternating too) and
   the medians are reported, with their ratios, exactly-once / at-least-once among them, and the
   exactly-once worker's transactions (per second, events in each, the mean commit time);
3. the naive baseline from the usual tutorials: json.loads, then Keras ``model.predict`` per
   event, then an alert per event, with auto-commit: events/s on a small sample;
4. latency against offered load: at 1,000 and 5,000 events/s and at 10, 25 and 50 % of the
   at-least-once throughput just measured, offered by a separate generator process (librdkafka at
   nice 10, so that it takes little of the two cores), in which one event in rate/100 is one the
   model alerts on (about 100 alerts/s at every rate); each point a 2 s warm-up and 8 s measured:
   p50 / p99 / max from the event's append to the input topic (LogAppendTime, which the worker
   takes as the event time) to the alert being returned by a reader's poll() (read_committed for
   exactly-once, so an alert counts once a downstream reader can see it), for each guarantee;
   and, as the floor, a bare kafka-python consumer's append-to-poll latency at the same rates.
   Pass or fail against the goals at 1,000 and 5,000 events/s (p99 <= 25 ms at-least-once,
   <= the commit interval + 25 ms exactly-once), with the floor's p99 beside each; the table is
   drawn in docs/img/latency.png;
5. the worker's peak resident memory (with its decoder process) and its time from process
   start to ready;
6. the scoring cost per 500-row batch (``Scorer.scale`` + ``score_scaled``, no broker) for the
   trained model's weights with every feature identity and with transforms (signed_log1p on
   V1..V28, log1p on Amount clipped to [0, its 99.5 % quantile]), alternating; ``--only-scoring``
   runs this step alone, on a model exported with fixed weights (no broker, no training);
7. ``fraud-worker backtest`` over a JSON-lines file of ULB events (200,000 by default, no broker):
   its events/s against a plain ``json.loads`` loop over the same file, alternating, with the ratio;
   and the same file with each event's ``Class`` label in it, and the ULB CSV (gzip), once each;
   ``--only-backtest`` runs this step alone (a model exported with fixed weights, no training);
8. hardware and versions.

Prints the tables and writes benchmarks/results.json and docs/img/latency.png. Uses
KAFKA_BOOTSTRAP_SERVERS if set, else starts its own broker with scripts/local-kafka on free ports
and stops it at the end. ``--only-latency CAPACITY`` runs step 4 alone.
"""

from __future__ import annotations

import argparse
import csv
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
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for scripts.local_kafka, the broker launcher the tests use too

from scripts.local_kafka import LocalKafka, kafka_version  # noqa: E402

ULB = REPO.parent / "shared" / "datasets" / "creditcard.csv.gz"
BATCH = 500  # the worker's default max batch size; the ceiling uses the same
FETCH_KEYS = ("max_poll_records", "fetch_max_bytes", "max_partition_fetch_bytes", "fetch_min_bytes",
              "fetch_max_wait_ms", "check_crcs")  # fmt: skip


def fetch_settings() -> dict:
    """The worker's own consumer settings that shape fetching (worker.edges.clients.client_configs)."""
    from worker.edges.clients import client_configs
    from worker.edges.config import WorkerConfig

    consumer, _ = client_configs(WorkerConfig(max_batch_size=BATCH))
    return {k: v for k, v in consumer.items() if k in FETCH_KEYS}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


def scoring_cost(raw: np.ndarray, manifest: dict, model_bytes: bytes, repeats: int, batches: int) -> dict:
    """Microseconds per 500-row batch of ``Scorer.scale`` + ``score_scaled``, all identity and with transforms.

    The same model and weights both ways; only ``feature_transforms`` differs (the V columns
    signed_log1p, Amount log1p clipped to [0, its 99.5 % quantile], Time identity). The two
    alternate, which goes first swapping every repetition; each repetition times ``batches``
    consecutive batches of ULB rows; medians over the repetitions, and the median of the per-pair ratios.
    """
    from dataclasses import replace

    from worker.core.bundle import Bundle, Manifest
    from worker.core.scoring import Scorer
    from worker.core.transforms import FeatureTransform

    base = Manifest.from_dict(manifest)
    names = base.feature_names
    rows = np.asarray(raw[: batches * BATCH], dtype=np.float32)
    amount_hi = float(np.quantile(rows[:, names.index("Amount")], 0.995))
    transforms = tuple(
        FeatureTransform("signed_log1p") if n.startswith("V")
        else FeatureTransform("log1p", (0.0, amount_hi)) if n == "Amount"
        else FeatureTransform()
        for n in names
    )  # fmt: skip
    scorers = {
        "identity": Scorer(Bundle(Path("."), replace(base, feature_transforms=()), model_bytes)),
        "transforms": Scorer(Bundle(Path("."), replace(base, feature_transforms=transforms), model_bytes)),
    }
    chunks = [rows[i : i + BATCH] for i in range(0, len(rows) - BATCH + 1, BATCH)]
    for s in scorers.values():  # warm up: the interpreter sized for a 500-row batch
        for c in chunks[:5]:
            s.score_scaled(s.scale(c))
    times: dict[str, list[float]] = {k: [] for k in scorers}
    for r in range(repeats):
        for name in list(scorers) if r % 2 == 0 else list(reversed(scorers)):
            s = scorers[name]
            t0 = time.perf_counter()
            for c in chunks:
                s.score_scaled(s.scale(c))
            times[name].append((time.perf_counter() - t0) / len(chunks) * 1e6)
    ident, trans = times["identity"], times["transforms"]
    return {
        "batch_rows": BATCH,
        "batches_per_repeat": len(chunks),
        "repeats": repeats,
        "transforms": f"signed_log1p on V1..V28, log1p on Amount clipped to [0, {amount_hi:.2f}], Time identity",
        "identity_us_per_batch": {"median": statistics.median(ident), "runs": ident},
        "transforms_us_per_batch": {"median": statistics.median(trans), "runs": trans},
        "ratio_of_medians": statistics.median(trans) / statistics.median(ident),
        "median_of_ratios": statistics.median([t / i for t, i in zip(trans, ident, strict=True)]),
    }


def fixed_weights_model(n: int) -> tuple[dict, bytes]:
    """A manifest and TFLite model for ``--only-scoring``: fixed weights (the cost does not depend on them)."""
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


def print_scoring(sc: dict) -> None:
    print(f"scoring per {sc['batch_rows']}-row batch (Scorer.scale + score_scaled; median of {sc['repeats']} "
          f"alternating repetitions of {sc['batches_per_repeat']} batches):")  # fmt: skip
    print(f"  all identity      {sc['identity_us_per_batch']['median']:8.1f} µs")
    print(f"  with transforms   {sc['transforms_us_per_batch']['median']:8.1f} µs  ({sc['transforms']})")
    print(f"  ratio of medians  {sc['ratio_of_medians']:8.3f}   "
          f"(median of the per-pair ratios {sc['median_of_ratios']:.3f})")  # fmt: skip


def backtest_files(n: int, out_dir: str) -> dict[str, Path]:
    """The first ``n`` ULB rows as backtest inputs: JSON lines as the worker reads them, the same
    with each row's ``Class`` label, and a gzip CSV of the ULB columns."""
    import msgspec

    enc = msgspec.json.Encoder().encode
    paths = {"jsonl": Path(out_dir, "events.jsonl"), "labelled": Path(out_dir, "labelled.jsonl"),
             "csv": Path(out_dir, "events.csv.gz")}  # fmt: skip
    with (gzip.open(ULB, "rt", newline="") as fh, open(paths["jsonl"], "wb") as plain,
          open(paths["labelled"], "wb") as labelled, gzip.open(paths["csv"], "wt", newline="") as table):  # fmt: skip
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        writer = csv.writer(table)
        writer.writerow(header)
        for i, row in enumerate(reader):
            if i >= n:
                break
            doc = {"transaction_id": f"b-{i:07d}", **dict(zip(header[:30], map(float, row[:30]), strict=True))}
            plain.write(enc(doc) + b"\n")
            labelled.write(enc({**doc, "Class": int(row[30])}) + b"\n")
            writer.writerow(row)
    return paths


def backtest_model(models: str, raw: np.ndarray) -> str:
    """A bundle for ``--only-backtest``: fixed weights, the data's own mean and scale; returns its version."""
    from worker.core.bundle import Manifest, set_current, write_bundle

    manifest, blob = fixed_weights_model(raw.shape[1])
    scale = raw.std(axis=0)
    manifest.update(scaler_mean=raw.mean(axis=0).tolist(), scaler_scale=np.where(scale > 0, scale, 1.0).tolist(),
                    threshold=0.9)  # fmt: skip
    write_bundle(models, Manifest.from_dict(manifest), blob)
    set_current(models, manifest["version"])
    return manifest["version"]


def json_loads_rate(path: Path) -> float:
    """Events/s of the plainest reader of the same file: each line through ``json.loads``."""
    loads = json.loads
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            loads(line)
            n += 1
    return n / (time.perf_counter() - t0)


def backtest_rate(path: Path, models: str, out_dir: str) -> dict:
    """One ``fraud-worker backtest`` run as its own process: its reported events/s and the wall time."""
    out = Path(out_dir, "scores.jsonl")
    cmd = [str(Path(sys.executable).parent / "fraud-worker"), "backtest", "--input", str(path), "--models-dir",
           models, "--output", str(out), "--quiet"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    summary = next(line for line in done.stdout.splitlines() if line.startswith("backtest: "))
    rate = float(re.search(r"([\d,]+) events/s", summary).group(1).replace(",", ""))  # type: ignore[union-attr]
    events = int(re.search(r"backtest: ([\d,]+) events", summary).group(1).replace(",", ""))  # type: ignore[union-attr]
    out.unlink()
    return {"events_per_s": rate, "events": events, "wall_s": wall, "process_events_per_s": events / wall}


def backtest_speed(models: str, events: int, repeats: int) -> dict:
    """Backtest against ``json.loads`` over the same JSON lines, alternating (which goes first swaps each
    repetition); medians, and the median of the per-pair ratios. Then the labelled file and the CSV once each."""
    work = tempfile.mkdtemp(prefix="fraud-bench-backtest-")
    try:
        paths = backtest_files(events, work)
        loads, runs = [], []
        for r in range(repeats):
            for step in ("loads", "backtest") if r % 2 == 0 else ("backtest", "loads"):
                if step == "loads":
                    loads.append(json_loads_rate(paths["jsonl"]))
                else:
                    runs.append(backtest_rate(paths["jsonl"], models, work))
            log(f"backtest round {r + 1}/{repeats}: backtest {runs[-1]['events_per_s']:,.0f}/s, "
                f"json.loads {loads[-1]:,.0f}/s")  # fmt: skip
        rates = [x["events_per_s"] for x in runs]
        return {
            "events": runs[0]["events"],
            "repeats": repeats,
            "cores": os.cpu_count(),
            "backtest_events_per_s": {"median": statistics.median(rates), "runs": rates},
            "backtest_process_events_per_s": statistics.median(x["process_events_per_s"] for x in runs),
            "json_loads_events_per_s": {"median": statistics.median(loads), "runs": loads},
            "backtest_over_json_loads": statistics.median([b / j for b, j in zip(rates, loads, strict=True)]),
            "labelled_jsonl_events_per_s": backtest_rate(paths["labelled"], models, work)["events_per_s"],
            "csv_gz_events_per_s": backtest_rate(paths["csv"], models, work)["events_per_s"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_backtest(bt: dict) -> None:
    print(f"fraud-worker backtest over {bt['events']:,} ULB events in JSON lines ({bt['cores']} cores; median of "
          f"{bt['repeats']} alternating runs):")  # fmt: skip
    rows = [
        ("backtest (decode, score, score records written)", f"{bt['backtest_events_per_s']['median']:>10,.0f} "
         f"events/s  (with its process start: {bt['backtest_process_events_per_s']:,.0f}/s)"),
        ("json.loads per line, nothing else", f"{bt['json_loads_events_per_s']['median']:>10,.0f} events/s"),
        ("backtest / json.loads (median of pairs)", f"{bt['backtest_over_json_loads']:>10.2f}"),
        ("the same events with a Class field", f"{bt['labelled_jsonl_events_per_s']:>10,.0f} events/s"),
        ("the ULB CSV, gzip", f"{bt['csv_gz_events_per_s']:>10,.0f} events/s"),
    ]  # fmt: skip
    for name, value in rows:
        print(f"  {name:<48} {value}")


def create_topics(bootstrap: str, specs: dict[str, tuple[int, dict]]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(n, p, 1, topic_configs=c) for n, (p, c) in specs.items()])
    admin.close()
    time.sleep(1.0)


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


class LoadGenerator:
    """A separate process offering ULB events at a given rate (``serve_load``), one request at a time.

    The generator stands for producers on other machines: it runs at a lower priority (nice 10), so
    that on two shared cores it waits for the broker and the process measured rather than they for
    it; the rate it reached is reported. It is librdkafka (see ``produce_all``).
    """

    def __init__(self, bootstrap: str, pools: str) -> None:
        code = (f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import bench; "
                f"bench.serve_load({bootstrap!r}, {pools!r})")  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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


def ceiling(bootstrap: str, topic: str, n: int, reader: bool = False, decode=None) -> float:
    """events/s of a bare group consumer touching only the value bytes.

    With ``reader``, the consumer reads records with the worker's record reader
    (worker.kafka_compat.install_record_reader) instead of kafka-python's. With ``decode`` (a callable taking
    a batch's values) it also decodes them on the polling thread and nothing else: what a worker
    decoding where it polls could reach at best (the worker decodes in a child process instead).
    """
    from kafka import KafkaConsumer

    from worker.kafka_compat import install_record_reader as install_reader

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"ceiling-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False, auto_offset_reset="earliest", **fetch_settings())  # fmt: skip
    if reader:
        install_reader(consumer)
    seen, nbytes, t_first = 0, 0, None
    while seen < n:
        for records in consumer.poll(timeout_ms=500).values():
            if t_first is None:
                t_first, first_batch = time.perf_counter(), len(records)
            if decode is None:
                for r in records:
                    nbytes += len(r.value)
            else:
                decode([r.value for r in records])
            seen += len(records)
    elapsed = time.perf_counter() - t_first
    consumer.close(autocommit=False)
    return (n - first_batch) / elapsed


class Worker:
    """The worker as a real process (``python -m worker``), under one processing guarantee, its defaults otherwise."""

    def __init__(self, bootstrap: str, models: str, topics: dict, group: str, guarantee: str = "at-least-once",
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [sys.executable, "-m", "worker", "--bootstrap-servers", bootstrap, "--models-dir", models,
                "--input-topic", topics["input"], "--alert-topic", topics["alerts"], "--dlq-topic", topics["dlq"],
                "--group-id", group, "--metrics-port", str(self.port), "--max-batch-size", str(BATCH),
                "--processing-guarantee", guarantee, "--log-level", "WARNING", *extra]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def wait_up(self) -> float:
        while self.get("/healthz") is None:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-2000:])
            time.sleep(0.005)
        return time.monotonic() - self.t0

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


def committed_total(admin, group: str) -> int:
    from kafka.errors import KafkaError

    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:
        return 0
    return sum(max(0, meta.offset) for meta in offsets.values())


def worker_run(bootstrap: str, models: str, topics: dict, n: int, guarantee: str = "at-least-once",
               extra: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """events/s of the worker under ``guarantee`` from its first committed record to the last.

    Progress is read from the group's committed offsets on the broker every 50 ms (the input
    topic starts at offset 0), not from the worker's /metrics: a scrape takes the worker's GIL
    for a few milliseconds, which would slow what is being measured. Under exactly-once the
    offsets are committed with each transaction, so they count what read_committed readers see.
    """
    from kafka.admin import KafkaAdminClient

    group = f"worker-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    w = Worker(bootstrap, models, topics, group, guarantee, extra)
    up = w.wait_up()
    t1 = c1 = None
    while True:
        c = committed_total(admin, group)
        now = time.perf_counter()
        if c > 0 and t1 is None:
            t1, c1 = now, c
        if c >= n:
            break
        if w.proc.poll() is not None:
            raise RuntimeError(w.proc.stderr.read().decode()[-2000:])
        time.sleep(0.05)
    rate = (n - c1) / (now - t1)
    peak = w.peak_rss_mb()
    out = {"rate": rate, "start_to_ready_s": up, "peak_rss_mb": peak}
    if guarantee == "exactly-once":  # scraped once the run is measured
        out["transactions"] = transaction_stats(w.transactions(), now - w.t0, n)
    w.stop()
    admin.close()
    return out


def shadow_cost(bootstrap: str, models: str, values: list[bytes], repeats: int) -> dict:
    """The worker alone, with a shadow challenger feeding only its metrics, and with one writing a shadow
    record per event, over one backlog, in rotating order: the throughput ratios. Then the same for a
    worker that already writes a score record per event (``--scores-topic``, as label feedback needs):
    the shadow topic's cost on top of that.

    The shadow runs' models directory is a copy whose CHALLENGER names the champion's own bundle (the
    cost of a shadow does not depend on its weights).
    """
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-shadow-in-{tag}", "alerts": f"bench-shadow-alerts-{tag}",
              "dlq": f"bench-shadow-dlq-{tag}", "shadow": f"bench-shadow-out-{tag}",
              "scores": f"bench-shadow-scores-{tag}"}  # fmt: skip
    create_topics(bootstrap, {topics["input"]: (6, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {}),
                              topics["shadow"]: (6, {}), topics["scores"]: (6, {})})  # fmt: skip
    secs = produce_all(bootstrap, topics["input"], values)
    log(f"shadow cost: produced {len(values):,} events in {secs:.1f}s; {repeats} rounds of five runs")
    shadowed = tempfile.mkdtemp(prefix="fraud-bench-shadow-models-")
    try:
        shutil.copytree(models, shadowed, dirs_exist_ok=True)
        version = (Path(models) / "CURRENT").read_text().strip()
        (Path(shadowed) / "CHALLENGER").write_text(version + "\n")
        variants = {
            "worker": (models, ()),
            "shadow_metrics_only": (shadowed, ()),
            "shadow_with_topic": (shadowed, ("--shadow-topic", topics["shadow"])),
            "worker_with_scores": (models, ("--scores-topic", topics["scores"])),
            "shadow_topic_with_scores": (
                shadowed,
                ("--scores-topic", topics["scores"], "--shadow-topic", topics["shadow"]),
            ),
        }
        runs: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for i in range(repeats):
            for name in names[i % len(names) :] + names[: i % len(names)]:  # the order rotates
                where, extra = variants[name]
                runs[name].append(worker_run(bootstrap, where, topics, len(values), extra=extra)["rate"])
            log(f"round {i + 1}/{repeats}: " + ", ".join(f"{n} {runs[n][-1]:,.0f}/s" for n in names))
    finally:
        shutil.rmtree(shadowed, ignore_errors=True)
    out: dict = {"events": len(values)}
    for name in names:
        out[name] = {"median": statistics.median(runs[name]), "runs": runs[name]}
    for name, base in (("shadow_metrics_only", "worker"), ("shadow_with_topic", "worker"),
                       ("shadow_topic_with_scores", "worker_with_scores")):  # fmt: skip
        pairs = [v / w for v, w in zip(runs[name], runs[base], strict=True)]
        out[f"{name}_over_{base}"] = {"median_of_pairs": statistics.median(pairs), "runs": pairs}
    return out


def print_shadow(sh: dict) -> None:
    print("\nShadow challenger (models/CHALLENGER scored beside the champion on every batch)")
    print(f"  worker alone                           {sh['worker']['median']:>10,.0f} events/s (median)")
    for name, label in (("shadow_metrics_only", "with a shadow, metrics only"),
                        ("shadow_with_topic", "with a shadow writing --shadow-topic")):  # fmt: skip
        r = sh[f"{name}_over_worker"]["median_of_pairs"]
        print(f"  {label:<38} {sh[name]['median']:>10,.0f} events/s, ratio {r:.3f} (goal >= 0.9: "
              f"{'pass' if r >= 0.9 else 'FAIL'})")  # fmt: skip
    if "worker_with_scores" in sh:
        r = sh["shadow_topic_with_scores_over_worker_with_scores"]["median_of_pairs"]
        print(f"  {'worker writing --scores-topic':<38} {sh['worker_with_scores']['median']:>10,.0f} events/s (median)")
        print(f"  {'  and a shadow writing --shadow-topic':<38} {sh['shadow_topic_with_scores']['median']:>10,.0f} "
              f"events/s, ratio {r:.3f} to it")  # fmt: skip


def transaction_stats(tx: dict, seconds: float, events: int) -> dict:
    """Transactions committed (and aborted) over ``seconds`` and ``events``, and their mean commit time."""
    n = tx["committed"]
    return {**tx, "per_s": n / seconds, "events_per_transaction": events / n if n else None,
            "mean_commit_ms": 1000 * tx["commit_seconds"] / (n + tx["aborted"]) if n else None}  # fmt: skip


def naive_process(bootstrap: str, topic: str, alerts: str, models: str, version: str, sample: int) -> float:
    """``naive`` in a process of its own: TensorFlow's threads stay out of this one.

    With TensorFlow loaded here, the latency step measured after it gave p99 620-930 ms instead of
    about 110 ms (same worker, same rate): its threads took CPU from the two cores.
    """
    code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import bench; "
            f"m = json.load(open({str(Path(models) / version / 'manifest.json')!r})); "
            f"print(bench.naive({bootstrap!r}, {topic!r}, {alerts!r}, m, {sample}))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def naive(bootstrap: str, topic: str, alerts: str, manifest: dict, sample: int) -> float:
    """The tutorial loop: per-event json.loads, scaling, Keras predict, an alert each, auto-commit."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kafka import KafkaConsumer, KafkaProducer

    from training.export import dense_model

    names = manifest["feature_names"]
    model = dense_model(len(names))
    model.layers[-1].set_weights([np.asarray(manifest["weights"], np.float32).reshape(-1, 1),
                                  np.asarray([manifest["bias"]], np.float32)])  # fmt: skip
    mean, scale = np.asarray(manifest["scaler_mean"]), np.asarray(manifest["scaler_scale"])
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"naive-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest")  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    model.predict(np.zeros((1, len(names)), np.float32), verbose=0)  # build outside the timing
    done, t_first = 0, None
    for msg in consumer:
        if t_first is None:
            t_first = time.perf_counter()
        event = json.loads(msg.value)
        x = ((np.array([[event[f] for f in names]]) - mean) / scale).astype(np.float32)
        score = float(model.predict(x, verbose=0)[0][0])
        if score >= manifest["threshold"]:
            producer.send(alerts, json.dumps({"transaction_id": event["transaction_id"], "score": score}).encode())
        done += 1
        if done >= sample:
            break
    rate = (done - 1) / (time.perf_counter() - t_first)
    producer.close()
    consumer.close()
    return rate


FLOOR = "bare consumer"  # the latency table's floor: a bare kafka-python consumer, append to poll()


def alert_pools(models: str, values: list[bytes], raw: np.ndarray, out_dir: str, normal_max: int = 50_000) -> dict:
    """Split the ULB events into those the trained model alerts on and the others, as the generator's pools.

    Scored here with the bundle the worker loads (the same scorer), with a margin around the
    threshold so that float rounding cannot move an event across it: the number of alerts each
    latency point produces is then known in advance.
    """
    from worker.core.scoring import load_scorer

    scorer = load_scorer(models)
    scores = np.concatenate([scorer.score(raw[i : i + BATCH]) for i in range(0, len(raw), BATCH)])
    alerting = np.flatnonzero(scores >= scorer.threshold + 1e-4)
    normal = np.flatnonzero(scores < scorer.threshold - 1e-4)[:normal_max]
    Path(out_dir, "alerting.jsonl").write_bytes(b"\n".join(values[i] for i in alerting) + b"\n")
    Path(out_dir, "normal.jsonl").write_bytes(b"\n".join(values[i] for i in normal) + b"\n")
    return {"alerting_events": int(alerting.size), "normal_events": int(normal.size), "threshold": scorer.threshold}


def pct(a: np.ndarray) -> dict:
    if a.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def latency_point(gen: LoadGenerator, reader, topic: str, rate: float, seconds: float, warmup: float,
                  every: int, stamp, expected_of) -> dict:  # fmt: skip
    """One point of the latency table: ``rate``/s into ``topic`` for ``warmup + seconds``; ``reader`` collects.

    ``stamp(record)`` is the event's append time (epoch ms) that a record read by ``reader``
    carries; the latency is the wall-clock time when ``poll()`` returned it minus that stamp.
    Samples whose event was appended in the first ``warmup`` seconds are left out. Waits for all
    ``expected_of(n)`` records, or until none has come for 10 s after the generator finished.
    """
    n = int(rate * (warmup + seconds))
    expected = expected_of(n, every)
    gen.start(topic, rate, n, every)
    samples: list[tuple[float, float]] = []
    answer, last_progress = None, time.monotonic()
    while True:
        for records in reader.poll(timeout_ms=100).values():
            now = time.time() * 1000
            samples += [(t, now - t) for t in map(stamp, records)]
            last_progress = time.monotonic()
        if answer is None:
            answer = gen.finished()
        elif len(samples) >= expected or time.monotonic() - last_progress > 10:
            break
    arr = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    steady = arr[arr[:, 0] >= answer["started_ms"] + warmup * 1000, 1]
    return {"offered_rate": rate, "achieved_rate": n / answer["seconds"], "events": n, "records_read": len(samples),
            "records_expected": expected, "samples": int(steady.size), **pct(steady)}  # fmt: skip


def latency_mode(bootstrap: str, models: str, gen: LoadGenerator, mode: str, rates: list[float], seconds: float,
                 warmup: float, alert_rate: float) -> list[dict]:  # fmt: skip
    """The latency points of one mode (a worker guarantee, or FLOOR), ascending rates on one topic.

    Every ``every``-th offered event is one the model alerts on, so that each point has about
    ``alert_rate * seconds`` alerts at any rate. For a worker, the reader is a bare consumer of
    the alert topic (read_committed for exactly-once: an alert counts once a downstream reader can
    see it) and the latency is from the event's append to the input topic (its LogAppendTime,
    which the worker takes as the event time) to the alert being returned by the reader's poll().
    For FLOOR, a bare group consumer with the worker's fetch settings reads the input topic itself:
    append to poll() of every record, what any kafka-python worker starts from.
    """
    from kafka import KafkaConsumer, TopicPartition

    tag = uuid.uuid4().hex[:8]
    stamped = {"message.timestamp.type": "LogAppendTime"}
    worker = None
    if mode == FLOOR:
        topic = f"lat-floor-{tag}"
        create_topics(bootstrap, {topic: (6, stamped)})
        reader = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"floor-{tag}", enable_auto_commit=False,
                               auto_offset_reset="earliest", **fetch_settings())  # fmt: skip
        while not reader.assignment():
            reader.poll(timeout_ms=200)

        def stamp(r) -> float:
            return r.timestamp

        def expected_of(n: int, every: int) -> int:
            return n
    else:
        import msgspec

        topics = {"input": f"lat-in-{tag}", "alerts": f"lat-alerts-{tag}", "dlq": f"lat-dlq-{tag}"}
        create_topics(bootstrap, {topics["input"]: (6, stamped), topics["alerts"]: (1, {}), topics["dlq"]: (1, {})})
        topic = topics["input"]
        worker = Worker(bootstrap, models, topics, f"lat-{tag}", mode)
        worker.wait_up()
        while (worker.get("/readyz") or "").find('"ready"') < 0:
            if worker.proc.poll() is not None:
                raise RuntimeError(worker.proc.stderr.read().decode()[-2000:])
            time.sleep(0.05)
        isolation = "read_committed" if mode == "exactly-once" else "read_uncommitted"
        reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation,
                               **fetch_settings())  # fmt: skip
        reader.assign([TopicPartition(topics["alerts"], 0)])
        reader.seek_to_beginning()
        reader.poll(timeout_ms=100)
        event_time = msgspec.json.Decoder().decode

        def stamp(r) -> float:
            return event_time(r.value)["event_time"]

        def expected_of(n: int, every: int) -> int:
            return -(-n // every)

    points = []
    try:
        for rate in rates:
            every = max(1, round(rate / alert_rate))
            log(f"  {mode} at {rate:,.0f}/s: {warmup:.0f} s warm-up + {seconds:.0f} s, one event in {every} alerting")
            before, t0 = (worker.transactions() if mode == "exactly-once" else None), time.monotonic()
            point = latency_point(gen, reader, topic, rate, seconds, warmup, every, stamp, expected_of)
            point["alerting_one_in"] = every
            if before is not None:  # the whole point, warm-up and drain included
                after = worker.transactions()
                diff = {k: after[k] - before[k] for k in after}
                point["transactions"] = transaction_stats(diff, time.monotonic() - t0, point["events"])
            points.append(point)
            if worker is not None and worker.proc.poll() is not None:
                raise RuntimeError(worker.proc.stderr.read().decode()[-2000:])
    finally:
        reader.close(autocommit=False)
        if worker is not None:
            worker.stop()
    return points


def latency_table(bootstrap: str, models: str, pools: str, modes: list[str], rates: list[float], seconds: float,
                  warmup: float, alert_rate: float) -> dict:  # fmt: skip
    """Event-to-alert latency against offered load: every mode at every rate, one mode after the other."""
    import gc

    from worker.edges.config import DEFAULT_COMMIT_INTERVAL_MS

    gc.collect()
    gc.freeze()  # this process holds the throughput topic's events: keep the collector off them
    gen = LoadGenerator(bootstrap, pools)
    try:
        results = {m: latency_mode(bootstrap, models, gen, m, rates, seconds, warmup, alert_rate) for m in modes}
    finally:
        gen.close()
        gc.unfreeze()
    return {"warmup_s": warmup, "measured_s": seconds, "alert_rate": alert_rate, "generator_nice": GENERATOR_NICE,
            "commit_interval_ms": {m: DEFAULT_COMMIT_INTERVAL_MS[m] for m in modes if m != FLOOR},
            "modes": results}  # fmt: skip


def goal_ms(mode: str, lat: dict) -> float:
    """The p99 goal: 25 ms at-least-once; the commit interval (when alerts become visible) + 25 ms exactly-once."""
    return 25.0 + (lat["commit_interval_ms"][mode] if mode == "exactly-once" else 0)


GOAL_RATES = (1000.0, 5000.0)  # the offered rates the latency goals are set at


def goal_checks(lat: dict) -> list[dict]:
    """Each guarantee's p99 against its goal at each GOAL_RATES, with the floor's p99 at that rate beside it."""
    checks = []
    floor = {p["offered_rate"]: p for p in lat["modes"].get(FLOOR, [])}
    for mode, points in lat["modes"].items():
        if mode == FLOOR:
            continue
        for p in points:
            if p["offered_rate"] in GOAL_RATES:
                goal = goal_ms(mode, lat)
                checks.append({"mode": mode, "offered_rate": p["offered_rate"], "p99_ms": p["p99_ms"], "goal_ms": goal,
                               "passed": bool(p["p99_ms"] <= goal),
                               "floor_p99_ms": floor.get(p["offered_rate"], {}).get("p99_ms")})  # fmt: skip
    return checks


def plot_latency(lat: dict, capacity: float, path: str) -> None:
    """p99 (solid) and p50 (dashed) against offered rate, log-log, one colour per mode, with the goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    colours = {"at-least-once": "tab:blue", "exactly-once": "tab:orange", FLOOR: "0.45"}
    fig, ax = plt.subplots(figsize=(9.5, 6.4), dpi=110)
    at = " and ".join(f"{r:,.0f}" for r in GOAL_RATES) + "/s"
    columns = []  # the legend: a column per mode (p99, p50, its goal)
    for mode, points in lat["modes"].items():
        x = [p["offered_rate"] for p in points]
        label = "bare consumer (floor)" if mode == FLOOR else mode
        column = [
            *ax.plot(x, [p["p99_ms"] for p in points], "o-", color=colours[mode], lw=2.2, ms=6, label=f"{label}: p99"),
            *ax.plot(x, [p["p50_ms"] for p in points], "s--", color=colours[mode], lw=1.2, ms=4, alpha=0.85,
                     label=f"{label}: p50"),
        ]  # fmt: skip
        if mode in lat["commit_interval_ms"]:
            ms = lat["commit_interval_ms"][mode]
            what = "25 ms" if mode == "at-least-once" else f"{ms} ms commit interval + 25 ms"
            column.append(ax.axhline(goal_ms(mode, lat), color=colours[mode], ls=":", lw=1.6,
                                     label=f"goal at {at}: p99 ≤ {what}"))  # fmt: skip
        columns.append(column)
    height = max(len(c) for c in columns)
    handles = [h for c in columns for h in c + [plt.Line2D([], [], alpha=0, label=" ")] * (height - len(c))]
    for c in lat.get("goals", []):  # pass or miss beside each p99 the goals are set on
        ax.annotate("pass" if c["passed"] else "miss", (c["offered_rate"], c["p99_ms"]), textcoords="offset points",
                    xytext=(7, 4), fontsize=8, fontweight="bold", color=colours[c["mode"]],
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})  # fmt: skip
    rates = sorted({p["offered_rate"] for points in lat["modes"].values() for p in points})
    ys = [p[k] for points in lat["modes"].values() for p in points for k in ("p50_ms", "p99_ms") if p[k] == p[k]]
    ys += [goal_ms(m, lat) for m in lat["commit_interval_ms"]]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(rates[0] / 1.3, rates[-1] * 1.3)
    ax.set_ylim(min(ys) / 1.5, max(ys) * 1.5)
    ax.xaxis.set_major_locator(FixedLocator(rates))
    ax.xaxis.set_minor_locator(NullLocator())
    labels = []
    for i, r in enumerate(rates):  # rate and share of capacity; a label close to the one before it goes lower
        share = r / capacity
        label = f"{r:,.0f}\n{share:.0%}" if share >= 0.095 else f"{r:,.0f}\n{share:.1%}"
        close = i > 0 and r / rates[i - 1] < 1.6 and not labels[-1].startswith("\n")
        labels.append("\n\n" + label if close else label)
    ax.set_xticklabels(labels, fontsize=8)
    ticks = [
        t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if min(ys) / 1.5 <= t <= max(ys) * 1.5
    ]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_yticklabels([f"{t:g}" for t in ticks], fontsize=8)
    ax.set_xlabel(f"offered rate, events/s, and its share of the at-least-once capacity ({capacity:,.0f} events/s)")
    ax.set_ylabel("latency, ms")
    ax.set_title(f"Event append to alert readable downstream (floor: append to a bare consumer's poll)\n"
                 f"each point {lat['warmup_s']:.0f} s warm-up, then {lat['measured_s']:.0f} s measured, about "
                 f"{lat['alert_rate']:.0f} alerts/s; both axes log", fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(columns), frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


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


def rate_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--events", type=int, default=284_807, help="events in the throughput topic (min 200,000 for the report)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="rounds of ceilings and workers (medians reported)")
    ap.add_argument(
        "--guarantees",
        default="at-least-once,exactly-once",
        help="the worker's processing guarantees to measure, comma-separated (at-least-once first)",
    )
    ap.add_argument("--naive-sample", type=int, default=300, help="events for the naive baseline")
    ap.add_argument(
        "--latency-seconds", type=float, default=8.0, help="measured part of each latency point (after its warm-up)"
    )
    ap.add_argument(
        "--latency-warmup",
        type=float,
        default=2.0,
        help="seconds at the start of each latency point left out of its percentiles",
    )
    ap.add_argument(
        "--latency-rates",
        default="1000,5000",
        help="fixed offered rates of the latency table, events/s (the goals are set at 1000 and 5000)",
    )
    ap.add_argument(
        "--latency-loads",
        default="0.1,0.25,0.5",
        help="further offered rates as fractions of the measured at-least-once throughput",
    )
    ap.add_argument(
        "--alert-rate",
        type=float,
        default=100.0,
        help="alerting events offered per second at every latency point (one in rate/this)",
    )
    ap.add_argument(
        "--scoring-repeats",
        type=int,
        default=41,
        help="alternating repetitions of the scoring-cost step (identity vs transforms)",
    )
    ap.add_argument("--scoring-batches", type=int, default=100, help="500-row batches per scoring repetition")
    ap.add_argument(
        "--only-scoring",
        action="store_true",
        help="run only the scoring-cost step (no broker, no training; writes --out only if given)",
    )
    ap.add_argument("--only-latency", type=float, default=None, metavar="CAPACITY",
                    help="run only the latency table, taking CAPACITY events/s as the at-least-once throughput "
                    "(writes --out and --plot only if given)")  # fmt: skip
    ap.add_argument("--only-backtest", action="store_true",
                    help="run only the backtest step (no broker, no training; writes --out only if given)")  # fmt: skip
    ap.add_argument("--only-shadow", action="store_true",
                    help="run only the shadow challenger's cost: the worker with and without one, alternating "
                    "(a broker and a trained model; writes --out only if given)")  # fmt: skip
    ap.add_argument("--shadow-repeats", type=int, default=5, help="alternating rounds of the shadow cost step")
    ap.add_argument("--backtest-events", type=int, default=200_000, help="ULB events in the backtest's file")
    ap.add_argument("--backtest-repeats", type=int, default=3, help="alternating backtest / json.loads runs")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results.json for the full run)")
    ap.add_argument("--plot", default=None, help="latency plot (default docs/img/latency.png for the full run)")
    args = ap.parse_args()
    started = time.monotonic()
    if args.only_scoring:
        _, raw = load_events(args.scoring_batches * BATCH)
        manifest, blob = fixed_weights_model(raw.shape[1])
        log(f"scoring cost: {args.scoring_repeats} alternating repetitions of {args.scoring_batches} batches")
        sc = scoring_cost(raw, manifest, blob, args.scoring_repeats, args.scoring_batches)
        import importlib.metadata as md

        sc["environment"] = {"cores": os.cpu_count(), "cpu": cpu_name(), "python": platform.python_version(),
                             "numpy": md.version("numpy"), "ai-edge-litert": md.version("ai-edge-litert")}  # fmt: skip
        if args.out:
            Path(args.out).write_text(json.dumps(sc, indent=2) + "\n")
        print_scoring(sc)
        return 0
    if args.only_backtest:
        models = tempfile.mkdtemp(prefix="fraud-bench-models-")
        try:
            _, raw = load_events(args.backtest_events)
            backtest_model(models, raw)
            log(f"backtest against json.loads: {args.backtest_repeats} alternating runs over "
                f"{args.backtest_events:,} events")  # fmt: skip
            bt = backtest_speed(models, args.backtest_events, args.backtest_repeats)
        finally:
            shutil.rmtree(models, ignore_errors=True)
        if args.out:
            Path(args.out).write_text(json.dumps(bt, indent=2) + "\n")
        print_backtest(bt)
        return 0
    guarantees = [g.strip() for g in args.guarantees.split(",") if g.strip()]
    if guarantees[:1] != ["at-least-once"] or not set(guarantees) <= {"at-least-once", "exactly-once"}:
        ap.error("--guarantees: at-least-once first (its throughput sets the latency rates), then exactly-once")
    if args.only_latency is None and not args.only_shadow:
        args.out = args.out or str(REPO / "benchmarks/results.json")
        args.plot = args.plot or str(REPO / "docs/img/latency.png")
    broker = None
    scratch: list[str] = []  # temporary directories, removed at the end
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = LocalKafka(prefix="fraud-bench-kafka-")
        bootstrap = broker.start()
    log(f"broker at {bootstrap}")
    try:
        models = tempfile.mkdtemp(prefix="fraud-bench-models-")
        scratch.append(models)
        log("training the model on the ULB data (fraud-train)")
        subprocess.run([sys.executable, "-m", "training", "--data", str(ULB), "--models-dir", models, "-q"],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)  # fmt: skip
        version = (Path(models) / "CURRENT").read_text().strip()
        manifest = json.loads((Path(models) / version / "manifest.json").read_text())

        values, raw = load_events(args.events)
        pools = tempfile.mkdtemp(prefix="fraud-bench-pools-")
        scratch.append(pools)
        pool_info = alert_pools(models, values, raw, pools)
        results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model_version": version}
        if args.only_shadow:
            sh = shadow_cost(bootstrap, models, values, args.shadow_repeats)
            if args.out:
                Path(args.out).write_text(json.dumps(sh, indent=2) + "\n")
            print_shadow(sh)
            return 0
        if args.only_latency is None:
            results.update(throughput(bootstrap, models, manifest, version, values, raw, guarantees, args))
            capacity = results["worker_events_per_s"]["median"]
        else:
            capacity = args.only_latency
        rates = sorted({*rate_list(args.latency_rates), *(round(f * capacity) for f in rate_list(args.latency_loads))})
        log(
            f"latency against load: {', '.join(f'{r:,.0f}' for r in rates)} events/s (at-least-once capacity "
            f"{capacity:,.0f}/s), {args.latency_warmup:.0f} s warm-up + {args.latency_seconds:.0f} s per point"
        )
        lat = latency_table(bootstrap, models, pools, [FLOOR, *guarantees], rates, args.latency_seconds,
                            args.latency_warmup, args.alert_rate)  # fmt: skip
        lat["capacity_events_per_s"] = capacity
        lat["pools"] = pool_info
        for points in lat["modes"].values():
            for p in points:
                p["of_capacity"] = p["offered_rate"] / capacity
        lat["goals"] = goal_checks(lat)
        results["latency_vs_load"] = lat
        if args.plot:
            plot_latency(lat, capacity, args.plot)
            log(f"wrote {args.plot}")
        if args.only_latency is None:
            log(f"scoring cost per batch, identity vs transforms: {args.scoring_repeats} alternating repetitions")
            blob = (Path(models) / version / "model.tflite").read_bytes()
            results["scoring_per_batch"] = scoring_cost(raw, manifest, blob, args.scoring_repeats, args.scoring_batches)
            log(f"backtest against json.loads: {args.backtest_repeats} alternating runs")
            results["backtest"] = backtest_speed(models, args.backtest_events, args.backtest_repeats)
            results["shadow"] = shadow_cost(bootstrap, models, values, args.shadow_repeats)
        results["environment"] = versions(bootstrap)
        results["bench_seconds"] = round(time.monotonic() - started, 1)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        if args.only_latency is None:
            print_table(results)
        print_latency(lat)
        if "backtest" in results:
            print_backtest(results["backtest"])
        if "shadow" in results:
            print_shadow(results["shadow"])
        return 0
    finally:
        if broker is not None:
            broker.close()
        for d in scratch:  # the trained bundle and the generator's pools (about 36 MB)
            shutil.rmtree(d, ignore_errors=True)


def throughput(bootstrap: str, models: str, manifest: dict, version: str, values: list[bytes], raw: np.ndarray,
               guarantees: list[str], args) -> dict:  # fmt: skip
    """The ceilings and the worker under each guarantee over one backlog, alternating; the naive baseline."""
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-in-{tag}", "alerts": f"bench-alerts-{tag}", "dlq": f"bench-dlq-{tag}"}
    create_topics(bootstrap, {topics["input"]: (6, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {})})
    secs = produce_all(bootstrap, topics["input"], values)
    log(f"produced {len(values):,} events to {topics['input']} (6 partitions) in {secs:.1f}s")

    from worker.core.decode import Decoder

    decode_only = Decoder(manifest["feature_names"]).decode_batch
    ceilings, readers, decodes = [], [], []
    runs: dict[str, list[dict]] = {g: [] for g in guarantees}
    for i in range(args.repeats):
        ceilings.append(ceiling(bootstrap, topics["input"], len(values)))
        readers.append(ceiling(bootstrap, topics["input"], len(values), reader=True))
        decodes.append(ceiling(bootstrap, topics["input"], len(values), reader=True, decode=decode_only))
        for g in guarantees if i % 2 == 0 else reversed(guarantees):  # which goes first alternates
            runs[g].append(worker_run(bootstrap, models, topics, len(values), g))
        log(f"round {i + 1}/{args.repeats}: ceiling {ceilings[-1]:,.0f}/s, with the worker's reader "
            f"{readers[-1]:,.0f}/s, consumer+decode {decodes[-1]:,.0f}/s, "
            + ", ".join(f"worker {g} {runs[g][-1]['rate']:,.0f}/s" for g in guarantees)
            + f" (at-least-once / ceiling {runs['at-least-once'][-1]['rate'] / ceilings[-1]:.3f})")  # fmt: skip
    by_g = {g: [r["rate"] for r in rs] for g, rs in runs.items()}
    workers = by_g["at-least-once"]
    ceiling_med, worker_med = statistics.median(ceilings), statistics.median(workers)
    ratios = [w / c for w, c in zip(workers, ceilings, strict=True)]

    log(f"naive baseline on {args.naive_sample} events")
    naive_rate = naive_process(bootstrap, topics["input"], topics["alerts"], models, version, args.naive_sample)
    out = {
        "events": len(values),
        "partitions": 6,
        "max_poll_records": BATCH,
        "ceiling_events_per_s": {"median": ceiling_med, "runs": ceilings},
        "worker_events_per_s": {"median": worker_med, "runs": workers},
        "worker_by_guarantee": {
            g: {
                "events_per_s": {"median": statistics.median(by_g[g]), "runs": by_g[g]},
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "start_to_ready_s": statistics.median(r["start_to_ready_s"] for r in rs),
            }
            for g, rs in runs.items()
        },  # fmt: skip
        "ceiling_with_worker_reader_events_per_s": {"median": statistics.median(readers), "runs": readers},
        "worker_over_ceiling_with_worker_reader": statistics.median(
            [w / c for w, c in zip(workers, readers, strict=True)]
        ),
        "consumer_decode_only_events_per_s": {"median": statistics.median(decodes), "runs": decodes},
        "decode_only_over_ceiling": statistics.median([d / c for d, c in zip(decodes, ceilings, strict=True)]),
        "worker_over_ceiling": {
            "median": statistics.median(ratios),
            "of_medians": worker_med / ceiling_med,
            "runs": ratios,
        },  # fmt: skip
        "naive_events_per_s": naive_rate,
        "worker_over_naive": worker_med / naive_rate,
        "worker_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["at-least-once"]),
        "worker_start_to_ready_s": statistics.median(r["start_to_ready_s"] for r in runs["at-least-once"]),
    }
    if "exactly-once" in by_g:
        txs = [r["transactions"] for r in runs["exactly-once"]]
        out["worker_by_guarantee"]["exactly-once"]["transactions"] = {
            "per_s": statistics.median(t["per_s"] for t in txs),
            "events_per_transaction": statistics.median(t["events_per_transaction"] or 0 for t in txs),
            "mean_commit_ms": statistics.median(t["mean_commit_ms"] or 0 for t in txs),
            "aborted": sum(t["aborted"] for t in txs),
            "runs": txs,
        }
        eos = by_g["exactly-once"]
        pairs = [e / a for e, a in zip(eos, workers, strict=True)]
        out["exactly_once_over_at_least_once"] = {
            "median_of_pairs": statistics.median(pairs),
            "of_medians": statistics.median(eos) / worker_med,
            "runs": pairs,
        }
    return out


def print_table(r: dict) -> None:
    env = r["environment"]
    byg = r["worker_by_guarantee"]
    rows = [
        ("events in topic / partitions", f"{r['events']:,} / {r['partitions']}"),
        ("ceiling: bare consumer (median)", f"{r['ceiling_events_per_s']['median']:,.0f} events/s"),
        ("worker end to end, at-least-once (median)", f"{r['worker_events_per_s']['median']:,.0f} events/s"),
        ("worker / ceiling (median of pairs)", f"{r['worker_over_ceiling']['median']:.3f}"),
        *(
            [
                (
                    "worker end to end, exactly-once (median)",
                    f"{byg['exactly-once']['events_per_s']['median']:,.0f} events/s "
                    f"(runs {', '.join(f'{x:,.0f}' for x in byg['exactly-once']['events_per_s']['runs'])})",
                ),
                (
                    "exactly-once / at-least-once (median of pairs; of medians)",
                    f"{eo['median_of_pairs']:.3f}; {eo['of_medians']:.3f}",
                ),
                (
                    "  exactly-once transactions (medians of the runs, from start)",
                    "{per_s:.1f}/s, {events_per_transaction:,.0f} events each, commit {mean_commit_ms:.1f} ms "
                    "on average, {aborted:.0f} aborted".format(**byg["exactly-once"]["transactions"]),
                ),
            ]
            if (eo := r.get("exactly_once_over_at_least_once"))
            else [("worker end to end, exactly-once", "not run (--guarantees)")]
        ),
        (
            "ceiling with the worker's record reader (median)",
            f"{r['ceiling_with_worker_reader_events_per_s']['median']:,.0f} events/s",
        ),
        ("worker / that (median of pairs)", f"{r['worker_over_ceiling_with_worker_reader']:.3f}"),
        ("consumer + reader + JSON decode on one thread / ceiling", f"{r['decode_only_over_ceiling']:.3f}"),
        ("naive per-event Keras predict", f"{r['naive_events_per_s']:,.1f} events/s"),
        ("worker / naive", f"{r['worker_over_naive']:,.0f}x"),
        ("worker peak RSS (with its decoder process)", f"{r['worker_peak_rss_mb']:.1f} MB"),
        ("worker start to ready (model + metrics)", f"{r['worker_start_to_ready_s']:.2f} s"),
        *(
            [
                (
                    f"scoring per {sc['batch_rows']}-row batch, all identity / with transforms (median)",
                    f"{sc['identity_us_per_batch']['median']:.1f} / {sc['transforms_us_per_batch']['median']:.1f} µs",
                ),
                ("  with transforms / all identity (ratio of medians)", f"{sc['ratio_of_medians']:.3f}"),
            ]
            if (sc := r.get("scoring_per_batch"))
            else []
        ),
        ("machine", f"{env['cores']} cores, {env['cpu']}"),
        (
            "versions",
            f"Python {env['python']}, kafka-python {env['kafka-python']} (crc32c {env['crc32c']}), "
            f"LiteRT {env['ai-edge-litert']}, {env['kafka_broker']}",
        ),  # fmt: skip
        ("run", f"{r['date']}, {r['bench_seconds']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print("-" * (width + 40))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 40))


def print_latency(lat: dict) -> None:
    """The latency-versus-load table, then each goal's pass or fail with the floor's p99 beside it."""
    modes = list(lat["modes"])
    eos_ms = lat["commit_interval_ms"].get("exactly-once")
    print(f"latency against offered load: event append -> alert returned by a reader's poll() (read_committed "
          f"for exactly-once); floor: a bare consumer, append -> poll(); per point {lat['warmup_s']:.0f} s "
          f"warm-up, then {lat['measured_s']:.0f} s measured, about {lat['alert_rate']:.0f} alerts/s; "
          f"at-least-once capacity {lat['capacity_events_per_s']:,.0f} events/s"
          + (f"; exactly-once commit interval {eos_ms} ms" if eos_ms else ""))  # fmt: skip
    head = f"{'offered/s':>9} {'of cap.':>7}"
    for m in modes:
        head += f" | {m + ' p50 / p99 / max ms (n)':>38}"
    print(head)
    print("-" * len(head))
    for i, p0 in enumerate(lat["modes"][modes[0]]):
        line = f"{p0['offered_rate']:>9,.0f} {p0['offered_rate'] / lat['capacity_events_per_s']:>7.1%}"
        for m in modes:
            p = lat["modes"][m][i]
            cell = f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f} / {p['max_ms']:.0f} ({p['samples']:,})"
            if p["records_read"] < p["records_expected"]:
                cell += f" [{p['records_read']:,}/{p['records_expected']:,} read]"
            line += f" | {cell:>38}"
        print(line)
    for m in modes:
        reached = ", ".join(f"{p['achieved_rate']:,.0f}" for p in lat["modes"][m])
        print(f"rates the generator reached for {m}: {reached}")
    print("n = samples: alerts, or records for the floor")
    for p in lat["modes"].get("exactly-once", []):
        if t := p.get("transactions"):
            print(f"exactly-once at {p['offered_rate']:,.0f}/s: {t['per_s']:.1f} transactions/s, commit "
                  f"{t['mean_commit_ms'] or 0:.1f} ms on average, {t['aborted']:.0f} aborted")  # fmt: skip
    for g in lat["goals"]:
        floor = f"{g['floor_p99_ms']:.1f} ms" if g["floor_p99_ms"] is not None else "not run"
        verdict = "PASS" if g["passed"] else "FAIL"
        print(f"goal {g['mode']:<13} at {g['offered_rate']:>5,.0f}/s: p99 {g['p99_ms']:6.1f} ms <= "
              f"{g['goal_ms']:.0f} ms  {verdict}   (floor p99 at that rate {floor})")  # fmt: skip
    for m in ("at-least-once", "exactly-once"):
        if m not in lat["modes"]:
            print(f"goal {m:<13}: not run (--guarantees)")


if __name__ == "__main__":
    sys.exit(main())
