"""``fraud-worker backtest --rules``: what a rule set would have decided over a file, rule by rule and action by
action, and how a candidate set would differ. Pure numpy over what the backtest's batches hand it.

Each batch is decided by the worker's own code (``Judge.decide``, worker/core/batch_decisions.py) in
worker/offline/backtest.py; ``decided_rows`` keeps, per scored event, what the figures need: the action code,
every rule's match, the score, the threshold that applied and the amount. ``RuleReport`` adds them up once the
file is read (``add``, batch by batch, with each event's label), so the matches are never held as one matrix.

Figures, over the events with a known label (over every scored event when the file has no labels):

- per rule, in precedence order: ``matches`` (every event it matched, deciding or not), ``amount`` (the sum of
  the amount field over them), ``frauds`` among them, ``precision`` (frauds / matches), ``recall`` (frauds /
  every fraud), ``decided`` (the events it decided: its first match);
- per rule, its incremental effect: the events it decided decided again by the set without it
  (``RuleSet.without``, over the same matches less its column: ``decide``). An alerting rule's
  ``frauds_lost`` are the frauds the set alerts with it and allows without it, ``genuine_alerts_removed`` the
  genuine events likewise and ``fraud_amount_lost`` their amount; an allow rule's ``frauds_let_through`` are
  the frauds it allows that the set would alert without it (``genuine_alerts_spared``,
  ``fraud_amount_let_through``). Deciding again only the rule's own events gives what deciding the whole file
  again would: an event it did not decide keeps its first match, or its lack of one;
- per action, and for every action but allow together (``alerted``): events, amount, frauds, precision,
  recall;
- with a candidate set: each of those side by side, and the events whose action changes, by
  (serving action, candidate action).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.core.batch_decisions import EventFields, typed
from worker.core.decisions import ALLOW, Decisions, decide
from worker.core.rule_lists import read_list
from worker.core.rules import MAX_RULE_SET_BYTES, Field, RuleSet, RuleSetError, ServingRules, parse_rule_set

ALERTED = "alerted"  # the row of every action but allow together


@dataclass(frozen=True)
class RuleFile:
    """A rule set file and its lists as read once: picklable, so each scoring process parses the very bytes the
    report is made with (``serving``)."""

    path: str
    data: bytes
    lists: Mapping[str, frozenset[str]]

    def serving(self) -> ServingRules:
        return ServingRules(parse_rule_set(self.data, self.path), self.lists)


def read_rule_file(path: str, lists_dir: str) -> tuple[RuleFile, ServingRules]:
    """The rule set at ``path`` checked, with its lists read from ``lists_dir``; a ``RuleSetError`` is one line
    naming the file, the rule or list, and the problem."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_RULE_SET_BYTES + 1)
    except OSError as exc:
        raise RuleSetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    rule_set = parse_rule_set(data, path)
    lists: dict[str, frozenset[str]] = {}
    for name, file in rule_set.lists.items():
        try:
            lists[name] = read_list(os.path.join(lists_dir, file))
        except RuleSetError as exc:
            raise RuleSetError(f"{path}: list {name!r}: {exc}") from None
    return RuleFile(path, data, lists), ServingRules(rule_set, lists)


class Amounts:
    """Each event's amount: a number in the event's field of that name, else 0 (absent, null, text, true)."""

    def __init__(self, name: str) -> None:
        self.reader = EventFields([name])
        self.field = Field(name, "float", name, 0.0)

    def read(self, values: Sequence[bytes]) -> np.ndarray:
        return typed(self.reader.read(values)[0], self.field) if values else np.empty(0, dtype=np.float64)


