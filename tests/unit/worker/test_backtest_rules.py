"""fraud-worker backtest --rules on a labelled synthetic v3 file: every per-rule, incremental, per-action and
candidate figure equals a computation written out here (rule-engine itself on each row, the precedence of the
rule sets spelt out, each rule's effect by deciding the whole file again without it), the output lines carry
those decisions, the candidate is printed beside the serving set, and a bad rule set is one line, exit 2."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rule_engine

from tests.support.bundles import make_bundle
from worker.core.features import from_mapping
from worker.offline import synthetic
from worker.programs.subcommands import backtest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

N = 4000
SPEC = {"entity": [
    {"field": "customer_id", "windows": ["1h", "1d"], "aggregates": ["count"]},
    {"field": "terminal_id", "windows": ["1d"], "aggregates": ["count"]},
]}  # fmt: skip
SERVING = """
default_action = "review"

[fields]
amount = "float"
channel = "string"
terminal_id = "string"
tx_1h = { type = "float", source = "customer_id.count.1h" }

[lists]
deny_terminals = "deny_terminals.txt"

[[rule]]
id = "big-web"
action = "review"
when = "channel == 'web' and amount > 150"

[[rule]]
id = "deny-terminal"
action = "block"
when = "terminal_id in deny_terminals"

[[rule]]
id = "burst"
action = "step_up"
when = "tx_1h >= 2 or (channel == 'atm' and amount > 120)"

[[rule]]
id = "high-web"
action = "block"
when = "channel == 'web' and score > 0.3"

[[rule]]
id = "small-pos"
action = "allow"
when = "channel == 'pos' and amount < 20"

[[rule]]
id = "never"
action = "hold"
when = "amount < 0"
"""
CANDIDATE = """
default_action = "step_up"

[fields]
amount = "float"
channel = "string"
terminal_id = "string"

[lists]
deny_terminals = "deny_terminals.txt"

[[rule]]
id = "big-web"
action = "review"
when = "channel == 'web' and amount > 100"

[[rule]]
id = "deny-terminal"
action = "block"
when = "terminal_id in deny_terminals"

[[rule]]
id = "big-any"
action = "review"
when = "amount > 300"

[[rule]]
id = "small-pos"
action = "allow"
when = "channel == 'pos' and amount < 30"
"""
BUILT_IN = ("allow", "block", "review")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A v3 bundle (amount and three behavioural counts), the labelled file, two rule sets and a deny list."""
    root = tmp_path_factory.mktemp("rules")
    spec = from_mapping(SPEC, "spec")
    names = ["amount", *spec.names]
    models = root / "models"
    make_bundle(models, "v3", feature_names=names, mean=[0.0] * len(names), scale=[1.0] * len(names),
                weights=[0.012, 0.4, 0.05, 0.1], bias=-3.5, threshold=0.2, feature_spec=spec.to_manifest())  # fmt: skip
    columns = synthetic.generate_behavioural(N, 3, days=8)
    synthetic.write_csv(root / "payments.csv", columns, quote_header=False)
    frauds = Counter(t for t, y in zip(columns["terminal_id"].tolist(), columns["Class"].tolist(), strict=True) if y)
    deny = [t for t, _ in frauds.most_common(2)] + ["t-999999"]
    (models / "lists").mkdir()
    (models / "lists" / "deny_terminals.txt").write_text("# terminals seen in fraud\n" + "\n".join(deny) + "\n")
    (root / "serving.toml").write_text(SERVING)
    (root / "candidate.toml").write_text(CANDIDATE)
    return {"root": root, "models": models, "columns": columns, "deny": frozenset(deny)}


def _run(*args: str) -> int:
    return backtest.main(["--jobs", "1", "--quiet", *args])


def _order(text: str) -> list[dict]:
    """The rules of a rule-set file in precedence order, spelt out: allow, block, review, then the other actions
    in the order they first appear; within an action, the file's order."""
    rules = tomllib.loads(text)["rule"]
    customs = list(dict.fromkeys(r["action"] for r in rules if r["action"] not in BUILT_IN))
    rank = {a: i for i, a in enumerate([*BUILT_IN, *customs])}
    return sorted(rules, key=lambda r: (rank[r["action"]], rules.index(r)))


