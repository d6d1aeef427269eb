"""Behavioural features' cost (docs/features.md), for a spec of two entities x three windows x three functions
(``SPEC``: customer and terminal; 1h, 1d, 30d; count, mean and max of the amount):

1. the offline computation's rate (``compute_columns``, the function fraud-train and the backtest use), rows/s;
2. the worker's throughput with the spec over the same model without it (the event's own ``amount`` only),
   over one backlog of synthetic v3 events, alternating, at-least-once; with the spec the state is in SQLite
   files and logged to a changelog topic (the defaults);
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
FIELDS = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "channel", "merchant_category")


def _bundle(models: Path, version: str, spec: dict | None) -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from training.export import dense_model, to_tflite
    from worker.core.bundle import Manifest, set_current, sha256_hex, write_bundle
    from worker.core.features import from_mapping

    parsed = from_mapping(spec, "bench") if spec is not None else None
    names = ("amount", *(parsed.names if parsed is not None else ()))
    n = len(names)
    weights = np.full(n, 0.01, dtype=np.float32)
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
    values = _values(generate_behavioural(n, 4))
    secs = produce_all(bootstrap, topics["input"], values)
    log(f"features: produced {len(values):,} v3 events in {secs:.1f}s; {repeats} rounds of two runs")
    work = Path(tempfile.mkdtemp(prefix="fraud-bench-features-"))
    try:
        plain, spec = work / "plain", work / "spec"
        _bundle(plain, "plain", None)
        _bundle(spec, "spec", SPEC)
        runs: dict[str, list[float]] = {"without": [], "with": []}
        for i in range(repeats):
            for name in (["without", "with"] if i % 2 == 0 else ["with", "without"]):
                extra: tuple[str, ...] = ()
                models = plain
                if name == "with":
                    models = spec
                    extra = ("--feature-state-dir", str(work / f"state-{i}"),
                             "--feature-changelog-topic", f"bench-feat-cl-{tag}-{i}")  # fmt: skip
                runs[name].append(worker_run(bootstrap, str(models), topics, n, extra=extra)["rate"])
            log(f"round {i + 1}/{repeats}: without {runs['without'][-1]:,.0f}/s, with {runs['with'][-1]:,.0f}/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, r in runs.items():
        out[name] = median_runs(r)
    pairs = pair_ratios(runs["with"], runs["without"])
    out["with_over_without"] = {"median_of_pairs": statistics.median(pairs), "runs": pairs}
    return out


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


def print_features(f: dict) -> None:
    print("\nBehavioural features (2 entities x 3 windows x 3 functions)")
    o = f["offline"]
    print(f"  offline computation (fraud-train, backtest)  {o['rows_per_s']:>10,.0f} rows/s ({o['rows']:,} rows)")
    if "with" in f:
        r = f["with_over_without"]["median_of_pairs"]
        print(f"  worker without the spec                     {f['without']['median']:>10,.0f} events/s (median)")
        print(f"  worker with the spec                        {f['with']['median']:>10,.0f} events/s, ratio {r:.3f} "
              f"(goal >= 0.5: {'pass' if r >= 0.5 else 'FAIL'})")  # fmt: skip
    if "entities" in f:
        e = f["entities"]
        print(f"  peak RSS with {e['entities']:,} entities in state   {e['peak_rss_mb']:>10.0f} MB "
              f"(goal <= 150: {'pass' if e['peak_rss_mb'] <= 150 else 'FAIL'})")  # fmt: skip
        if e["restored_entities_per_s"]:
            print(f"  restore from the changelog                  {e['restored_entities']:>10,.0f} entities in "
                  f"{e['restore_seconds']:.1f} s, {e['restored_entities_per_s']:,.0f} entities/s")


def to_json(f: dict) -> str:
    return json.dumps(f, indent=2)
