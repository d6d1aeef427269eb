"""The one home of the worker's uses of kafka-python internals (placeholder, filled in below)."""

from __future__ import annotations

FAST_PATHS = ("record_reader", "handoff_shortcuts", "metadata_wait", "revocation_commit")


def parse_fast_paths(text: str) -> frozenset[str]:
    """``all``, ``none`` or a comma-separated list of FAST_PATHS names -> the set of names."""
    words = {w.strip().lower() for w in text.split(",") if w.strip()}
    if words == {"all"}:
        return frozenset(FAST_PATHS)
    if words in (set(), {"none"}):
        return frozenset()
    unknown = sorted(words - set(FAST_PATHS))
    if unknown:
        raise ValueError(f"unknown fast path {', '.join(unknown)!s} (known: all, none, {', '.join(FAST_PATHS)})")
    return frozenset(words)