class Expected:
    """A rule set's decisions of every row, by rule-engine on each row and the precedence above."""

    def __init__(self, text: str, rows: list[dict], lists: dict) -> None:
        doc = tomllib.loads(text)
        self.default = doc.get("default_action", "review")
        self.rules = _order(text)
        context = rule_engine.Context(resolver=rule_engine.resolve_item)
        engines = [rule_engine.Rule(r["when"], context=context) for r in self.rules]
        self.rows = rows
        self.matches = np.array([[bool(e.matches({**row, **lists})) for e in engines] for row in rows], dtype=bool)
        self.actions = self.decide(self.matches, self.rules)

    def decide(self, matches: np.ndarray, rules: list[dict]) -> list[str]:
        out = []
        for row, m in zip(self.rows, matches, strict=True):
            first = next((k for k in range(len(rules)) if m[k]), None)
            if first is not None:
                out.append(rules[first]["action"])
            else:
                out.append(self.default if row["score"] >= row["threshold"] else "allow")
        return out

    def without(self, k: int) -> list[str]:
        return self.decide(np.delete(self.matches, k, axis=1), self.rules[:k] + self.rules[k + 1 :])


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> dict:
    root, models = data["root"], data["models"]
    out = tmp_path_factory.mktemp("out")
    args = ["--input", str(root / "payments.csv"), "--models-dir", str(models), "--output", str(out / "scores.jsonl"),
            "--rules", str(root / "serving.toml"), "--candidate-rules", str(root / "candidate.toml"),
            "--scores-include-features", "--json", str(out / "figures.json"), "--batch-size", "700"]  # fmt: skip
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert _run(*args) == 0
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_bytes().splitlines()]
    return {"text": text.getvalue(), "figures": json.loads((out / "figures.json").read_text()), "lines": lines}


@pytest.fixture(scope="module")
def expected(data, run) -> dict:
    """Each row as the rules read it: score and threshold from its output line; amount, channel and terminal
    from the file (amount, a model input, as the float32 the model reads); tx_1h the feature of that name."""
    c, lines = data["columns"], run["lines"]
    assert [d["transaction_id"] for d in lines] == c["transaction_id"].tolist(), "every row scored, in order"
    rows = []
    for i, d in enumerate(lines):
        rows.append({
            "score": d["score"], "threshold": d["threshold"], "amount": float(np.float32(c["amount"][i])),
            "channel": str(c["channel"][i]), "terminal_id": str(c["terminal_id"][i]),
            "tx_1h": float(np.float32(d["features"]["customer_id.count.1h"])),
        })  # fmt: skip
    lists = {"deny_terminals": set(data["deny"])}
    return {
        "serving": Expected(SERVING, rows, lists),
        "candidate": Expected(CANDIDATE, rows, lists),
        "fraud": c["Class"] == 1,
        "amount": c["amount"].astype(np.float64),  # the event's own amount, for the amount figures
    }


def _rate(a: int, b: int) -> float | None:
    return a / b if b else None


def _same(got: float | None, want: float | None) -> bool:
    return got is None and want is None or (got is not None and want is not None and abs(got - want) < 1e-12)


