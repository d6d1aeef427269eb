"""``fraud-worker backtest`` over a JSON-lines file of ULB events (no broker): its events/s against a plain
``json.loads`` loop over the same file, alternating, with the ratio; and the same file with each event's
``Class`` label in it, and the ULB CSV (gzip), once each."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import REPO, ULB, fixed_weights_model, in_turn, log, median_runs, pair_ratios


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


def measure(models: str, events: int, repeats: int) -> dict:
    """Backtest against ``json.loads`` over the same JSON lines, alternating (which goes first swaps each
    repetition); medians, and the median of the per-pair ratios. Then the labelled file and the CSV once each."""
    work = tempfile.mkdtemp(prefix="fraud-bench-backtest-")
    try:
        paths = backtest_files(events, work)
        loads, runs = [], []
        for r in range(repeats):
            for step in in_turn(("loads", "backtest"), r):
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
            "backtest_events_per_s": median_runs(rates),
            "backtest_process_events_per_s": statistics.median(x["process_events_per_s"] for x in runs),
            "json_loads_events_per_s": median_runs(loads),
            "backtest_over_json_loads": statistics.median(pair_ratios(rates, loads)),
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
