"""Render the worker's metrics over a scripted run, as Prometheus recorded them: docs/img/metrics_run.png.

    .venv/bin/python benchmarks/metrics_run.py [--out docs/img/metrics_run.png] [--models-dir DIR]

What it does: a Kafka broker (``KAFKA_BOOTSTRAP_SERVERS``, else ``scripts/local-kafka`` started by
``scripts/local_kafka.py``, the launcher the tests use too), a model trained on synthetic data
(``fraud-train --synthetic``, unless ``--models-dir`` names one), one worker, and a real Prometheus
(the Debian package ``prometheus``, installed if missing) scraping it every second with the shipped
rules. A producer plays four phases:

  1. steady traffic at 400 events/s, with 1 % malformed records;
  2. a burst of 30,000 events as fast as possible: lag rises and drains;
  3. steady again;
  4. drifted input: every V14 shifted by -2 (an upstream change), so scores rise and PSI > 0.2.

Then it queries Prometheus' range API and plots throughput, lag, latency, alert ratio, the score
distribution over time and the PSI. Needs the ``training`` extra (matplotlib, TensorFlow for the
model). About three minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: the repository root for imports, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.harness import DEPLOY, REPO, PrometheusServer, Worker, broker  # noqa: E402
from worker.core.bundle import read_current, read_manifest  # noqa: E402
from worker.offline.synthetic import generate  # noqa: E402

PHASES = (
    ("steady", 45, 400.0, 0.0),
    ("burst", None, None, 0.0),
    ("steady", 30, 400.0, 0.0),
    ("drift", 45, 400.0, -2.0),
)
BURST = 30_000


def events(features: list[str], n: int, seed: int, v14_shift: float, bad_share: float) -> list[tuple[bytes, bytes]]:
    cols = generate(n, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    rows = np.column_stack([cols[f] for f in features]).tolist()
    v14 = features.index("V14")
    for i, (row, account) in enumerate(zip(rows, cols["account_id"].tolist(), strict=True)):
        if rng.random() < bad_share:
            out.append((str(account).encode(), b'{"transaction_id": "broken", "V1": "n/a"'))
            continue
        row[v14] += v14_shift
        doc = {"transaction_id": f"s{seed}-{i}", **dict(zip(features, row, strict=True))}
        out.append((str(account).encode(), json.dumps(doc).encode()))
    return out


def play(producer, topic: str, features: list[str], marks: list[tuple[str, float]]) -> None:
    for seed, (name, seconds, rate, shift) in enumerate(PHASES, start=100):
        marks.append((name, time.time()))
        if rate is None:
            for key, value in events(features, BURST, seed, shift, 0.01):
                producer.send(topic, key=key, value=value)
            producer.flush(timeout=120)
            continue
        batch = events(features, int(seconds * rate), seed, shift, 0.01)
        start = time.monotonic()
        for i, (key, value) in enumerate(batch, start=1):
            producer.send(topic, key=key, value=value)
            if i % 50 == 0:
                ahead = i / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush(timeout=60)
    marks.append(("end", time.time()))


def series(prom: PrometheusServer, expr: str, start: float, end: float) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    data = prom.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
    out = []
    for s in data["result"]:
        t = np.array([float(v[0]) for v in s["values"]]) - start
        y = np.array([float(v[1]) for v in s["values"]])
        out.append((s["metric"], t, y))
    return out


def plot(prom: PrometheusServer, start: float, end: float, marks: list[tuple[str, float]], out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(13, 10.5), constrained_layout=True)
    fig.suptitle("fraud-worker over a scripted run, as scraped by Prometheus (1 s scrapes)")

    def lines(ax, exprs, title, unit, log=False):
        for expr, label in exprs:
            for metric, t, y in series(prom, expr, start, end):
                ax.plot(t, y, label=label.format(**metric))
        ax.set_title(title)
        ax.set_ylabel(unit)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8, loc="upper left")

    lines(axes[0, 0], [("sum(rate(fraud_events_consumed_total[5s]))", "consumed"),
                       ("sum(rate(fraud_events_scored_total[5s]))", "scored"),
                       ("sum(rate(fraud_events_invalid_total[5s]))", "dead-lettered")],
          "Throughput", "events/s")  # fmt: skip
    lines(axes[0, 1], [("fraud_consumer_lag", "partition {partition}")], "Consumer lag (from end offsets)", "records")
    latency = [
        ("histogram_quantile(0.5, sum by (le) (rate(fraud_event_latency_seconds_bucket[10s])))", "event→alert p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(fraud_event_latency_seconds_bucket[10s])))", "event→alert p99"),
        ("histogram_quantile(0.99, sum by (le) (rate(fraud_scoring_seconds_bucket[10s])))", "scoring p99 (per batch)"),
    ]
    lines(axes[1, 0], latency, "Latency", "seconds", log=True)
    lines(axes[1, 1],
          [("sum(rate(fraud_alerts_total[15s])) / sum(rate(fraud_events_scored_total[15s]))", "alerts / scored")],
          "Alert ratio", "share")  # fmt: skip
    lines(axes[2, 1], [("fraud_score_psi", "PSI (last 5,000 scores)")], "Score drift vs training (PSI)", "PSI")
    axes[2, 1].axhline(0.2, color="red", linestyle="--", linewidth=1)
    axes[2, 1].text(1, 0.21, "alert: PSI > 0.2", color="red", fontsize=8)

    # Score distribution over time: per-bucket counts from the cumulative histogram, each column normalised.
    ax = axes[2, 0]
    buckets = series(prom, "sum by (le) (increase(fraud_score_bucket[10s]))", start, end)
    les = sorted((float(m["le"]), t, y) for m, t, y in buckets if m["le"] != "+Inf")
    n = min(len(t) for _, t, _ in les)
    cum = np.array([y[:n] for _, _, y in les])
    per = np.diff(np.vstack([np.zeros(n), cum]), axis=0)
    per = per / np.maximum(per.sum(axis=0, keepdims=True), 1e-9)
    t0 = les[0][1][:n]
    ax.imshow(np.log10(per + 1e-4), aspect="auto", origin="lower", cmap="viridis",
              extent=(t0[0], t0[-1], -0.5, len(les) - 0.5))  # fmt: skip
    ticks = list(range(0, len(les), 3))
    ax.set_yticks(ticks, [f"≤{les[i][0]:g}" for i in ticks], fontsize=7)
    ax.set_title("Score distribution (share per fraud_score bucket, log colour)")
    ax.set_ylabel("score bucket")

    for a in axes.flat:
        a.set_xlabel("seconds since start")
        for name, at in marks[:-1]:
            a.axvline(at - start, color="grey", linestyle=":", linewidth=0.8)
            a.text(at - start + 1, a.get_ylim()[1], name, fontsize=7, va="top", color="grey")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    psi = series(prom, "fraud_score_psi", start, end)
    lag = series(prom, "sum(fraud_consumer_lag)", start, end)
    return {
        "scored": float(prom.query("fraud_events_scored_total")[0]["value"][1]),
        "max_lag": float(max(y.max() for _, _, y in lag)) if lag else None,
        "psi_before_drift": float(psi[0][2][(psi[0][1] + start) < marks[3][1]][-1]) if psi else None,
        "psi_end": float(psi[0][2][-1]) if psi else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "metrics_run.png")
    p.add_argument("--models-dir", type=Path, help="a models directory with CURRENT (default: train one)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fraud-metrics-run-"))
    models = args.models_dir
    if models is None:
        models = work / "models"
        subprocess.run([sys.executable, "-m", "training", "--synthetic", "50000", "--models-dir", str(models)],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)  # fmt: skip
    features = list(read_manifest(models / read_current(models)).feature_names)

    with broker("fraud-metrics-kafka-") as bootstrap:
        run(bootstrap, models, features, work, args.out)
    return 0


def run(bootstrap: str, models: Path, features: list[str], work: Path, out: Path) -> None:
    """One worker and Prometheus scraping it while the phases play; then the plot and its summary."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    topics = {k: f"{k.split('_')[0]}-{int(time.time())}" for k in ("input_topic", "alert_topic", "dlq_topic")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, 3 if k == "input_topic" else 1, 1) for k, t in topics.items()])
    admin.close()
    names = {"input": topics["input_topic"], "alerts": topics["alert_topic"], "dlq": topics["dlq_topic"]}
    options = ["--scores-topic", "", "--poll-timeout-ms", "200", "--reload-interval-seconds", "0.2",
               "--drift-window", "5000"]  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    worker = Worker(bootstrap, models, names, f"metrics-run-{int(time.time())}", options,
                    keep_env=("FRAUD_FAST_PATHS",), log=work / "worker.log")  # fmt: skip
    prom = None
    try:
        prom = PrometheusServer(work / "prometheus", [f"127.0.0.1:{worker.port}"],
                                rule_files=(DEPLOY / "alerts.yml",))  # fmt: skip
        worker.wait_ready(timeout=60.0)
        prom.start()
        time.sleep(3)
        start = time.time()
        marks: list[tuple[str, float]] = []
        feeder = threading.Thread(target=play, args=(producer, topics["input_topic"], features, marks))
        feeder.start()
        feeder.join()
        time.sleep(10)  # let the last scrapes and the lag refresh land
        summary = plot(prom, start, time.time(), marks, out)
        print(json.dumps({"image": str(out), **summary}, indent=2))
    finally:
        producer.close()
        if prom is not None:
            prom.close()
        worker.stop()
        worker.close()

if __name__ == "__main__":
    sys.exit(main())