def _check_set(got: dict, exp: Expected, fraud: np.ndarray, amount: np.ndarray) -> None:
    total_frauds = int(fraud.sum())
    actions = np.array(exp.actions)
    alerted = actions != "allow"
    assert [r["id"] for r in got["rules"]] == [r["id"] for r in exp.rules], "precedence order"
    for k, (r, rule) in enumerate(zip(got["rules"], exp.rules, strict=True)):
        m = exp.matches[:, k]
        first = np.array([bool(row[k]) and not row[:k].any() for row in exp.matches])
        assert r["action"] == rule["action"] and r["when"] == rule["when"]
        assert r["matches"] == int(m.sum()), rule["id"]
        assert r["amount"] == pytest.approx(float(amount[m].sum()), abs=1e-6), rule["id"]
        assert r["frauds"] == int((m & fraud).sum()), rule["id"]
        assert _same(r["precision"], _rate(int((m & fraud).sum()), int(m.sum()))), rule["id"]
        assert _same(r["recall"], _rate(int((m & fraud).sum()), total_frauds)), rule["id"]
        assert r["decided"] == int(first.sum()), rule["id"]
        assert r["decided_frauds"] == int((first & fraud).sum()), rule["id"]
        # The whole file decided again without the rule.
        after = np.array(exp.without(k))
        after_alerted = after != "allow"
        lost, gained = alerted & ~after_alerted, ~alerted & after_alerted
        w = r["without"]
        assert w["frauds_lost"] == int((lost & fraud).sum()), rule["id"]
        assert w["genuine_alerts_removed"] == int((lost & ~fraud).sum()), rule["id"]
        assert w["fraud_amount_lost"] == pytest.approx(float(amount[lost & fraud].sum()), abs=1e-6), rule["id"]
        assert w["frauds_let_through"] == int((gained & fraud).sum()), rule["id"]
        assert w["genuine_alerts_spared"] == int((gained & ~fraud).sum()), rule["id"]
        assert w["fraud_amount_let_through"] == pytest.approx(float(amount[gained & fraud].sum()), abs=1e-6)
        assert w["decisions_changed"] == int((after != actions).sum()), rule["id"]
        if rule["action"] == "allow":
            assert w["alerts_removed"] == 0
        else:
            assert w["alerts_added"] == 0
    for a in got["actions"]:
        at = actions == a["action"]
        assert (a["events"], a["frauds"]) == (int(at.sum()), int((at & fraud).sum())), a["action"]
        assert a["amount"] == pytest.approx(float(amount[at].sum()), abs=1e-6)
        assert _same(a["precision"], _rate(int((at & fraud).sum()), int(at.sum()))), a["action"]
        assert _same(a["recall"], _rate(int((at & fraud).sum()), total_frauds)), a["action"]
    assert {a["action"] for a in got["actions"]} >= set(exp.actions)
    al = got["alerted"]
    assert (al["events"], al["frauds"]) == (int(alerted.sum()), int((alerted & fraud).sum()))
    assert al["amount"] == pytest.approx(float(amount[alerted].sum()), abs=1e-6)
    assert _same(al["precision"], _rate(int((alerted & fraud).sum()), int(alerted.sum())))
    assert _same(al["recall"], _rate(int((alerted & fraud).sum()), total_frauds))


def test_each_rule_and_action_figure_equals_the_rows_decided_by_hand(run, expected):
    fig = run["figures"]["rules"]
    fraud, amount = expected["fraud"], expected["amount"]
    assert (fig["events"], fig["frauds"], fig["labelled"]) == (N, int(fraud.sum()), True)
    assert fig["amount"] == pytest.approx(float(amount.sum()), abs=1e-6)
    _check_set(fig["serving"], expected["serving"], fraud, amount)
    _check_set(fig["candidate"], expected["candidate"], fraud, amount)
    # The file exercises what the figures are about.
    serving = fig["serving"]
    rules = {r["id"]: r for r in serving["rules"]}
    assert all(rules[i]["decided"] for i in ("big-web", "deny-terminal", "burst", "high-web", "small-pos"))
    assert rules["deny-terminal"]["without"]["frauds_lost"] > 0
    assert rules["small-pos"]["without"]["alerts_added"] > 0, "an allow rule that overrides an alerting one"
    assert rules["never"]["matches"] == 0 and rules["never"]["precision"] is None
    assert {a["action"] for a in serving["actions"] if a["events"]} == {"allow", "block", "review", "step_up"}


def test_the_output_lines_carry_the_decisions_of_both_sets(run, expected):
    lines = run["lines"]
    assert [d["decision"]["action"] for d in lines] == expected["serving"].actions
    assert [d["shadow_decision"]["action"] for d in lines] == expected["candidate"].actions
    serving = expected["serving"]
    for d, m in zip(lines[:500], serving.matches[:500], strict=True):
        ids = [r["id"] for r, hit in zip(serving.rules, m, strict=True) if hit]
        assert d["decision"]["rules"] == ids and d["decision"]["rule"] == (ids[0] if ids else None)
    alerts = sum(a != "allow" for a in serving.actions)
    assert f" {alerts:,} alerts (model v3" in run["text"], "an alert is an action other than allow"