@dataclass
class SetRows:
    """One rule set's decisions of a batch's scored events: action codes and each rule's matches (packed bits)."""

    codes: np.ndarray  # int16, an index into the set's actions
    packed: np.ndarray  # uint8 (rows, ceil(rules / 8)): np.packbits of the matches, axis 1
    rules: int

    @classmethod
    def of(cls, d: Decisions) -> SetRows:
        n = len(d.codes)
        matches = d.matches if d.matches is not None else np.zeros((n, 0), dtype=bool)
        return cls(d.codes.astype(np.int16), np.packbits(matches, axis=1), matches.shape[1])

    def matches(self) -> np.ndarray:
        return np.unpackbits(self.packed, axis=1, count=self.rules).astype(bool)

    def take(self, keep: np.ndarray) -> SetRows:
        return SetRows(self.codes[keep], self.packed[keep], self.rules)


@dataclass
class DecidedRows:
    """What the rule figures need of one batch's scored events, in order."""

    scores: np.ndarray  # float32, as scored
    thresholds: np.ndarray  # float64, the threshold that applied
    amounts: np.ndarray  # float64
    serving: SetRows
    candidate: SetRows | None

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, keep: np.ndarray) -> DecidedRows:
        cand = self.candidate.take(keep) if self.candidate is not None else None
        return DecidedRows(self.scores[keep], self.thresholds[keep], self.amounts[keep], self.serving.take(keep), cand)


def decided_rows(
    serving: Decisions, candidate: Decisions | None, scores: np.ndarray, amounts: np.ndarray
) -> DecidedRows:
    """What the figures need of one batch: its decisions (``Judge.decide``'s), scores and amounts."""
    cand = SetRows.of(candidate) if candidate is not None else None
    return DecidedRows(np.asarray(scores, dtype=np.float32), serving.thresholds.astype(np.float64),
                       np.asarray(amounts, dtype=np.float64), SetRows.of(serving), cand)  # fmt: skip


class _SetTally:
    """One rule set's sums over the events added (``rule_set`` None: the model's threshold alone)."""

    def __init__(self, rule_set: RuleSet | None) -> None:
        self.rule_set = rule_set
        self.actions: tuple[str, ...] = rule_set.actions if rule_set is not None else (ALLOW, "review")
        r, a = (len(rule_set.rules) if rule_set is not None else 0), len(self.actions)
        self.without = [rule_set.without(rule.id) for rule in rule_set.rules] if rule_set is not None else []
        zeros_i, zeros_f = (lambda k: np.zeros(k, dtype=np.int64)), (lambda k: np.zeros(k, dtype=np.float64))
        self.action_events, self.action_frauds, self.action_amount = zeros_i(a), zeros_i(a), zeros_f(a)
        self.matches, self.frauds, self.amount = zeros_i(r), zeros_i(r), zeros_f(r)
        self.decided, self.decided_frauds, self.decided_amount = zeros_i(r), zeros_i(r), zeros_f(r)
        self.alerts_removed, self.frauds_lost, self.fraud_amount_lost = zeros_i(r), zeros_i(r), zeros_f(r)
        self.alerts_added, self.frauds_let_through, self.fraud_amount_let_through = zeros_i(r), zeros_i(r), zeros_f(r)
        self.changed = zeros_i(r)

    def add(self, rows: SetRows, scores: np.ndarray, thresholds: np.ndarray, amounts: np.ndarray,
            fraud: np.ndarray) -> None:  # fmt: skip
        a = len(self.actions)
        codes = rows.codes.astype(np.int64)
        self.action_events += np.bincount(codes, minlength=a)
        self.action_frauds += np.bincount(codes[fraud], minlength=a)
        self.action_amount += np.bincount(codes, weights=amounts, minlength=a)
        if self.rule_set is None or not rows.rules or not len(codes):
            return
        matches = rows.matches()
        self.matches += matches.sum(axis=0)
        self.frauds += matches[fraud].sum(axis=0)
        self.amount += amounts @ matches
        deciding = np.where(matches.any(axis=1), matches.argmax(axis=1), -1)
        alerted = codes != 0
        order = np.argsort(deciding, kind="stable")
        bounds = np.searchsorted(deciding[order], np.arange(rows.rules + 1))
        for k in range(rows.rules):
            at = order[bounds[k] : bounds[k + 1]]  # the events rule k decided
            if not at.size:
                continue
            f = fraud[at]
            self.decided[k] += at.size
            self.decided_frauds[k] += int(f.sum())
            self.decided_amount[k] += float(amounts[at].sum())
            again = decide(scores[at], thresholds[at], self.without[k], np.delete(matches[at], k, axis=1),
                           [None] * at.size, None)  # fmt: skip
            before, after = alerted[at], again.codes != 0
            lost, gained = before & ~after, ~before & after
            self.alerts_removed[k] += int(lost.sum())
            self.frauds_lost[k] += int((lost & f).sum())
            self.fraud_amount_lost[k] += float(amounts[at][lost & f].sum())
            self.alerts_added[k] += int(gained.sum())
            self.frauds_let_through[k] += int((gained & f).sum())
            self.fraud_amount_let_through[k] += float(amounts[at][gained & f].sum())
            self.changed[k] += int((again.codes != codes[at]).sum())


