"""The event decoder (worker/core/decode.py): batches of mutated events through ``decode_batch`` (the
fast batch paths) and each record through ``classify`` (the exact path).

Contract: ``decode_batch`` raises nothing and gives every record one verdict, a row or a
``DecodeError`` whose reason is in ``REASONS``; both paths agree on every record (valid or not, and
the reason); a valid row is finite float32 with an id of 1..128 characters; its score is finite,
in [0, 1].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from fuzz import fixtures
from fuzz.gen import ULB_FEATURES, Mutator, example_strategy

NAME = "decode"
MIN_INPUTS = 100_000
EXAMPLES = 8_000  # ~14 records each
MEMORY_BYTES = 48 << 20


def strategy() -> st.SearchStrategy:
    return st.tuples(example_strategy, st.integers(1, 24), st.floats(0, 1))


def inputs_of(example: Any) -> int:
    return len(batch(example))


def setup(workdir: Path) -> Any:
    from worker.core.decode import Decoder

    scorer = fixtures.scorer(workdir)
    return scorer, Decoder(scorer.feature_names), Decoder(scorer.feature_names, max_bytes=2048)


def batch(example: Any) -> list[bytes | None]:
    (seed, extra), size, bad_share = example
    m = Mutator(seed, extra)
    size = m.rng.randint(size, 24)  # hypothesis favours small integers: batches of 1..24, most of them long
    out: list[bytes | None] = []
    for i in range(size):
        doc: dict[str, Any] = {"transaction_id": f"tx-{seed}-{i}"}
        doc.update((f, round(m.rng.gauss(0, 3), m.rng.choice((2, 6, 17)))) for f in ULB_FEATURES)
        if m.rng.random() < 0.3:
            doc["event_time"] = m.rng.choice((1767225600000, 0, 2**63 - 1))
        if m.rng.random() < 0.2:
            doc["Class"] = m.rng.choice((0, 1))
        if m.rng.random() < 0.02:
            out.append(m.rng.choice((None, b"", b"  ", b"null")))
        else:
            out.append(m.document(doc, None if m.rng.random() < bad_share else 0))
    return out


def check(context: Any, example: Any) -> int:
    from worker.core.decode import F32_MAX, MAX_ID_CHARS, REASONS
    from worker.core.errors import DecodeError

    scorer, decoder, small = context
    values = batch(example)
    for d in (decoder, small):
        decoded = d.decode_batch(values)
        verdicts: dict[int, str] = {i: "valid" for i in decoded.index}
        for i, e in decoded.errors:
            assert isinstance(e, DecodeError) and e.reason in REASONS, f"record {i}: unknown reason {e!r}"
            assert i not in verdicts, f"record {i} has two verdicts"
            verdicts[i] = e.reason
        assert sorted(verdicts) == list(range(len(values))), "a record without a verdict"
        features = decoded.features
        assert features.shape == (len(decoded.index), len(ULB_FEATURES)) and features.dtype == np.float32
        assert bool(np.isfinite(features).all()) and float(np.abs(features).max(initial=0)) <= F32_MAX
        for tid in decoded.transaction_ids:
            assert isinstance(tid, str) and 1 <= len(tid) <= MAX_ID_CHARS, f"bad id {tid!r}"
        for i, value in enumerate(values):  # the exact path, record by record
            try:
                d.classify(value)
                exact = "valid"
            except DecodeError as e:
                exact = e.reason
            assert exact == verdicts[i], f"record {i}: batch path {verdicts[i]}, exact path {exact}: {value!r:.300}"
        if decoded.index:
            scores = scorer.score_scaled(scorer.scale(features))
            bad = [float(s) for s in scores if not (math.isfinite(float(s)) and 0.0 <= float(s) <= 1.0)]
            assert not bad, f"score {bad[0]} for a valid event (features {features[np.argmax(~np.isfinite(scores))]})"
    return len(values)
