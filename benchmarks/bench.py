"""``make bench``: the worker against its ceiling and a naive baseline, side by side in one run.

On one topic of ULB-derived events (6 partitions) on the real local Apache Kafka broker:

1. ceiling: a bare kafka-python consumer in a group, same fetch settings and max_poll_records as
   the worker, touching only the value bytes (no decoding, no per-batch commit); and the same
   consumer reading records with the worker's record reader (worker/records.py), as a second
   reference;
2. the worker end to end (decode, validate, scale, score, alerts, commit) as a real process;
   (1) and (2) alternate several times and the medians are reported, with their ratios;
3. the naive baseline from the usual tutorials: json.loads, then Keras ``model.predict`` per
   event, then an alert per event, with auto-commit: events/s on a small sample;
4. latency at 50 % of the worker's measured throughput, offered by a separate generator process
   (librdkafka, so that it takes little of the two cores), after a 2 s warm-up: from the event's
   append to the input topic to the alert's append to the alert topic (both LogAppendTime, the
   broker's clock), p50 / p99 / max; and, as the floor, a bare kafka-python consumer's
   append-to-poll latency at the same rate;
5. the worker's peak resident memory (with its decoder process) and its time from process
   start to ready;
6. the scoring cost per 500-row batch (``Scorer.scale`` + ``score_scaled``, no broker) for the
   trained model's weights with every feature identity and with transforms (signed_log1p on
   V1..V28, log1p on Amount clipped to [0, its 99.5 % quantile]), alternating; ``--only-scoring``
   runs this step alone, on a model exported with fixed weights (no broker, no training);
7. hardware and versions.

Prints a table and writes benchmarks/results.json. Uses KAFKA_BOOTSTRAP_SERVERS if set, else
starts its own broker with scripts/local-kafka on free ports and stops it at the end.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import re
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
    """The worker's own consumer settings that shape fetching (worker.clients.client_configs)."""
    from worker.clients import client_configs
    from worker.config import WorkerConfig

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

    from worker.bundle import Bundle, Manifest
    from worker.scoring import Scorer
    from worker.transforms import FeatureTransform

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
        for name in (list(scorers) if r % 2 == 0 else list(reversed(scorers))):
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
    from worker.bundle import Manifest, sha256_hex

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
    if producer.flush(60):
        raise RuntimeError(f"records for {topic} not delivered within 60 s")
    return time.monotonic() - start


GENERATOR_NICE = 10  # the load generator's scheduling priority (see offer)


