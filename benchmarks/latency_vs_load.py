"""Latency against offered load: event append to alert readable downstream, per guarantee, with a floor.

At fixed rates and at shares of the at-least-once throughput, offered by a separate generator
process (``harness.LoadGenerator``), one event in rate/``alert_rate`` being one the model alerts on;
each point a warm-up, then a measured part: p50 / p99 / max from the event's append to the input
topic (LogAppendTime, which the worker takes as the event time) to the alert being returned by a
reader's poll(); and, as the floor, a bare kafka-python consumer's append-to-poll latency. Checked
against the goals at GOAL_RATES and drawn in docs/img/latency.png.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    BATCH,
    GENERATOR_NICE,
    LoadGenerator,
    Worker,
    bench_options,
    create_topics,
    fetch_settings,
    log,
    transaction_stats,
)

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
        worker = Worker(bootstrap, models, topics, f"lat-{tag}", bench_options(mode))
        worker.wait_up()
        worker.wait_ready()
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
            if worker is not None and (err := worker.exited()):
                raise err
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
