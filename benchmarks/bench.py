"""``make bench``: the worker against its ceiling and a naive baseline, side by side in one run.

On one topic of ULB-derived events (6 partitions) on the real local Apache Kafka broker:

1. ceiling: a bare kafka-python consumer in a group, same fetch settings and max_poll_records as
   the worker, touching only the value bytes (no decoding, no per-batch commit); and the same
   consumer reading records with the worker's record reader (worker/kafka_compat/records.py), as a second
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

This is the entry point only: each step is a module of ``benchmarks`` (1 and 2 ``throughput``, 3
``naive_loop``, 4 ``latency_vs_load``, 5 ``worker_memory`` and ``startup_time``, 6 ``scoring_cost``,
7 ``backtest_speed``, ``shadow_cost``, the shadow challenger's cost, ``--only-shadow``, and ``feature_cost``,
what behavioural features cost, ``--only-features``, and ``rules_cost``, what a 50-rule set costs,
``--only-rules``) over
``harness`` (the broker, topics, load generation, the worker process, timing, the environment, the
printed table). Run as ``python benchmarks/bench.py`` or ``python -m benchmarks.bench``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python benchmarks/bench.py): the repository root for imports
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import (  # noqa: E402
    backtest_speed,
    feature_cost,
    latency_vs_load,
    naive_loop,
    rules_cost,
    scoring_cost,
    shadow_cost,
    startup_time,
    throughput,
    worker_memory,
)
from benchmarks.harness import (  # noqa: E402
    BATCH,
    REPO,
    broker,
    environment_rows,
    fixed_weights_model,
    load_events,
    log,
    print_table,
    rate_list,
    train_model,
    versions,
    write_results,
)


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
    ap.add_argument("--only-rules", action="store_true",
                    help="the 50-rule set's cost alone: the worker with and without it, alternating")  # fmt: skip
    ap.add_argument("--rules-repeats", type=int, default=5, help="alternating rounds of the rules' cost step")
    ap.add_argument("--only-features", action="store_true",
                    help="run only the behavioural features' cost: offline rate, the worker with and without a "
                    "spec, memory and restore with many entities (a broker, no training; writes --out only if "
                    "given)")  # fmt: skip
    ap.add_argument("--feature-events", type=int, default=100_000, help="v3 events in the features' backlog")
    ap.add_argument("--feature-repeats", type=int, default=3, help="alternating rounds of the features' step")
    ap.add_argument("--feature-latency-rates", default="1000,5000",
                    help="rates (events/s) for the p99 event-to-alert with and without the spec (empty: skip)")
    ap.add_argument("--feature-entities", type=int, default=1_000_000, help="entities in state for memory and restore")
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
        sc = scoring_cost.measure(raw, manifest, blob, args.scoring_repeats, args.scoring_batches)
        sc["environment"] = scoring_cost.environment()
        write_results(args.out, sc)
        scoring_cost.print_scoring(sc)
        return 0
    if args.only_backtest:
        models = tempfile.mkdtemp(prefix="fraud-bench-models-")
        try:
            _, raw = load_events(args.backtest_events)
            backtest_speed.backtest_model(models, raw)
            log(f"backtest against json.loads: {args.backtest_repeats} alternating runs over "
                f"{args.backtest_events:,} events")  # fmt: skip
            bt = backtest_speed.measure(models, args.backtest_events, args.backtest_repeats)
        finally:
            shutil.rmtree(models, ignore_errors=True)
        write_results(args.out, bt)
        backtest_speed.print_backtest(bt)
        return 0
    if args.only_features:
        with broker("fraud-bench-kafka-") as bootstrap:
            ft = feature_cost.measure(bootstrap, args.feature_events, args.feature_repeats)
            if args.feature_latency_rates:
                ft["latency"] = feature_cost.measure_latency(bootstrap, rate_list(args.feature_latency_rates))
            if args.feature_entities:
                ft["entities"] = feature_cost.measure_entities(bootstrap, args.feature_entities)
        write_results(args.out, ft)
        feature_cost.print_features(ft)
        return 0
    guarantees = [g.strip() for g in args.guarantees.split(",") if g.strip()]
    if guarantees[:1] != ["at-least-once"] or not set(guarantees) <= {"at-least-once", "exactly-once"}:
        ap.error("--guarantees: at-least-once first (its throughput sets the latency rates), then exactly-once")
    if args.only_latency is None and not args.only_shadow and not args.only_rules:
        args.out = args.out or str(REPO / "benchmarks/results.json")
        args.plot = args.plot or str(REPO / "docs/img/latency.png")
    scratch: list[str] = []  # temporary directories, removed at the end
    with broker("fraud-bench-kafka-") as bootstrap:
        log(f"broker at {bootstrap}")
        try:
            return run(args, bootstrap, guarantees, started, scratch)
        finally:
            for d in scratch:  # the trained bundle and the generator's pools (about 36 MB)
                shutil.rmtree(d, ignore_errors=True)


def run(args: argparse.Namespace, bootstrap: str, guarantees: list[str], started: float, scratch: list[str]) -> int:
    """Every step but those run alone without a broker: the model, then the steps in order, then the tables."""
    models = tempfile.mkdtemp(prefix="fraud-bench-models-")
    scratch.append(models)
    log("training the model on the ULB data (fraud-train)")
    version, manifest = train_model(models)

    values, raw = load_events(args.events)
    pools = tempfile.mkdtemp(prefix="fraud-bench-pools-")
    scratch.append(pools)
    pool_info = latency_vs_load.alert_pools(models, values, raw, pools)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model_version": version}
    if args.only_shadow:
        sh = shadow_cost.measure(bootstrap, models, values, args.shadow_repeats)
        write_results(args.out, sh)
        shadow_cost.print_shadow(sh)
        return 0
    if args.only_rules:
        rc = rules_cost.measure(bootstrap, models, values, args.rules_repeats)
        write_results(args.out, rc)
        rules_cost.print_rules(rc)
        return 0
    if args.only_latency is None:
        results.update(throughput_step(bootstrap, models, manifest, version, values, guarantees, args))
        capacity = results["worker_events_per_s"]["median"]
    else:
        capacity = args.only_latency
    rates = sorted({*rate_list(args.latency_rates), *(round(f * capacity) for f in rate_list(args.latency_loads))})
    log(
        f"latency against load: {', '.join(f'{r:,.0f}' for r in rates)} events/s (at-least-once capacity "
        f"{capacity:,.0f}/s), {args.latency_warmup:.0f} s warm-up + {args.latency_seconds:.0f} s per point"
    )
    lat = latency_vs_load.latency_table(bootstrap, models, pools, [latency_vs_load.FLOOR, *guarantees], rates,
                                        args.latency_seconds, args.latency_warmup, args.alert_rate)  # fmt: skip
    lat["capacity_events_per_s"] = capacity
    lat["pools"] = pool_info
    for points in lat["modes"].values():
        for p in points:
            p["of_capacity"] = p["offered_rate"] / capacity
    lat["goals"] = latency_vs_load.goal_checks(lat)
    results["latency_vs_load"] = lat
    if args.plot:
        latency_vs_load.plot_latency(lat, capacity, args.plot)
        log(f"wrote {args.plot}")
    if args.only_latency is None:
        log(f"scoring cost per batch, identity vs transforms: {args.scoring_repeats} alternating repetitions")
        blob = (Path(models) / version / "model.tflite").read_bytes()
        results["scoring_per_batch"] = scoring_cost.measure(raw, manifest, blob, args.scoring_repeats,
                                                            args.scoring_batches)  # fmt: skip
        log(f"backtest against json.loads: {args.backtest_repeats} alternating runs")
        results["backtest"] = backtest_speed.measure(models, args.backtest_events, args.backtest_repeats)
        results["shadow"] = shadow_cost.measure(bootstrap, models, values, args.shadow_repeats)
        results["rules"] = rules_cost.measure(bootstrap, models, values, args.rules_repeats)
        results["features"] = feature_cost.measure(bootstrap, args.feature_events, args.feature_repeats)
        if args.feature_latency_rates:
            results["features"]["latency"] = feature_cost.measure_latency(bootstrap,
                                                                          rate_list(args.feature_latency_rates))
        if args.feature_entities:
            results["features"]["entities"] = feature_cost.measure_entities(bootstrap, args.feature_entities)
    results["environment"] = versions(bootstrap)
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    write_results(args.out, results)
    if args.only_latency is None:
        print_table(summary_rows(results))
    latency_vs_load.print_latency(lat)
    if "backtest" in results:
        backtest_speed.print_backtest(results["backtest"])
    if "shadow" in results:
        shadow_cost.print_shadow(results["shadow"])
    if "rules" in results:
        rules_cost.print_rules(results["rules"])
    if "features" in results:
        feature_cost.print_features(results["features"])
    return 0


def throughput_step(bootstrap: str, models: str, manifest: dict, version: str, values: list[bytes],
                    guarantees: list[str], args: argparse.Namespace) -> dict:  # fmt: skip
    """The ceilings and the worker under each guarantee over one backlog, alternating; the naive baseline on
    the same topic; the worker's memory and start-up from the same runs."""
    rounds = throughput.measure(bootstrap, models, manifest, values, guarantees, args.repeats)
    log(f"naive baseline on {args.naive_sample} events")
    naive_rate = naive_loop.measure(bootstrap, rounds.topics["input"], rounds.topics["alerts"], models, version,
                                    args.naive_sample)  # fmt: skip
    out = throughput.report(rounds)
    out.update(naive_loop.report(naive_rate, out["worker_events_per_s"]["median"]))
    worker_memory.report(rounds.runs, out)
    startup_time.report(rounds.runs, out)
    throughput.exactly_once_report(rounds, out)
    return out


def summary_rows(r: dict) -> list[tuple[str, str]]:
    """The printed table: each step's rows in turn, then the machine and the versions."""
    return [
        *throughput.rows(r),
        *naive_loop.rows(r),
        *worker_memory.rows(r),
        *startup_time.rows(r),
        *scoring_cost.rows(r),
        *environment_rows(r),
    ]


if __name__ == "__main__":
    sys.exit(main())