def offer(bootstrap: str, topic: str, n: int, rate: float) -> subprocess.Popen:
    """Produce ``n`` ULB events to ``topic`` at ``rate``/s from a separate process.

    The ULB rows are offered in order, from the first again once they run out, so the run lasts
    as long as asked at any rate. Lingering 1 ms, as an upstream producer would, so records arrive
    in small, frequent batches. The generator stands for producers on other machines: it runs at
    a lower priority (nice 10), so that on two shared cores it waits for the broker and the
    process measured rather than they for it; the rate it reached is reported. Prints when it
    started producing (epoch ms) and the seconds it took.
    """
    code = (f"import os, sys, time; os.nice({GENERATOR_NICE}); "
            f"sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import bench; "
            f"v, _ = bench.load_events({n}); v = (v * -(-{n} // len(v)))[:{n}]; t = time.time() * 1000; "
            f"print(t, bench.produce_all({bootstrap!r}, {topic!r}, v, {rate}, 1))")  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


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
    def __init__(self, bootstrap: str, models: str, topics: dict, group: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [sys.executable, "-m", "worker", "--bootstrap-servers", bootstrap, "--models-dir", models,
                "--input-topic", topics["input"], "--alert-topic", topics["alerts"], "--dlq-topic", topics["dlq"],
                "--group-id", group, "--metrics-port", str(self.port), "--max-batch-size", str(BATCH),
                "--log-level", "WARNING"]  # fmt: skip
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

    def consumed(self) -> float:
        text = self.get("/metrics") or ""
        m = re.search(r"^fraud_events_consumed_total (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

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


def worker_run(bootstrap: str, models: str, topics: dict, n: int) -> dict:
    """events/s of the worker from its first committed record to the last.

    Progress is read from the group's committed offsets on the broker every 50 ms (the input
    topic starts at offset 0), not from the worker's /metrics: a scrape takes the worker's GIL
    for a few milliseconds, which would slow what is being measured.
    """
    from kafka.admin import KafkaAdminClient

    group = f"worker-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    w = Worker(bootstrap, models, topics, group)
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
    w.stop()
    admin.close()
    return {"rate": rate, "start_to_ready_s": up, "peak_rss_mb": peak}


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


def latency(bootstrap: str, models: str, rate: float, seconds: float, warmup: float = 2.0) -> dict:
    """Append-to-append latency of the alerts at ``rate``, and a bare consumer's at the same rate.

    The input topic stamps each record with its broker append time (LogAppendTime) and the events
    carry no event_time, so the worker takes that timestamp as the event's; the alert topic stamps
    the alert's append time. Both ends are read off the broker's clock. The floor is a bare
    kafka-python consumer with the worker's fetch settings, from append to poll() returning the
    record, on a second topic fed the same way: what any kafka-python worker starts from.

    The first ``warmup`` seconds of each stream are left out of the percentiles (and reported
    apart): a new topic's first second of appends on this broker comes in bursts, and the bare
    consumer's latency then reaches hundreds of ms too. ``seconds`` is the measured part.
    """
    import gc

    from kafka import KafkaConsumer

    gc.collect()
    gc.freeze()  # this process holds the throughput topic's events: keep the collector off them
    tag = uuid.uuid4().hex[:8]
    stamped = {"message.timestamp.type": "LogAppendTime"}
    topics = {"input": f"lat-in-{tag}", "alerts": f"lat-alerts-{tag}", "dlq": f"lat-dlq-{tag}"}
    create_topics(bootstrap, {topics["input"]: (6, stamped), topics["alerts"]: (1, stamped), topics["dlq"]: (1, {}),
                              f"lat-floor-{tag}": (6, stamped)})  # fmt: skip
    n = int(rate * (warmup + seconds))
    w = Worker(bootstrap, models, topics, f"lat-{tag}")
    w.wait_up()
    while (w.get("/readyz") or "").find('"ready"') < 0:
        time.sleep(0.05)
    gen = offer(bootstrap, topics["input"], n, rate)
    # The broker's LogAppendTime is this machine's clock too.
    started_ms, produce_s = (float(x) for x in gen.communicate()[0].split())
    while w.consumed() < n:
        time.sleep(0.1)
    w.stop()
    consumer = KafkaConsumer(topics["alerts"], bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)  # fmt: skip
    pairs = np.asarray([(json.loads(r.value)["event_time"], r.timestamp) for r in consumer], dtype=np.float64)
    consumer.close()
    lat = pairs[:, 1] - pairs[:, 0]
    lat_steady = lat[pairs[:, 0] >= started_ms + warmup * 1000]

    floor = KafkaConsumer(f"lat-floor-{tag}", bootstrap_servers=bootstrap, group_id=f"floor-{tag}",
                          enable_auto_commit=False, auto_offset_reset="earliest", **fetch_settings())  # fmt: skip
    while not floor.assignment():
        floor.poll(timeout_ms=200)
    gen = offer(bootstrap, f"lat-floor-{tag}", n, rate)
    seen, bare = 0, []
    while seen < n:
        for records in floor.poll(timeout_ms=500).values():
            now = time.time() * 1000
            bare += [(r.timestamp, now - r.timestamp) for r in records]
            seen += len(records)
    floor_started_ms = float(gen.communicate()[0].split()[0])
    floor.close(autocommit=False)
    bare_arr = np.asarray(bare, dtype=np.float64)
    bare_steady = bare_arr[bare_arr[:, 0] >= floor_started_ms + warmup * 1000, 1]

    def pct(a: np.ndarray) -> dict:
        return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}

    return {"offered_rate": rate, "achieved_rate": n / produce_s, "events": n, "warmup_s": warmup,
            "measured_s": n / rate - warmup, "alerts": int(lat_steady.size), **pct(lat_steady),
            "bare_consumer": pct(bare_steady),
            "with_warmup": {"alerts": int(lat.size), **pct(lat), "bare_consumer": pct(bare_arr[:, 1])}}  # fmt: skip


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
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else f"external at {bootstrap}",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--events", type=int, default=284_807, help="events in the throughput topic (min 200,000 for the report)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="ceiling/worker pairs (medians reported)")
    ap.add_argument("--naive-sample", type=int, default=300, help="events for the naive baseline")
    ap.add_argument("--latency-seconds", type=float, default=20.0,
                    help="measured part of the latency run")
    ap.add_argument("--latency-warmup", type=float, default=2.0,
                    help="seconds at the start of the latency run left out of its percentiles")
    ap.add_argument("--scoring-repeats", type=int, default=41,
                    help="alternating repetitions of the scoring-cost step (identity vs transforms)")
    ap.add_argument("--scoring-batches", type=int, default=100, help="500-row batches per scoring repetition")
    ap.add_argument("--only-scoring", action="store_true",
                    help="run only the scoring-cost step (no broker, no training; writes --out only if given)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results.json for the full run)")
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
    args.out = args.out or str(REPO / "benchmarks/results.json")
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = LocalKafka(prefix="fraud-bench-kafka-")
        bootstrap = broker.start()
    log(f"broker at {bootstrap}")
    try:
        models = tempfile.mkdtemp(prefix="fraud-bench-models-")
        log("training the model on the ULB data (fraud-train)")
        subprocess.run([sys.executable, "-m", "training", "--data", str(ULB), "--models-dir", models, "-q"],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)  # fmt: skip
        version = (Path(models) / "CURRENT").read_text().strip()
        manifest = json.loads((Path(models) / version / "manifest.json").read_text())

        values, raw = load_events(args.events)
        tag = uuid.uuid4().hex[:8]
        topics = {"input": f"bench-in-{tag}", "alerts": f"bench-alerts-{tag}", "dlq": f"bench-dlq-{tag}"}
        create_topics(bootstrap, {topics["input"]: (6, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {})})
        secs = produce_all(bootstrap, topics["input"], values)
        log(f"produced {len(values):,} events to {topics['input']} (6 partitions) in {secs:.1f}s")

        from worker.decode import Decoder

        decode_only = Decoder(manifest["feature_names"]).decode_batch
        ceilings, readers, decodes, workers, ups, peaks = [], [], [], [], [], []
        for i in range(args.repeats):
            ceilings.append(ceiling(bootstrap, topics["input"], len(values)))
            readers.append(ceiling(bootstrap, topics["input"], len(values), reader=True))
            decodes.append(ceiling(bootstrap, topics["input"], len(values), reader=True, decode=decode_only))
            r = worker_run(bootstrap, models, topics, len(values))
            workers.append(r["rate"])
            ups.append(r["start_to_ready_s"])
            peaks.append(r["peak_rss_mb"])
            log(f"round {i + 1}/{args.repeats}: ceiling {ceilings[-1]:,.0f}/s, with the worker's reader "
                f"{readers[-1]:,.0f}/s, consumer+decode {decodes[-1]:,.0f}/s, worker {workers[-1]:,.0f}/s "
                f"(ratio {workers[-1] / ceilings[-1]:.3f})")  # fmt: skip
        ceiling_med, worker_med = statistics.median(ceilings), statistics.median(workers)
        ratios = [w / c for w, c in zip(workers, ceilings, strict=True)]

        log(f"naive baseline on {args.naive_sample} events")
        naive_rate = naive_process(bootstrap, topics["input"], topics["alerts"], models, version, args.naive_sample)

        log(f"latency at 50% of {worker_med:,.0f}/s for {args.latency_seconds:.0f}s")
        lat = latency(bootstrap, models, worker_med * 0.5, args.latency_seconds, args.latency_warmup)

        log(f"scoring cost per batch, identity vs transforms: {args.scoring_repeats} alternating repetitions")
        blob = (Path(models) / version / "model.tflite").read_bytes()
        scoring = scoring_cost(raw, manifest, blob, args.scoring_repeats, args.scoring_batches)

        results = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "events": len(values),
            "partitions": 6,
            "max_poll_records": BATCH,
            "model_version": version,
            "ceiling_events_per_s": {"median": ceiling_med, "runs": ceilings},
            "worker_events_per_s": {"median": worker_med, "runs": workers},
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
            },
            "naive_events_per_s": naive_rate,
            "worker_over_naive": worker_med / naive_rate,
            "latency_at_half_load": lat,
            "worker_peak_rss_mb": max(peaks),
            "worker_start_to_ready_s": statistics.median(ups),
            "scoring_per_batch": scoring,
            "environment": versions(bootstrap),
            "bench_seconds": round(time.monotonic() - started, 1),
        }
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print_table(results)
        return 0
    finally:
        if broker is not None:
            broker.close()


