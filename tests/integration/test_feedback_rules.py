"""Precision and recall per rule on a real broker: score records carrying the serving and shadow rule sets'
decisions and their labels, joined by a real ``fraud-feedback``, whose per-rule and per-action metrics must
equal a computation made here from the records alone.

The score records are written straight to a co-partitioned scores topic (the worker's format, with
``decision`` and ``shadow_decision``), so the test takes seconds: 400 transactions over two serving rule
sets and one shadow rule set, recent ones labelled (some labels overturned later), old ones genuine by the
label window (some overturned by a late chargeback; those older than the label window plus a day are
pruned, with their decisions), some records without a decision or with a decision without a rule set, and a
few with a malformed decision that must be skipped and counted.
"""

from __future__ import annotations

import random
import time

import msgspec
import pytest

from tests.conftest import unique
from tests.support.feedback import FeedbackProcess
from tests.support.workers import produce
from worker.feedback.records import encode_label

PARTITIONS = 3
N = 400
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
LABEL_WINDOW_MS = 120 * DAY_MS  # fraud-feedback's default --label-window
QUALITY_MS = 7 * DAY_MS  # its default --quality-window
FAST = ("--refresh-seconds", "0.5")
RULE_SETS = {"serving": ("20261201T000000Z-0a1b2c3d", "20261207T101500Z-3f2a9c1d"),
             "shadow": ("20261207T111500Z-aa11bb22",)}  # fmt: skip
MEMBER = {"serving": "decision", "shadow": "shadow_decision"}
RULES = {"deny-terminal": "block", "big-web": "review", "velocity:1h": "review", "geo.mismatch": "allow"}


def _time(rng: random.Random, now: int, used: set[int]) -> int:
    """A distinct time in the last 10 days, at least an hour from now, from the quality window's edge and from
    the pruning's (a day back, for an event a label window older)."""
    while True:
        t = now - rng.randrange(HOUR_MS, 10 * DAY_MS)
        if all(abs(t - (now - edge)) > HOUR_MS for edge in (QUALITY_MS, DAY_MS)) and t not in used:
            used.add(t)
            return t


def _decision(rng: random.Random, role: str) -> dict | None:
    u = rng.random()
    if u < 0.08:
        return None
    if u < 0.12:  # the model alone decided
        return {"action": rng.choice(["allow", "review"]), "rule": None, "rules": [], "rule_set": None,
                "threshold_source": "global"}  # fmt: skip
    rules = [r for r in RULES if rng.random() < 0.25]
    return {"action": RULES[rules[0]] if rules else rng.choice(["allow", "allow", "review"]),
            "rule": rules[0] if rules else None, "rules": rules, "rule_set": rng.choice(RULE_SETS[role]),
            "threshold_source": "global"}  # fmt: skip


def traffic(now: int, seed: int = 11):
    """Score records and labels as (key, value); per transaction (its decisions by role, its truth and the time
    it was resolved, None while unknown); the malformed records."""
    rng = random.Random(seed)
    scores, labels, truths, used = [], [], [], set()
    malformed = 0
    for i in range(N):
        txn = f"tx-{i}"
        old = rng.random() < 0.2  # past the label window: genuine at event time + window, unless labelled fraud
        event_time = _time(rng, now, used) - LABEL_WINDOW_MS if old else now - rng.randrange(HOUR_MS, 3 * DAY_MS)
        # Resolved and older than the label window plus a day: pruned at start, in no window any more.
        pruned = event_time < now - LABEL_WINDOW_MS - DAY_MS
        decisions = {role: _decision(rng, role) for role in MEMBER}
        members = {MEMBER[role]: d for role, d in decisions.items() if d is not None}
        if rng.random() < 0.03:
            members["decision"] = {"action": "block", "rule": "x", "rules": ["y"], "rule_set": RULE_SETS["serving"][0],
                                   "threshold_source": "global"}  # fmt: skip  # the deciding rule did not match
            malformed += 1
        else:
            truth = (False, event_time + LABEL_WINDOW_MS) if old else None
            if old and rng.random() < 0.3:  # a chargeback after the label window
                t = _time(rng, now, used)
                labels.append((txn, True, t))
                truth = (True, t)
            elif not old and rng.random() < 0.7:
                fraud, t = rng.random() < 0.25, _time(rng, now, used)
                labels.append((txn, fraud, t))
                truth = (fraud, t)
                if rng.random() < 0.15:  # another label: a later one overturns it, an older one changes nothing
                    t2 = _time(rng, now, used)
                    labels.append((txn, not fraud, t2))
                    truth = (not fraud, t2) if t2 > t else truth
            truths.append((decisions, None if pruned else truth))
        scores.append((txn.encode(), msgspec.json.encode({
            "transaction_id": txn, "score": rng.random(), "threshold": 0.5, "model_version": "v1",
            "reasons": [], "event_time": event_time, "scored_at": now, **members,
        })))  # fmt: skip
    label_records = [(txn.encode(), encode_label(txn, fraud, t, "analyst")) for txn, fraud, t in labels]
    return scores, label_records, truths, malformed


