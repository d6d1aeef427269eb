"""A scored batch's decisions (worker/core/decisions.py): written once for the worker's loop, its shadow rule
set and the backtest. Pure: no Kafka.

``Judge.decide`` reads what the rules and the segment thresholds need of each valid event: a field whose
source is one of the model's inputs or features (a float) from the decoded rows, anything else from the
event's JSON (one msgspec decode per batch), a value that is missing or not of the declared type as the
field's default. Then each row's threshold, every rule's matches over the batch's columns, and the decisions.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from worker.core.decisions import Decisions, SegmentThresholds, decide
from worker.core.decode import DecodedBatch
from worker.core.rules import Field, RuleSet, ServingRules
from worker.core.scoring import Scorer


class EventFields:
    """Named fields of JSON event values (objects already checked by the decoder); absent or null: None."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        fields = [(f"f{j}", Any, msgspec.field(name=name, default=None)) for j, name in enumerate(self.names)]
        # gc=False: decoded JSON holds no cycles, and a batch's structs then cost the collector nothing
        struct = msgspec.defstruct("EventFields", fields, gc=False)  # type: ignore[arg-type]
        self._one = msgspec.json.Decoder(struct).decode
        self._many = msgspec.json.Decoder(list[struct]).decode  # type: ignore[valid-type]

    def read(self, values: Sequence[bytes]) -> list[list[Any]]:
        """One list per name: its value in each event."""
        if not self.names:
            return []
        try:
            structs = self._many(b"[" + b",".join(values) + b"]")
        except msgspec.DecodeError:  # one value msgspec cannot read as a whole batch: each on its own
            structs = []
            for v in values:
                try:
                    structs.append(self._one(v))
                except msgspec.DecodeError:
                    structs.append(None)
        if any(s is None for s in structs):
            return [[getattr(s, f"f{j}", None) for s in structs] for j in range(len(self.names))]
        return [list(map(operator.attrgetter(f"f{j}"), structs)) for j in range(len(self.names))]


def typed(values: list[Any], f: Field) -> np.ndarray:
    """An event field's values as the column a rule reads: of the field's type, else its default."""
    d = f.default
    if f.type == "float":
        return np.fromiter(
            (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else d
             for v in values), dtype=np.float64, count=len(values),
        )  # fmt: skip
    if f.type == "boolean":
        return np.fromiter((v if isinstance(v, bool) else d for v in values), dtype=bool, count=len(values))
    out = np.empty(len(values), dtype=object)
    out[:] = [v if type(v) is str else d for v in values]  # noqa: E721 - str itself: msgspec makes no subclass
    return out


class _Plan:
    """Where each field of the rule sets (and the segment field) comes from, for one scorer."""

    def __init__(self, scorer: Scorer, rule_sets: Sequence[RuleSet]) -> None:
        self.keep = (scorer, tuple(rule_sets))  # the cache's key is their ids: kept alive while cached
        index = {name: j for j, name in enumerate(scorer.feature_names)}
        self.segments: SegmentThresholds | None = scorer.segments
        self.from_rows: dict[tuple[str, str], int] = {}
        json_sources: list[str] = []
        for rs in rule_sets:
            for f in rs.fields:
                if f.type == "float" and f.source in index:
                    self.from_rows[(f.source, f.type)] = index[f.source]
                elif f.source not in json_sources:
                    json_sources.append(f.source)
        if self.segments is not None and self.segments.field not in json_sources:
            json_sources.append(self.segments.field)
        self.reader = EventFields(json_sources)


class Judge:
    """Decides scored batches; keeps what it learnt of a scorer and rule sets for the next batch."""

    def __init__(self) -> None:
        self._plans: dict[tuple[int, tuple[int, ...]], _Plan] = {}

    def decide(
        self,
        scorer: Scorer,
        decoded: DecodedBatch,
        values: Sequence[bytes],  # the raw value of each valid row
        scores: np.ndarray,
        rules: ServingRules | None,
        shadow: ServingRules | None = None,
    ) -> tuple[Decisions, Decisions | None]:
        """The batch's decisions with ``rules`` (None: the model's threshold alone), and with ``shadow``."""
        sets = [r.rule_set for r in (rules, shadow) if r is not None]
        plan = self._plan(scorer, sets)
        n = len(scores)
        raw = dict(zip(plan.reader.names, plan.reader.read(values), strict=True)) if n else {}
        if plan.segments is not None and n:
            thresholds, segments = plan.segments.apply(raw[plan.segments.field], scorer.threshold)
        else:
            thresholds, segments = np.full(n, scorer.threshold, dtype=np.float64), [None] * n
        field = plan.segments.field if plan.segments is not None else None
        base = {"score": scores.astype(np.float64), "threshold": thresholds}
        out: list[Decisions | None] = []
        for r in (rules, shadow):
            if r is None:
                out.append(None)
                continue
            columns = dict(base)
            for f in r.rule_set.fields:
                j = plan.from_rows.get((f.source, f.type))
                columns[f.name] = (
                    decoded.features[:, j].astype(np.float64) if j is not None else typed(raw[f.source], f)
                )
            matches = r.rule_set.matches(columns, r.lists, n)
            out.append(decide(scores, thresholds, r.rule_set, matches, segments, field))
        first = out[0]
        if first is None:  # no rule set: the threshold decides
            first = decide(scores, thresholds, None, None, segments, field)
        return first, out[1]

    def _plan(self, scorer: Scorer, sets: Sequence[RuleSet]) -> _Plan:
        key = (id(scorer), tuple(id(s) for s in sets))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 8:
                self._plans.clear()
            plan = self._plans[key] = _Plan(scorer, sets)
        return plan
