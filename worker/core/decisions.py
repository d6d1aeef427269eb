"""Decisions: what becomes of each scored event, and the record that explains it (docs/rules.md). Pure.

For each row: the threshold that applies (the bundle's global one, or its segment's: ``SegmentThresholds``),
the rules that matched (worker/core/rules.py, a bool matrix in precedence order), and the action: the first
matching rule's, else the rule set's ``default_action`` (``review`` without a rule set) when the score is at
or above the threshold, else ``allow``. Every action but ``allow`` is an alert. An ``allow`` rule that
matched an event scored at or above its threshold is an override (counted).

``Decisions.fragments`` is the decision record each alert and score record carries (docs/formats.md)::

    "decision": {"action": "block", "rule": "deny-terminal", "rules": ["deny-terminal", "big-web"],
                 "rule_set": "20261207T101500Z-3f2a9c1d", "threshold_source": "segment",
                 "segment": {"field": "channel", "value": "web"}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from worker.core.errors import BundleError
from worker.core.rules import RuleSet

ALLOW = "allow"
MODEL_ACTION = "review"  # the action of a score at or above the threshold when no rule set serves
MAX_SEGMENTS = 10_000
MAX_SEGMENT_CHARS = 256
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class SegmentThresholds:
    """Thresholds per value of one event field, chosen in training (training/thresholds.py); values not listed
    (too little support in the validation rows, or unseen) get the global threshold."""

    field: str
    min_support: int
    thresholds: Mapping[str, float]

    @classmethod
    def from_manifest(cls, data: object) -> SegmentThresholds | None:
        """The manifest's ``segment_thresholds`` checked (a ``BundleError`` names the problem), None without it."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise BundleError("manifest segment_thresholds is not an object")
        fld, support, values = data.get("field"), data.get("min_support"), data.get("thresholds")
        if not isinstance(fld, str) or not fld or len(fld) > MAX_SEGMENT_CHARS:
            raise BundleError("manifest segment_thresholds.field must name an event field")
        if isinstance(support, bool) or not isinstance(support, int) or support < 1:
            raise BundleError("manifest segment_thresholds.min_support must be an integer >= 1")
        if not isinstance(values, Mapping) or len(values) > MAX_SEGMENTS:
            raise BundleError(f"manifest segment_thresholds.thresholds must be an object of at most {MAX_SEGMENTS}")
        out: dict[str, float] = {}
        for key, t in values.items():
            if not isinstance(key, str) or len(key) > MAX_SEGMENT_CHARS:
                raise BundleError("manifest segment_thresholds has a value that is not a short string")
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0.0 <= float(t) <= 1.0):
                raise BundleError(f"manifest segment_thresholds[{key[:40]!r}] is not a threshold in [0, 1]")
            out[key] = float(t)
        return cls(fld, support, out)

    def to_manifest(self) -> dict[str, Any]:
        return {"field": self.field, "min_support": self.min_support, "thresholds": dict(self.thresholds)}

    def apply(self, values: Sequence[Any], global_threshold: float) -> tuple[np.ndarray, list[str | None]]:
        """Each row's threshold, and its segment value where a segment's threshold applied (else None)."""
        table = self.thresholds
        keys = [segment_key(v) for v in values]
        segment = [k if k is not None and k in table else None for k in keys]
        thresholds = np.fromiter((global_threshold if k is None else table[k] for k in segment), dtype=np.float64,
                                 count=len(segment))  # fmt: skip
        return thresholds, segment


