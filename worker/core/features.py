"""Behavioural features: per-entity windowed aggregates and categorical encodings, declared once in a
feature spec (docs/features.md) and computed by one function, ``FeatureEngine.step``, for training, the
backtest and the worker alike. Pure: no Kafka, no loop, no settings; state lives in whatever mapping the
caller gives (a dict offline, the worker's embedded store online).

The rules, the same everywhere:

- **Event time** is the spec's ``time_field`` (epoch milliseconds, or seconds with ``time_unit = "s"``).
  Events are taken in the order given: offline, the file sorted by event time (ties in file order);
  online, the order of each partition. An event older than its entity's latest one is computed at that
  latest time (its time is clamped forward, ``late`` counts it), so an entity's state never goes back.
- **Windows are bucketed.** A window ``w`` is made of ``BUCKETS`` buckets of ``w / BUCKETS`` each; an
  event at time ``t`` in bucket ``K = t // width`` sees buckets ``K - BUCKETS + 1`` .. ``K`` (so the
  window reaches back between ``(BUCKETS - 1) / BUCKETS · w`` and ``w``). With a block ``delay`` ``d`` it
  sees the ``BUCKETS`` whole buckets that end at or before ``t - d``: ``D - BUCKETS`` .. ``D - 1`` where
  ``D = (t - d) // width``, so nothing newer than ``t - d`` counts.
- **The current event is never included** in its own features: they describe the entity's history
  before it. It is added to the state after its features are computed.
- An event without the entity field (null, empty, not a string or integer) gets the features of an
  entity with no history and changes no state.
- Empty window: ``count``, ``sum`` and ``distinct`` are 0, ``mean``, ``min`` and ``max`` are 0,
  ``ratio`` is 1 (the value "as usual"). ``ratio(f)`` is ``f / mean(f)`` when that mean is above 0,
  else 1. ``since_previous`` is the seconds since the entity's previous event, at most the block's
  horizon (its longest window plus its delay), and the horizon when there is none.
- **Label-derived** (``fraud_count``, ``fraud_rate``; a block with a delay of at least 1h): the frauds
  among the entity's transactions in the delayed window whose label was known by ``t`` (label time
  <= ``t``; worker/core/risk.py), and their rate over the window's ``count`` smoothed by a prior:
  ``(frauds + prior_rate * prior_weight) / (count + prior_weight)``, in [0, 1].
- **Categoricals** are one-hot over the values kept in training (the most frequent, each on at least
  ``min_share`` of the training rows, at most ``max_values``) plus ``<field>=other`` for every other
  value, a missing one included.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any, Protocol

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib  # type: ignore[no-redef]

from worker.core.errors import BundleError, ConfigError
from worker.core.risk import NoRisk, RiskSource, frauds_in

BUCKETS = 24  # buckets per window
_EMPTY_NUMERIC = (0.0, math.inf, -math.inf)  # a bucket's sum, min and max of a numeric field before its first event
_NONE: list[Any] = []  # no numeric (or distinct) fields: nothing to read per event
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"(\d+)([smhd])")
_FUNCTION = re.compile(r"([a-z_]+)(?:\(([^()\s]+)\))?")
NUMERIC_FUNCTIONS = ("sum", "mean", "min", "max", "ratio")
RISK_FUNCTIONS = ("fraud_count", "fraud_rate")  # from labels (worker/core/risk.py, docs/entity-risk.md)
FUNCTIONS = ("count", *NUMERIC_FUNCTIONS, "distinct", "since_previous", *RISK_FUNCTIONS)
MIN_RISK_DELAY = 3600  # seconds: a block reading labels needs a delay, since labels come after their transaction
DEFAULT_PRIOR_WEIGHT = 20.0
_PRIOR_KEYS = ("fraud_prior_weight", "fraud_prior_rate")  # transactions' worth of the prior rate in fraud_rate
MAX_WINDOWS, MAX_AGGREGATES, MAX_CATEGORICAL_VALUES = 8, 32, 100
SPEC_VERSION = 1


class SpecError(ConfigError):
    """A feature spec that cannot be used: one line naming the entry and the problem."""


def parse_duration(text: object, where: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` -> seconds."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise SpecError(f"{where}: {str(text)[:40]!r} is not a duration like 30m, 1h, 7d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def duration_text(seconds: int) -> str:
    for unit in "dhms":
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    raise AssertionError(seconds)  # seconds are whole: the "s" unit always divides


@dataclass(frozen=True)
class Aggregate:
    """One output feature of an entity block: ``function`` of ``field`` over ``window`` seconds."""

    function: str
    field: str | None  # the numeric field (sum, mean, min, max, ratio) or the counted field (distinct)
    window: int | None  # seconds; None for since_previous
    name: str


@dataclass(frozen=True)
class EntityBlock:
    entity: str
    windows: tuple[int, ...]
    delay: int
    functions: tuple[str, ...]  # as written: count, mean(amount), ...
    prior_weight: float = DEFAULT_PRIOR_WEIGHT  # fraud_rate's smoothing: this many transactions at prior_rate
    prior_rate: float | None = None  # chosen in training (the training rows' fraud share) unless given

    @property
    def reads_labels(self) -> bool:
        return any(_split_function(f)[0] in RISK_FUNCTIONS for f in self.functions)

    @property
    def aggregates(self) -> tuple[Aggregate, ...]:
        out = []
        suffix = f".delay_{duration_text(self.delay)}" if self.delay else ""
        for text in self.functions:
            fn, arg = _split_function(text)
            if fn == "since_previous":
                out.append(Aggregate(fn, None, None, f"{self.entity}.since_previous"))
                continue
            label = fn if arg is None else f"{fn}_{arg}"
            for w in self.windows:
                out.append(Aggregate(fn, arg, w, f"{self.entity}.{label}.{duration_text(w)}{suffix}"))
        return tuple(out)

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.field for a in self.aggregates if a.function in NUMERIC_FUNCTIONS and a.field))

    @property
    def distinct_fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.field for a in self.aggregates if a.function == "distinct" and a.field))

    @property
    def horizon(self) -> int:
        return max(self.windows) + self.delay if self.windows else 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "entity": self.entity,
            "windows": [duration_text(w) for w in self.windows],
            "delay": duration_text(self.delay),
            "aggregates": list(self.functions),
        }
        if self.reads_labels:
            out.update(fraud_prior_weight=self.prior_weight, fraud_prior_rate=self.prior_rate)
        return out


@dataclass(frozen=True)
class Categorical:
    field: str
    max_values: int = 20
    min_share: float = 0.01
    values: tuple[str, ...] = ()  # chosen by ``fit_categoricals`` on the training rows

    @property
    def names(self) -> tuple[str, ...]:
        return (*(f"{self.field}={v}" for v in self.values), f"{self.field}=other")

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field, "max_values": self.max_values, "min_share": self.min_share, "values": list(self.values)
        }  # fmt: skip


@dataclass(frozen=True)
class FeatureSpec:
    """A parsed spec: what the model reads beyond the event's own numeric fields."""

    time_field: str = "event_time"
    time_unit: str = "ms"
    entities: tuple[EntityBlock, ...] = ()
    categoricals: tuple[Categorical, ...] = ()

    @property
    def aggregate_names(self) -> tuple[str, ...]:
        return tuple(a.name for b in self.entities for a in b.aggregates)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(n for c in self.categoricals for n in c.names)

    @property
    def names(self) -> tuple[str, ...]:
        """The features the spec adds, in model input order after the event's own fields."""
        return (*self.aggregate_names, *self.categorical_names)

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The event fields ``FeatureEngine.step`` reads, in the order it takes their values."""
        fields: dict[str, None] = {}
        for b in self.entities:
            fields.update(dict.fromkeys((b.entity, *b.numeric_fields, *b.distinct_fields)))
        fields.update(dict.fromkeys(c.field for c in self.categoricals))
        return tuple(fields)

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for b in self.entities for f in b.numeric_fields))

    @property
    def risk_fields(self) -> tuple[str, ...]:
        """The entity fields whose label-derived features the spec reads (fraud_count, fraud_rate)."""
        return tuple(dict.fromkeys(b.entity for b in self.entities if b.reads_labels))

    def to_manifest(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "time_field": self.time_field,
            "time_unit": self.time_unit,
            "buckets_per_window": BUCKETS,
            "current_event_included": False,
            "entities": [b.to_dict() for b in self.entities],
            "categoricals": [c.to_dict() for c in self.categoricals],
            "features": list(self.names),
        }

    @classmethod
    def from_manifest(cls, data: object) -> FeatureSpec:
        """The manifest's ``feature_spec``; a ``BundleError`` names what is wrong."""
        if not isinstance(data, Mapping):
            raise BundleError("manifest feature_spec is not an object")
        if data.get("version") != SPEC_VERSION or data.get("buckets_per_window") != BUCKETS:
            raise BundleError(
                f"manifest feature_spec version {data.get('version')!r} / buckets_per_window "
                f"{data.get('buckets_per_window')!r}: this worker reads version {SPEC_VERSION} with {BUCKETS}"
            )
        try:
            spec = from_mapping(data, "manifest feature_spec")
        except SpecError as exc:
            raise BundleError(str(exc)) from None
        if list(spec.names) != data.get("features"):
            raise BundleError("manifest feature_spec features do not match its entities and categoricals")
        if any(b.reads_labels and b.prior_rate is None for b in spec.entities):
            raise BundleError("manifest feature_spec: a block with fraud_count or fraud_rate has no fraud_prior_rate")
        return spec


