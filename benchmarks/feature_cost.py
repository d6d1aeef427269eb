"""Behavioural features' cost (docs/features.md), for a spec of two entities x three windows x three functions
(``SPEC``: customer and terminal; 1h, 1d, 30d; count, mean and max of the amount):

1. the offline computation's rate (``compute_columns``, the function fraud-train and the backtest use), rows/s;
2. the worker's throughput with the spec over the same model without it (the event's own ``amount`` only),
   over one backlog of synthetic v3 events, alternating, at-least-once; with the spec the state is in SQLite
   files and logged to a changelog topic (the defaults); and with the spec plus label-derived features
   (``RISK_BLOCK``: a terminal's fraud_count and fraud_rate over 1d, 7d and 30d, 3 days back) read from an
   entity-risk table holding every fraud of the data (docs/entity-risk.md): the cost of the risk lookups;
3. the worker's peak resident memory with ``entities`` entities in state (each event a new customer and a new
   terminal), and the time a replacement on an empty disk takes to restore them from the changelog
   (``fraud_feature_restore_seconds_total``), in entities/s.

``python benchmarks/bench.py --only-features`` runs these alone.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    Worker,
    bench_options,
    committed_total,
    create_topics,
    log,
    median_runs,
    pair_ratios,
    produce_all,
    worker_run,
)

_AGGREGATES = ["count", "mean(amount)", "max(amount)"]
SPEC = {
    "entity": [
        {"field": "customer_id", "windows": ["1h", "1d", "30d"], "aggregates": _AGGREGATES},
        {"field": "terminal_id", "windows": ["1h", "1d", "30d"], "aggregates": _AGGREGATES},
    ]
}
RISK_BLOCK = {"field": "terminal_id", "windows": ["1d", "7d", "30d"], "delay": "3d", "fraud_prior_rate": 0.01,
              "aggregates": ["fraud_count", "fraud_rate"]}  # fmt: skip
SPEC_RISK = {"entity": [*SPEC["entity"], RISK_BLOCK]}
ALERT_EVERY = 20  # one event in this many alerts in the latency runs
FIELDS = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "channel", "merchant_category")


def _bundle(models: Path, version: str, spec: dict | None, feature_weight: float = 0.01) -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from training.export import dense_model, to_tflite
    from worker.core.bundle import Manifest, set_current, sha256_hex, write_bundle
    from worker.core.features import from_mapping

    parsed = from_mapping(spec, "bench") if spec is not None else None
    names = ("amount", *(parsed.names if parsed is not None else ()))
    n = len(names)
    weights = np.full(n, feature_weight, dtype=np.float32)
    weights[0] = 0.01  # the amount
    model = dense_model(n)
    model.set_weights([weights.reshape(n, 1), np.array([-3.0], dtype=np.float32)])
    blob = to_tflite(model)
    manifest = Manifest(
        version=version, created_at="2026-01-01T00:00:00Z", feature_names=names, scaler_mean=(0.0,) * n,
        scaler_scale=(1.0,) * n, weights=tuple(weights.tolist()), bias=-3.0, threshold=0.5, threshold_policy={},
        model_sha256=sha256_hex(blob), feature_spec=parsed.to_manifest() if parsed is not None else None,
    )  # fmt: skip
    write_bundle(models, manifest, blob)
    set_current(models, version)


def _values(columns: dict) -> list[bytes]:
    import msgspec

    enc = msgspec.json.Encoder().encode
    rows = zip(*(columns[f].tolist() for f in FIELDS), strict=True)
    return [enc(dict(zip(FIELDS, row, strict=True))) for row in rows]


def offline_rate(n: int) -> dict:
    from worker.core.features import compute_columns, from_mapping
    from worker.offline.synthetic import generate_behavioural

    columns = generate_behavioural(n, 3)
    spec = from_mapping(SPEC, "bench")
    t0 = time.perf_counter()
    compute_columns(spec, columns["event_time"], columns)
    seconds = time.perf_counter() - t0
    return {"rows": n, "seconds": seconds, "rows_per_s": n / seconds, "features": len(spec.names)}


def measure(bootstrap: str, n: int, repeats: int) -> dict:
    """Offline rate, then the worker with and without the spec over one backlog, alternating."""
    from worker.offline.synthetic import generate_behavioural

    out: dict = {"spec": SPEC, "offline": offline_rate(n)}
    log(f"features offline: {out['offline']['rows_per_s']:,.0f} rows/s")
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-feat-in-{tag}", "alerts": f"bench-feat-alerts-{tag}", "dlq": f"bench-feat-dlq-{tag}"}
    create_topics(bootstrap, {topics["input"]: (6, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {})})
    columns = generate_behavioural(n, 4)
    values = _values(columns)
    secs = produce_all(bootstrap, topics["input"], values)
    risk_topic = f"bench-feat-risk-{tag}"
    frauds = _risk_table(bootstrap, risk_topic, columns)
    log(f"features: entity-risk table of {frauds:,} frauds in {risk_topic}")
    log(f"features: produced {len(values):,} v3 events in {secs:.1f}s; {repeats} rounds of three runs")
    work = Path(tempfile.mkdtemp(prefix="fraud-bench-features-"))
    try:
        plain, spec, risk = work / "plain", work / "spec", work / "risk"
        _bundle(plain, "plain", None)
        _bundle(spec, "spec", SPEC)
        _bundle(risk, "risk", SPEC_RISK)
        runs: dict[str, list[float]] = {"without": [], "with": [], "with_risk": []}
        order = ["without", "with", "with_risk"]
        for i in range(repeats):
            for name in order[i % 3:] + order[: i % 3]:
                extra: tuple[str, ...] = ()
                models = plain
                if name != "without":
                    models = spec if name == "with" else risk
                    extra = ("--feature-state-dir", str(work / f"state-{name}-{i}"),
                             "--feature-changelog-topic", f"bench-feat-cl-{tag}-{name}-{i}",
                             "--entity-risk-topic", risk_topic)  # fmt: skip
                runs[name].append(worker_run(bootstrap, str(models), topics, n, extra=extra)["rate"])
            log(f"round {i + 1}/{repeats}: without {runs['without'][-1]:,.0f}/s, with {runs['with'][-1]:,.0f}/s, "
                f"with the risk lookups {runs['with_risk'][-1]:,.0f}/s")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, r in runs.items():
        out[name] = median_runs(r)
    pairs = pair_ratios(runs["with"], runs["without"])
    out["with_over_without"] = {"median_of_pairs": statistics.median(pairs), "runs": pairs}
    risk_pairs = pair_ratios(runs["with_risk"], runs["with"])
    out["risk_block"] = RISK_BLOCK
    out["risk_frauds"] = frauds
    out["risk_over_spec"] = {"median_of_pairs": statistics.median(risk_pairs), "runs": risk_pairs}
    return out


def _risk_table(bootstrap: str, topic: str, columns: dict) -> int:
    """The entity-risk topic as fraud-feedback would publish it for ``columns``: every fraud at its label time."""
    from kafka import KafkaProducer

    from worker.core.risk import FraudHistory, encode_entries, record_key

    create_topics(bootstrap, {topic: (1, {"cleanup.policy": "compact"})})
    history = FraudHistory.from_rows(["terminal_id"], columns, columns["event_time"].tolist(),
                                     columns["Class"].tolist(), columns["label_time"].tolist())  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    for terminal in sorted(set(columns["terminal_id"].tolist())):
        entries = history.entries("terminal_id", terminal)
        if entries:
            producer.send(topic, key=record_key("terminal_id", terminal, 0), value=encode_entries(entries))
    producer.flush()
    producer.close()
    return history.total()


def measure_entities(bootstrap: str, entities: int) -> dict:
    """Peak RSS with ``entities`` entities in state, then a replacement's restore from the changelog."""
    import msgspec

    enc = msgspec.json.Encoder().encode
    events = entities // 2  # each event: a new customer and a new terminal
    t0 = 1_767_225_600_000
    values = [enc({"transaction_id": f"e{i}", "event_time": t0 + i, "customer_id": f"c{i}", "terminal_id": f"t{i}",
                   "amount": float(i % 500) + 0.5}) for i in range(events)]  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-ent-in-{tag}", "alerts": f"bench-ent-alerts-{tag}", "dlq": f"bench-ent-dlq-{tag}"}
    create_topics(bootstrap, {topics["input"]: (6, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {})})
    secs = produce_all(bootstrap, topics["input"], values)
    log(f"entities: produced {events:,} events ({entities:,} entities) in {secs:.1f}s")
    work = Path(tempfile.mkdtemp(prefix="fraud-bench-entities-"))
    changelog = f"bench-ent-cl-{tag}"
    try:
        _bundle(work / "models", "spec", SPEC)
        state = ("--feature-changelog-topic", changelog)
        first = worker_run(bootstrap, str(work / "models"), topics, events,
                           extra=(*state, "--feature-state-dir", str(work / "state-a")))  # fmt: skip
        log(f"entities: {entities:,} in state, peak RSS {first['peak_rss_mb']:.0f} MB at {first['rate']:,.0f} events/s")
        # A replacement on an empty disk, in another group, reads the topic again from the start: the first
        # event of each partition restores that partition's store from the changelog.
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        group = f"worker-{uuid.uuid4().hex[:8]}"
        w = Worker(bootstrap, work / "models", topics, group,
                   bench_options(extra=(*state, "--feature-state-dir", str(work / "state-b"))))  # fmt: skip
        w.wait_up()
        while committed_total(admin, group) < events:
            if err := w.exited():
                raise err
            time.sleep(0.2)
        text = w.get("/metrics") or ""
        w.stop()
        admin.close()
        metric = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                  if line.startswith("fraud_feature_restore")}  # fmt: skip
        restored = metric.get("fraud_feature_restored_entities_total", 0.0)
        seconds = metric.get("fraud_feature_restore_seconds_total", 0.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "entities": entities, "peak_rss_mb": first["peak_rss_mb"], "events_per_s": first["rate"],
        "restored_entities": restored, "restore_seconds": seconds,
        "restored_entities_per_s": restored / seconds if seconds else None,
    }  # fmt: skip


