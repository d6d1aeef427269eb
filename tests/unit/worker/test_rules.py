"""Rule sets (worker/core/rules.py): parsing, one-line refusals, precedence, and the compiled evaluation equal to
rule-engine's own on every row."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.rule_lists import read_list
from worker.core.rules import RuleSetError, parse_rule_set

HEAD = """
default_action = "review"
[fields]
amount = "float"
channel = "string"
terminal_id = "string"
card_present = "boolean"
tx_1h = { type = "float", source = "customer_id.count.1h", default = -1 }
[lists]
deny_terminals = "deny_terminals.txt"
allow_customers = "allow_customers.txt"
"""

CONDITIONS = [
    "amount > 500 and channel == 'web'",
    "terminal_id in deny_terminals",
    "terminal_id not in deny_terminals and score >= 0.9",
    "channel in ['pos', 'atm']",
    "not card_present or amount <= 1.5",
    "tx_1h >= 5 or amount / 2 > 1000.5",
    "amount * 3 - 10 >= score + threshold",
    "-amount < -3.25",
    "channel != 'web' and channel < 'q'",
    "score >= threshold and amount > 0.1",
    "card_present == true",
    "amount in [1.5, 2.0, 100.0]",
    "channel =~ 'w.*'",  # a regular expression: evaluated row by row by rule-engine
    "(amount > 10 ? score > 0.5 : score > 0.9)",  # a ternary: row by row too
]


def rule_set(conditions=CONDITIONS, actions=None, head=HEAD):
    actions = actions or ["review"] * len(conditions)
    body = "".join(f'[[rule]]\nid = "r{k}"\naction = "{a}"\nwhen = "{c}"\n' for k, (c, a) in
                   enumerate(zip(conditions, actions, strict=True)))  # fmt: skip
    return parse_rule_set((head + body).encode(), "rules.toml")


def columns(rows):
    out = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], bool):
            out[name] = np.asarray(values, dtype=bool)
        elif isinstance(values[0], float):
            out[name] = np.asarray(values, dtype=np.float64)
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[name] = arr
    return out


LISTS = {"deny_terminals": frozenset({"t1", "t3"}), "allow_customers": frozenset({"c1"})}
words = st.sampled_from(["", "web", "pos", "atm", "t1", "t2", "t3", "q", "w"])
numbers = st.one_of(st.sampled_from([0.0, 1.5, 2.0, 3.25, 5.0, 10.0, 100.0, 500.0, 2001.0, -1.0, 0.5, 0.9]),
                    st.floats(-1e6, 1e6, allow_nan=False, width=32).map(float))  # fmt: skip
row = st.fixed_dictionaries({
    "score": st.floats(0, 1, width=32).map(float), "threshold": st.sampled_from([0.5, 0.9]), "amount": numbers,
    "channel": words, "terminal_id": words, "card_present": st.booleans(), "tx_1h": numbers,
})  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(row, min_size=1, max_size=30))
def test_compiled_rules_match_exactly_where_rule_engine_does(rows):
    rs = rule_set()
    got = rs.matches(columns(rows), LISTS, len(rows))
    want = np.array([rs.reference(r, LISTS) for r in rows])
    assert (got == want).all()


def test_which_rules_are_compiled_and_why_not():
    rs = rule_set()
    interpreted = {r.id: r.why for r in rs.rules if not r.compiled}
    assert set(interpreted) == {"r12", "r13"}
    assert "regular expressions" in interpreted["r12"]
    assert all(r.compiled for r in rule_set(CONDITIONS[:12]).rules)


def test_interpreted_only_gives_the_same_matches():
    rows = [{"score": 0.95, "threshold": 0.5, "amount": a, "channel": c, "terminal_id": t, "card_present": p,
             "tx_1h": 6.0} for a in (0.0, 1.5, 600.0, 2500.0) for c in ("web", "pos") for t in ("t1", "t2")
            for p in (True, False)]  # fmt: skip
    compiled = rule_set().matches(columns(rows), LISTS, len(rows))
    body = "".join(f'[[rule]]\nid = "r{k}"\naction = "review"\nwhen = "{c}"\n' for k, c in enumerate(CONDITIONS))
    slow = parse_rule_set((HEAD + body).encode(), "rules.toml", compiled=False)
    assert not any(r.compiled for r in slow.rules)
    assert (slow.matches(columns(rows), LISTS, len(rows)) == compiled).all()


def test_precedence_is_allow_then_block_then_review_then_custom_in_file_order():
    rs = rule_set(["score > 0", "score > 0", "score > 0", "score > 0", "score > 0", "score > 0"],
                  ["step_up", "review", "block", "allow", "hold", "block"])  # fmt: skip
    assert [(r.id, r.action) for r in rs.rules] == [
        ("r3", "allow"),
        ("r2", "block"),
        ("r5", "block"),
        ("r1", "review"),
        ("r0", "step_up"),
        ("r4", "hold"),
    ]
    assert rs.actions == ("allow", "block", "review", "step_up", "hold")


@pytest.mark.parametrize(("condition", "problem"), [
    ("amount > 'x'", "rule 'r0': type error"),
    ("merchant == 'm1'", "rule 'r0': unknown field 'merchant'"),
    ("amount >", "rule 'r0': syntax error"),
    ("amount > 1 and", "rule 'r0': syntax error"),
    ("amount", "rule 'r0': type error: the condition is a float"),
    ("amount in deny_terminals", "rule 'r0': type error: list 'deny_terminals' holds text"),
    ("channel > 3", "rule 'r0': type error"),
])  # fmt: skip
def test_a_bad_condition_is_refused_in_one_line_naming_the_rule_and_the_problem(condition, problem):
    with pytest.raises(RuleSetError) as info:
        rule_set([condition])
    text = str(info.value)
    assert problem in text and "\n" not in text and text.startswith("rules.toml: ")


@pytest.mark.parametrize(("doc", "problem"), [
    (b"[[rule]]\nid = 'a'\naction = 'block'\nwhen = 'score > 0.5'\n[[rule]]\nid = 'a'\naction = 'block'\n"
     b"when = 'score > 0.6'\n", "rule 'a' is declared twice"),
    (b"[[rule]]\nid = 'a b'\naction = 'block'\nwhen = 'score > 0.5'\n", "id must be"),
    (b"[[rule]]\nid = 'a'\naction = 'Block!'\nwhen = 'score > 0.5'\n", "action must be"),
    (b"[[rule]]\nid = 'a'\naction = 'block'\n", "'when' must be a condition"),
    (b"[fields]\nscore = 'float'\n", "not a usable name"),
    (b"[fields]\nx = 'int'\n", "type 'int' is not one of"),
    (b"[lists]\nx = '../etc/passwd'\n", "is not a file name"),
    (b"default_action = 'allow'\n", "default_action"),
    (b"rules = 1\n", "unknown key 'rules'"),
    (b"[[rule]\n", "not TOML"),
    (b"\xff\xfe", "not UTF-8"),
])  # fmt: skip
def test_a_malformed_file_is_refused_in_one_line(doc, problem):
    with pytest.raises(RuleSetError) as info:
        parse_rule_set(doc, "bad.toml")
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_rule_text_never_reaches_python_eval():
    # What would run code under eval() is an unknown symbol, or a syntax error, to rule-engine's grammar.
    with pytest.raises(RuleSetError, match="unknown field '__import__'"):
        rule_set(["__import__('os').system('true') == 0"])
    with pytest.raises(RuleSetError, match="syntax error"):
        rule_set(["amount > 1; import os"])


def test_without_drops_one_rule_and_keeps_the_rest_in_order():
    rs = rule_set(CONDITIONS[:4], ["block", "review", "allow", "review"])
    less = rs.without("r1")
    assert [r.id for r in less.rules] == ["r2", "r0", "r3"]
    rows = [{"score": 0.95, "threshold": 0.5, "amount": 600.0, "channel": "web", "terminal_id": "t1",
             "card_present": True, "tx_1h": 0.0}]  # fmt: skip
    assert less.matches(columns(rows), LISTS, 1).tolist() == [[False, True, False]]


def test_list_files_skip_comments_and_blank_lines_and_refuse_what_is_not_a_list(tmp_path):
    good = tmp_path / "l.txt"
    good.write_text("# deny\n t1 \n\nt2\nt1\n")
    assert read_list(str(good)) == frozenset({"t1", "t2"})
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"t1\n\xff\n")
    with pytest.raises(RuleSetError, match="not UTF-8"):
        read_list(str(bad))
    with pytest.raises(RuleSetError, match="cannot read"):
        read_list(str(tmp_path / "missing.txt"))
    (tmp_path / "long.txt").write_text("x" * 300)
    with pytest.raises(RuleSetError, match="longer than 256"):
        read_list(str(tmp_path / "long.txt"))


def test_a_literal_finer_than_a_float64_is_left_to_rule_engine():
    rs = rule_set(["amount > 0.10000000000000000001"])
    assert not rs.rules[0].compiled
    rows = [{"score": 0.5, "threshold": 0.5, "amount": 0.1, "channel": "", "terminal_id": "", "card_present": False,
             "tx_1h": 0.0}]  # fmt: skip
    assert rs.matches(columns(rows), LISTS, 1).tolist() == [[rs.reference(rows[0], LISTS)[0]]]
    assert not math.isnan(rows[0]["amount"])