def _split_function(text: str) -> tuple[str, str | None]:
    m = _FUNCTION.fullmatch(text)
    assert m is not None  # checked by from_mapping
    return m.group(1), m.group(2)


def load_spec(path: str) -> FeatureSpec:
    """Read a spec file (TOML); a ``SpecError`` names the file and the problem."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not TOML ({exc})") from None
    return from_mapping(data, path)


def from_mapping(data: Mapping[str, Any], where: str) -> FeatureSpec:
    known = {"time_field", "time_unit", "entity", "entities", "categorical", "categoricals", "version",
             "buckets_per_window", "current_event_included", "features"}  # fmt: skip
    for key in data:
        if key not in known:
            raise SpecError(f"{where}: unknown key {key!r} (time_field, time_unit, entity, categorical)")
    time_field = data.get("time_field", "event_time")
    if not isinstance(time_field, str) or not time_field:
        raise SpecError(f"{where}: time_field must be a field name")
    time_unit = data.get("time_unit", "ms")
    if time_unit not in ("ms", "s"):
        raise SpecError(f"{where}: time_unit must be 'ms' or 's', not {str(time_unit)[:20]!r}")
    blocks = data.get("entity", data.get("entities", []))
    cats = data.get("categorical", data.get("categoricals", []))
    if not isinstance(blocks, list) or not isinstance(cats, list):
        raise SpecError(f"{where}: entity and categorical must be arrays of tables ([[entity]], [[categorical]])")
    entities = tuple(_entity(b, f"{where}: entity {i + 1}") for i, b in enumerate(blocks))
    categoricals = tuple(_categorical(c, f"{where}: categorical {i + 1}") for i, c in enumerate(cats))
    if not entities and not categoricals:
        raise SpecError(f"{where}: declares no [[entity]] and no [[categorical]]")
    spec = FeatureSpec(time_field, time_unit, entities, categoricals)
    names = spec.names
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SpecError(f"{where}: feature {dup!r} is declared twice")
    if time_field == "event_time" and time_unit != "ms":
        raise SpecError(f"{where}: event_time is epoch milliseconds: time_unit must be 'ms' for it")
    if time_field in spec.input_fields:
        raise SpecError(f"{where}: time field {time_field!r} cannot also be an entity or aggregated field")
    return spec


def _entity(data: object, where: str) -> EntityBlock:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: not a table")
    for key in data:
        if key not in ("field", "entity", "windows", "delay", "aggregates", *_PRIOR_KEYS):
            known = ", ".join(("field", "windows", "delay", "aggregates", *_PRIOR_KEYS))
            raise SpecError(f"{where}: unknown key {key!r} ({known})")
    entity = data.get("field", data.get("entity"))
    if not isinstance(entity, str) or not entity:
        raise SpecError(f"{where}: 'field' must name the entity field (card, customer, terminal, ...)")
    where = f"{where} ({entity})"
    windows_raw = data.get("windows", [])
    if not isinstance(windows_raw, list) or len(windows_raw) > MAX_WINDOWS:
        raise SpecError(f"{where}: windows must be a list of at most {MAX_WINDOWS} durations")
    windows = tuple(parse_duration(w, f"{where} window") for w in windows_raw)
    if any(w <= 0 for w in windows) or len(set(windows)) != len(windows):
        raise SpecError(f"{where}: windows must be positive and different")
    delay = parse_duration(data.get("delay", "0s"), f"{where} delay")
    for w in windows:
        if (w * 1000) % BUCKETS:
            raise SpecError(f"{where}: window {duration_text(w)} does not split into {BUCKETS} whole-ms buckets")
    functions = data.get("aggregates", [])
    if not isinstance(functions, list) or not functions or len(functions) > MAX_AGGREGATES:
        raise SpecError(f"{where}: aggregates must be a list of 1..{MAX_AGGREGATES} functions")
    for text in functions:
        m = _FUNCTION.fullmatch(text) if isinstance(text, str) else None
        if m is None or m.group(1) not in FUNCTIONS:
            raise SpecError(
                f"{where}: aggregate {str(text)[:40]!r} is not one of count, sum(f), mean(f), min(f), max(f), "
                "ratio(f), distinct(f), since_previous, fraud_count, fraud_rate"
            )
        fn, arg = m.group(1), m.group(2)
        takes_field = fn in NUMERIC_FUNCTIONS or fn == "distinct"
        if takes_field and arg is None:
            raise SpecError(f"{where}: aggregate {text!r} needs a field, e.g. {fn}(amount)")
        if not takes_field and arg is not None:
            raise SpecError(f"{where}: aggregate {text!r} takes no field")
        if arg == entity:
            raise SpecError(f"{where}: aggregate {text!r} is over the entity field itself")
        if fn != "since_previous" and not windows:
            raise SpecError(f"{where}: aggregate {text!r} needs at least one window")
        if fn in RISK_FUNCTIONS and delay < MIN_RISK_DELAY:
            raise SpecError(
                f"{where}: aggregate {text!r} reads labels, which come after their transaction: the block needs a "
                f"delay of at least {duration_text(MIN_RISK_DELAY)} (7d is usual)"
            )
    weight = data.get("fraud_prior_weight", DEFAULT_PRIOR_WEIGHT)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1e6:
        raise SpecError(f"{where}: fraud_prior_weight must be a number of transactions in [0, 1000000]")
    rate = data.get("fraud_prior_rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0):
        raise SpecError(f"{where}: fraud_prior_rate must be a number in [0, 1]")
    return EntityBlock(entity, windows, delay, tuple(functions), float(weight), None if rate is None else float(rate))


def _categorical(data: object, where: str) -> Categorical:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: not a table")
    for key in data:
        if key not in ("field", "max_values", "min_share", "values"):
            raise SpecError(f"{where}: unknown key {key!r} (field, max_values, min_share)")
    name = data.get("field")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}: 'field' must name the categorical field")
    max_values = data.get("max_values", 20)
    if isinstance(max_values, bool) or not isinstance(max_values, int) or not 1 <= max_values <= MAX_CATEGORICAL_VALUES:
        raise SpecError(f"{where} ({name}): max_values must be an integer in 1..{MAX_CATEGORICAL_VALUES}")
    min_share = data.get("min_share", 0.01)
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0.0 <= min_share < 1.0:
        raise SpecError(f"{where} ({name}): min_share must be a number in [0, 1)")
    values = data.get("values", [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SpecError(f"{where} ({name}): values must be a list of strings")
    return Categorical(name, max_values, float(min_share), tuple(values))


def fit_categoricals(spec: FeatureSpec, columns: Mapping[str, Sequence[Any]]) -> FeatureSpec:
    """The spec with each categorical's kept values chosen on ``columns`` (the training rows)."""
    fitted = []
    for c in spec.categoricals:
        counts: dict[str, int] = {}
        values = columns[c.field]
        for v in values:
            key = key_of(v)
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        n = max(len(values), 1)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = tuple(k for k, m in ranked if m / n >= c.min_share)[: c.max_values]
        fitted.append(Categorical(c.field, c.max_values, c.min_share, kept))
    return FeatureSpec(spec.time_field, spec.time_unit, spec.entities, tuple(fitted))


