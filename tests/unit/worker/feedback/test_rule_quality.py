"""Precision and recall per rule and per action: decision records decoded strictly, kept per transaction and
role beside the score rows, and judged over the per-version quality window; the figures fraud-feedback
exports equal a computation made here from the records alone."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import msgspec
import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from worker.feedback.consumer import FeedbackConsumer, FeedbackSettings
from worker.feedback.metrics import FeedbackMetrics, snapshot
from worker.feedback.quality import rule_figures
from worker.feedback.records import BadRecord, Decision, Label, Score, decode_score, encode_label
from worker.feedback.store import DAY_MS, Store

NOW = 1_800_000_000_000
WINDOW = 120 * DAY_MS  # the label window
QUALITY = 7 * DAY_MS  # the quality window
RULE_SETS = {"serving": ("20261201T000000Z-0a1b2c3d", "20261207T101500Z-3f2a9c1d"),
             "shadow": ("20261207T111500Z-aa11bb22",)}  # fmt: skip
RULES = (("deny-terminal", "block"), ("big-web", "review"), ("velocity:1h", "review"), ("geo.mismatch", "allow"))
ROLES = {"serving": "decision", "shadow": "shadow_decision"}


def record(txn: str = "t1", version: str = "v1", event_time: int = NOW - 1000, **extra) -> bytes:
    return msgspec.json.encode({"transaction_id": txn, "score": 0.7, "threshold": 0.5, "model_version": version,
                                "event_time": event_time, **extra})  # fmt: skip


def decision(rules=(), action: str | None = None, rule_set: str | None = RULE_SETS["serving"][1], **extra) -> dict:
    rules = list(rules)
    out = {"action": action or ("block" if rules else "allow"), "rule": rules[0] if rules else None, "rules": rules,
           "rule_set": rule_set, "threshold_source": "global"}  # fmt: skip
    out.update(extra)
    return out


# -- decoding ----------------------------------------------------------------------------------------


def test_a_score_record_without_decisions_has_none():
    s = decode_score(record(), NOW)
    assert s.decision is None and s.shadow_decision is None and s.decisions() == []


def test_both_decision_records_are_read():
    s = decode_score(record(decision=decision(["deny-terminal", "big-web"]), shadow_decision=decision(
        ["r2"], "review", RULE_SETS["shadow"][0], threshold_source="segment",
        segment={"field": "channel", "value": "web"})), NOW)  # fmt: skip
    assert s.decision == Decision("block", "deny-terminal", ("deny-terminal", "big-web"), RULE_SETS["serving"][1])
    assert s.shadow_decision == Decision("review", "r2", ("r2",), RULE_SETS["shadow"][0])
    assert [role for role, _ in s.decisions()] == ["serving", "shadow"]


def test_a_decision_without_a_rule_set_and_the_largest_one_are_read():
    assert decode_score(record(decision=decision(action="review", rule_set=None)), NOW).decision == Decision(
        "review", None, (), None
    )
    ids = [f"r{i}:{'x' * 50}" for i in range(1000)]
    big = decode_score(record(decision=decision(ids, "custom_label", "file-0123456789ab")), NOW).decision
    assert big is not None and len(big.rules) == 1000 and big.action == "custom_label"
    assert decode_score(record(decision=None), NOW).decision is None  # null: as absent


MALFORMED = {
    "not an object": ["block"],
    "action a number": decision(action=1),  # type: ignore[arg-type]
    "action empty": decision() | {"action": ""},
    "action not an action name": decision(action="Block!"),
    "rules not a list": decision() | {"rules": "deny-terminal"},
    "rules of numbers": decision() | {"rules": [1, 2]},
    "too many rules": decision([f"r{i}" for i in range(1001)]),
    "a rule id too long": decision(["r" * 65]),
    "a rule id with a space": decision(["deny terminal"]),
    "a rule id starting with a dash": decision(["-x"]),
    "a rule id not ASCII": decision(["règle"]),
    "a rule id with a newline": decision(["r1\n"]),
    "a rule named twice": decision(["r1", "r1"]),
    "the deciding rule not among the rules": decision(["r1"]) | {"rule": "r2"},
    "rules without a rule set": decision(["r1"], rule_set=None),
    "rule_set a number": decision(rule_set=7),  # type: ignore[arg-type]
    "rule_set not a version name": decision(rule_set="../etc"),
    "rule_set too long": decision(rule_set="v" * 129),
    "rule_set empty": decision(rule_set=""),
    "no rules member": {k: v for k, v in decision().items() if k != "rules"},
    "no action member": {k: v for k, v in decision().items() if k != "action"},
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("member", ["decision", "shadow_decision"])
def test_a_malformed_decision_skips_the_record_as_schema(bad, member):
    with pytest.raises(BadRecord) as err:
        decode_score(record(**{member: bad}), NOW)
    assert err.value.reason == "schema"


# -- the figures against a computation from the records ----------------------------------------------


@dataclass
class Txn:
    """One generated transaction: what its records say, and what the labels make of it."""

    txn: str
    event_time: int
    decisions: dict[str, dict | None]  # role -> the decision record of its first score record carrying one
    labels: list[tuple[bool, int]] = field(default_factory=list)  # (is_fraud, label_time), in sending order

    def truth(self) -> tuple[bool, int] | None:
        """(is_fraud, resolved_at), or None while unknown: the latest label, else genuine past the label window."""
        if self.labels:
            fraud, label_time = max(self.labels, key=lambda x: x[1])  # label times are distinct here
            return fraud, label_time
        if self.event_time < NOW - WINDOW:
            return False, self.event_time + WINDOW
        return None


def expected(txns: list[Txn], since: int) -> dict[str, dict]:
    """The figures computed from the generated records alone."""
    groups: dict[tuple[str, str], list[tuple[bool, dict]]] = {}
    for t in txns:
        known = t.truth()
        if known is None or known[1] < since:
            continue
        for role, d in t.decisions.items():
            if d is not None and d["rule_set"] is not None:
                groups.setdefault((role, d["rule_set"]), []).append((known[0], d))
    out: dict[str, dict] = {k: {} for k in ("resolved", "precision", "recall", "action_resolved",
                                            "action_precision", "action_recall")}  # fmt: skip
    for (role, rule_set), members in groups.items():
        frauds = sum(f for f, _ in members)
        names = {("", r) for _, d in members for r in d["rules"]} | {("action_", d["action"]) for _, d in members}
        for prefix, name in names:
            hit = [f for f, d in members if (name in d["rules"] if not prefix else d["action"] == name)]
            key = (role, rule_set, name)
            out[prefix + "resolved"][key] = len(hit)
            out[prefix + "precision"][key] = sum(hit) / len(hit)
            if frauds:
                out[prefix + "recall"][key] = sum(hit) / frauds
    return out


def generate(seed: int, n: int = 600) -> tuple[list[Txn], list[tuple[int, bytes]], list[tuple[int, bytes]], int]:
    """Transactions; their score records and labels as (partition, value) in sending order; the malformed count."""
    rng = random.Random(seed)
    txns, scores, labels, malformed = [], [], [], 0
    used_times: set[int] = set()

    def label_time(lo: int, hi: int) -> int:
        while True:
            t = rng.randrange(lo, hi)
            if t not in used_times:
                used_times.add(t)
                return t

    def pick_decision(role: str) -> dict | None:
        u = rng.random()
        if u < 0.08:
            return None  # a worker from before rule sets, or no shadow rule set
        if u < 0.12:
            return decision(action=rng.choice(["allow", "review"]), rule_set=None)
        rules = [r for r, _ in RULES if rng.random() < 0.25]
        action = dict(RULES)[rules[0]] if rules else rng.choice(["allow", "allow", "review"])
        return decision(rules, action, rng.choice(RULE_SETS[role]))

    for i in range(n):
        txn, p = f"tx-{i}", i % 2
        if rng.random() < 0.2:  # old: resolved by the label window, inside the quality window or before it
            event_time = NOW - WINDOW - rng.randrange(0, 10 * DAY_MS)
        else:
            event_time = NOW - rng.randrange(0, 3 * DAY_MS)
        t = Txn(txn, event_time, {role: pick_decision(role) for role in ROLES})
        members = {ROLES[role]: d for role, d in t.decisions.items() if d is not None}
        if rng.random() < 0.03:  # a malformed decision: the record is skipped, the transaction never scored
            members["decision"] = decision(["r1", "r1"])
            malformed += 1
            t.decisions = {}
        else:
            txns.append(t)
        scores.append((p, record(txn, "v1", event_time, **members)))
        if t.decisions and rng.random() < 0.3:  # the challenger's record, after the champion's: no decision
            scores.append((p, record(txn, "v2", event_time)))
        if t.decisions and rng.random() < 0.05:  # a repeated record with another decision: ignored
            scores.append((p, record(txn, "v1", event_time, decision=decision(["other"], "block"))))
        old = event_time < NOW - WINDOW
        if old and rng.random() < 0.3:
            # A chargeback after the label window overturns "genuine". (A label agreeing with the truth a
            # transaction already has leaves the time it was resolved as it was, so none is sent here.)
            lt = label_time(NOW - 10 * DAY_MS, NOW)
            t.labels.append((True, lt))
            labels.append((p, encode_label(txn, True, lt, "chargeback")))
        elif not old and rng.random() < 0.6:
            fraud = rng.random() < 0.25
            lt = label_time(NOW - 10 * DAY_MS, NOW)
            t.labels.append((fraud, lt))
            labels.append((p, encode_label(txn, fraud, lt, "analyst")))
            if rng.random() < 0.15:  # overturned later, or an older label arriving late
                lt2 = label_time(NOW - 10 * DAY_MS, NOW)
                t.labels.append((not fraud, lt2))
                labels.append((p, encode_label(txn, not fraud, lt2, "chargeback")))
    return txns, scores, labels, malformed


def consumer(tmp_path, max_rows: int = 200_000) -> tuple[FeedbackConsumer, CollectorRegistry]:
    settings = FeedbackSettings("x:9092", "scores", "labels", "g", str(tmp_path), WINDOW, QUALITY, max_rows)
    registry = CollectorRegistry()
    fc = FeedbackConsumer(settings, FeedbackMetrics(registry), clock=lambda: NOW)
    fake = SimpleNamespace(assignment=lambda: tps, seek=lambda *a: None, seek_to_beginning=lambda *a: None,
                           commit=lambda *a: None)  # fmt: skip
    tps = {TopicPartition(t, p) for t in ("scores", "labels") for p in (0, 1)}
    fc._consumer = fake  # type: ignore[assignment]
    fc._assigned(sorted(tps))
    return fc, registry


def take(fc: FeedbackConsumer, topic: str, values: list[tuple[int, bytes]], offsets: dict[int, int]) -> None:
    polled: dict[TopicPartition, list] = {}
    for p, value in values:
        polled.setdefault(TopicPartition(topic, p), []).append(SimpleNamespace(offset=offsets.get(p, 0), value=value))
        offsets[p] = offsets.get(p, 0) + 1
    fc.take(fc._consumer, polled)  # type: ignore[arg-type]


def exported(registry: CollectorRegistry) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for family in registry.collect():
        for s in family.samples:
            for kind in ("rule", "action"):
                prefix = f"fraud_feedback_{kind}_"
                if s.name.startswith(prefix):
                    name = ("" if kind == "rule" else "action_") + s.name[len(prefix) :]
                    out.setdefault(name, {})[(s.labels["role"], s.labels["rule_set"], s.labels[kind])] = s.value
    return out


def assert_figures(got: dict[str, dict], want: dict[str, dict]) -> None:
    for name, values in want.items():
        assert set(got.get(name, {})) == set(values), name
        for key, value in values.items():
            assert got[name][key] == pytest.approx(value), (name, key)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_exported_figures_equal_a_computation_from_the_records(tmp_path, seed):
    txns, scores, labels, malformed = generate(seed)
    fc, registry = consumer(tmp_path)
    s_off: dict[int, int] = {}
    l_off: dict[int, int] = {}
    third = len(labels) // 3
    take(fc, "labels", labels[:third], l_off)  # labels before their scores, after, and in between
    take(fc, "scores", scores[: len(scores) // 2], s_off)
    take(fc, "labels", labels[third : 2 * third], l_off)
    take(fc, "scores", scores[len(scores) // 2 :], s_off)
    take(fc, "labels", labels[2 * third :], l_off)
    for store in fc.stores.values():
        store.expire()
    fc.refresh()
    want = expected(txns, NOW - QUALITY)
    assert want["resolved"] and want["recall"] and want["action_recall"], "the generated traffic covers every case"
    assert {k[:2] for k in want["action_resolved"]} == {(r, v) for r, vs in RULE_SETS.items() for v in vs}
    assert_figures(exported(registry), want)
    schema = registry.get_sample_value("fraud_feedback_invalid_total", {"topic": "scores", "reason": "schema"})
    assert schema == malformed > 0
    # The per-version figures read the same transactions: v1's window holds every resolved one.
    resolved = sum(1 for t in txns if (k := t.truth()) is not None and k[1] >= NOW - QUALITY)
    assert registry.get_sample_value("fraud_feedback_window_transactions", {"model_version": "v1"}) == resolved
    for store in fc.stores.values():
        store.close()


def test_the_figures_survive_reopening_the_stores(tmp_path):
    txns, scores, labels, _ = generate(7, 200)
    fc, _ = consumer(tmp_path)
    take(fc, "scores", scores, {})
    take(fc, "labels", labels, {})
    for store in fc.stores.values():
        store.close()
    again, registry = consumer(tmp_path)
    again.refresh()
    assert_figures(exported(registry), expected(txns, NOW - QUALITY))
    for store in again.stores.values():
        store.close()


# -- the store ---------------------------------------------------------------------------------------


def score(txn: str, event_time: int = NOW - 1000, version: str = "v1", rules=("r1",), action: str = "block",
          rule_set: str = "rs-1", shadow: Decision | None = None) -> Score:  # fmt: skip
    d = Decision(action, rules[0] if rules else None, tuple(rules), rule_set)
    return Score(txn, version, 0.7, 0.5, event_time, None, decision=d, shadow_decision=shadow)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "partition-0.sqlite", WINDOW, clock=lambda: NOW)
    yield s
    s.close()


def figures(stores: list[Store], max_rows: int = 200_000) -> dict[str, dict]:
    snap = snapshot(stores, NOW - QUALITY, max_rows)
    return {"resolved": snap.rule_resolved, "precision": snap.rule_precision, "recall": snap.rule_recall,
            "action_resolved": snap.action_resolved, "action_precision": snap.action_precision,
            "action_recall": snap.action_recall}  # fmt: skip


def test_the_first_record_to_carry_a_decision_of_a_role_counts(store):
    shadow = Decision("review", "s1", ("s1",), "rs-shadow")
    store.apply([score("a", version="v2", rules=(), action="allow"),  # the challenger's, first, with a decision
                 score("a", rules=("r1",), shadow=shadow),  # the champion's: its shadow decision is the first
                 score("a", rules=("r9",))],  # a repeat: ignored
                [Label("a", True, NOW - 10, "x")], {})  # fmt: skip
    got = figures([store])
    assert got["action_resolved"] == {("serving", "rs-1", "allow"): 1, ("shadow", "rs-shadow", "review"): 1}
    assert got["resolved"] == {("shadow", "rs-shadow", "s1"): 1}
    assert got["recall"] == {("shadow", "rs-shadow", "s1"): 1.0}


def test_a_decision_without_a_rule_set_is_not_kept(store):
    plain = Score("a", "v1", 0.7, 0.5, NOW - 1000, None, decision=Decision("review", None, (), None))
    store.apply([plain], [Label("a", True, NOW - 10, "x")], {})
    assert store.db.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
    assert figures([store])["action_resolved"] == {}


def test_the_window_takes_the_rows_the_per_version_window_takes(store):
    # Distinct label times: the newest 30 resolved are tx-70..tx-99.
    store.apply([score(f"tx-{i}", rules=("r1",) if i % 2 else ("r2",)) for i in range(100)],
                [Label(f"tx-{i}", i % 3 == 0, NOW - 100_000 + i, "x") for i in range(100)], {})  # fmt: skip
    got = figures([store], max_rows=30)
    newest = range(70, 100)
    frauds = [i for i in newest if i % 3 == 0]
    r1 = [i for i in newest if i % 2]
    assert got["action_resolved"] == {("serving", "rs-1", "block"): 30}
    assert got["resolved"] == {("serving", "rs-1", "r1"): len(r1), ("serving", "rs-1", "r2"): 30 - len(r1)}
    assert got["recall"][("serving", "rs-1", "r1")] == pytest.approx(len(set(r1) & set(frauds)) / len(frauds))
    assert len(store.window("v1", NOW - QUALITY, 30)[0]) == 30


def test_transactions_resolved_before_the_window_or_unresolved_do_not_count(store):
    store.apply([score("old"), score("pending"), score("in")],
                [Label("old", True, NOW - QUALITY - 1, "x"), Label("in", False, NOW - QUALITY, "x")], {})  # fmt: skip
    got = figures([store])
    assert got["action_resolved"] == {("serving", "rs-1", "block"): 1}
    assert got["precision"] == {("serving", "rs-1", "r1"): 0.0} and got["recall"] == {}


def test_figures_add_up_over_stores_and_model_versions(tmp_path):
    a = Store(tmp_path / "partition-0.sqlite", WINDOW, clock=lambda: NOW)
    b = Store(tmp_path / "partition-1.sqlite", WINDOW, clock=lambda: NOW)
    try:
        a.apply([score("a1"), score("a2", rules=())],
                [Label("a1", True, NOW - 5, "x"), Label("a2", True, NOW - 5, "x")], {})  # fmt: skip
        b.apply([score("b1", version="v2"), score("b2", version="v2")],
                [Label("b1", False, NOW - 5, "x"), Label("b2", True, NOW - 5, "x")], {})  # fmt: skip
        got = figures([a, b])
        key = ("serving", "rs-1", "r1")
        assert got["resolved"][key] == 3 and got["precision"][key] == pytest.approx(2 / 3)
        assert got["recall"][key] == pytest.approx(2 / 3)  # a2's fraud matched no rule
    finally:
        a.close()
        b.close()


def test_pruning_drops_a_transactions_decisions_with_its_score_rows_and_then_its_keys(tmp_path):
    clock = SimpleNamespace(now=NOW)
    store = Store(tmp_path / "p.sqlite", WINDOW, clock=lambda: clock.now)
    try:
        store.apply([score("old", event_time=NOW - 1000, rules=("r-old",), rule_set="rs-old"),
                     score("held", event_time=NOW - 1000, rules=("r-held",), rule_set="rs-held"),
                     score("held", version="v2", event_time=NOW + WINDOW + 2 * DAY_MS)],
                    [Label("old", True, NOW, "x")], {})  # fmt: skip
        clock.now = NOW + WINDOW + 2 * DAY_MS  # past the label window and the day's grace
        store.prune()
        rows = store.db.execute("SELECT transaction_id FROM decisions").fetchall()
        assert rows == [("held",)] * 2, "held's v1 row is still pending: its decisions stay"
        keys = {r[0] for r in store.db.execute("SELECT rule_set FROM decision_keys")}
        assert keys == {"rs-held"}
        store.apply(
            [score("new", event_time=clock.now - 1000, rules=("r-old",), rule_set="rs-old")],
            [Label("new", True, clock.now - 10, "x")],
            {},
        )  # a key made again after its pruning
        assert store.decision_window("v1", clock.now - QUALITY, 100)[1] == {("serving", "rs-old", "r-old"): (
            1, 1, clock.now - 10)}  # fmt: skip
    finally:
        store.close()


def test_a_store_from_before_decisions_gets_the_tables_and_keeps_its_rows(tmp_path):
    path = tmp_path / "partition-0.sqlite"
    old = Store(path, WINDOW, clock=lambda: NOW)
    old.apply([Score("a", "v1", 0.7, 0.5, NOW - 1000, None)], [Label("a", True, NOW - 10, "x")], {"scores": 1})
    old.db.executescript("DROP TABLE decisions; DROP TABLE decision_keys;")  # as an older fraud-feedback left it
    old.close()
    store = Store(path, WINDOW, clock=lambda: NOW)
    try:
        assert store.next_offsets() == {"scores": 1} and store.rows() == 1
        assert figures([store])["action_resolved"] == {}
        store.apply([score("b")], [Label("b", True, NOW - 10, "x")], {"scores": 2})
        assert figures([store])["resolved"] == {("serving", "rs-1", "r1"): 1}
    finally:
        store.close()


def test_a_failed_apply_leaves_no_decision_and_no_stale_key(store):
    def labels():
        yield Label("a", True, NOW - 10, "x")
        raise RuntimeError("the batch fails half way")

    with pytest.raises(RuntimeError):
        store.apply([score("a", rules=("r-new",), rule_set="rs-new")], labels(), {})
    assert store.db.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM decision_keys").fetchone()[0] == 0
    store.apply([score("b", rules=("r-other",), rule_set="rs-other")], [], {})  # takes the id "a" would have had
    store.apply([score("a", rules=("r-new",), rule_set="rs-new")], [Label("a", True, NOW - 10, "x")], {})
    assert figures([store])["resolved"] == {("serving", "rs-new", "r-new"): 1}


# -- the rule sets reported --------------------------------------------------------------------------


def test_at_most_ten_rule_sets_per_role_are_reported_those_resolved_last():
    actions = {("serving", f"rs-{i:02d}", "block"): (1, 1, 1000 + i) for i in range(12)}
    actions[("shadow", "rs-shadow", "allow")] = (4, 0, 5)
    rules = {("serving", f"rs-{i:02d}", "r1"): (1, 1, 1000 + i) for i in range(12)}
    got = rule_figures(actions, rules)
    assert {k[1] for k in got["resolved"]} == {f"rs-{i:02d}" for i in range(2, 12)}
    assert {k[1] for k in got["action_resolved"]} == {f"rs-{i:02d}" for i in range(2, 12)} | {"rs-shadow"}
    assert got["action_precision"][("shadow", "rs-shadow", "allow")] == 0.0
    assert ("shadow", "rs-shadow", "allow") not in got["action_recall"], "no fraud: no recall"