def expected(truths, since: int) -> dict[str, dict]:
    """The figures from the records alone: per (role, rule set), the resolved transactions in the window."""
    groups: dict[tuple[str, str], list[tuple[bool, dict]]] = {}
    for decisions, truth in truths:
        if truth is None or truth[1] < since:
            continue
        for role, d in decisions.items():
            if d is not None and d["rule_set"] is not None:
                groups.setdefault((role, d["rule_set"]), []).append((truth[0], d))
    out: dict[str, dict] = {name: {} for name in ("resolved", "precision", "recall", "action_resolved",
                                                  "action_precision", "action_recall")}  # fmt: skip
    for (role, rule_set), members in groups.items():
        frauds = sum(fraud for fraud, _ in members)
        for prefix, names in (("", {r for _, d in members for r in d["rules"]}),
                              ("action_", {d["action"] for _, d in members})):  # fmt: skip
            for name in names:
                hit = [f for f, d in members if (name in d["rules"] if not prefix else d["action"] == name)]
                out[prefix + "resolved"][(role, rule_set, name)] = float(len(hit))
                out[prefix + "precision"][(role, rule_set, name)] = sum(hit) / len(hit)
                if frauds:
                    out[prefix + "recall"][(role, rule_set, name)] = sum(hit) / frauds
    return out


def _same(got: dict[str, dict], want: dict[str, dict]) -> bool:
    return all(
        set(got.get(name, {})) == set(values) and all(got[name][k] == pytest.approx(v) for k, v in values.items())
        for name, values in want.items()
    )


def test_per_rule_and_per_action_figures_equal_a_computation_from_the_records(kafka, feedbacks, tmp_path):
    now = int(time.time() * 1000)
    scores, labels, truths, malformed = traffic(now)
    want = expected(truths, now - QUALITY_MS)
    assert want["recall"] and want["action_recall"] and malformed, "the traffic covers every case"
    assert {k[:2] for k in want["action_resolved"]} == {(r, v) for r, vs in RULE_SETS.items() for v in vs}
    scores_topic = kafka.topic(partitions=PARTITIONS, prefix="scores")
    labels_topic = kafka.topic(partitions=PARTITIONS, prefix="labels")
    producer = kafka.producer(linger_ms=5)
    half = len(labels) // 2
    produce(producer, labels_topic, labels[:half])  # labels before their scores, and after
    produce(producer, scores_topic, scores)
    produce(producer, labels_topic, labels[half:])

    fb = FeedbackProcess(kafka.bootstrap, scores_topic, labels_topic, unique("fb"), tmp_path / "state", FAST).start()
    feedbacks.append(fb)
    fb.wait_records(len(scores) + len(labels), timeout=120)
    deadline = time.monotonic() + 60
    got = fb.rule_figures()
    while not _same(got, want) and time.monotonic() < deadline:
        assert fb.proc.poll() is None, fb.output()[-3000:]
        time.sleep(0.25)
        got = fb.rule_figures()
    for name, values in want.items():
        assert set(got.get(name, {})) == set(values), (name, fb.output()[-2000:])
        for key, value in values.items():
            assert got[name][key] == pytest.approx(value), (name, key)
    assert fb.metric("fraud_feedback_invalid_total", {"topic": "scores", "reason": "schema"}) == malformed
    assert fb.stop() == 0