def _latency_point(bootstrap: str, models: Path, rate: float, seconds: float, warmup: float, extra: tuple) -> dict:
    """Events at ``rate``/s for ``warmup + seconds`` (customers among 20,000, terminals among 5,000), each
    stamped with its event_time as it is handed to the producer; one in ``ALERT_EVERY`` has an amount the
    model alerts on. The latency is the wall-clock time when a reader's poll() (on a thread of its own)
    returned the alert minus that stamp. The warm-up's events are left out."""
    import threading

    import msgspec
    from confluent_kafka import Producer
    from kafka import KafkaConsumer, TopicPartition

    from benchmarks.harness import fetch_settings
    from benchmarks.latency_vs_load import pct

    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-flat-in-{tag}", "alerts": f"bench-flat-alerts-{tag}", "dlq": f"bench-flat-dlq-{tag}"}
    create_topics(bootstrap, {topics["input"]: (6, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {})})
    worker = Worker(bootstrap, models, topics, f"flat-{tag}", bench_options(extra=extra))
    worker.wait_up()
    worker.wait_ready()
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **fetch_settings())
    reader.assign([TopicPartition(topics["alerts"], 0)])
    reader.seek_to_beginning()
    reader.poll(timeout_ms=100)
    enc, dec = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode
    n = int(rate * (warmup + seconds))
    expected = -(-n // ALERT_EVERY)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def read() -> None:
        last = time.monotonic()
        while len(samples) < expected and not (done.is_set() and time.monotonic() - last > 10):
            for records in reader.poll(timeout_ms=100).values():
                got = time.time() * 1000
                samples.extend((t, got - t) for t in (dec(r.value)["event_time"] for r in records))
                last = time.monotonic()

    reading = threading.Thread(target=read, daemon=True)
    reading.start()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 1})
    rng = np.random.default_rng(7)
    customers, terminals = rng.integers(0, 20_000, n).tolist(), rng.integers(0, 5_000, n).tolist()
    amounts = np.minimum(rng.gamma(2.0, 30.0, n), 200.0).round(2).tolist()
    start = time.monotonic()
    steady_from = time.time() * 1000 + warmup * 1000
    try:
        for i in range(n):
            ahead = start + i / rate - time.monotonic()
            if ahead > 0.001:
                time.sleep(ahead)
            amount = 10_000.0 if i % ALERT_EVERY == 0 else amounts[i]
            event = {"transaction_id": f"l{i}", "event_time": int(time.time() * 1000), "customer_id":
                     f"c{customers[i]}", "terminal_id": f"t{terminals[i]}", "amount": amount}  # fmt: skip
            producer.produce(topics["input"], enc(event))
            if i % 100 == 0:
                producer.poll(0)
        producer.flush(30)
        offered = n / (time.monotonic() - start)
        done.set()
        reading.join(timeout=600)
    finally:
        done.set()
        reader.close(autocommit=False)
        worker.stop()
    arr = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    steady = arr[arr[:, 0] >= steady_from, 1]
    return {"offered_rate": rate, "achieved_offer": offered, "events": n, "alerts_read": len(samples),
            "alerts_expected": expected, "samples": int(steady.size), **pct(steady)}  # fmt: skip


