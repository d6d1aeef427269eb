"""Record values -> a float32 feature matrix, or a ``DecodeError`` per bad record. Pure: no Kafka.

Fast path: one msgspec struct decoder built from the manifest's feature names validates types,
lengths and missing fields in C. A record it refuses, and the rare record it cannot vouch for
(see ``_quotes_expected``), goes to the exact path (``classify``), which names the problem with a
stable reason code. Both paths agree on every input (a hypothesis test checks it), and
``decode_batch`` raises nothing: each record is either a row or a ``(index, DecodeError)``.

The decoding itself (``decode_rows``) does not use numpy, so the decoder child process
(worker/pipeline/decoder_process.py) runs without it; ``decode_batch`` wraps its rows in a numpy matrix.
"""

from __future__ import annotations

import json
import math
import operator
import re
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import TYPE_CHECKING, Annotated, Any, cast

import msgspec

from worker.core.errors import DecodeError

if TYPE_CHECKING:
    import numpy as np

# Stable reason codes: the DLQ `error` header and the `reason` label of fraud_events_invalid_total.
REASONS = (
    "invalid_json", "invalid_utf8", "not_an_object", "missing_field", "not_a_number", "non_finite",
    "bad_transaction_id", "bad_event_time", "too_large", "empty_value", "duplicate_field",
    "batch_too_large", "batch_unreadable", "out_of_range", "stale_features",
)  # fmt: skip
# The one code the decoder never gives: a valid row with a feature beyond the scoring model's range,
# moved to the batch's errors by ``Scorer.admit`` (worker/core/scoring.py) before it is scored.
OUT_OF_RANGE = "out_of_range"
# Nor this one: an event on a repartition topic without the features of the stages before it, as the
# serving spec computes them (worker/core/stages.py), moved to the errors by the loop.
STALE_FEATURES = "stale_features"
F32_MAX = 3.4028234663852886e38  # numpy.finfo(float32).max: larger magnitudes become inf in the model's input
MAX_ID_CHARS = 128
MAX_EVENT_TIME = 2**63 - 1
_EVENT_TIME = operator.attrgetter("event_time")
_TRANSACTION_ID = operator.attrgetter("transaction_id")
# Extra fields (ones the model does not read) the fast paths learn to account for: names of
# printable ASCII without quote or backslash (their JSON is the name in quotes), a few per decoder.
LEARN_FROM, MAX_EXTRAS, MAX_SHAPES = 8, 32, 16
_PLAIN_NAME = re.compile(r"[ !#-\[\]-~]+").fullmatch
_Scalar = int | float | str | bool | None | msgspec.UnsetType
_UNSET = type(msgspec.UNSET)


class Unread(bytes):
    """The value of a record the consumer could not read, standing in for it so it is dead-lettered:
    its compressed batch inflates past the cap, or cannot be inflated (worker/kafka_compat/inflate.py).
    The bytes are the batch's header; ``reason`` (``batch_too_large`` or ``batch_unreadable``) and
    ``detail`` are its ``DecodeError``'s. The decoder process sets each aside unread
    (worker/pipeline/decoder_process.py); ``classify`` gives its verdict too, and the fast paths refuse it
    (a batch header starts with a zero byte: the first of the 8-byte base offset, below 2^56)."""

    reason: str
    detail: str

    def __new__(cls, header: bytes, reason: str, detail: str) -> Unread:
        self = super().__new__(cls, header)
        self.reason, self.detail = reason, detail
        return self

    def error(self) -> DecodeError:
        return DecodeError(self.reason, self.detail)


@dataclass(frozen=True)
class DecodedRows:
    """``DecodedBatch`` without numpy: the features as one flat float32 array, row after row."""

    features: array | bytes  # float32 (typecode "f"), len(index) * n_features
    n_features: int
    transaction_ids: list[str]
    event_times: list[int | None]
    index: list[int]
    errors: list[tuple[int, DecodeError]]

    def to_batch(self) -> DecodedBatch:
        import numpy as np

        matrix = np.frombuffer(self.features, dtype=np.float32).reshape(len(self.index), self.n_features)
        return DecodedBatch(matrix, self.transaction_ids, self.event_times, self.index, self.errors)