def segment_key(value: Any) -> str | None:
    """An event's segment value as the text training saw in its CSV: a string as it is, an integer (or an
    integral float) in decimal; anything else has no segment."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return None


@dataclass
class Decisions:
    """One batch's decisions, a row per scored event."""

    actions: tuple[str, ...]  # action names, ``allow`` first
    codes: np.ndarray  # int: index into actions, per row
    deciding: np.ndarray  # int: the deciding rule's index in rule_set.rules, -1 for none
    matches: np.ndarray | None  # bool (rows, rules), None without a rule set
    thresholds: np.ndarray  # float64: the threshold that applied
    segments: list[str | None]  # the segment value whose threshold applied, per row
    overrides: np.ndarray  # bool: an allow rule matched a score at or above its threshold
    rule_set: RuleSet | None
    segment_field: str | None

    @property
    def alerts(self) -> np.ndarray:
        """Rows whose action is not allow."""
        return np.flatnonzero(self.codes != 0)

    def action_counts(self) -> dict[str, int]:
        if not len(self.codes):
            return {}
        counts = np.bincount(self.codes, minlength=len(self.actions)).tolist()
        return {a: int(c) for a, c in zip(self.actions, counts, strict=False) if c}

    def rule_matches(self) -> dict[str, int]:
        """Matches per rule id (every match, deciding or not)."""
        if self.matches is None or self.rule_set is None or not len(self.codes):
            return {}
        totals = self.matches.sum(axis=0)
        return {r.id: int(t) for r, t in zip(self.rule_set.rules, totals.tolist(), strict=True) if t}

    def action_of(self, j: int) -> str:
        return self.actions[int(self.codes[j])]

    def matched_ids(self, j: int) -> list[str]:
        if self.matches is None or self.rule_set is None:
            return []
        rules = self.rule_set.rules
        return [rules[k].id for k in np.flatnonzero(self.matches[j]).tolist()]

    def record(self, j: int) -> dict[str, Any]:
        """Row ``j``'s decision record as a dict (the JSON of ``fragments``)."""
        k = int(self.deciding[j])
        out: dict[str, Any] = {
            "action": self.action_of(j),
            "rule": self.rule_set.rules[k].id if k >= 0 and self.rule_set is not None else None,
            "rules": self.matched_ids(j),
            "rule_set": self.rule_set.version if self.rule_set is not None else None,
            "threshold_source": "segment" if self.segments[j] is not None else "global",
        }
        if self.segments[j] is not None:
            out["segment"] = {"field": self.segment_field, "value": self.segments[j]}
        return out

    def fragments(self, rows: Sequence[int], key: bytes = b"decision") -> list[bytes]:
        """``,"<key>":{...}`` for each row: the decision record a JSON payload carries."""
        head = b',"' + key + b'":'
        plain: dict[int, bytes] = {}  # by action code: rows without a match or a segment share one fragment
        has_match: np.ndarray | None = None
        if self.matches is not None and self.matches.shape[1]:
            has_match = np.asarray(self.matches.any(axis=1))
        out = []
        for j in rows:
            if (has_match is None or not has_match[j]) and self.segments[j] is None:
                code = int(self.codes[j])
                frag = plain.get(code)
                if frag is None:
                    frag = plain[code] = head + _encode(self.record(j))
                out.append(frag)
            else:
                out.append(head + _encode(self.record(j)))
        return out

    def threshold_values(self, rows: Sequence[int]) -> list[float]:
        return self.thresholds[list(rows)].tolist()


def decide(
    scores: np.ndarray,
    thresholds: np.ndarray,
    rule_set: RuleSet | None,
    matches: np.ndarray | None,
    segments: list[str | None],
    segment_field: str | None,
) -> Decisions:
    """Each row's action by the precedence of the module's doc."""
    n = len(scores)
    high = scores >= thresholds
    actions: tuple[str, ...]
    if rule_set is None or matches is None:
        actions = (ALLOW, MODEL_ACTION)
        codes = high.astype(np.int64)
        return Decisions(actions, codes, np.full(n, -1, dtype=np.int64), None, thresholds, segments,
                         np.zeros(n, dtype=bool), None, segment_field)  # fmt: skip
    actions = rule_set.actions
    code_of = {a: i for i, a in enumerate(actions)}
    rule_codes = np.asarray([code_of[r.action] for r in rule_set.rules], dtype=np.int64)
    any_match = matches.any(axis=1) if matches.shape[1] else np.zeros(n, dtype=bool)
    first = np.zeros(n, dtype=np.int64)
    hit = np.flatnonzero(any_match)
    if len(hit):  # few rows match a rule: the first match looked for in those only
        first[hit] = matches[hit].argmax(axis=1)
    deciding = np.where(any_match, first, -1)
    default = np.where(high, code_of[rule_set.default_action], 0)
    codes = np.where(any_match, rule_codes[first] if len(rule_codes) else 0, default)
    overrides = any_match & (codes == 0) & high
    return Decisions(actions, codes, deciding, matches, thresholds, segments, overrides, rule_set, segment_field)


def decision_counts(d: Decisions) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[str, int]]:
    """For the metrics: events per action, matches per (rule, action), allow overrides per deciding rule."""
    matches: dict[tuple[str, str], int] = {}
    overrides: dict[str, int] = {}
    if d.rule_set is not None and d.matches is not None and len(d.codes):
        rules = d.rule_set.rules
        for k, total in enumerate(d.matches.sum(axis=0).tolist()):
            if total:
                matches[(rules[k].id, rules[k].action)] = int(total)
        if d.overrides.any():
            for k in d.deciding[d.overrides].tolist():
                overrides[rules[k].id] = overrides.get(rules[k].id, 0) + 1
    return d.action_counts(), matches, overrides