def print_table(r: dict) -> None:
    lat = r["latency_at_half_load"]
    env = r["environment"]
    rows = [
        ("events in topic / partitions", f"{r['events']:,} / {r['partitions']}"),
        ("ceiling: bare consumer (median)", f"{r['ceiling_events_per_s']['median']:,.0f} events/s"),
        ("worker end to end (median)", f"{r['worker_events_per_s']['median']:,.0f} events/s"),
        ("worker / ceiling (median of pairs)", f"{r['worker_over_ceiling']['median']:.3f}"),
        (
            "ceiling with the worker's record reader (median)",
            f"{r['ceiling_with_worker_reader_events_per_s']['median']:,.0f} events/s",
        ),
        ("worker / that (median of pairs)", f"{r['worker_over_ceiling_with_worker_reader']:.3f}"),
        ("consumer + reader + JSON decode on one thread / ceiling", f"{r['decode_only_over_ceiling']:.3f}"),
        ("naive per-event Keras predict", f"{r['naive_events_per_s']:,.1f} events/s"),
        ("worker / naive", f"{r['worker_over_naive']:,.0f}x"),
        (
            f"latency at {lat['offered_rate']:,.0f}/s (50%; {lat['achieved_rate']:,.0f}/s reached), "
            f"{lat['measured_s']:.0f} s after {lat['warmup_s']:.0f} s: p50",
            f"{lat['p50_ms']:.1f} ms",
        ),
        ("  p99", f"{lat['p99_ms']:.1f} ms"),
        ("  max", f"{lat['max_ms']:.1f} ms  ({lat['alerts']} alerts, append to append)"),
        (
            "  floor: bare consumer p50 / p99 / max",
            "{p50_ms:.1f} / {p99_ms:.1f} / {max_ms:.1f} ms".format(**lat["bare_consumer"]),
        ),
        (
            f"  the same with the first {lat['warmup_s']:.0f} s: p50 / p99 / max",
            "{p50_ms:.1f} / {p99_ms:.1f} / {max_ms:.1f} ms (floor p99 {floor:.1f})".format(
                **lat["with_warmup"], floor=lat["with_warmup"]["bare_consumer"]["p99_ms"]
            ),
        ),
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
        ("versions", f"Python {env['python']}, kafka-python {env['kafka-python']} (crc32c {env['crc32c']}), "
                     f"LiteRT {env['ai-edge-litert']}, {env['kafka_broker']}"),  # fmt: skip
        ("run", f"{r['date']}, {r['bench_seconds']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print("-" * (width + 40))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 40))


if __name__ == "__main__":
    sys.exit(main())