def fit_priors(spec: FeatureSpec, fraud_share: float) -> FeatureSpec:
    """The spec with each label-reading block's ``prior_rate`` set to ``fraud_share`` (the training rows')
    where the spec does not give one."""
    blocks = tuple(
        replace(b, prior_rate=float(fraud_share)) if b.reads_labels and b.prior_rate is None else b
        for b in spec.entities
    )
    return FeatureSpec(spec.time_field, spec.time_unit, blocks, spec.categoricals)


def as_written(spec: FeatureSpec) -> FeatureSpec:
    """The spec without what training chose (categorical values, label priors not given): to train again."""
    blocks = tuple(replace(b, prior_rate=None) if b.reads_labels else b for b in spec.entities)
    cats = tuple(replace(c, values=()) for c in spec.categoricals)
    return FeatureSpec(spec.time_field, spec.time_unit, blocks, cats)


def key_of(value: Any) -> str | None:
    """An entity or category value as the state's key: a string as it is, an integer (or a float holding
    one, as CSV readers give) in decimal; None for anything else (null, empty, bool, fraction)."""
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    f = float(value)
    return f if math.isfinite(f) else 0.0


class Window:
    """One window of one entity: its buckets oldest first, each a tuple ``(index, count, sum_1, min_1, max_1,
    ...)`` (per numeric field), with, per distinct field, a ``{value: count}`` of each bucket in ``sets``
    (parallel to ``buckets``); the first ``n_in`` buckets inside the window, and running totals over those:
    the count, a sum per numeric field (``sums``, a tuple), a value count per distinct field. A bucket enters
    the totals when the window reaches it and leaves them when the window has passed it; min and max are
    read from the buckets inside.

    Tuples of numbers, replaced rather than changed: Python's cycle collector stops tracking a tuple that
    holds only numbers, where a list (or an ``array``) stays tracked for life. The worker holds thousands of
    entities in memory, each a few dozen buckets; as lists, every full collection walked them all, a pause
    of 100 ms or more in the loop (docs/performance.md)."""

    __slots__ = ("buckets", "count", "distinct", "n_in", "sets", "sums")

    def __init__(self, n_numeric: int, n_distinct: int) -> None:
        # A list, not a deque: at most 24 buckets (plus the delay's), and a deque's first block alone
        # is over 500 bytes, most of a small entity's state in memory.
        self.buckets: list[tuple[float, ...]] = []
        # Per bucket, one value count per distinct field; an empty tuple (no object of its own) without any.
        self.sets: list[list[dict[str, int]]] | tuple[()] = [] if n_distinct else ()
        self.n_in = 0
        self.count = 0.0
        self.sums: tuple[float, ...] = (0.0,) * n_numeric
        self.distinct: list[dict[str, int]] | tuple[()] = [{} for _ in range(n_distinct)] if n_distinct else ()

    def slide(self, lo: int, hi: int, n_numeric: int) -> None:
        """Move the window to buckets ``lo`` .. ``hi`` (neither ever goes back)."""
        buckets = self.buckets
        while self.n_in < len(buckets) and buckets[self.n_in][0] <= hi:
            self._total(self.n_in, 1, n_numeric)
            self.n_in += 1
        gone = 0
        while gone < len(buckets) and buckets[gone][0] < lo:
            if self.n_in:
                self._total(gone, -1, n_numeric)
                self.n_in -= 1
            gone += 1
        if gone:
            del buckets[:gone]
            if self.sets:
                del self.sets[:gone]  # type: ignore[union-attr]

    def _total(self, i: int, sign: int, n_numeric: int) -> None:
        bucket = self.buckets[i]
        self.count += sign * bucket[1]
        if n_numeric:
            self.sums = tuple(s + sign * bucket[2 + 3 * j] for j, s in enumerate(self.sums))
        if not self.distinct:
            return
        for counts, seen in zip(self.distinct, self.sets[i], strict=True):
            for value, m in seen.items():
                left = counts.get(value, 0) + sign * m
                if left:
                    counts[value] = left
                else:
                    del counts[value]

    def add(self, k: int, nums: Sequence[float], keys: Sequence[str | None], hi: int) -> None:
        """Add one event in bucket ``k`` (to the totals too when ``k`` is inside the window)."""
        buckets = self.buckets
        fresh = not buckets or buckets[-1][0] != k
        old = (k, 0.0, *(_EMPTY_NUMERIC * len(nums))) if fresh else buckets[-1]
        inside = k <= hi
        if inside and old[1] == 0.0:  # a new bucket, inside the window (slide has run for this event)
            self.n_in += 1
        if nums:
            values = list(old)
            for j, x in enumerate(nums):
                i = 2 + 3 * j
                values[i] += x
                if x < values[i + 1]:
                    values[i + 1] = x
                if x > values[i + 2]:
                    values[i + 2] = x
            values[1] += 1.0
            bucket = tuple(values)
            if inside:
                self.sums = tuple(s + x for s, x in zip(self.sums, nums, strict=True))
        else:
            bucket = (old[0], old[1] + 1.0)
        if fresh:
            buckets.append(bucket)
            if keys:
                self.sets.append([{} for _ in keys])  # type: ignore[union-attr]
        else:
            buckets[-1] = bucket
        if inside:
            self.count += 1.0
        for j, key in enumerate(keys):
            if key is not None:
                counts = self.sets[-1][j]  # type: ignore[misc]
                counts[key] = counts.get(key, 0) + 1
                if inside:
                    self.distinct[j][key] = self.distinct[j].get(key, 0) + 1

    def extreme(self, slot: int, n_numeric: int, lowest: bool) -> float:
        if not self.n_in:
            return 0.0
        values = map(operator.itemgetter(2 + 3 * slot + (1 if lowest else 2)), islice(self.buckets, self.n_in))
        return min(values) if lowest else max(values)


