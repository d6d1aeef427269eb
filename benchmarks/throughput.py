"""Throughput: the worker under each guarantee against its ceilings, over one backlog, alternating.

The ceilings are a bare kafka-python group consumer with the worker's fetch settings touching only
the value bytes; the same consumer reading records with the worker's record reader; and that
consumer decoding each batch on its polling thread too. The worker is a real process under each
processing guarantee over the same topic; which goes first alternates each round; medians, and
the medians of the per-round ratios, are reported.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass, field

from benchmarks.harness import (
    BATCH,
    create_topics,
    fetch_settings,
    in_turn,
    log,
    median_runs,
    pair_ratios,
    produce_all,
    worker_run,
)

PARTITIONS = 6


@dataclass
class Rounds:
    """What the rounds measured, and the topics they read (the naive loop reads the same input topic)."""

    topics: dict
    events: int
    ceilings: list[float] = field(default_factory=list)
    readers: list[float] = field(default_factory=list)
    decodes: list[float] = field(default_factory=list)
    runs: dict[str, list[dict]] = field(default_factory=dict)


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


def measure(bootstrap: str, models: str, manifest: dict, values: list[bytes], guarantees: list[str],
            repeats: int) -> Rounds:  # fmt: skip
    """``values`` into a fresh topic, then ``repeats`` rounds of the three ceilings and a worker per guarantee."""
    from worker.core.decode import Decoder

    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-in-{tag}", "alerts": f"bench-alerts-{tag}", "dlq": f"bench-dlq-{tag}"}
    create_topics(bootstrap, {topics["input"]: (PARTITIONS, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {})})
    secs = produce_all(bootstrap, topics["input"], values)
    log(f"produced {len(values):,} events to {topics['input']} ({PARTITIONS} partitions) in {secs:.1f}s")

    decode_only = Decoder(manifest["feature_names"]).decode_batch
    r = Rounds(topics, len(values), runs={g: [] for g in guarantees})
    for i in range(repeats):
        r.ceilings.append(ceiling(bootstrap, topics["input"], len(values)))
        r.readers.append(ceiling(bootstrap, topics["input"], len(values), reader=True))
        r.decodes.append(ceiling(bootstrap, topics["input"], len(values), reader=True, decode=decode_only))
        for g in in_turn(guarantees, i):  # which goes first alternates
            r.runs[g].append(worker_run(bootstrap, models, topics, len(values), g))
        log(f"round {i + 1}/{repeats}: ceiling {r.ceilings[-1]:,.0f}/s, with the worker's reader "
            f"{r.readers[-1]:,.0f}/s, consumer+decode {r.decodes[-1]:,.0f}/s, "
            + ", ".join(f"worker {g} {r.runs[g][-1]['rate']:,.0f}/s" for g in guarantees)
            + f" (at-least-once / ceiling {r.runs['at-least-once'][-1]['rate'] / r.ceilings[-1]:.3f})")  # fmt: skip
    return r


def rates(r: Rounds) -> dict[str, list[float]]:
    """The worker's events/s of each round, by guarantee."""
    return {g: [run["rate"] for run in rs] for g, rs in r.runs.items()}


def report(r: Rounds) -> dict:
    """The throughput figures of results.json, up to ``worker_over_ceiling`` (the naive loop's come next)."""
    by_g = rates(r)
    workers = by_g["at-least-once"]
    ceiling_med, worker_med = statistics.median(r.ceilings), statistics.median(workers)
    ratios = pair_ratios(workers, r.ceilings)
    return {
        "events": r.events,
        "partitions": PARTITIONS,
        "max_poll_records": BATCH,
        "ceiling_events_per_s": median_runs(r.ceilings),
        "worker_events_per_s": median_runs(workers),
        "worker_by_guarantee": {g: {"events_per_s": median_runs(by_g[g])} for g in r.runs},
        "ceiling_with_worker_reader_events_per_s": median_runs(r.readers),
        "worker_over_ceiling_with_worker_reader": statistics.median(pair_ratios(workers, r.readers)),
        "consumer_decode_only_events_per_s": median_runs(r.decodes),
        "decode_only_over_ceiling": statistics.median(pair_ratios(r.decodes, r.ceilings)),
        "worker_over_ceiling": {
            "median": statistics.median(ratios),
            "of_medians": worker_med / ceiling_med,
            "runs": ratios,
        },  # fmt: skip
    }


def exactly_once_report(r: Rounds, out: dict) -> None:
    """Exactly-once's transactions and its ratio to at-least-once, added to ``out`` when it was run."""
    by_g = rates(r)
    if "exactly-once" not in by_g:
        return
    txs = [run["transactions"] for run in r.runs["exactly-once"]]
    out["worker_by_guarantee"]["exactly-once"]["transactions"] = {
        "per_s": statistics.median(t["per_s"] for t in txs),
        "events_per_transaction": statistics.median(t["events_per_transaction"] or 0 for t in txs),
        "mean_commit_ms": statistics.median(t["mean_commit_ms"] or 0 for t in txs),
        "aborted": sum(t["aborted"] for t in txs),
        "runs": txs,
    }
    eos, workers = by_g["exactly-once"], by_g["at-least-once"]
    pairs = pair_ratios(eos, workers)
    out["exactly_once_over_at_least_once"] = {
        "median_of_pairs": statistics.median(pairs),
        "of_medians": statistics.median(eos) / statistics.median(workers),
        "runs": pairs,
    }


def rows(r: dict) -> list[tuple[str, str]]:
    """The summary table's throughput rows."""
    byg = r["worker_by_guarantee"]
    return [
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
    ]
