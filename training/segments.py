"""Per-segment thresholds: ``fraud-train --segment-field FIELD --segment-min-support N`` (docs/training.md).

For each value of FIELD among the validation rows with at least N rows there and at least one fraud
among them, the policy that chose the global threshold (the same ``Policy``, the same parameters)
chooses that segment's threshold on those rows alone. Every other value, and every value training
never saw, keeps the global threshold. The table is the manifest's ``segment_thresholds``
(``worker.core.decisions.SegmentThresholds``): the worker applies a segment's threshold to the events
whose FIELD has that value.

A segment value is the field's CSV text, stripped (an empty cell is no segment), which is what
``worker.core.decisions.segment_key`` makes of the event's JSON value: a string as it is, an integer
in decimal; for generated data, ``segment_key`` of the generated value. FIELD is only read: it never
becomes a model input through this (it is one only if the feature set names it anyway).

The test rows are measured both ways: at the global threshold for every row (the manifest's
``metrics``), and at each row's own threshold as the worker applies them
(``metrics.with_segment_thresholds``); ``training.segments`` has both for each segment.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import data
from training.errors import DataError
from training.thresholds import Choice, Policy
from worker.core.decisions import MAX_SEGMENT_CHARS, MAX_SEGMENTS, SegmentThresholds, segment_key

logger = logging.getLogger(__name__)

LISTED = 100  # segments listed in the manifest's training.segments and report.html (the largest first)


def read_values(field: str, dataset: data.Dataset, path: str | None = None) -> np.ndarray:
    """Each row's segment value (str, or None for none), aligned with ``dataset``'s rows.

    ``path``: the CSV the data set was read from (its text is read again: the data set holds only the
    columns it uses, as numbers); without it the data set's own columns (generated data).
    """
    if not field.strip():
        raise DataError("--segment-field needs a column name")
    if len(field) > MAX_SEGMENT_CHARS:
        raise DataError(f"--segment-field: a column name of at most {MAX_SEGMENT_CHARS} characters")
    if field == dataset.label_column:
        raise DataError(f"--segment-field {field!r} is the label column")
    if path is not None:
        values = _read_csv_column(Path(path), field)
    else:
        if field not in dataset.raw:
            names = ", ".join(list(dataset.raw)[:12])
            raise DataError(f"{dataset.source}: no column {field!r} for --segment-field (columns: {names})")
        values = [segment_key(v) for v in np.asarray(dataset.raw[field]).tolist()]
    if len(values) != dataset.n_rows:
        raise DataError(f"--segment-field {field!r}: {len(values)} values for {dataset.n_rows} rows")
    return np.array(values, dtype=object)


def _read_csv_column(path: Path, field: str) -> list[str | None]:
    header = data.read_header(path)
    if field not in header:
        raise DataError(f"{path}: no column {field!r} for --segment-field")
    i = header.index(field)
    out: list[str | None] = []
    try:
        with data._open_text(path) as fh:
            reader = csv.reader(fh)
            next(reader)
            for row in reader:
                if not row:
                    continue  # as the data set's reader skips it
                text = row[i].strip() if i < len(row) else ""
                out.append(text or None)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read column {field!r}: {exc}") from None
    return out


def group(values: np.ndarray) -> dict[str, np.ndarray]:
    """Row positions per segment value (rows without one in none), values in order of first appearance."""
    rows: dict[str, list[int]] = {}
    for i, v in enumerate(values.tolist()):
        if v is not None:
            rows.setdefault(v, []).append(i)
    return {v: np.asarray(idx, dtype=np.int64) for v, idx in rows.items()}


@dataclass(frozen=True)
class Support:
    """The validation rows' segments: those that get a threshold of their own, and why the others do not."""

    field: str
    min_support: int
    chosen: dict[str, np.ndarray]  # value -> positions in the validation rows; the most rows first
    below_support: tuple[str, ...]
    no_fraud: tuple[str, ...]
    too_long: tuple[str, ...]  # longer than a manifest's segment value may be

    @property
    def values(self) -> int:
        """The distinct values the validation rows hold."""
        return len(self.chosen) + len(self.below_support) + len(self.no_fraud) + len(self.too_long)


def support(field: str, min_support: int, values_val: np.ndarray, y_val: np.ndarray) -> Support:
    """Which validation segments qualify (a ``DataError`` when more than the worker reads would)."""
    below, no_fraud, too_long, chosen = [], [], [], {}
    groups = group(values_val)
    for v in sorted(groups, key=lambda v: (-groups[v].size, v)):
        idx = groups[v]
        if len(v) > MAX_SEGMENT_CHARS:
            too_long.append(v)
        elif idx.size < min_support:
            below.append(v)
        elif not y_val[idx].any():
            no_fraud.append(v)
        else:
            chosen[v] = idx
    if len(chosen) > MAX_SEGMENTS:
        raise DataError(
            f"--segment-field {field!r}: {len(chosen)} values have {min_support} validation rows and a fraud, "
            f"more than the {MAX_SEGMENTS} a bundle may carry; raise --segment-min-support"
        )
    return Support(field, min_support, chosen, tuple(below), tuple(no_fraud), tuple(too_long))