def measure_latency(bootstrap: str, rates: Sequence[float] = (1000.0, 5000.0), seconds: float = 15.0,
                    warmup: float = 5.0) -> dict:  # fmt: skip
    """p99 event-to-alert at each of ``rates``, with the spec and without it, side by side (at-least-once).
    The bundles weigh the amount alone (the spec's features with weight 0), so both alert on the same events."""
    work = Path(tempfile.mkdtemp(prefix="fraud-bench-flat-"))
    out: dict = {"rates": list(rates), "alert_every": ALERT_EVERY, "with": [], "without": []}
    try:
        _bundle(work / "plain", "plain", None, feature_weight=0.0)
        _bundle(work / "spec", "spec", SPEC, feature_weight=0.0)
        for rate in rates:
            for name in ("without", "with"):
                extra: tuple[str, ...] = ()
                if name == "with":
                    extra = ("--feature-state-dir", str(work / f"state-{rate:.0f}"))
                point = _latency_point(bootstrap, work / ("spec" if name == "with" else "plain"), rate, seconds,
                                       warmup, extra)  # fmt: skip
                out[name].append(point)
                log(f"latency {name} the spec at {rate:,.0f}/s: p99 {point['p99_ms']:,.1f} ms "
                    f"({point['alerts_read']:,} of {point['alerts_expected']:,} alerts read)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def print_features(f: dict) -> None:
    print("\nBehavioural features (2 entities x 3 windows x 3 functions)")
    o = f["offline"]
    print(f"  offline computation (fraud-train, backtest)  {o['rows_per_s']:>10,.0f} rows/s ({o['rows']:,} rows)")
    if "with" in f:
        r = f["with_over_without"]["median_of_pairs"]
        print(f"  worker without the spec                     {f['without']['median']:>10,.0f} events/s (median)")
        print(f"  worker with the spec                        {f['with']['median']:>10,.0f} events/s, ratio {r:.3f} "
              f"(goal >= 0.5: {'pass' if r >= 0.5 else 'FAIL'})")  # fmt: skip
        if "with_risk" in f:
            rr = f["risk_over_spec"]["median_of_pairs"]
            print(f"  with the spec and risk lookups (+6 features) {f['with_risk']['median']:>9,.0f} events/s, ratio "
                  f"{rr:.3f} over the spec alone ({f['risk_frauds']:,} frauds in the table)")  # fmt: skip
    if "latency" in f:
        for without, with_ in zip(f["latency"]["without"], f["latency"]["with"], strict=True):
            rate, p99 = with_["offered_rate"], with_["p99_ms"]
            print(f"  p99 event-to-alert at {rate:>6,.0f}/s            without {without['p99_ms']:>8,.1f} ms, with "
                  f"{p99:>8,.1f} ms (goal <= 25: {'pass' if p99 <= 25 else 'FAIL'}; "
                  f"{with_['alerts_read']:,} of {with_['alerts_expected']:,} alerts read)")  # fmt: skip
    if "entities" in f:
        e = f["entities"]
        print(f"  peak RSS with {e['entities']:,} entities in state   {e['peak_rss_mb']:>10.0f} MB "
              f"(goal <= 150: {'pass' if e['peak_rss_mb'] <= 150 else 'FAIL'})")  # fmt: skip
        if e["restored_entities_per_s"]:
            print(f"  restore from the changelog                  {e['restored_entities']:>10,.0f} entities in "
                  f"{e['restore_seconds']:.1f} s, {e['restored_entities_per_s']:,.0f} entities/s")


def to_json(f: dict) -> str:
    return json.dumps(f, indent=2)
