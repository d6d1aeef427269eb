"""``fraud-feedback export``: the labelled examples of the stores as a CSV that ``fraud-train`` reads.

One row per resolved transaction whose score record carried its features (the worker's
``--scores-include-features``): the feature columns, ``is_fraud`` (0/1: its latest label, or 0
once it is older than the label window without one), ``event_time`` (epoch ms) and
``transaction_id``. ``fraud-train --data FILE --label-column is_fraud`` never takes
``transaction_id`` or ``event_time`` as a feature, and ``--split time`` orders by ``event_time``.
Rows are in event-time order; the file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from worker.errors import ConfigError
from worker.feedback.store import Store

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([dhm])$")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000}


def parse_time(text: str, now_ms: int | None = None) -> int:
    """Epoch ms from ``1700000000000`` (epoch ms), ``2026-11-01`` / ``2026-11-01T12:00:00`` (UTC), or ``30d`` ago."""
    text = text.strip()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if text.isdigit():
        return int(text)
    m = _RELATIVE.match(text)
    if m:
        return now - int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time: give epoch ms, an ISO date (2026-11-01) or an age (30d, 12h)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def parse_duration_ms(text: str) -> int:
    """``120d``, ``12h``, ``30m`` or a number of seconds, in ms."""
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        return int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration: give 120d, 12h, 30m or seconds") from None
    if not seconds > 0:
        raise ConfigError(f"a duration must be > 0 (got {text!r})")
    return int(seconds * 1000)


@dataclass
class ExportSummary:
    rows: int
    frauds: int
    skipped_other_features: int
    partitions: int
    feature_names: tuple[str, ...]


def store_files(state_dir: str | os.PathLike[str]) -> list[Path]:
    return sorted(Path(state_dir).glob("partition-*.sqlite"), key=lambda p: int(p.stem.split("-")[1]))


def export(
    state_dir: str | os.PathLike[str], out: str | os.PathLike[str], label_window_ms: int,
    since_ms: int | None = None, until_ms: int | None = None,
) -> ExportSummary:  # fmt: skip
    files = store_files(state_dir)
    if not files:
        raise ConfigError(f"{state_dir}: no partition-*.sqlite stores (is it fraud-feedback's --state-dir?)")
    stores = [Store(f, label_window_ms) for f in files]
    try:
        rows = [row for store in stores for row in store.examples(since_ms, until_ms)]
    finally:
        for store in stores:
            store.close()
    seen: set[str] = set()
    unique = []
    for row in sorted(rows, key=lambda r: (r[1], r[0])):
        if row[0] not in seen:
            seen.add(row[0])
            unique.append(row)
    sets = Counter(tuple(r[3]) for r in unique)
    if not sets:
        raise ConfigError(
            f"{state_dir}: no labelled transaction with features in that range (does the worker run with "
            "--scores-include-features?)"
        )
    names = sets.most_common(1)[0][0]
    kept = [r for r in unique if tuple(r[3]) == names]
    _write(Path(out), names, kept)
    return ExportSummary(len(kept), sum(1 for r in kept if r[2]), len(unique) - len(kept), len(files), names)


def _write(out: Path, names: tuple[str, ...], rows: Iterable[tuple]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        opener = gzip.open if out.suffix == ".gz" else open
        with opener(tmp, "wt", newline="", encoding="utf-8") as fh:  # type: ignore[operator]
            writer = csv.writer(fh)
            writer.writerow([*names, "is_fraud", "event_time", "transaction_id"])
            for txn, event_time, is_fraud, _names, vals in rows:
                values = np.frombuffer(vals, "<f8").tolist()
                writer.writerow([*(repr(v) for v in values), int(is_fraud), event_time, txn])
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