def choose(sup: Support, policy: Policy, y_val: np.ndarray, scores_val: np.ndarray) -> dict[str, Choice]:
    """Each qualifying segment's threshold: ``policy`` on that segment's validation rows alone."""
    return {v: policy.choose(y_val[idx], scores_val[idx]) for v, idx in sup.chosen.items()}


def _at(y: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 of alerting on ``flagged`` (0 where undefined, as ``training.evaluate``)."""
    y = np.asarray(y).astype(bool)
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    fn = int((~flagged & y).sum())
    tn = int(y.size - tp - fp - fn)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"alerts": tp + fp, "precision": precision, "recall": recall, "f1": f1,
            "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp}}  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """The manifest's ``segment_thresholds`` (None: no value qualified), ``metrics.with_segment_thresholds``
    and ``training.segments``."""

    table: SegmentThresholds | None
    test: dict[str, Any]
    facts: dict[str, Any]


def measure(
    sup: Support,
    choices: dict[str, Choice],
    policy: Policy,
    global_threshold: float,
    y_val: np.ndarray,
    values_test: np.ndarray,
    y_test: np.ndarray,
    scores_test: np.ndarray,
) -> Outcome:
    """The test rows at the global threshold and at each row's own threshold (as the worker applies the
    table: ``SegmentThresholds.apply``), overall and per segment; one log line per segment."""
    table = SegmentThresholds(sup.field, sup.min_support, {v: c.threshold for v, c in choices.items()})
    y_test = np.asarray(y_test).astype(np.int64)
    s = np.asarray(scores_test, dtype=np.float64)
    row_thresholds, applied = table.apply(values_test.tolist(), global_threshold)
    with_segments = _at(y_test, s >= row_thresholds)
    with_segments["rows_at_segment_threshold"] = sum(a is not None for a in applied)
    at_global = _at(y_test, s >= global_threshold)
    test_groups = group(values_test)
    listed: list[dict[str, Any]] = []
    for v, c in choices.items():
        idx = test_groups.get(v, np.zeros(0, dtype=np.int64))
        yt, st = y_test[idx], s[idx]
        seg, glob = _at(yt, st >= c.threshold), _at(yt, st >= global_threshold)
        entry: dict[str, Any] = {
            "value": v,
            "threshold": c.threshold,
            "validation": {
                "rows": int(sup.chosen[v].size), "frauds": int(y_val[sup.chosen[v]].sum()),
                "precision": c.precision, "recall": c.recall, "f1": c.f1, **c.extra,
            },
            "test": {
                "rows": int(idx.size), "frauds": int(yt.sum()),
                "segment_threshold": seg, "global_threshold": glob,
            },
        }  # fmt: skip
        logger.info(
            "segment %s=%s: %d validation rows, %d frauds: threshold %.6f (global %.6f); "
            "test %d rows, %d frauds: precision / recall %.4f / %.4f (global threshold: %.4f / %.4f)",
            sup.field, v[:60], sup.chosen[v].size, int(y_val[sup.chosen[v]].sum()), c.threshold,
            global_threshold, idx.size, int(yt.sum()), seg["precision"], seg["recall"], glob["precision"],
            glob["recall"],
        )  # fmt: skip
        if len(listed) < LISTED:
            listed.append(entry)
    kept_global = len(sup.below_support) + len(sup.no_fraud) + len(sup.too_long)
    if kept_global:
        shown = ", ".join(v[:40] for v in (*sup.below_support, *sup.no_fraud, *sup.too_long)[:8])
        logger.info(
            "segment %s: %d values keep the global threshold (%d below %d validation rows, %d without a fraud%s): %s%s",
            sup.field, kept_global, len(sup.below_support), sup.min_support, len(sup.no_fraud),
            f", {len(sup.too_long)} longer than {MAX_SEGMENT_CHARS} characters" if sup.too_long else "",
            shown, ", …" if kept_global > 8 else "",
        )  # fmt: skip
    if not choices:
        logger.warning(
            "segment %s: no value has %d validation rows and a fraud; every event gets the global threshold",
            sup.field, sup.min_support,
        )  # fmt: skip
    facts = {
        "field": sup.field,
        "min_support": sup.min_support,
        "policy": policy.params(),
        "chosen": len(choices),
        "below_support": len(sup.below_support),
        "no_fraud": len(sup.no_fraud),
        "too_long": len(sup.too_long),
        "listed": len(listed),
        "segments": listed,
        "test": {"global_threshold": at_global, "with_segment_thresholds": with_segments},
    }
    return Outcome(table if choices else None, with_segments, facts)
