"""Structure-aware bad input: valid records, then mutated (fuzz targets share these).

A hypothesis example draws a seed and a few hypothesis-made values (floats, integers, text, bytes
at their edges); ``Mutator`` turns a valid document into JSON text with some of its fields
replaced by hostile values, keys duplicated or dropped, and the bytes truncated, spliced or
flipped. The generation is a pure function of the example, so a run is reproducible.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

ULB_FEATURES = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")

# Hostile JSON value texts, as they would appear in a record.
HOSTILE_VALUES = (
    "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "nan", "inf", "3.4e38", "-3.4e38", "3.4028235e38",
    "3.5e38", "1.7976931348623157e308", "5e-324", "-0.0", "0", "1", "-1", "true", "false", "null",
    '""', '"1.5"', '"NaN"', "[]", "{}", "[1,2]", '{"a":1}', str(2**63), str(2**64), str(-(2**63) - 1),
    "9" * 400, "1" + "0" * 5000, "0.1e-99999", "1E+309", "00012", "1.", ".5", "+1", "0x10", "1_000",
    '"\\ud800"', '"\\u0000"', '"\\u001b[2J"', '"a\\nb"', "[" * 3000 + "]" * 3000, "[" * 100_000,
    '{"x":' * 500 + "1" + "}" * 500, '"' + "x" * 70_000 + '"',
)  # fmt: skip
CONTROL = "\x00\x07\x08\x0a\x0d\x1b\x7f\x85\x9b\u2028\u202e\ufeff\udc80"

values_strategy = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
)
# (seed, hypothesis-made values the mutator splices in)
example_strategy = st.tuples(st.integers(0, 2**32 - 1), st.lists(values_strategy, max_size=3))


def json_text(value: Any) -> str:
    """A hypothesis value as JSON text (bytes as a string of their escapes; NaN as the bare token)."""
    if isinstance(value, bytes):
        return json.dumps(value.decode("latin-1"))
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else {"nan": "NaN", "inf": "Infinity",
                                                                                  "-inf": "-Infinity"}[repr(value)]
    return json.dumps(value)


class Mutator:
    """Bad variants of valid documents, from one seed and a few hypothesis values."""

    def __init__(self, seed: int, extra: list[Any]) -> None:
        self.rng = random.Random(seed)
        self.extra = [json_text(v) for v in extra]

    def value(self) -> str:
        r = self.rng.random()
        if self.extra and r < 0.3:
            return self.rng.choice(self.extra)
        if r < 0.75:
            return self.rng.choice(HOSTILE_VALUES)
        if r < 0.85:
            return json.dumps(self.text())
        return repr(self.rng.uniform(-1e6, 1e6))

    def text(self, n: int | None = None) -> str:
        n = self.rng.choice((0, 1, 5, 40, 129, 300)) if n is None else n
        alphabet = "abcXYZ019-_ é" + CONTROL
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def document(self, doc: dict[str, Any], mutations: int | None = None) -> bytes:
        """``doc`` as JSON bytes with 0..3 structural mutations, then maybe a byte-level one."""
        pairs = [(k, json_text(v) if not isinstance(v, str) else json.dumps(v)) for k, v in doc.items()]
        rng = self.rng
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3)) if mutations is None else mutations):
            op = rng.random()
            if not pairs:
                pairs.append((self.text(3), self.value()))
            elif op < 0.45:  # a field's value replaced
                i = rng.randrange(len(pairs))
                pairs[i] = (pairs[i][0], self.value())
            elif op < 0.55:  # a key duplicated (same or another value)
                k, v = rng.choice(pairs)
                pairs.insert(rng.randrange(len(pairs) + 1), (k, rng.choice((v, self.value()))))
            elif op < 0.65:  # a field dropped
                pairs.pop(rng.randrange(len(pairs)))
            elif op < 0.75:  # an extra field, its name hostile or plain
                pairs.append((rng.choice((self.text(), "Class", "merchant", "x" * 300, "")), self.value()))
            elif op < 0.85:  # a key with control characters or escapes
                i = rng.randrange(len(pairs))
                pairs[i] = (pairs[i][0] + rng.choice(CONTROL), pairs[i][1])
            else:  # the transaction id hostile
                pairs.append(("transaction_id", json.dumps(self.text())))
        body = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"
        data = body.encode("utf-8", "surrogatepass")
        return self.bytes_mutation(data) if rng.random() < 0.25 else data

    def bytes_mutation(self, data: bytes) -> bytes:
        rng = self.rng
        op = rng.random()
        if not data:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
        i = rng.randrange(len(data) + 1)
        if op < 0.3:  # truncated
            return data[:i]
        if op < 0.5:  # random bytes spliced in
            return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))) + data[i:]
        if op < 0.7:  # a byte flipped
            j = min(i, len(data) - 1)
            return data[:j] + bytes([data[j] ^ (1 << rng.randrange(8))]) + data[j + 1 :]
        if op < 0.8:  # wrapped: BOM, whitespace, a second document, an array
            return rng.choice((b"\xef\xbb\xbf", b" \n", b"[", b"")) + data + rng.choice((b"", b"\n", b"]", b"{}"))
        if op < 0.9:  # only random bytes
            return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        return data * rng.choice((2, 3))  # two objects back to back


# How a generated CSV reaches its reader: plain (twice as likely), gzip, or gzip cut at a random byte.
CSV_FORMS = ("plain", "plain", "gzip", "cut-gzip")


def write_csv_file(root: Path, data: bytes, form: str, rng: random.Random) -> Path:
    """Write ``data`` under ``root`` in one of ``CSV_FORMS``; the path a reader is given."""
    if form != "plain":
        data = gzip.compress(data, compresslevel=1)
        if form == "cut-gzip":
            data = data[: rng.randrange(len(data) + 1)]
    path = root / ("data.csv.gz" if form != "plain" else "data.csv")
    path.write_bytes(data)
    return path