@dataclass
class EntityState:
    """One entity's history in one block: its latest event time (ms) and one ``Window`` per window."""

    last: int | None
    windows: list[Window]


class _Block:
    """An entity block compiled for ``step``: positions of its fields in the input tuple, and per
    window its bucket width (ms)."""

    def __init__(self, index: int, block: EntityBlock, positions: Mapping[str, int]) -> None:
        self.index = index
        self.entity = block.entity
        self.entity_at = positions[block.entity]
        self.prior_rate = block.prior_rate or 0.0
        self.prior_weight = block.prior_weight
        self.numeric_at = [positions[f] for f in block.numeric_fields]
        self.distinct_at = [positions[f] for f in block.distinct_fields]
        self.widths = [w * 1000 // BUCKETS for w in block.windows]  # ms
        self.delay = block.delay * 1000  # ms
        self.horizon = float(block.horizon)
        self.n_numeric = len(self.numeric_at)
        self.n_distinct = len(self.distinct_at)
        nf, df = block.numeric_fields, block.distinct_fields
        # Per output: (function, window position, field slot)
        plan: list[tuple[str, int, int]] = []
        for a in block.aggregates:
            w = -1 if a.window is None else block.windows.index(a.window)
            slot = nf.index(a.field or "") if a.function in NUMERIC_FUNCTIONS else -1
            plan.append((a.function, w, df.index(a.field or "") if a.function == "distinct" else slot))
        self.plan = plan

    def new_state(self) -> EntityState:
        return EntityState(None, [Window(self.n_numeric, self.n_distinct) for _ in self.widths])


class StateMap(Protocol):
    """What the engine needs of its state: entity key -> ``EntityState`` (a dict will do)."""

    def get(self, key: str, /) -> EntityState | None: ...

    def __setitem__(self, key: str, value: EntityState, /) -> None: ...

    def __len__(self) -> int: ...


class FeatureEngine:
    """Computes a spec's features event by event over ``store`` (block and entity key -> ``EntityState``).

    ``step`` is the one computation: training and the backtest call it over a file sorted by event
    time, the worker over each partition's events as they arrive.
    """

    def __init__(self, spec: FeatureSpec, store: StateMap | None = None, risk: RiskSource | None = None) -> None:
        self.spec = spec
        self.store: StateMap = {} if store is None else store
        self.risk: RiskSource = NoRisk() if risk is None else risk
        positions = {name: i for i, name in enumerate(spec.input_fields)}
        self._blocks = [_Block(i, b, positions) for i, b in enumerate(spec.entities)]
        self._cats = [
            (positions[c.field], {v: j for j, v in enumerate(c.values)}, len(c.values)) for c in spec.categoricals
        ]
        self.width = len(spec.names)
        self.to_ms = 1000 if spec.time_unit == "s" else 1
        self.late = 0  # events computed at their entity's latest time instead of their own

    def step(self, time: float, values: Sequence[Any], out: list[float], apply: bool = True) -> None:
        """Append the features of one event (``time`` in the spec's unit, ``values`` in
        ``spec.input_fields`` order) to ``out``, then add the event to its entities' state (unless
        ``apply`` is false: an event seen before, whose state change is in already)."""
        t0 = round(time * self.to_ms)
        store = self.store
        for b in self._blocks:
            key = key_of(values[b.entity_at])
            if key is None:
                self._features(b, b.new_state(), t0, values, out, None)
                continue
            skey = f"{b.index}:{key}"
            state = store.get(skey)
            if state is None:
                state = b.new_state()
            t = t0
            if state.last is not None and t < state.last:
                t = state.last
                self.late += apply
            tops = self._features(b, state, t, values, out, key)
            if not apply:
                continue
            nums = [_number(values[i]) for i in b.numeric_at] if b.numeric_at else _NONE
            keys = [key_of(values[i]) for i in b.distinct_at] if b.distinct_at else _NONE
            for window, width, top in zip(state.windows, b.widths, tops, strict=True):
                window.add(t // width, nums, keys, top)
            state.last = t
            store[skey] = state
        for at, index, n in self._cats:
            hot = [0.0] * (n + 1)
            key = key_of(values[at])
            hot[index.get(key, n) if key is not None else n] = 1.0
            out.extend(hot)

    def _features(
        self, b: _Block, state: EntityState, t: int, values: Sequence[Any], out: list[float], key: str | None
    ) -> list[int]:
        """Append the block's features; returns each window's last bucket, ``top``: the window covers buckets
        ``top - BUCKETS + 1`` .. ``top``, where ``top`` is the event's own bucket, or with a delay the last
        whole bucket ending at or before ``t - delay``."""
        windows = state.windows
        entries: Sequence[tuple[int, int, int]] | None = None  # the entity's fraud entries, read once
        frauds_at: dict[int, float] = {}  # per window: its frauds, for fraud_count and fraud_rate alike
        tops = []
        delay, n_numeric = b.delay, b.n_numeric
        for window, width in zip(windows, b.widths, strict=True):
            top = (t - delay) // width - 1 if delay else t // width
            tops.append(top)
            buckets, n_in = window.buckets, window.n_in
            # Most events move no bucket in or out: then the window stays as it is.
            if (n_in < len(buckets) and buckets[n_in][0] <= top) or (buckets and buckets[0][0] <= top - BUCKETS):
                window.slide(top - BUCKETS + 1, top, n_numeric)
        for fn, w, slot in b.plan:
            if fn == "since_previous":
                last = state.last
                out.append(b.horizon if last is None else min((t - last) / 1000.0, b.horizon))
                continue
            window = windows[w]
            count = window.count
            if fn == "count":
                out.append(count)
            elif fn == "distinct":
                out.append(float(len(window.distinct[slot])))
            elif fn == "sum":
                out.append(window.sums[slot] if count else 0.0)
            elif fn == "mean":
                out.append(window.sums[slot] / count if count else 0.0)
            elif fn == "min" or fn == "max":
                out.append(window.extreme(slot, b.n_numeric, fn == "min"))
            elif fn == "ratio":
                mean = window.sums[slot] / count if count else 0.0
                out.append(_number(values[b.numeric_at[slot]]) / mean if mean > 0.0 else 1.0)
            else:  # fraud_count, fraud_rate: the frauds confirmed by t among the window's transactions
                cached = frauds_at.get(w)
                if cached is not None:
                    frauds = cached
                else:
                    if entries is None:
                        entries = self.risk.entries(b.entity, key) if key is not None else ()
                    width, top = b.widths[w], tops[w]
                    frauds = frauds_at[w] = frauds_in(entries, (top - BUCKETS + 1) * width, (top + 1) * width, t)
                if fn == "fraud_count":
                    out.append(frauds)
                else:
                    prior = b.prior_weight
                    rate = (frauds + b.prior_rate * prior) / (count + prior) if count + prior > 0 else b.prior_rate
                    out.append(min(max(rate, 0.0), 1.0))
        return tops


def compute_columns(
    spec: FeatureSpec, times: Any, columns: Mapping[str, Any], engine: FeatureEngine | None = None,
    risk: RiskSource | None = None,
) -> Any:  # numpy arrays or sequences in, a numpy matrix out (numpy imported here only)
    """The spec's features for every row of a file, in the file's row order, each computed by ``step`` over
    the rows before it in event-time order (ties in file order): point-in-time correct.
    Returns a float64 matrix (rows x ``len(spec.names)``)."""
    import numpy as np

    t = np.asarray(times, dtype=np.float64)
    n = t.size
    order = np.argsort(t, kind="stable")
    engine = engine if engine is not None else FeatureEngine(spec, risk=risk)
    cols = [_as_list(columns[f]) for f in spec.input_fields]
    times_list = t.tolist()
    out: list[float] = []
    step = engine.step
    for i in order.tolist():
        step(times_list[i], [c[i] for c in cols], out)
    result = np.empty((n, engine.width), dtype=np.float64)
    result[order] = np.asarray(out, dtype=np.float64).reshape(n, engine.width)
    return result


def _as_list(values: Sequence[Any]) -> list[Any]:
    tolist = getattr(values, "tolist", None)
    return tolist() if tolist is not None else list(values)


class InputReader:
    """The spec's input fields and time field of JSON event values: one msgspec decode per value (the
    event has passed the decoder already, so it is a JSON object). A field absent or null reads as None."""

    def __init__(self, spec: FeatureSpec) -> None:
        import msgspec

        names = (*spec.input_fields, spec.time_field)
        fields = [(f"f{j}", Any, msgspec.field(name=name, default=None)) for j, name in enumerate(names)]
        struct = msgspec.defstruct("FeatureInputs", fields)  # type: ignore[arg-type]
        self._decode = msgspec.json.Decoder(struct).decode
        n = len(spec.input_fields)
        get_inputs = operator.attrgetter(*(f"f{j}" for j in range(n)))
        self._inputs = get_inputs if n > 1 else (lambda s: (get_inputs(s),))
        self._time = operator.attrgetter(f"f{n}")

    def read(self, value: bytes) -> tuple[Any, tuple[Any, ...]]:
        """(the time field's value, the input fields' values in ``spec.input_fields`` order)."""
        s = self._decode(value)
        return self._time(s), self._inputs(s)


def valid_time(value: Any, unit: str) -> float | None:
    """An event time the spec can use: a finite number >= 0 (bool is not one); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    if not math.isfinite(f) or f < 0 or f * (1000 if unit == "s" else 1) > 2**62:
        return None
    return f