def test_the_candidate_is_compared_side_by_side(run, expected):
    cmp = run["figures"]["rules"]["comparison"]
    s, c, fraud = np.array(expected["serving"].actions), np.array(expected["candidate"].actions), expected["fraud"]
    changed = s != c
    pairs = Counter(zip(s[changed].tolist(), c[changed].tolist(), strict=True))
    assert {(t["serving"], t["candidate"]): t["events"] for t in cmp["transitions"]} == dict(pairs)
    for t in cmp["transitions"]:
        at = (s == t["serving"]) & (c == t["candidate"])
        assert t["frauds"] == int((at & fraud).sum())
    assert cmp["decisions_changed"] == int(changed.sum()) > 0
    assert cmp["decisions_changed_frauds"] == int((changed & fraud).sum())
    by_id = {r["id"]: r for r in cmp["rules"]}
    assert list(by_id) == ["small-pos", "deny-terminal", "high-web", "big-web", "burst", "never", "big-any"]
    assert by_id["big-any"]["serving"] is None and by_id["burst"]["candidate"] is None
    text = run["text"]
    assert "candidate against serving, on the same events" in text
    head = next(line for line in text.splitlines() if re.match(r"\s+action\s+figure\s+serving\s+candidate", line))
    assert head.split() == ["action", "figure", "serving", "candidate", "difference"]
    alerted_s, alerted_c = int((s != "allow").sum()), int((c != "allow").sum())
    line = next(line for line in text.splitlines() if line.split()[:2] == ["alerted", "events"])
    want = ["alerted", "events", f"{alerted_s:,}", f"{alerted_c:,}", f"{alerted_c - alerted_s:+,}"]
    assert line.split() == [w if w != "+0" else "0" for w in want]
    rule_head = next(line for line in text.splitlines() if line.split()[:2] == ["rule", "action"] and "|" in line)
    assert rule_head.count("matches") == 2, "each rule's serving and candidate figures on one line"
    assert re.search(r"^\s+big-any\s+\(absent\)\s+\|\s+review", text, re.M)
    assert re.search(r"^\s+big-web\s+review.*\|\s+review.*\(changed\)$", text, re.M)
    for src, dst in pairs:
        assert f"    {src} -> {dst}: {pairs[(src, dst)]:,}" in text


def test_the_rule_table_is_printed_in_precedence_order(run, expected):
    text = run["text"].splitlines()
    start = text.index(next(line for line in text if line.startswith("serving rule set ")))
    table = [line.split()[0] for line in text[start + 3 : start + 3 + 6]]
    assert table == [r["id"] for r in expected["serving"].rules]


def test_child_processes_decide_the_same(tmp_path, models):
    """A bundle without a feature spec, scored by two processes: the same decisions and figures as one."""
    rng = np.random.default_rng(3)
    names = [f"f{i}" for i in range(6)]
    lines = []
    for i in range(900):
        event = {"transaction_id": f"tx-{i}", **dict(zip(names, rng.normal(0, 2, 6).round(4).tolist(), strict=True)),
                 "merchant": ["m1", "m2", "m3"][i % 3], "amount": float(i % 50), "is_fraud": i % 7 == 0}  # fmt: skip
        if i % 11 == 0:
            del event["amount"]  # no amount: 0
        lines.append(json.dumps(event))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "rules.toml").write_text(
        '[fields]\nmerchant = "string"\nf0 = "float"\n'
        '[[rule]]\nid = "m2"\naction = "block"\nwhen = "merchant == \'m2\' and f0 > 0"\n'
        '[[rule]]\nid = "low"\naction = "allow"\nwhen = "score < 0.05"\n'
        '[[rule]]\nid = "pat"\naction = "review"\nwhen = "merchant =~ \'m[13]\' and f0 < -2"\n'  # row by row
    )  # fmt: skip
    figures = []
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}.jsonl"
        args = ["--input", str(path), "--models-dir", str(models), "--output", str(out), "--rules",
                str(tmp_path / "rules.toml"), "--json", str(tmp_path / f"f{jobs}.json"),
                "--batch-size", "128"]  # fmt: skip
        assert backtest.main([*args, "--jobs", jobs, "--quiet"]) == 0
        figures.append(json.loads((tmp_path / f"f{jobs}.json").read_text())["rules"])
        got = [json.loads(x) for x in out.read_bytes().splitlines()]
        assert all("decision" in d and "shadow_decision" not in d for d in got)
    assert figures[0] == figures[1]
    amounts = [json.loads(x).get("amount", 0) for x in lines]
    assert figures[0]["amount"] == pytest.approx(sum(amounts))
    assert figures[0]["serving"]["rules"][0]["id"] == "low", "allow first"