class RuleReport:
    """The rule figures of a backtest: ``add`` each batch's decided rows (with each event's label, or None for
    a file without labels), then ``figures`` (a JSON-ready dict) and ``text``."""

    def __init__(self, serving: RuleSet | None, candidate: RuleSet | None, names: tuple[str | None, str | None],
                 amount_field: str, lists_dir: str) -> None:  # fmt: skip
        self.names, self.amount_field, self.lists_dir = names, amount_field, lists_dir
        self.serving = _SetTally(serving)
        self.candidate = _SetTally(candidate) if candidate is not None else None
        self.events = self.frauds = 0
        self.amount = self.fraud_amount = 0.0
        self.labelled: bool | None = None
        if self.candidate is not None:
            self.transitions = np.zeros((len(self.serving.actions), len(self.candidate.actions)), dtype=np.int64)
            self.transition_frauds = np.zeros_like(self.transitions)

    def add(self, rows: DecidedRows, fraud: np.ndarray | None) -> None:
        """``fraud``: a bool per row of ``rows`` (the rows of a labelled file already limited to the known
        labels), or None for a file without labels."""
        self.labelled = fraud is not None
        f = np.asarray(fraud, dtype=bool) if fraud is not None else np.zeros(len(rows), dtype=bool)
        self.events += len(rows)
        self.frauds += int(f.sum())
        self.amount += float(rows.amounts.sum())
        self.fraud_amount += float(rows.amounts[f].sum())
        self.serving.add(rows.serving, rows.scores, rows.thresholds, rows.amounts, f)
        if self.candidate is not None and rows.candidate is not None:
            self.candidate.add(rows.candidate, rows.scores, rows.thresholds, rows.amounts, f)
            s, c = rows.serving.codes.astype(np.int64), rows.candidate.codes.astype(np.int64)
            shape = self.transitions.shape
            self.transitions += np.bincount(s * shape[1] + c, minlength=shape[0] * shape[1]).reshape(shape)
            self.transition_frauds += np.bincount(s[f] * shape[1] + c[f], minlength=shape[0] * shape[1]).reshape(shape)

    # -- figures ------------------------------------------------------------------------------------

    def _frauds(self, n: int | np.integer) -> int | None:
        return int(n) if self.labelled else None

    def _rates(self, events: int, frauds: int | None) -> dict[str, float | None]:
        return {
            "precision": frauds / events if frauds is not None and events else None,
            "recall": frauds / self.frauds if frauds is not None and self.frauds else None,
        }

    def _group(self, events: int, amount: float, frauds: int | None, key: str = "events") -> dict[str, Any]:
        return {key: int(events), "amount": _amount(amount), "frauds": frauds, **self._rates(events, frauds)}

    def _set_figures(self, t: _SetTally, name: str | None) -> dict[str, Any]:
        rs = t.rule_set
        rules = []
        for k, rule in enumerate(rs.rules if rs is not None else ()):
            frauds = self._frauds(t.frauds[k])
            lost, through = self._frauds(t.frauds_lost[k]), self._frauds(t.frauds_let_through[k])
            rules.append({
                "id": rule.id, "action": rule.action, "when": rule.when,
                **self._group(t.matches[k], t.amount[k], frauds, "matches"),
                "decided": int(t.decided[k]), "decided_frauds": self._frauds(t.decided_frauds[k]),
                "decided_amount": _amount(t.decided_amount[k]),
                "without": {
                    "alerts_removed": int(t.alerts_removed[k]), "frauds_lost": lost,
                    "genuine_alerts_removed": int(t.alerts_removed[k]) - lost if lost is not None else None,
                    "fraud_amount_lost": _amount(t.fraud_amount_lost[k]) if self.labelled else None,
                    "alerts_added": int(t.alerts_added[k]), "frauds_let_through": through,
                    "genuine_alerts_spared": int(t.alerts_added[k]) - through if through is not None else None,
                    "fraud_amount_let_through": _amount(t.fraud_amount_let_through[k]) if self.labelled else None,
                    "decisions_changed": int(t.changed[k]),
                },
            })  # fmt: skip
        actions = [
            {"action": a, **self._group(t.action_events[i], t.action_amount[i], self._frauds(t.action_frauds[i]))}
            for i, a in enumerate(t.actions)
        ]
        alerted = self._group(int(t.action_events[1:].sum()), float(t.action_amount[1:].sum()),
                              self._frauds(t.action_frauds[1:].sum()))  # fmt: skip
        return {
            "file": name,
            "version": rs.version if rs is not None else None,
            "sha256": rs.sha256 if rs is not None else None,
            "default_action": rs.default_action if rs is not None else "review",
            "rules": rules,
            "actions": actions,
            ALERTED: alerted,
        }

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "events": self.events,
            "labelled": bool(self.labelled),
            "frauds": self._frauds(self.frauds),
            "amount_field": self.amount_field,
            "lists_dir": self.lists_dir,
            "amount": _amount(self.amount),
            "fraud_amount": _amount(self.fraud_amount) if self.labelled else None,
            "serving": self._set_figures(self.serving, self.names[0]),
            "candidate": None,
            "comparison": None,
        }
        if self.candidate is not None:
            out["candidate"] = self._set_figures(self.candidate, self.names[1])
            out["comparison"] = self._comparison(out["serving"], out["candidate"])
        return out

    def _comparison(self, serving: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
        assert self.candidate is not None
        by_s = {a["action"]: a for a in serving["actions"]}
        by_c = {a["action"]: a for a in candidate["actions"]}
        empty = self._group(0, 0.0, self._frauds(0))
        actions = []
        for action in dict.fromkeys([*by_s, *by_c]):
            s, c = by_s.get(action, empty), by_c.get(action, empty)
            actions.append({"action": action, "serving": s, "candidate": c, "difference": _difference(s, c)})
        alerted = {"serving": serving[ALERTED], "candidate": candidate[ALERTED],
                   "difference": _difference(serving[ALERTED], candidate[ALERTED])}  # fmt: skip
        rules_s = {r["id"]: r for r in serving["rules"]}
        rules_c = {r["id"]: r for r in candidate["rules"]}
        rules = [{"id": rid, "serving": rules_s.get(rid), "candidate": rules_c.get(rid)}
                 for rid in dict.fromkeys([*rules_s, *rules_c])]  # fmt: skip
        transitions = []
        for i, j in zip(*np.nonzero(self.transitions), strict=True):
            a, b = self.serving.actions[i], self.candidate.actions[j]
            if a != b:
                transitions.append({"serving": a, "candidate": b, "events": int(self.transitions[i, j]),
                                    "frauds": self._frauds(self.transition_frauds[i, j])})  # fmt: skip
        transitions.sort(key=lambda t: -t["events"])
        changed = sum(t["events"] for t in transitions)
        changed_frauds = self._frauds(sum(t["frauds"] or 0 for t in transitions))
        return {"actions": actions, ALERTED: alerted, "rules": rules, "decisions_changed": changed,
                "decisions_changed_frauds": changed_frauds, "transitions": transitions}  # fmt: skip

    # -- text ---------------------------------------------------------------------------------------

    def text(self, figures: dict[str, Any] | None = None) -> str:
        fig = figures if figures is not None else self.figures()
        lines = []
        over = f"{fig['events']:,} labelled scored events" if fig["labelled"] else f"{fig['events']:,} scored events"
        frauds = f", {fig['frauds']:,} fraud" if fig["labelled"] else " (no labels: no frauds, precision or recall)"
        lines.append(f"rules: over {over}{frauds}; amounts from the event field {fig['amount_field']!r} "
                     f"({_money(fig['amount'])} in all); lists from {fig['lists_dir']}")  # fmt: skip
        lines += _set_text("serving", fig["serving"])
        if fig["candidate"] is not None:
            lines += _set_text("candidate", fig["candidate"])
            lines += _comparison_text(fig["comparison"], fig["events"])
        return "\n".join(line.rstrip() for line in lines)


def _difference(s: Mapping[str, Any], c: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("events", "amount", "frauds", "precision", "recall"):
        a, b = s.get(key), c.get(key)
        out[key] = None if a is None or b is None else _amount(b - a) if key == "amount" else b - a
    return out


def _amount(x: float | np.floating) -> float:
    """A sum of amounts for the JSON: to a millionth (the float sum's last digits are noise)."""
    return round(float(x), 6)


def _title(role: str, fig: Mapping[str, Any]) -> str:
    if fig["file"] is None:
        return f"{role}: the model's threshold alone (no rule set): a score at or above it is review"
    n = len(fig["rules"])
    return (f"{role} rule set {fig['file']} ({fig['version']}, {n} rule{'s' * (n != 1)}, default action "
            f"{fig['default_action']})")  # fmt: skip


def _set_text(role: str, fig: Mapping[str, Any]) -> list[str]:
    lines = ["", _title(role, fig)]
    rules = fig["rules"]
    w = max([len("rule"), *(len(r["id"]) for r in rules)])
    aw = max([len("alerted"), *(len(a["action"]) for a in fig["actions"])])
    if rules:
        lines.append("  each rule, in precedence order (matches: every event it matched; decided: those it was "
                     "the first to match)")  # fmt: skip
        lines.append(f"  {'rule':<{w}}  {'action':<{aw}}  {'matches':>8}  {'amount':>14}  {'frauds':>7}  "
                     f"{'precision':>9}  {'recall':>6}  {'decided':>8}")  # fmt: skip
        for r in rules:
            lines.append(f"  {r['id']:<{w}}  {r['action']:<{aw}}  {r['matches']:>8,}  {_money(r['amount']):>14}  "
                         f"{_count(r['frauds']):>7}  {_rate(r['precision']):>9}  {_rate(r['recall']):>6}  "
                         f"{r['decided']:>8,}")  # fmt: skip
        lines.append("  without each rule: the change in what the set alerts were it taken out (an alerting rule's "
                     "lost alerts -, an allow rule's let-throughs +)")  # fmt: skip
        lines.append(f"  {'rule':<{w}}  {'action':<{aw}}  {'alerts':>8}  {'frauds':>7}  {'genuine':>8}  "
                     f"{'fraud amount':>14}  {'decisions changed':>17}")  # fmt: skip
        for r in rules:
            x = r["without"]
            sign = 1 if r["action"] == ALLOW else -1
            alerts = x["alerts_added"] if sign > 0 else x["alerts_removed"]
            frauds = x["frauds_let_through"] if sign > 0 else x["frauds_lost"]
            genuine = x["genuine_alerts_spared"] if sign > 0 else x["genuine_alerts_removed"]
            amount = x["fraud_amount_let_through"] if sign > 0 else x["fraud_amount_lost"]
            lines.append(f"  {r['id']:<{w}}  {r['action']:<{aw}}  {_signed(sign, alerts):>8}  "
                         f"{_signed(sign, frauds):>7}  {_signed(sign, genuine):>8}  {_signed_money(sign, amount):>14}  "
                         f"{x['decisions_changed']:>17,}")  # fmt: skip
    lines.append(f"  {'action':<{aw}}  {'events':>8}  {'amount':>14}  {'frauds':>7}  {'precision':>9}  {'recall':>6}")
    for a in [*fig["actions"], {"action": ALERTED, **fig[ALERTED]}]:
        lines.append(f"  {a['action']:<{aw}}  {a['events']:>8,}  {_money(a['amount']):>14}  {_count(a['frauds']):>7}  "
                     f"{_rate(a['precision']):>9}  {_rate(a['recall']):>6}")  # fmt: skip
    lines.append(f"  ({ALERTED}: every action but allow)")
    return lines


def _comparison_text(cmp: Mapping[str, Any], events: int) -> list[str]:
    lines = ["", "candidate against serving, on the same events"]
    rows = [*cmp["actions"], {"action": ALERTED, **cmp[ALERTED]}]
    aw = max([len("action"), *(len(r["action"]) for r in rows)])
    lines.append(f"  {'action':<{aw}}  {'figure':<9}  {'serving':>14}  {'candidate':>14}  {'difference':>14}")
    for r in rows:
        for i, key in enumerate(("events", "amount", "frauds", "precision", "recall")):
            fmt = {"events": _count, "frauds": _count, "amount": _money}.get(key, _rate)
            diff = r["difference"][key]
            shown = "-" if diff is None else (_rate_diff(diff) if fmt is _rate else
                                              ("+" if diff > 0 else "") + fmt(diff))  # fmt: skip
            lines.append(f"  {r['action'] if i == 0 else '':<{aw}}  {key:<9}  {fmt(r['serving'][key]):>14}  "
                         f"{fmt(r['candidate'][key]):>14}  {shown:>14}")  # fmt: skip
    rules = cmp["rules"]
    if rules:
        w = max([len("rule"), *(len(r["id"]) for r in rules)])
        head = f"{'action':<10} {'matches':>8} {'frauds':>7} {'precision':>9} {'decided':>8}"
        lines.append(f"  {'':<{w}}  {'serving':<{len(head)}}  |  candidate")
        lines.append(f"  {'rule':<{w}}  {head}  |  {head}")
        for r in rules:
            sides = [_rule_cells(r["serving"], len(head)), _rule_cells(r["candidate"], len(head))]
            s, c = r["serving"], r["candidate"]
            mark = ""
            if s is not None and c is not None and (s["when"], s["action"]) != (c["when"], c["action"]):
                mark = "  (changed)"
            lines.append(f"  {r['id']:<{w}}  {sides[0]}  |  {sides[1]}{mark}")
    changed, frauds = cmp["decisions_changed"], cmp["decisions_changed_frauds"]
    share = f" ({changed / events:.2%})" if events else ""
    lines.append(f"  decisions changed: {changed:,} of {events:,} events{share}"
                 + (f", {frauds:,} of them fraud" if frauds is not None else ""))  # fmt: skip
    for t in cmp["transitions"]:
        of = f"  ({t['frauds']:,} fraud)" if t["frauds"] is not None else ""
        lines.append(f"    {t['serving']} -> {t['candidate']}: {t['events']:,}{of}")
    return lines


def _rule_cells(r: Mapping[str, Any] | None, width: int) -> str:
    if r is None:
        return f"{'(absent)':<{width}}"
    return (f"{r['action']:<10} {r['matches']:>8,} {_count(r['frauds']):>7} {_rate(r['precision']):>9} "
            f"{r['decided']:>8,}")  # fmt: skip


def _count(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _rate_diff(x: float) -> str:
    text = f"{x:+.4f}"
    return text[1:] if text in ("+0.0000", "-0.0000") else text


def _signed(sign: int, x: int | None) -> str:
    if x is None:
        return "-"
    return f"{sign * x:+,}" if x else "0"


def _signed_money(sign: int, x: float | None) -> str:
    if x is None:
        return "-"
    return f"{sign * x:+,.2f}" if x else "0.00"
