"""``fraud-worker backtest`` (worker/programs/subcommands/backtest.py over worker/offline/backtest.py) end to end
in this process: generated files of events, JSON lines or CSV, plain or gzip (whole or cut), with hostile values and
labels.

Contract: exit 0 with one output line per scored event (a finite score in [0, 1], never null) and
one reject line per other record (a reason of ``REASONS`` or ``bad_label``), or exit 1 with one
line on stderr; never a traceback. The scorer is loaded once (``load_scorer`` cached) so a file
costs milliseconds; an input is one record of a file.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz import fixtures
from fuzz.gen import ULB_FEATURES, Mutator, example_strategy

NAME = "backtest"
MIN_INPUTS = 10_000
EXAMPLES = 3_000  # ~4 records each
MEMORY_BYTES = 64 << 20
LABELS = ("0", "1", "1e999", "-1e999", "NaN", "Infinity", "1.0", '"1"', '"true"', "true", "2", "null",
          str(2**64), "[1]", '{"a":1}', '"\\u001b"', "1e-999", "-0")  # fmt: skip


def strategy() -> st.SearchStrategy:
    return st.tuples(example_strategy, st.integers(0, 12), st.sampled_from(("jsonl", "jsonl", "csv", "gz", "cut-gz")))


def inputs_of(example: Any) -> int:
    return max(1, int(example[1]))


def setup(workdir: Path) -> Any:
    from worker.offline import backtest as library
    from worker.programs.subcommands import backtest

    models, _ = fixtures.models(workdir)
    scorer = fixtures.scorer(workdir)
    root = workdir / "backtest-target"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # The program checks the bundle, the library scores with it: the same bundle each time, loaded once.
    originals = [(module, module.load_scorer) for module in (backtest, library)]
    for module, _ in originals:
        module.load_scorer = lambda *a, **k: scorer
    return root, models, (backtest, originals)


def teardown(context: Any) -> None:
    for module, original in context[2][1]:
        module.load_scorer = original


def _file(m: Mutator, records: int, form: str) -> bytes:
    rng = m.rng
    if form == "csv":
        header = [*ULB_FEATURES, *rng.choice(((), ("Class",), ("transaction_id", "Class"), ("event_time",)))]
        lines = [",".join(header)]
        for _ in range(records):
            cells = [f"{rng.gauss(0, 2):.5f}" for _ in header]
            if rng.random() < 0.4:
                cells[rng.randrange(len(cells))] = rng.choice(("1e999", "nan", "inf", "", "abc", '"', "\x1b", "9" * 400,
                                                               "3.4e38", "-3.5e38", "0", "1"))  # fmt: skip
            if rng.random() < 0.05:
                cells = cells[: rng.randrange(len(cells))]
            lines.append(",".join(cells))
        data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
        return m.bytes_mutation(data) if rng.random() < 0.1 else data
    out = []
    for i in range(records):
        doc: dict[str, Any] = {"transaction_id": f"tx-{i}", **{f: round(rng.gauss(0, 2), 5) for f in ULB_FEATURES}}
        line = m.document(doc, None if rng.random() < 0.5 else 0)
        if rng.random() < 0.4 and line.endswith(b"}"):
            label = rng.choice((b"Class", b"is_fraud"))
            line = line[:-1] + b', "' + label + b'": ' + rng.choice(LABELS).encode() + b"}"
        out.append(line.replace(b"\n", b" "))
    return b"\n".join(out) + rng.choice((b"\n", b""))


def check(context: Any, example: Any) -> int:
    from worker.core.decode import REASONS
    from worker.offline.backtest import BAD_LABEL

    root, models, (backtest, _) = context
    (seed, extra), records, form = example
    m = Mutator(seed, extra)
    data = _file(m, records, "csv" if form == "csv" else "jsonl")
    if form in ("gz", "cut-gz"):
        data = gzip.compress(data, compresslevel=1)
        if form == "cut-gz":
            data = data[: m.rng.randrange(len(data) + 1)]
    src = root / ("in.csv" if form == "csv" else "in.jsonl.gz" if "gz" in form else "in.jsonl")
    src.write_bytes(data)
    out, rej = root / "out.jsonl", root / "rej.jsonl"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = backtest.main(["--jobs", "1", "--quiet", "--input", str(src), "--models-dir", str(models),
                              "--output", str(out), "--rejects", str(rej)])  # fmt: skip
    err = stderr.getvalue()
    assert "Traceback" not in err, err[-500:]
    if code == 1:
        assert err.count("\n") == 1 and err.startswith("fraud-worker backtest: cannot read"), err
        return inputs_of(example)
    assert code == 0 and not err, (code, err[:300])
    scored = out.read_bytes().splitlines()
    for line in scored:
        doc = json.loads(line)
        s = doc["score"]
        assert isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0, f"score {s!r}"
    rejects = [json.loads(x) for x in rej.read_bytes().splitlines()]
    for r in rejects:
        assert r["error"] in (*REASONS, BAD_LABEL), r
    summary = stdout.getvalue().splitlines()[0]
    events = int(summary.split(" events")[0].split()[-1].replace(",", ""))
    assert len(scored) + len(rejects) == events, (len(scored), len(rejects), summary)
    return inputs_of(example)