def test_without_labels_the_figures_have_no_frauds(tmp_path, models, capsys):
    names = [f"f{i}" for i in range(6)]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"transaction_id": f"t{i}", **{n: (i % 5) - 2.0 for n in names},
                                        "amount": 2.5}) + "\n" for i in range(50)))  # fmt: skip
    (tmp_path / "rules.toml").write_text('[fields]\nf0 = "float"\n[[rule]]\nid = "neg"\naction = "block"\n'
                                         'when = "f0 < 0"\n')  # fmt: skip
    out = tmp_path / "out.jsonl"
    assert _run(str(path), "--models-dir", str(models), "--output", str(out), "--rules", str(tmp_path / "rules.toml"),
                "--json", str(tmp_path / "f.json")) == 0  # fmt: skip
    fig = json.loads((tmp_path / "f.json").read_text())
    assert fig["labels"] is None
    rule = fig["rules"]["serving"]["rules"][0]
    assert (rule["matches"], rule["amount"], rule["frauds"], rule["precision"]) == (20, 50.0, None, None)
    assert "(no labels: no frauds, precision or recall)" in capsys.readouterr().out


def test_a_candidate_alone_is_compared_with_the_models_threshold(tmp_path, models):
    names = [f"f{i}" for i in range(6)]
    rng = np.random.default_rng(5)
    events = [{"transaction_id": f"t{i}", **dict(zip(names, rng.normal(0, 2, 6).tolist(), strict=True)),
               "Class": int(i % 9 == 0)} for i in range(300)]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    (tmp_path / "c.toml").write_text('[fields]\nf1 = "float"\n[[rule]]\nid = "f1"\naction = "block"\nwhen = "f1 > 1"\n')
    out = tmp_path / "out.jsonl"
    assert _run(str(path), "--models-dir", str(models), "--output", str(out), "--candidate-rules",
                str(tmp_path / "c.toml"), "--json", str(tmp_path / "f.json")) == 0  # fmt: skip
    fig = json.loads((tmp_path / "f.json").read_text())["rules"]
    lines = [json.loads(x) for x in out.read_bytes().splitlines()]
    model = ["review" if d["score"] >= d["threshold"] else "allow" for d in lines]
    assert [d["decision"]["action"] for d in lines] == model and fig["serving"]["file"] is None
    cand = ["block" if e["f1"] > 1 else m for e, m in zip(events, model, strict=True)]
    assert [d["shadow_decision"]["action"] for d in lines] == cand
    changed = Counter((m, c) for m, c in zip(model, cand, strict=True) if m != c)
    assert {(t["serving"], t["candidate"]): t["events"] for t in fig["comparison"]["transitions"]} == dict(changed)


def _bad(tmp_path: Path, models: Path, capsys, flag: str, text: str, lists: dict | None = None) -> str:
    names = [f"f{i}" for i in range(6)]
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"transaction_id": "t", **{n: 0.5 for n in names}}) + "\n")
    (tmp_path / "rules.toml").write_text(text)
    for name, values in (lists or {}).items():
        (tmp_path / name).write_text(values)
    out = tmp_path / "out.jsonl"
    code = _run("--input", str(path), "--models-dir", str(models), "--output", str(out), "--lists-dir", str(tmp_path),
                flag, str(tmp_path / "rules.toml"))  # fmt: skip
    assert code == 2
    assert not out.exists(), "refused before scoring"
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"fraud-worker backtest: bad setting: {flag}: {tmp_path / 'rules.toml'}: ")
    return err


@pytest.mark.parametrize("flag", ["--rules", "--candidate-rules"])
def test_a_bad_rule_set_exits_2_in_one_line_naming_the_rule(tmp_path, models, capsys, flag):
    err = _bad(tmp_path, models, capsys, flag, '[fields]\namount = "float"\n[[rule]]\nid = "ok"\naction = "block"\n'
               'when = "amount > 1"\n[[rule]]\nid = "typo"\naction = "review"\nwhen = "amuont > 5"\n')  # fmt: skip
    assert "rule 'typo': unknown field 'amuont'" in err
    err = _bad(tmp_path, models, capsys, flag, '[fields]\nc = "string"\n[[rule]]\nid = "cmp"\naction = "block"\n'
               'when = "c > 5"\n')  # fmt: skip
    assert "rule 'cmp'" in err and "type" in err


def test_a_missing_list_exits_2_naming_the_list(tmp_path, models, capsys):
    err = _bad(tmp_path, models, capsys, "--rules", '[fields]\nm = "string"\n[lists]\nbad = "absent.txt"\n'
               '[[rule]]\nid = "deny"\naction = "block"\nwhen = "m in bad"\n')  # fmt: skip
    assert "list 'bad'" in err and "absent.txt" in err