@dataclass(frozen=True)
class DecodedBatch:
    """The valid rows of one batch, in input order, and the errors of the others."""

    features: np.ndarray  # float32, shape (len(index), n_features), model input order
    transaction_ids: list[str]
    event_times: list[int | None]  # epoch ms from the event, None when it carries none
    index: list[int]  # position in the input of each valid row
    errors: list[tuple[int, DecodeError]]


def take_rows(
    decoded: DecodedBatch, keep: Sequence[int], errors: list[tuple[int, DecodeError]] | None = None
) -> DecodedBatch:
    """The valid rows ``keep`` (positions among the valid rows, ascending) of ``decoded``, with ``errors``
    (by default its own)."""
    return DecodedBatch(
        features=decoded.features[list(keep)],
        transaction_ids=[decoded.transaction_ids[j] for j in keep],
        event_times=[decoded.event_times[j] for j in keep],
        index=[decoded.index[j] for j in keep],
        errors=decoded.errors if errors is None else errors,
    )


def reject_rows(decoded: DecodedBatch, rejected: Sequence[tuple[int, DecodeError]]) -> DecodedBatch:
    """``decoded`` with the valid rows of ``rejected`` (position among the valid rows, its error) moved to
    its errors, which stay in input order; ``decoded`` itself when there are none."""
    if not rejected:
        return decoded
    gone = {j for j, _ in rejected}
    keep = [j for j in range(len(decoded.index)) if j not in gone]
    moved = [(decoded.index[j], e) for j, e in rejected]
    errors = sorted([*decoded.errors, *moved], key=operator.itemgetter(0))
    return take_rows(decoded, keep, errors)


