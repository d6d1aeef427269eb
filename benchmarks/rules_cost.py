"""What a rule set costs, over one backlog in rotating order, as throughput ratios to the worker alone:

- the worker deciding every event with a 50-rule set (models/RULES, docs/rules.md);
- the same 50 conditions, every action allow: they alert on nothing, so this is the rules' evaluation alone;
- no rules, the model's threshold lowered so that it alerts on as many events as the rule set decides other
  than allow: what that many alerts cost without any rule;

and, without a broker, the decision step per event and the 50 rules' matches compiled to numpy against
rule-engine's own row-by-row evaluation.

The backlog is the ULB events, each with a ``card_id`` (of ten million) and a ``channel`` added (both variants
read the same bytes). The rule set (``rule_set_text``): 10 rules over the amount and the score, 10 over pairs of
V features, 10 over card deny and allow lists (10 lists of 2,000 cards), 10 over the channel and the amount, 10
over the score against the threshold and a feature; actions allow, block, review and a custom one. Each rule is
rare, as a team's rules are: together they decide about 1 % of the events (the model alone alerts on 0.16 %).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.harness import create_topics, in_turn, log, median_runs, pair_ratios, produce_all, worker_run

N_LISTS, LIST_SIZE, CARDS = 5, 2_000, 10_000_000


def rule_set_text(only_allow: bool = False) -> str:
    """The 50 rules; ``only_allow``: the same conditions, every action allow (they alert on nothing, so the
    difference from the set itself is what its alerts cost)."""
    rules = []
    for k in range(10):
        rules.append(("block" if k % 2 else "review", f"Amount > {500 + 250 * k} and score >= threshold * 0.95"))
    for k in range(10):
        rules.append(("review", f"V{k + 1} < {-6 - 0.5 * k} and V{k + 11} > {2 + 0.25 * k}"))
    for k in range(10):
        lst = f"{'deny' if k < 5 else 'allow'}_cards_{k % N_LISTS}"
        rules.append(("block" if k < 5 else "allow", f"card_id in {lst} and Amount > {k * 10}"))
    for k in range(10):
        rules.append(("step_up", f"channel == '{'web' if k % 2 else 'atm'}' and Amount > {1000 + 200 * k}"))
    for k in range(10):
        rules.append(("review", f"score >= threshold * {0.8 + 0.02 * k:.2f} and V14 < {-8 - 0.2 * k:.1f}"))
    fields = "\n".join([*(f'V{i} = "float"' for i in range(1, 29)), 'Amount = "float"', 'card_id = "string"',
                        'channel = "string"'])  # fmt: skip
    lists = "\n".join(f'{kind}_cards_{i} = "{kind}_cards_{i}.txt"' for kind in ("deny", "allow")
                      for i in range(N_LISTS))  # fmt: skip
    if only_allow:
        rules = [("allow", w) for _, w in rules]
    body = "".join(f'[[rule]]\nid = "r{k:02d}"\naction = "{a}"\nwhen = "{w}"\n' for k, (a, w) in enumerate(rules))
    return f"[fields]\n{fields}\n[lists]\n{lists}\n{body}"


def with_cards(values: list[bytes], seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    cards = rng.integers(0, CARDS, len(values))
    channels = np.array([b"web", b"pos", b"atm"])[rng.integers(0, 3, len(values))]
    return [
        v[:-1] + b',"card_id":"c-%07d","channel":"%s"}' % (c, ch)
        for v, c, ch in zip(values, cards.tolist(), channels.tolist(), strict=True)
    ]


def write_rules(models: str, only_allow: bool = False) -> str:
    """A copy of ``models`` whose RULES names the 50-rule set (``rule_set_text``), with its lists; the copy's path."""
    from worker.core.rules import parse_rule_set

    target = tempfile.mkdtemp(prefix="fraud-bench-rules-models-")
    shutil.copytree(models, target, dirs_exist_ok=True)
    text = rule_set_text(only_allow)
    version = "bench-rules-50"
    parse_rule_set(text.encode(), "bench rules", version)  # checked here: a bad set would only show as a dead worker
    (Path(target) / "rules" / version).mkdir(parents=True)
    (Path(target) / "rules" / version / "rules.toml").write_text(text)
    lists = Path(target) / "lists"
    lists.mkdir()
    rng = np.random.default_rng(1)
    for kind in ("deny", "allow"):
        for i in range(N_LISTS):
            cards = rng.choice(CARDS, LIST_SIZE, replace=False)
            (lists / f"{kind}_cards_{i}.txt").write_text("".join(f"c-{c:07d}\n" for c in cards.tolist()))
    (Path(target) / "RULES").write_text(version + "\n")
    return target


