"""The naive baseline from the usual tutorials: per event json.loads, scaling, Keras ``model.predict``, an alert
each, auto-commit; its events/s over a small sample of the throughput topic, against the worker's."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.harness import REPO, python_code


def measure(bootstrap: str, topic: str, alerts: str, models: str, version: str, sample: int) -> float:
    """``naive`` in a process of its own: TensorFlow's threads stay out of this one.

    With TensorFlow loaded here, the latency step measured after it gave p99 620-930 ms instead of
    about 110 ms (same worker, same rate): its threads took CPU from the two cores.
    """
    code = (f"import json; from benchmarks.naive_loop import naive; "
            f"m = json.load(open({str(Path(models) / version / 'manifest.json')!r})); "
            f"print(naive({bootstrap!r}, {topic!r}, {alerts!r}, m, {sample}))")  # fmt: skip
    out = subprocess.run(python_code(code), cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
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


def report(naive_rate: float, worker_median: float) -> dict:
    return {"naive_events_per_s": naive_rate, "worker_over_naive": worker_median / naive_rate}


def rows(r: dict) -> list[tuple[str, str]]:
    return [
        ("naive per-event Keras predict", f"{r['naive_events_per_s']:,.1f} events/s"),
        ("worker / naive", f"{r['worker_over_naive']:,.0f}x"),
    ]