class Decoder:
    """Decodes transaction events for one model's feature names."""

    def __init__(self, feature_names: Sequence[str], max_bytes: int = 65536) -> None:
        self.feature_names = tuple(feature_names)
        self.max_bytes = max_bytes
        self._known = frozenset((*self.feature_names, "transaction_id", "event_time"))
        # The shape the batches take: no extra field at first; the extra fields of the events
        # once seen (``_learn``), each shape built once.
        self._shape = _Shape(self.feature_names, ())
        self._shapes: dict[frozenset[str], _Shape] = {frozenset(): self._shape}

    def decode_batch(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Every record as a row or a ``DecodeError``; raises nothing."""
        return self.decode_rows(values).to_batch()

    def decode_rows(self, values: Sequence[bytes | None]) -> DecodedRows:
        """``decode_batch`` without numpy."""
        fast = self._decode_clean_batch(values, self._shape)
        if fast is None:
            learned = self._learn(values)
            if learned is not None and learned is not self._shape:
                fast = self._decode_clean_batch(values, learned)
                if fast is not None:
                    self._shape = learned
        return fast if fast is not None else self._decode_mixed_batch(values)

    def _learn(self, values: Sequence[bytes | None]) -> _Shape | None:
        """The current shape widened by the extra fields of the batch's first records, when they are
        plain names (the fast paths then account for them); None when there is nothing to learn."""
        extras = dict.fromkeys(self._shape.extras)
        for value in values[:LEARN_FROM]:
            try:
                doc = msgspec.json.decode(value) if value is not None and len(value) <= self.max_bytes else None
            except Exception:  # noqa: BLE001 - not a document to learn from (invalid, too deep, ...)
                continue
            if isinstance(doc, dict):
                extras.update((k, None) for k in doc if k not in self._known and _PLAIN_NAME(k))
        key = frozenset(extras)
        if key not in self._shapes:
            if len(key) > MAX_EXTRAS or len(self._shapes) >= MAX_SHAPES:
                return None
            self._shapes[key] = _Shape(self.feature_names, tuple(extras))
        return self._shapes[key]

    def _decode_clean_batch(self, values: Sequence[bytes | None], shape: _Shape) -> DecodedRows | None:
        """The common case, a batch of only valid events, with no Python-level loop per record.

        Each record is still decoded on its own (``map`` over msgspec's C decoder: no record can
        complete or split another). Returns None at the first doubt; the mixed path decides.
        No separate UTF-8 check is needed here: the quote count below proves a record holds only
        the shape's (ASCII) keys, and msgspec refuses invalid UTF-8 and lone surrogates in the
        strings it decodes.
        """
        try:
            if not values or None in values:
                return None
            records = cast("Sequence[bytes]", values)  # no None: checked above
            if max(map(len, records)) > self.max_bytes:
                return None
            structs = list(map(shape.decode, records))
        except Exception:  # noqa: BLE001 - any doubt: the mixed path gives each record its verdict
            return None
        times = list(map(_EVENT_TIME, structs))
        # Quotes only delimit strings. A decoded record holds at least its minimum (two per key,
        # two per string value), so a total at the sum of the minimums proves every record is at
        # its own: no duplicate or other key anywhere in the batch.
        quotes = sum(map(bytes.count, records, repeat(b'"')))
        if quotes != shape.quotes(structs, times):
            return None
        flat = array("f", chain.from_iterable(map(shape.row, structs)))  # in range: checked while decoding
        width = len(self.feature_names)
        return DecodedRows(flat, width, list(map(_TRANSACTION_ID, structs)), times, list(range(len(values))), [])

    def _decode_mixed_batch(self, values: Sequence[bytes | None]) -> DecodedRows:
        rows: list[tuple[float, ...]] = []
        ids: list[str] = []
        times: list[int | None] = []
        index: list[int] = []
        errors: list[tuple[int, DecodeError]] = []
        shape, max_bytes = self._shape, self.max_bytes
        decode, row, record_quotes = shape.decode, shape.row, shape.record_quotes
        # One UTF-8 check for the whole batch (the newline keeps records from completing each other);
        # msgspec does not look inside fields it skips.
        try:
            b"\n".join(v for v in values if v is not None).decode("utf-8")
            utf8_checked = True
        except UnicodeDecodeError:
            utf8_checked = False
        for i, value in enumerate(values):
            try:
                if value is None or len(value) > max_bytes or not utf8_checked:
                    raise ValueError
                s = decode(value)
                t = s.event_time
                # Quotes only delimit strings: a count at the minimum proves no duplicate or other key.
                if value.count(b'"') != record_quotes(s):
                    raise ValueError
                rows.append(row(s))
                ids.append(s.transaction_id)
                times.append(t)
                index.append(i)
            except Exception:  # noqa: BLE001 - anything the fast path refuses gets the exact verdict
                try:
                    r, tid, t = self.classify(value)
                except DecodeError as exc:
                    errors.append((i, exc))
                    continue
                rows.append(r)
                ids.append(tid)
                times.append(t)
                index.append(i)
        features = array("f", chain.from_iterable(rows))
        return DecodedRows(features, len(self.feature_names), ids, times, index, errors)

    def classify(self, value: bytes | None) -> tuple[tuple[float, ...], str, int | None]:
        """The exact path: the row, id and event time of a valid record, else its ``DecodeError``."""
        if value is None:
            raise DecodeError("empty_value", "record value is null")
        if isinstance(value, Unread):
            raise value.error()
        if len(value) > self.max_bytes:
            raise DecodeError("too_large", f"value is {len(value)} bytes, limit {self.max_bytes}")
        if not value.strip():
            raise DecodeError("empty_value", "value is empty" if not value else "value is only whitespace")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid_utf8", f"invalid UTF-8 at byte {exc.start}") from None
        try:
            obj = json.loads(text, object_pairs_hook=_Object.from_pairs, parse_constant=_constant, parse_int=_int)
            _check_strings(obj)
        except _NonFinite as exc:
            raise DecodeError("non_finite", f"JSON holds {exc.args[0]}") from None
        except RecursionError:
            raise DecodeError("invalid_json", "nested too deeply") from None
        except ValueError as exc:
            raise DecodeError("invalid_json", str(exc)[:200]) from None
        if not isinstance(obj, dict):
            raise DecodeError("not_an_object", f"JSON {_json_type(obj)} where an object belongs")
        duplicate = cast(_Object, obj).duplicate  # object_pairs_hook makes every JSON object an _Object
        if duplicate is not None:
            raise DecodeError("duplicate_field", f"field {duplicate!r} appears more than once")
        tid = obj.get("transaction_id")
        if tid is None and "transaction_id" not in obj:
            raise DecodeError("missing_field", "transaction_id is missing")
        if not isinstance(tid, str) or not 1 <= len(tid) <= MAX_ID_CHARS:
            raise DecodeError("bad_transaction_id", f"transaction_id must be a string of 1..{MAX_ID_CHARS} chars")
        row = []
        for name in self.feature_names:
            if name not in obj:
                raise DecodeError("missing_field", f"{name} is missing")
            x = obj[name]
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise DecodeError("not_a_number", f"{name} is a JSON {_json_type(x)}, not a number")
            f = float(x)  # _int already turned long digit strings into floats: no OverflowError here
            if not math.isfinite(f) or abs(f) > F32_MAX:
                raise DecodeError("non_finite", f"{name} is not a finite float32 ({str(x)[:40]})")
            row.append(f)
        t = obj.get("event_time")
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_EVENT_TIME):
            raise DecodeError("bad_event_time", "event_time must be epoch milliseconds (an integer >= 0)")
        return tuple(row), tid, t


class _Shape:
    """One msgspec struct decoder: the features, ``transaction_id``, ``event_time``, and optional
    extra fields of scalar JSON values (an object or array there is a doubt: the exact path)."""

    def __init__(self, feature_names: tuple[str, ...], extras: tuple[str, ...]) -> None:
        self.extras = extras
        n = len(feature_names)
        # The float32 range is checked by msgspec, in C, as it decodes: a larger magnitude (JSON
        # allows 1e300) would become inf in the model's input.
        f32 = Annotated[float, msgspec.Meta(ge=-F32_MAX, le=F32_MAX)]
        fields: list[tuple[str, Any, Any]] = [
            (f"f{i}", f32, msgspec.field(name=name)) for i, name in enumerate(feature_names)
        ]
        fields.append(("transaction_id", Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)], ...))
        fields.append(
            ("event_time", Annotated[int, msgspec.Meta(ge=0, le=MAX_EVENT_TIME)] | None, msgspec.field(default=None))
        )
        fields += [(f"x{i}", _Scalar, msgspec.field(name=name, default=msgspec.UNSET)) for i, name in enumerate(extras)]
        fields = [(name, tp, default) if default is not ... else (name, tp) for name, tp, default in fields]  # type: ignore[misc]
        struct = msgspec.defstruct("Transaction", fields)
        # The struct type is built at run time: its fields are unknown to a type checker.
        self.decode: Callable[[bytes], Any] = msgspec.json.Decoder(struct).decode
        get = operator.attrgetter(*(f"f{i}" for i in range(n)))
        self.row = get if n > 1 else (lambda s: (get(s),))
        self._extras = [operator.attrgetter(f"x{i}") for i in range(len(extras))]
        # Each field present costs two quotes for its name; transaction_id's value two more.
        self._base = 2 * (n + 1) + 2

    def quotes(self, structs: list[Any], times: list[int | None]) -> int:
        """The fewest quotes the records decoded as ``structs`` can hold: two per key and per string."""
        n = len(structs)
        total = self._base * n + 2 * (n - times.count(None))
        for get in self._extras:
            kinds = list(map(type, map(get, structs)))
            total += 2 * (n - kinds.count(_UNSET)) + 2 * kinds.count(str)
        return total

    def record_quotes(self, s: Any) -> int:
        total = self._base + (2 if s.event_time is not None else 0)
        for get in self._extras:
            v = get(s)
            total += 0 if v is msgspec.UNSET else 4 if type(v) is str else 2
        return total


class _NonFinite(ValueError):
    pass


class _Object(dict):
    """A JSON object that remembers its first duplicate key (json keeps only the last value)."""

    duplicate: str | None = None

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _Object:
        obj = cls(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    obj.duplicate = key
                    break
                seen.add(key)
        return obj


def _constant(name: str) -> Any:
    raise _NonFinite(name)


def _int(digits: str) -> int | float:
    # Python refuses int() on very long digit strings; as a float they are simply out of range.
    return int(digits) if len(digits) <= 19 else float(digits)


def _check_strings(obj: Any) -> None:
    """Refuse lone surrogate escapes (e.g. "\\ud800"): they cannot be encoded as UTF-8 again."""
    if isinstance(obj, str):
        obj.encode("utf-8")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            k.encode("utf-8")
            _check_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            _check_strings(v)


def _json_type(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(type(x), "value")
