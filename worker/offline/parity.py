"""Parity of behavioural features (docs/features.md): the same file through the offline computation
(``compute_columns``: the file sorted by event time, as fraud-train computes it) and through the worker's
online path (``Decoder`` then ``BatchFeatures.extend``, batch after batch in file order, as the worker's
loop and the backtest run it), and, given score records (``scores_include_features``: the scores topic or a
backtest's output), the values in them. Every value is compared as the model reads it, float32; a file in
event-time order gives no difference. No Kafka here: the score records come as a file.

Label-derived features (``fraud_count``, ``fraud_rate``: docs/entity-risk.md) read the labels given
(label records, as on the labels topic), made into fraud entries by the rule fraud-feedback follows
(``history_from_labels``), on both paths; the score records of a worker that read them through the
entity-risk table then show whether its table held them in time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from worker.core.batch_features import BatchFeatures
from worker.core.decode import Decoder
from worker.core.features import FeatureSpec, InputReader, compute_columns, key_of, valid_time
from worker.core.risk import FraudHistory, history_from_labels
from worker.feedback.records import BadRecord, decode_label
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
            records: Iterable[bytes] | None = None, labels: Iterable[bytes] | None = None) -> Report:  # fmt: skip
    """Run ``chunks`` (the file's lines as JSON) both ways and compare; ``records``: score-record lines;
    ``labels``: label-record lines, for the label-derived features."""
    decoder = Decoder(own, max_bytes)
    risk = None
    if spec.risk_fields and labels is not None:
        chunks = list(chunks)  # read twice: the labels' events first
        risk = _history(spec, decoder, chunks, labels)
    online = BatchFeatures(spec, risk=risk)
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
    offline = compute_columns(spec, times, columns, risk=risk).astype(np.float32) if ids else np.empty((0, len(names)))
    got = np.vstack(online_rows) if online_rows else np.empty((0, len(names)), np.float32)
    report = Report(len(ids), names, _differences(names, ids, offline, got))
    if records is not None:
        _compare_records(report, names, ids, offline, records)
    return report


def _history(spec: FeatureSpec, decoder: Decoder, chunks: Sequence[Chunk], labels: Iterable[bytes]) -> FraudHistory:
    """The fraud entries of ``labels`` for the file's events (their time and entities as the worker reads them)."""
    reader = InputReader(spec)
    at = [(f, spec.input_fields.index(f)) for f in spec.risk_fields]
    to_ms = 1000 if spec.time_unit == "s" else 1
    events: list[tuple[str, int, dict[str, str]]] = []
    for chunk in chunks:
        decoded = decoder.decode_batch(chunk.lines)
        for j, i in enumerate(decoded.index):
            raw_time, row = reader.read(chunk.lines[i])
            t = decoded.event_times[j] if spec.time_field == "event_time" else valid_time(raw_time, spec.time_unit)
            if t is None:
                continue
            entities = {f: k for f, k_at in at if (k := key_of(row[k_at])) is not None}
            events.append((decoded.transaction_ids[j], round(t * to_ms), entities))
    read: list[tuple[str, bool, int]] = []
    for line in _lines(labels):
        try:
            label = decode_label(line)
        except BadRecord:
            continue  # as fraud-feedback skips it
        read.append((label.transaction_id, label.is_fraud, label.label_time))
    return history_from_labels(events, read)


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
