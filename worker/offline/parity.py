"""Parity of behavioural features (docs/features.md): the same file through the offline computation
(``compute_columns``: the file sorted by event time, as fraud-train computes it) and through the worker's
online path (``Decoder`` then ``BatchFeatures.extend``, batch after batch in file order, as the worker's
loop and the backtest run it), and, given score records (``scores_include_features``: the scores topic or a
backtest's output), the values in them. Every value is compared as the model reads it, float32; a file in
event-time order gives no difference. No Kafka here: the score records come as a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from worker.core.batch_features import BatchFeatures
from worker.core.decode import Decoder
from worker.core.features import FeatureSpec, compute_columns
from worker.offline.backtest import Chunk

MAX_SHOWN = 5  # differing values shown per feature


@dataclass
class Difference:
    feature: str
    count: int = 0
    examples: list[tuple[str, float, float]] = field(default_factory=list)  # (transaction id, offline, other)


@dataclass
class Report:
    events: int  # valid events compared
    features: tuple[str, ...]
    online: dict[str, Difference]  # the worker's path against the offline computation, by feature
    records: int = 0  # score records compared
    in_records: dict[str, Difference] = field(default_factory=dict)
    missing_records: int = 0  # score records of events the file does not hold (or without features)

    @property
    def equal(self) -> bool:
        return not self.online and not self.in_records and self.missing_records == 0


def compare(spec: FeatureSpec, own: Sequence[str], chunks: Iterable[Chunk], max_bytes: int,
            records: Iterable[bytes] | None = None) -> Report:  # fmt: skip
    """Run ``chunks`` (the file's lines as JSON) both ways and compare; ``records``: score-record lines."""
    decoder = Decoder(own, max_bytes)
    online = BatchFeatures(spec)
    reader = online.reader
    ids: list[str] = []
    times: list[float] = []
    inputs: list[tuple[Any, ...]] = []
    online_rows: list[np.ndarray] = []
    for chunk in chunks:
        decoded = decoder.decode_batch(chunk.lines)
        values = [chunk.lines[i] for i in decoded.index]
        extended = online.extend(decoded, values)
        kept = set(extended.index)  # the rows with a usable time
        for j, i in enumerate(decoded.index):
            if i not in kept:
                continue
            raw_time, row = reader.read(values[j])
            t = decoded.event_times[j] if spec.time_field == "event_time" else raw_time
            times.append(float(t or 0))  # present: a row without one is not kept
            inputs.append(row)
        ids += extended.transaction_ids
        online_rows.append(extended.features[:, len(own):])
    names = spec.names
    columns = {name: [row[k] for row in inputs] for k, name in enumerate(spec.input_fields)}
    offline = compute_columns(spec, times, columns).astype(np.float32) if ids else np.empty((0, len(names)))
    got = np.vstack(online_rows) if online_rows else np.empty((0, len(names)), np.float32)
    report = Report(len(ids), names, _differences(names, ids, offline, got))
    if records is not None:
        _compare_records(report, names, ids, offline, records)
    return report


def _differences(names: Sequence[str], ids: Sequence[str], want: np.ndarray, got: np.ndarray) -> dict[str, Difference]:
    out: dict[str, Difference] = {}
    for k in np.flatnonzero((want != got).any(axis=0)):
        rows = np.flatnonzero(want[:, k] != got[:, k])
        name = names[int(k)]
        d = out[name] = Difference(name, int(rows.size))
        d.examples = [(ids[r], float(want[r, k]), float(got[r, k])) for r in rows[:MAX_SHOWN]]
    return out


def _compare_records(report: Report, names: Sequence[str], ids: Sequence[str], offline: np.ndarray,
                     records: Iterable[bytes]) -> None:  # fmt: skip
    row_of = {tid: r for r, tid in enumerate(ids)}
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    found_ids: list[str] = []
    rows: list[int] = []
    values: list[list[float]] = []
    for line in _lines(records):
        rec = decode(line)
        feats = rec.get("features")
        r = row_of.get(rec.get("transaction_id", ""))
        if r is None or not isinstance(feats, dict) or any(n not in feats for n in names):
            report.missing_records += 1
            continue
        found_ids.append(rec["transaction_id"])
        rows.append(r)
        values.append([float(feats[n]) for n in names])
    report.records = len(rows)
    if rows:
        got = np.asarray(values, dtype=np.float32)
        report.in_records = _differences(names, found_ids, offline[rows], got)


def _lines(records: Iterable[bytes]) -> Iterator[bytes]:
    for line in records:
        if line.strip():
            yield line
