"""fraud-feedback's score and label decoder (worker/feedback/records.py): mutated records.

Contract: ``decode_score`` / ``decode_label`` return a record or raise ``BadRecord`` with a
reason code, nothing else; a returned record holds only what SQLite stores without error: an id
of 1..256 characters of valid UTF-8, times in [0, 2^63) and not more than a day ahead, finite
scores and thresholds in [0, 1], finite feature values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.gen import Mutator, example_strategy

NAME = "records"
MIN_INPUTS = 10_000
EXAMPLES = 1_300  # 8 records each
MEMORY_BYTES = 32 << 20
NOW_MS = 1_767_225_600_000
REASONS = {"empty", "schema", "not_json", "bad_transaction_id", "out_of_range", "future"}


def strategy() -> st.SearchStrategy:
    return example_strategy


def inputs_of(example: Any) -> int:
    return 8


def setup(workdir: Path) -> Any:
    return None


def _values(example: Any) -> list[tuple[str, bytes | None]]:
    seed, extra = example
    m = Mutator(seed, extra)
    out: list[tuple[str, bytes | None]] = []
    for i in range(4):
        score = {"transaction_id": f"tx-{i}", "score": m.rng.random(), "threshold": 0.7,
                 "model_version": "20260101T000000Z-f022f022", "event_time": NOW_MS - m.rng.randrange(10**9),
                 "scored_at": NOW_MS}  # fmt: skip
        if m.rng.random() < 0.4:
            score["features"] = {"V1": m.rng.gauss(0, 2), "Amount": 12.5}
        label = {"transaction_id": f"tx-{i}", "is_fraud": m.rng.random() < 0.5,
                 "label_time": NOW_MS - m.rng.randrange(10**9), "source": "analyst"}  # fmt: skip
        out.append(("score", m.document(score)))
        out.append(("label", m.document(label) if m.rng.random() > 0.02 else m.rng.choice((None, b""))))
    return out


def check(context: Any, example: Any) -> int:
    from worker.feedback.records import MAX_ID_LENGTH, BadRecord, decode_label, decode_score

    values = _values(example)
    for kind, value in values:
        try:
            record = (decode_score if kind == "score" else decode_label)(value, now_ms=NOW_MS)
        except BadRecord as exc:
            assert exc.reason in REASONS, f"unknown reason {exc.reason!r}"
            continue
        tid = record.transaction_id
        assert isinstance(tid, str) and 1 <= len(tid) <= MAX_ID_LENGTH, f"id {tid!r:.80}"
        tid.encode("utf-8")  # a lone surrogate would fail here, and in SQLite
        if kind == "score":
            assert math.isfinite(record.score) and 0.0 <= record.score <= 1.0, record
            assert math.isfinite(record.threshold) and 0.0 <= record.threshold <= 1.0, record
            assert 0 <= record.event_time <= NOW_MS + 86_400_000, record
            record.model_version.encode("utf-8")
            if record.features is not None:
                names, numbers = record.features
                assert all(math.isfinite(v) for v in numbers), record
                for n in names:
                    n.encode("utf-8")
        else:
            assert 0 <= record.label_time <= NOW_MS + 86_400_000, record
            assert isinstance(record.is_fraud, bool)
            record.source.encode("utf-8")
    return len(values)