def measure(bootstrap: str, models: str, values: list[bytes], repeats: int) -> dict:
    """The worker with and without the 50-rule set over one backlog, alternating (which goes first alternates)."""
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-rules-in-{tag}", "alerts": f"bench-rules-alerts-{tag}", "dlq": f"bench-rules-dlq-{tag}"}
    create_topics(bootstrap, {topics["input"]: (6, {}), topics["alerts"]: (1, {}), topics["dlq"]: (1, {})})
    backlog = with_cards(values)
    secs = produce_all(bootstrap, topics["input"], backlog)
    log(f"rules cost: produced {len(backlog):,} events in {secs:.1f}s; {repeats} rounds of four runs")
    ruled, allowing = write_rules(models), write_rules(models, only_allow=True)
    alerting, decided = alerting_as_often(models, ruled, backlog)
    log(f"the rule set decides {decided:,} events other than allow; the model alone at a lower threshold as many")
    try:
        variants = {"worker": models, "worker_with_50_rules": ruled, "worker_with_50_allow_rules": allowing,
                    "worker_alerting_as_often": alerting}  # fmt: skip
        runs: dict[str, list[float]] = {name: [] for name in variants}
        alerts: dict[str, int] = {}
        for i in range(repeats):
            for name in in_turn(list(variants), i):
                before = _alerts(bootstrap, topics["alerts"])
                runs[name].append(worker_run(bootstrap, variants[name], topics, len(backlog))["rate"])
                alerts[name] = _alerts(bootstrap, topics["alerts"]) - before
            log(f"round {i + 1}/{repeats}: " + ", ".join(f"{n} {runs[n][-1]:,.0f}/s" for n in variants))
        offline = measure_offline(ruled, backlog[:20_000])
    finally:
        shutil.rmtree(ruled, ignore_errors=True)
        shutil.rmtree(allowing, ignore_errors=True)
        shutil.rmtree(alerting, ignore_errors=True)
    pairs = pair_ratios(runs["worker_with_50_rules"], runs["worker"])
    allow_pairs = pair_ratios(runs["worker_with_50_allow_rules"], runs["worker"])
    return {
        "events": len(backlog),
        "rules": 50,
        "worker": median_runs(runs["worker"]),
        "worker_with_50_rules": median_runs(runs["worker_with_50_rules"]),
        "with_rules_over_worker": {"median_of_pairs": statistics.median(pairs), "runs": pairs},
        "worker_with_50_allow_rules": median_runs(runs["worker_with_50_allow_rules"]),
        "with_allow_rules_over_worker": {"median_of_pairs": statistics.median(allow_pairs), "runs": allow_pairs},
        "decided_by_rule_set": decided,
        "worker_alerting_as_often": median_runs(runs["worker_alerting_as_often"]),
        "alerting_as_often_over_worker": {
            "median_of_pairs": statistics.median(pair_ratios(runs["worker_alerting_as_often"], runs["worker"])),
            "runs": pair_ratios(runs["worker_alerting_as_often"], runs["worker"]),
        },
        "alerts_per_run": alerts,
        "offline": offline,
    }


def alerting_as_often(models: str, ruled: str, backlog: list[bytes]) -> tuple[str, int]:
    """A copy of ``models`` whose model alone alerts on as many events as the rule set decides other than allow
    (its threshold lowered to that many events' score), and that number: what alerts cost without any rule."""
    import json

    from worker.core.batch_decisions import Judge
    from worker.core.batch_scoring import score_decoded
    from worker.core.decode import Decoder
    from worker.core.rule_lists import read_list
    from worker.core.rules import ServingRules, load_rule_set
    from worker.core.scoring import load_scorer

    scorer = load_scorer(models)
    decoder = Decoder(scorer.input_names)
    rule_set = load_rule_set(str(Path(ruled) / "rules" / "bench-rules-50" / "rules.toml"), "bench")
    lists = {name: read_list(str(Path(ruled) / "lists" / f)) for name, f in rule_set.lists.items()}
    judge, rules = Judge(), ServingRules(rule_set, lists)
    scores, decided = [], 0
    for start in range(0, len(backlog), 500):
        chunk = backlog[start : start + 500]
        scored = score_decoded(scorer, decoder.decode_batch(chunk))
        if scored.scores is None:
            continue
        raw = [chunk[i] for i in scored.decoded.index]
        decided += len(judge.decide(scorer, scored.decoded, raw, scored.scores, rules)[0].alerts)
        scores.append(scored.scores)
    ranked = np.sort(np.concatenate(scores))[::-1]
    threshold = float(ranked[min(decided, len(ranked)) - 1])
    target = tempfile.mkdtemp(prefix="fraud-bench-alerting-models-")
    shutil.copytree(models, target, dirs_exist_ok=True)
    version = (Path(target) / "CURRENT").read_text().strip()
    manifest = Path(target) / version / "manifest.json"
    data = json.loads(manifest.read_text())
    data["threshold"] = threshold
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return target, decided


