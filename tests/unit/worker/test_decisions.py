"""Decisions (worker/core/decisions.py, batch_decisions.py): each scored event's action, threshold and decision
record, checked against an independent evaluation with rule-engine and the precedence written out here."""

from __future__ import annotations

import json
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest
import rule_engine

from tests.unit.worker.conftest import SPEC
from worker.core.batch_decisions import EventFields, Judge
from worker.core.batch_scoring import score_decoded
from worker.core.decisions import SegmentThresholds, decide, decision_counts
from worker.core.decode import Decoder
from worker.core.errors import BundleError
from worker.core.outputs import OutputSettings, build_outputs
from worker.core.rules import ServingRules, parse_rule_set
from worker.core.scoring import Scorer, load_scorer

RULES = b"""
[fields]
amount = "float"
channel = "string"
terminal_id = "string"
f4 = "float"
[lists]
deny_terminals = "deny.txt"
vip_terminals = "vip.txt"
[[rule]]
id = "big-web"
action = "review"
when = "amount > 500 and channel == 'web'"
[[rule]]
id = "deny"
action = "block"
when = "terminal_id in deny_terminals"
[[rule]]
id = "vip"
action = "allow"
when = "terminal_id in vip_terminals"
[[rule]]
id = "hot-f4"
action = "step_up"
when = "f4 > 1.5 and score < threshold"
"""
LISTS = {"deny_terminals": frozenset({"t1"}), "vip_terminals": frozenset({"t2"})}
SEGMENTS = {"field": "channel", "min_support": 100, "thresholds": {"web": 0.4, "pos": 0.95}}
PRECEDENCE = ("allow", "block", "review", "step_up")


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Scorer:
    from tests.support.bundles import make_bundle

    models = tmp_path_factory.mktemp("decisions") / "models"
    make_bundle(models, "v1", **SPEC, segment_thresholds=SEGMENTS)
    return load_scorer(str(models))


