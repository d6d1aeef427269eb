"""``fraud-worker tail-alerts``'s alert line (``parse_alert``, ``format_alert``
in worker/programs/subcommands/tail_alerts.py):
mutated alert records, as anyone who can write the alert topic could make them.

Contract: every record value gives one line, with no raw control character (C0, DEL, C1, line
separators, bidi overrides), and no exception.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.gen import Mutator, example_strategy

NAME = "tail"
MIN_INPUTS = 10_000
EXAMPLES = 2_600  # 4 records each
MEMORY_BYTES = 32 << 20
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def strategy() -> st.SearchStrategy:
    return example_strategy


def inputs_of(example: Any) -> int:
    return 4


def setup(workdir: Path) -> Any:
    return None


def check(context: Any, example: Any) -> int:
    from worker.programs.subcommands.tail_alerts import format_alert, parse_alert

    m = Mutator(*example)
    for i in range(4):
        alert = {"transaction_id": f"tx-{i}", "score": m.rng.random(), "threshold": 0.7,
                 "model_version": "20260101T000000Z-f022f022", "event_time": 1767225600000,
                 "scored_at": 1767225600042,
                 "reasons": [{"feature": "V14", "contribution": 3.2, "value": -9.5},
                             {"feature": "V4", "contribution": -1.0}]}  # fmt: skip
        value = m.document(alert) if m.rng.random() > 0.02 else None
        line = format_alert(parse_alert(value))
        assert isinstance(line, str) and not RAW_CONTROL.search(line), f"raw control character in {line!r:.300}"
    return 4
