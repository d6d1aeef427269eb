"""fraud-train's data reader (training/data.py ``load_csv``, ``read_header``): generated CSV files,
plain or gzip (whole, truncated or corrupt), with hostile cells, headers and encodings.

(fraud-train reads CSV only: the feedback export it trains on is a CSV too; there is no JSONL reader.)

Contract: ``load_csv`` returns a ``Dataset`` (finite features, labels 0/1, one row per data row)
or raises ``DataError``, nothing else; the error is one line with no raw control character;
``read_header`` never raises.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from fuzz.gen import CONTROL, CSV_FORMS, Mutator, example_strategy, write_csv_file

NAME = "training_data"
MIN_INPUTS = 10_000
EXAMPLES = 10_200
MEMORY_BYTES = 64 << 20
RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CELLS = ("1e999", "-1e999", "nan", "NaN", "inf", "-inf", "", " ", "abc", "1,5", '"2"', '"3', "0x1f", "1_0",
         "\x1b[2J", "1\n2", "\ufeff1", "9" * 400, "1" * 5000, "Ⅻ", "١٢", "0", "1", "-0.0", "3.4e38", "2",
         "-1")  # fmt: skip


def strategy() -> st.SearchStrategy:
    return st.tuples(example_strategy, st.integers(0, 40), st.sampled_from(CSV_FORMS))


def setup(workdir: Path) -> Any:
    root = workdir / "training-target"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


def _csv(m: Mutator, rows: int, clean: bool = False) -> bytes:
    rng = m.rng
    header = ["V1", "V2", "Amount", "Class"]
    if rng.random() < 0.3:
        header.insert(0, "transaction_id")
    if rng.random() < 0.3:  # a hostile column name
        header[rng.randrange(len(header))] = rng.choice((m.text(), "Class", "V1", "", '"q"', "a,b", "x" * 300))
    lines = [",".join(header)]
    for i in range(rows):
        cells = [f"{rng.gauss(0, 2):.6f}" for _ in header]
        if "Class" in header:
            cells[header.index("Class")] = str(i % 2)
        if "transaction_id" in header:
            cells[header.index("transaction_id")] = f"tx-{i}"
        if not clean and rng.random() < 0.15:
            cells[rng.randrange(len(cells))] = rng.choice(CELLS)
        if not clean and rng.random() < 0.05:
            cells = cells[: rng.randrange(len(cells) + 1)] if rng.random() < 0.5 else [*cells, "extra"]
        lines.append(",".join(cells))
    text = rng.choice(("\n", "\r\n", "\r")).join(lines) + rng.choice(("\n", "", "\n\n"))
    if rng.random() < 0.1:
        text = rng.choice(("\ufeff", "", " ")) + text + rng.choice(CONTROL)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        data = data.replace(b"V2", b"V\xff2")  # not UTF-8
    return m.bytes_mutation(data) if rng.random() < 0.15 else data


def check(context: Any, example: Any) -> int:
    from training.data import load_csv, read_header
    from training.errors import DataError

    root = context
    (seed, extra), rows, form = example
    m = Mutator(seed, extra)
    long = m.rng.random() < 0.04  # past the 1,000 rows read up front: trouble the second pass meets
    data = _csv(m, 1100 + rows, clean=True) if long else _csv(m, rows)
    if long:
        data += m.rng.choice((b"1,2,3,\xff\n", b'1,2,3,"' + b"x" * 200_000 + b'"\n', b"1,2\n", b"\x00,1,2,1\n"))
    path = write_csv_file(root, data, form, m.rng)
    try:
        warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data"
        read_header(path)
        try:
            ds = load_csv(path, label_column="Class", min_rows=2)
        except DataError as exc:
            text = str(exc)
            assert "\n" not in text and not RAW_CONTROL.search(text), f"raw control character in {text!r:.300}"
            return 1
        assert ds.X.shape == (ds.n_rows, len(ds.feature_names)) and bool(np.isfinite(ds.X).all())
        assert set(np.unique(ds.y).tolist()) <= {0, 1}
        return 1
    finally:
        path.unlink(missing_ok=True)