def events(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        e = {f"f{j}": float(np.float32(rng.normal(0, 1.5))) for j in range(6)}
        e["transaction_id"] = f"tx-{i}"
        if rng.random() < 0.9:
            e["channel"] = str(rng.choice(["web", "pos", "atm"]))
        e["terminal_id"] = str(rng.choice(["t1", "t2", "t3", "t4"]))
        e["amount"] = float(rng.choice([10.0, 600.0, 2000.0])) if rng.random() < 0.95 else "n/a"
        out.append(json.dumps(e).encode())
    return out


def reference(event: dict, score: float, scorer: Scorer) -> tuple[str, list[str], float]:
    """The action, matched rules and threshold of one event, computed here from the definitions."""
    channel = event.get("channel")
    t = SEGMENTS["thresholds"].get(channel, scorer.threshold) if isinstance(channel, str) else scorer.threshold
    amount = event.get("amount")
    row = {"score": score, "threshold": t, "amount": float(amount) if isinstance(amount, float) else 0.0,
           "channel": channel if isinstance(channel, str) else "", "terminal_id": event["terminal_id"],
           "f4": event["f4"], "deny_terminals": set(LISTS["deny_terminals"]),
           "vip_terminals": set(LISTS["vip_terminals"])}  # fmt: skip
    types = {"score": "FLOAT", "threshold": "FLOAT", "amount": "FLOAT", "channel": "STRING", "terminal_id": "STRING",
             "f4": "FLOAT"}  # fmt: skip
    resolver = rule_engine.type_resolver_from_dict(
        {
            **{k: getattr(rule_engine.DataType, v) for k, v in types.items()},
            "deny_terminals": rule_engine.DataType.SET,
            "vip_terminals": rule_engine.DataType.SET,
        }  # fmt: skip
    )
    ctx = rule_engine.Context(type_resolver=resolver, resolver=rule_engine.resolve_item)
    import tomllib

    rules = tomllib.loads(RULES.decode())["rule"]
    matched = [r for r in rules if rule_engine.Rule(r["when"], context=ctx).matches(row)]
    matched.sort(key=lambda r: PRECEDENCE.index(r["action"]))  # stable: file order within an action
    if matched:
        return matched[0]["action"], [r["id"] for r in matched], t
    return ("review" if score >= t else "allow"), [], t


def test_every_decision_equals_an_independent_evaluation(scorer):
    values = events(400)
    decoded = Decoder(scorer.input_names).decode_batch(values)
    scored = score_decoded(scorer, decoded)
    rs = parse_rule_set(RULES, "rules.toml", "rs-1")
    decisions, shadow = Judge().decide(scorer, scored.decoded, values, scored.scores, ServingRules(rs, LISTS))
    assert shadow is None
    seen = set()
    for j, value in enumerate(values):
        event = json.loads(value)
        action, matched, t = reference(event, float(scored.scores[j]), scorer)
        record = decisions.record(j)
        assert (record["action"], record["rules"]) == (action, matched)
        assert decisions.thresholds[j] == t
        assert record["rule"] == (matched[0] if matched else None)
        assert record["rule_set"] == "rs-1"
        channel = event.get("channel")
        if channel in SEGMENTS["thresholds"]:
            assert record["threshold_source"] == "segment"
            assert record["segment"] == {"field": "channel", "value": channel}
        else:
            assert record["threshold_source"] == "global" and "segment" not in record
        seen.add(action)
    assert seen == {"allow", "block", "review", "step_up"}


def test_alerts_are_every_non_allow_decision_and_carry_the_record(scorer):
    values = events(300, seed=1)
    decoded = Decoder(scorer.input_names).decode_batch(values)
    scored = score_decoded(scorer, decoded)
    rs = parse_rule_set(RULES, "rules.toml", "rs-1")
    decisions, shadow = Judge().decide(scorer, scored.decoded, values, scored.scores, ServingRules(rs, LISTS),
                                       ServingRules(rs.without("deny"), LISTS))  # fmt: skip
    records = [SimpleNamespace(topic="tx", partition=0, offset=i, timestamp=0, key=None, value=v)
               for i, v in enumerate(values)]  # fmt: skip
    settings = OutputSettings("alerts", "dlq", "scores", "", 2, False)
    out = build_outputs(settings, scorer, records, scored.decoded, scored.scaled, scored.scores, 1, None, decisions,
                        shadow)  # fmt: skip
    alerts = [msgspec.json.decode(v) for t, _, v, _ in out.records if t == "alerts"]
    scores = [msgspec.json.decode(v) for t, _, v, _ in out.records if t == "scores"]
    want = [j for j in range(len(values)) if decisions.action_of(j) != "allow"]
    assert [a["transaction_id"] for a in alerts] == [f"tx-{j}" for j in want]
    for a in alerts:
        j = int(a["transaction_id"][3:])
        assert a["decision"] == decisions.record(j) and a["threshold"] == decisions.thresholds[j]
    assert any(a["score"] < a["threshold"] for a in alerts)  # a rule alerted below the threshold
    for s in scores:
        j = int(s["transaction_id"][3:])
        assert s["decision"] == decisions.record(j) and s["shadow_decision"] == shadow.record(j)
    # Without the deny rule the shadow never blocks; the serving set does.
    assert "block" in decisions.action_counts() and "block" not in shadow.action_counts()


def test_allow_overrides_and_counts():
    rs = parse_rule_set(b"[[rule]]\nid='ok'\naction='allow'\nwhen='score > 0.2'\n[[rule]]\nid='b'\naction='block'\n"
                        b"when='score > 0.9'\n", "r.toml")  # fmt: skip
    scores = np.array([0.1, 0.5, 0.95, 0.3], dtype=np.float32)
    thresholds = np.array([0.5, 0.5, 0.5, 0.9])
    matches = rs.matches({"score": scores.astype(np.float64), "threshold": thresholds}, {}, 4)
    d = decide(scores, thresholds, rs, matches, [None] * 4, None)
    assert [d.action_of(j) for j in range(4)] == ["allow", "allow", "allow", "allow"]
    assert d.overrides.tolist() == [False, True, True, False]
    actions, per_rule, overrides = decision_counts(d)
    assert actions == {"allow": 4} and per_rule == {("ok", "allow"): 3, ("b", "block"): 1} and overrides == {"ok": 2}
    plain = decide(scores, thresholds, None, None, [None] * 4, None)
    assert [plain.action_of(j) for j in range(4)] == ["allow", "review", "review", "allow"]
    assert plain.record(1) == {"action": "review", "rule": None, "rules": [], "rule_set": None,
                               "threshold_source": "global"}  # fmt: skip


def test_segment_thresholds_are_checked_and_applied():
    seg = SegmentThresholds.from_manifest({"field": "mcc", "min_support": 10, "thresholds": {"5411": 0.3, "x": 1}})
    thresholds, segments = seg.apply(["5411", 5411, 5411.0, "x", None, True, 3.5, "y"], 0.8)
    assert thresholds.tolist() == [0.3, 0.3, 0.3, 1.0, 0.8, 0.8, 0.8, 0.8]
    assert segments == ["5411", "5411", "5411", "x", None, None, None, None]
    for bad in ({"field": "", "min_support": 1, "thresholds": {}}, {"field": "a", "min_support": 0, "thresholds": {}},
                {"field": "a", "min_support": 1, "thresholds": {"v": 1.5}}, {"field": "a", "min_support": 1,
                "thresholds": {"v": True}}, [1]):  # fmt: skip
        with pytest.raises(BundleError):
            SegmentThresholds.from_manifest(bad)


def test_event_fields_read_what_is_there_and_none_for_the_rest():
    reader = EventFields(["a", "b"])
    got = reader.read([b'{"a": 1, "b": "x"}', b'{"a": null}', b'{"c": [1, 2], "b": {"k": 1}}'])
    assert got == [[1, None, None], ["x", None, {"k": 1}]]
