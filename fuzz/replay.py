"""fraud-replay's CSV reader (worker/programs/fraud_replay.py ``rows_from_csv``) and what it makes of each
row (the event's JSON, the label): generated CSV files, plain or gzip (whole or cut), with hostile
headers, cells, encodings and row lengths. No broker: the rows are encoded as replay sends them.

Contract: reading raises ``DataFileError`` (one line naming the file) or yields rows, nothing
else; each row encodes to JSON that parses back; its label is 0, 1 or missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import strategies as st

from fuzz.gen import CONTROL, CSV_FORMS, Mutator, example_strategy, write_csv_file

NAME = "replay"
MIN_INPUTS = 10_000
EXAMPLES = 3_000  # ~4 rows each
MEMORY_BYTES = 32 << 20
CELLS = ("1e999", "nan", "inf", "", " ", "abc", '"', '""', "\x1b[2J", "9" * 400, "1" * 5000, "0", "1", "-0",
         "\ufeff", "1,2", "\udc80", "0x10", "2")  # fmt: skip


def strategy() -> st.SearchStrategy:
    return st.tuples(example_strategy, st.integers(0, 12), st.sampled_from(CSV_FORMS))


def inputs_of(example: Any) -> int:
    return max(1, int(example[1]))


def setup(workdir: Path) -> Any:
    root = workdir / "replay-target"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


def _csv(m: Mutator, rows: int) -> bytes:
    rng = m.rng
    header = rng.choice((["account_id", "V1", "Amount", "Class"], ["V1", "V2", "Class"], ["a"], []))
    if header and rng.random() < 0.2:
        header[rng.randrange(len(header))] = rng.choice((m.text(), "", "account_id", "Class", "x" * 200))
    lines = [",".join(header)] if header or rng.random() < 0.5 else []
    for i in range(rows):
        cells = [f"{rng.gauss(0, 2):.4f}" for _ in header] or [str(i)]
        if rng.random() < 0.3:
            cells[rng.randrange(len(cells))] = rng.choice(CELLS)
        if rng.random() < 0.1:
            cells = cells[: rng.randrange(len(cells) + 1)] + (["extra", "x"] if rng.random() < 0.5 else [])
        lines.append(",".join(cells))
    text = rng.choice(("\n", "\r\n")).join(lines) + rng.choice(("\n", ""))
    text += rng.choice(CONTROL) if rng.random() < 0.05 else ""
    data = text.encode("utf-8", "surrogateescape" if rng.random() < 0.1 else "surrogatepass")
    return m.bytes_mutation(data) if rng.random() < 0.15 else data


def check(context: Any, example: Any) -> int:
    from worker.programs.fraud_replay import DataFileError, Labels, rows_from_csv

    root = context
    (seed, extra), rows, form = example
    m = Mutator(seed, extra)
    data = _csv(m, rows)
    path = write_csv_file(root, data, form, m.rng)
    encode = msgspec.json.Encoder().encode
    labels = Labels("labels", 0.0, "Class")
    try:
        for n, (key, fields) in enumerate(rows_from_csv(path, "account_id", with_label=m.rng.random() < 0.5)):
            assert key is None or isinstance(key, bytes)
            fields["transaction_id"] = f"r-{n:09d}"
            fields["event_time"] = 1767225600000
            labels.add(fields["transaction_id"], dict(fields), keep=True)
            msgspec.json.decode(encode(fields))
    except DataFileError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(str(path)), text
    assert all(isinstance(flag, bool) for _, _, flag in labels.pending)
    return inputs_of(example)