def _alerts(bootstrap: str, topic: str) -> int:
    """Records in the alert topic so far (the runs' alerts, told apart by the count before and after)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def measure_offline(models: str, values: list[bytes], batch: int = 500) -> dict:
    """The 50 rules over ``values`` in batches: the worker's whole decision step (fields read from the JSON,
    thresholds, matches, decisions) compiled, and the matches alone compiled against rule-engine row by row
    (on the first batch only: tens of milliseconds an event, rule-engine converting each list of 2,000 values
    at every evaluation), in microseconds an event."""
    from worker.core.batch_decisions import Judge
    from worker.core.batch_scoring import score_decoded
    from worker.core.decode import Decoder
    from worker.core.rule_lists import read_list
    from worker.core.rules import ServingRules, load_rule_set
    from worker.core.scoring import load_scorer

    scorer = load_scorer(models)
    decoder = Decoder(scorer.input_names)
    compiled = load_rule_set(str(Path(models) / "rules" / "bench-rules-50" / "rules.toml"), "bench")
    interpreted = load_rule_set(str(Path(models) / "rules" / "bench-rules-50" / "rules.toml"), "bench", False)
    lists = {name: read_list(str(Path(models) / "lists" / f)) for name, f in compiled.lists.items()}
    batches = []
    for start in range(0, len(values), batch):
        chunk = values[start : start + batch]
        scored = score_decoded(scorer, decoder.decode_batch(chunk))
        batches.append((scored, [chunk[i] for i in scored.decoded.index]))
    judge, rules = Judge(), ServingRules(compiled, lists)
    t0 = time.perf_counter()
    for scored, raw in batches:
        judge.decide(scorer, scored.decoded, raw, scored.scores, rules)
    decide_us = (time.perf_counter() - t0) / len(values) * 1e6
    scored, raw = batches[0]
    n = len(raw)
    columns = {"score": scored.scores.astype(np.float64), "threshold": np.full(n, scorer.threshold)}
    names = list(scorer.feature_names)
    for f in compiled.fields:
        if f.source in names:
            columns[f.name] = scored.decoded.features[:, names.index(f.source)].astype(np.float64)
    import msgspec

    events = [msgspec.json.decode(v) for v in raw]
    for name in ("card_id", "channel"):
        col = np.empty(n, dtype=object)
        col[:] = [e[name] for e in events]
        columns[name] = col
    timings = []
    for _ in range(20):  # the best of 20 over the same batch: rule-engine's one pass below is as warm
        t0 = time.perf_counter()
        fast = compiled.matches(columns, ServingRules(compiled, lists).lists, n)
        timings.append(time.perf_counter() - t0)
    compiled_us = min(timings) / n * 1e6
    t0 = time.perf_counter()
    slow = interpreted.matches(columns, lists, n)
    interpreted_us = (time.perf_counter() - t0) / n * 1e6
    assert (fast == slow).all(), "the compiled rules disagree with rule-engine"
    return {
        "events": len(values),
        "decide_us_per_event": decide_us,
        "matches_compiled_us_per_event": compiled_us,
        "matches_rule_engine_us_per_event": interpreted_us,
        "rule_engine_over_compiled": interpreted_us / compiled_us,
    }


def print_rules(rc: dict) -> None:
    r = rc["with_rules_over_worker"]["median_of_pairs"]
    print("\nRules (a 50-rule set deciding every event: models/RULES)")
    a = rc.get("alerts_per_run", {})
    print(f"  worker alone                           {rc['worker']['median']:>10,.0f} events/s (median), "
          f"{a.get('worker', 0):,} alerts a run")  # fmt: skip
    print(f"  with 50 rules                          {rc['worker_with_50_rules']['median']:>10,.0f} events/s, "
          f"ratio {r:.3f} (goal >= 0.8: {'pass' if r >= 0.8 else 'FAIL'}), "
          f"{a.get('worker_with_50_rules', 0):,} alerts a run")  # fmt: skip
    if "with_allow_rules_over_worker" in rc:
        r2 = rc["with_allow_rules_over_worker"]["median_of_pairs"]
        print(
            f"  the same 50 conditions, all allow      {rc['worker_with_50_allow_rules']['median']:>10,.0f} events/s, "
            f"ratio {r2:.3f}, {a.get('worker_with_50_allow_rules', 0):,} alerts a run (the rules' evaluation alone)"
        )
    if "alerting_as_often_over_worker" in rc:
        r3 = rc["alerting_as_often_over_worker"]["median_of_pairs"]
        print(
            f"  no rules, the model alerting as often  {rc['worker_alerting_as_often']['median']:>10,.0f} events/s, "
            f"ratio {r3:.3f}, {a.get('worker_alerting_as_often', 0):,} alerts a run (what the alerts cost)"
        )
    o = rc["offline"]
    print(f"  offline, per event: the decision step {o['decide_us_per_event']:.2f} us; the 50 rules' matches "
          f"compiled {o['matches_compiled_us_per_event']:.2f} us, rule-engine row by row "
          f"{o['matches_rule_engine_us_per_event']:.0f} us ({o['rule_engine_over_compiled']:,.0f}x)")  # fmt: skip
