"""How often each fast path was taken in this process: read by the contract tests and the start-up check."""

from __future__ import annotations

from collections import Counter

TAKEN: Counter[str] = Counter()  # fast path name -> uses (a record batch read, a hand-off skipped, ...)
