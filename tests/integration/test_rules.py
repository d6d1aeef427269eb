"""Rule sets on a real broker (docs/rules.md): every alert's decision equals an independent evaluation of the same
rules on the same events; a list edit changes decisions within the reload interval without a restart; the shadow
rule set's per-rule matches equal the offline evaluation, and fraud-feedback's precision and recall per rule
equal those of the same evaluation against the labels; a malformed rule set is refused in one line, at start
(exit 3) and on reload (the old set keeps serving).

The independent evaluation is written here: rule-engine's own ``Rule.matches`` on each event as a dict, the
precedence (allow, block, review, then custom actions; file order within an action; no match: review at or above
the threshold), and the threshold of the event's channel from the bundle's segment table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rule_engine
import tomllib

from tests.conftest import unique
from tests.support.bundles import make_bundle
from tests.support.feedback import FeedbackProcess
from tests.support.workers import WorkerProcess, produce, read_topic, wait_committed
from worker.core.scoring import load_scorer
from worker.feedback.records import encode_label
from worker.offline.synthetic import generate_behavioural
from worker.programs.subcommands import rules as rules_cli

N = 3_000
MODEL = dict(feature_names=("amount",), mean=[60.0], scale=[60.0], weights=[1.5], bias=-3.0, threshold=0.5)
SEGMENTS = {"field": "channel", "min_support": 1, "thresholds": {"web": 0.3, "pos": 0.8}}
SERVING = """
[fields]
amount = "float"
channel = "string"
terminal_id = "string"
customer_id = "string"
[lists]
deny_terminals = "deny_terminals.txt"
vip_customers = "vip_customers.txt"
[[rule]]
id = "big-web"
action = "block"
when = "amount > 400 and channel == 'web'"
[[rule]]
id = "vip"
action = "allow"
when = "customer_id in vip_customers and amount < 200"
[[rule]]
id = "deny-terminal"
action = "block"
when = "terminal_id in deny_terminals"
[[rule]]
id = "near-miss"
action = "review"
when = "score >= threshold * 0.8 and score < threshold"
[[rule]]
id = "atm-large"
action = "step_up"
when = "channel == 'atm' and amount > 90"
"""
SHADOW = """
[fields]
amount = "float"
channel = "string"
[[rule]]
id = "web-100"
action = "review"
when = "channel == 'web' and amount > 100"
[[rule]]
id = "any-200"
action = "block"
when = "amount > 200"
"""
PRECEDENCE = ["allow", "block", "review"]


def events(seed: int) -> list[dict]:
    cols = generate_behavioural(N, seed=seed, days=3)
    names = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "channel", "merchant_category")
    return [{k: (cols[k][i].item() if hasattr(cols[k][i], "item") else cols[k][i]) for k in names} for i in range(N)]


def classes(seed: int) -> list[int]:
    return generate_behavioural(N, seed=seed, days=3)["Class"].astype(int).tolist()


def evaluate(text: str, event: dict, score: float, lists: dict[str, set[str]]) -> dict:
    """The decision of one event under the rule set ``text``, computed from the definitions alone."""
    doc = tomllib.loads(text)
    channel = event["channel"]
    threshold = SEGMENTS["thresholds"].get(channel, MODEL["threshold"])
    kinds = {"float": rule_engine.DataType.FLOAT, "string": rule_engine.DataType.STRING}
    types = {"score": kinds["float"], "threshold": kinds["float"],
             **{k: kinds[v] for k, v in doc.get("fields", {}).items()},
             **{k: rule_engine.DataType.SET for k in doc.get("lists", {})}}  # fmt: skip
    context = rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(types),
                                  resolver=rule_engine.resolve_item)  # fmt: skip
    thing = {"score": score, "threshold": threshold, **{k: event[k] for k in doc.get("fields", {})},
             **{k: lists[k] for k in doc.get("lists", {})}}  # fmt: skip
    matched = [r for r in doc["rule"] if rule_engine.Rule(r["when"], context=context).matches(thing)]
    customs = [a for a in dict.fromkeys(r["action"] for r in doc["rule"]) if a not in PRECEDENCE]
    order = PRECEDENCE + customs
    matched.sort(key=lambda r: order.index(r["action"]))
    if matched:
        action = matched[0]["action"]
    else:
        action = "review" if score >= threshold else "allow"
    return {"action": action, "rule": matched[0]["id"] if matched else None, "rules": [r["id"] for r in matched],
            "threshold": threshold}  # fmt: skip


def publish(tmp_path: Path, models: Path, text: str, *extra: str) -> str:
    path = tmp_path / f"rules-{len(list(tmp_path.glob('rules-*')))}.toml"
    path.write_text(text)
    assert rules_cli.main(["publish", str(path), "--models-dir", str(models), *extra]) == 0
    pointer = "RULES_SHADOW" if "--shadow" in extra else "RULES"
    return (models / pointer).read_text().strip()


def test_decisions_equal_an_independent_evaluation_and_a_list_edit_changes_them_without_a_restart(
    kafka, topics, workers, feedbacks, tmp_path
):
    models = tmp_path / "models"
    make_bundle(models, "v1", **MODEL, segment_thresholds=SEGMENTS)
    first, second = events(seed=11), events(seed=12)
    terminals = sorted({e["terminal_id"] for e in first})
    lists = {"deny_terminals": set(terminals[:3]), "vip_customers": {e["customer_id"] for e in first[:200:7]}}
    (models / "lists").mkdir()
    for name, values in lists.items():
        (models / "lists" / f"{name}.txt").write_text("# test list\n" + "\n".join(sorted(values)) + "\n")
    serving = publish(tmp_path, models, SERVING)
    shadow = publish(tmp_path, models, SHADOW, "--shadow")
    group = kafka.group()
    w = WorkerProcess(kafka.bootstrap, models, group=group, **topics)
    workers.append(w.start())
    w.wait_ready()
    assert w.metric("fraud_rule_set_info", {"role": "serving", "version": serving}) == 1
    assert w.metric("fraud_rule_set_info", {"role": "shadow", "version": shadow}) == 1
    producer = kafka.producer(linger_ms=20)
    produce(producer, topics["input_topic"], ((e["terminal_id"].encode(), json.dumps(e).encode()) for e in first))
    wait_committed(kafka, group, topics["input_topic"], workers=[w])

    # Edit a list: the running worker reads it again within the reload interval (0.2 s here).
    new_deny = {e["terminal_id"] for e in second[:50]} - lists["deny_terminals"]
    lists_after = {**lists, "deny_terminals": lists["deny_terminals"] | new_deny}
    edited = time.monotonic()
    path = models / "lists" / "deny_terminals.txt"
    path.write_text("\n".join(sorted(lists_after["deny_terminals"])) + "\n")
    w.wait_metric("fraud_rule_list_entries", len(lists_after["deny_terminals"]), timeout=5,
                  labels={"list": "deny_terminals"})  # fmt: skip
    took = time.monotonic() - edited
    produce(producer, topics["input_topic"], ((e["terminal_id"].encode(), json.dumps(e).encode()) for e in second))
    wait_committed(kafka, group, topics["input_topic"], workers=[w])

    scorer = load_scorer(str(models), "v1")
    everything = first + second
    scores = scorer.score(np.asarray([[e["amount"]] for e in everything], dtype=np.float32))
    expected, expected_shadow = {}, {}
    for i, e in enumerate(everything):
        expected[e["transaction_id"]] = evaluate(SERVING, e, float(scores[i]), lists if i < N else lists_after)
        expected_shadow[e["transaction_id"]] = evaluate(SHADOW, e, float(scores[i]), {})

    alerts = {r.key.decode(): json.loads(r.value) for r in read_topic(kafka, topics["alert_topic"])}
    flagged = {t for t, d in expected.items() if d["action"] != "allow"}
    assert set(alerts) == flagged, "an alert for every decision but allow, and none for allow"
    for t, a in alerts.items():
        want = expected[t]
        got = a["decision"]
        assert (got["action"], got["rule"], got["rules"]) == (want["action"], want["rule"], want["rules"]), t
        assert got["rule_set"] == serving and a["threshold"] == want["threshold"]
        assert got["threshold_source"] == ("segment" if a["threshold"] != MODEL["threshold"] else "global")
    actions = {d["action"] for d in expected.values()}
    assert {"allow", "block", "review", "step_up"} <= actions
    # Below the threshold, decided by a rule; at or above it, let through by an allow rule (counted).
    assert any(a["score"] < a["threshold"] for a in alerts.values())
    overrides = sum(1 for i, e in enumerate(everything) if expected[e["transaction_id"]]["rule"] == "vip"
                    and scores[i] >= expected[e["transaction_id"]]["threshold"])  # fmt: skip
    assert w.metric("fraud_decision_allow_overrides_total", {"rule": "vip"}) == overrides

    # Every score record carries both decisions; the metrics count the matches per rule as evaluated here.
    records = {r.key.decode(): json.loads(r.value) for r in read_topic(kafka, topics["scores_topic"])}
    assert len(records) == 2 * N
    # The list edit changed decisions: payments at the newly denied terminals match it, in the second half only.
    newly = [e["transaction_id"] for e in second if e["terminal_id"] in new_deny]
    assert newly and all("deny-terminal" in records[t]["decision"]["rules"] for t in newly)
    assert not any("deny-terminal" in records[e["transaction_id"]]["decision"]["rules"] for e in first
                   if e["terminal_id"] in new_deny)  # fmt: skip
    for role, text, want in (("serving", SERVING, expected), ("shadow", SHADOW, expected_shadow)):
        key = "decision" if role == "serving" else "shadow_decision"
        assert all(records[t][key]["rules"] == d["rules"] for t, d in want.items())
        for rule in tomllib.loads(text)["rule"]:
            n = sum(1 for d in want.values() if rule["id"] in d["rules"])
            got = w.metric("fraud_rule_matches_total", {"role": role, "rule": rule["id"], "action": rule["action"]})
            assert got == n, (role, rule["id"], got, n)
    for action in actions:
        n = sum(1 for d in expected.values() if d["action"] == action)
        assert w.metric("fraud_decisions_total", {"action": action}) == n
    counts = dict(sorted((a, sum(d["action"] == a for d in expected.values())) for a in actions))
    print(
        f"\n{2 * N} events; decisions {counts}"
        f"; list edit in use after {took:.2f} s (reload interval 0.2 s); {len(newly)} payments matched by it"
    )

    # fraud-feedback joins the score records with the labels: precision and recall per rule of the shadow set
    # (and the serving one) equal those computed here from the independent evaluation and the labels.
    labels_topic = kafka.topic(partitions=1, prefix="labels")
    fraud = {e["transaction_id"]: bool(f) for e, f in zip(everything, [*classes(11), *classes(12)], strict=True)}
    now = int(time.time() * 1000)
    produce(producer, labels_topic, ((t.encode(), encode_label(t, f, now, "test")) for t, f in fraud.items()))
    fb = FeedbackProcess(
        kafka.bootstrap,
        topics["scores_topic"],
        labels_topic,
        unique("fb"),
        tmp_path / "fb",
        ("--refresh-seconds", "0.5", "--label-window", "3650d", "--quality-window", "3650d"),
    )
    feedbacks.append(fb.start())
    frauds = sum(fraud.values())
    want: dict[tuple[str, str, str], tuple[float, float]] = {}
    for role, version, text, decided in (("serving", serving, SERVING, expected),
                                         ("shadow", shadow, SHADOW, expected_shadow)):  # fmt: skip
        for rule in tomllib.loads(text)["rule"]:
            matched = [t for t, d in decided.items() if rule["id"] in d["rules"]]
            if matched:
                hits = sum(fraud[t] for t in matched)
                want[(role, version, rule["id"])] = (hits / len(matched), hits / frauds)
    deadline = time.monotonic() + 120
    while True:
        figures = fb.rule_figures()
        got = {k: (figures.get("precision", {}).get(k), figures.get("recall", {}).get(k)) for k in want}
        if all(g[0] is not None and g[1] is not None and abs(g[0] - w[0]) < 1e-9 and abs(g[1] - w[1]) < 1e-9
               for g, w in zip(got.values(), want.values(), strict=True)):  # fmt: skip
            break
        assert time.monotonic() < deadline, (got, want, fb.output()[-2000:])
        time.sleep(0.5)
    print(
        f"fraud-feedback: {len(want)} rules' precision and recall equal the independent figures, e.g. shadow "
        + ", ".join(f"{k[2]} {w[0]:.3f}/{w[1]:.3f}" for k, w in want.items() if k[0] == "shadow")
    )

    # A malformed rule set on reload: refused in one line, the old set keeps serving.
    bad = "20990101T000000Z-0badc0de"
    (models / "rules" / bad).mkdir()
    (models / "rules" / bad / "rules.toml").write_text(SERVING.replace("terminal_id in deny_terminals",
                                                                       "merchant in deny_terminals"))  # fmt: skip
    (models / "RULES").write_text(bad + "\n")
    w.wait_metric("fraud_rule_set_reloads_total", 1, timeout=10, labels={"role": "serving", "result": "failed"})
    assert w.metric("fraud_rule_set_info", {"role": "serving", "version": serving}) == 1
    refusals = [line for line in w.output().splitlines() if "rule set refused" in line]
    assert len(refusals) == 1 and "rule 'deny-terminal': unknown field 'merchant'" in refusals[0], refusals

    # The same at start: exit 3, one line.
    started = subprocess.run(
        [sys.executable, "-m", "worker", "--bootstrap-servers", kafka.bootstrap, "--models-dir", str(models),
         "--input-topic", topics["input_topic"], "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 3, started.stderr
    lines = [line for line in started.stderr.splitlines() if "rule" in line]
    assert len(lines) == 1 and "cannot start, bad rule set" in lines[0] and "unknown field 'merchant'" in lines[0]
