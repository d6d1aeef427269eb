"""Labelled transactions in, validated float arrays out (numpy + csv only, no TensorFlow).

``load_csv`` reads a CSV such as the ULB ``creditcard.csv`` (plain or gzip, quoted header and
values allowed) with numpy's C parser; ``from_columns`` builds the same ``Dataset`` from arrays
(the synthetic generator). Both end in ``validate``, so every source gets the same checks and
every failure is one ``DataError`` line naming the file, column and rows concerned.

The default feature set (no ``features`` given) is every numeric column but the label, less the
columns that cannot be features, each left out with one log line saying why (``unusable``):
constant columns, identifiers (named ``id`` or ``*_id``, or integer values unique on at least
``ID_UNIQUE_SHARE`` of the rows), and ``fraud-feedback export``'s ``event_time`` (``RESERVED``),
never a feature unless named in ``features``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.errors import DataError
from worker.core.printable import printable

logger = logging.getLogger(__name__)

MIN_ROWS = 1000
MIN_PER_CLASS = 10  # enough for each of train / validation / test to hold both classes
SAMPLE_ROWS = 1000  # rows read to tell numeric columns from text ones
ID_UNIQUE_SHARE = 0.99  # an integer column with a distinct value on this share of rows is an identifier
# Columns of a fraud-feedback export that describe the transaction rather than measure it.
# (transaction_id is left out as an identifier, or as text.)
RESERVED = {
    "event_time": "the event's time (the clock of --split time, not a feature)",
    "label_time": "when the row's label became known (read by label-derived features, never a feature)",
}
TIME_COLUMNS = ("event_time", "Time")  # what --split time orders by, the first the file has


@dataclass(frozen=True)
class Dataset:
    """Feature matrix (float64, rows × features), 0/1 labels and where they came from."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    label_column: str
    source: str
    sha256: str
    time: np.ndarray | None = None
    time_column: str | None = None
    # Numeric columns the default feature set left out: (name, why), in column order.
    excluded: tuple[tuple[str, str], ...] = ()
    # The columns it was built from, as given (text ones too; a CSV's only as far as they were read).
    raw: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])

    @property
    def positives(self) -> int:
        return int(self.y.sum())


def read_header(path: str | os.PathLike[str]) -> list[str]:
    """The column names of a CSV (plain or gzip); [] when it cannot be read (``load_csv`` says why)."""
    try:
        with _open_text(Path(path)) as fh:
            return [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, EOFError, csv.Error, zlib.error):
        return []


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8", newline="")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_csv(
    path: str | os.PathLike[str],
    label_column: str = "Class",
    features: Sequence[str] | None = None,
    time_column: str | None = None,
    min_rows: int = MIN_ROWS,
) -> Dataset:
    """Read and validate a labelled CSV. ``features=None`` means every numeric column but the label."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            sample = [row for _, row in zip(range(SAMPLE_ROWS), reader, strict=False)]
    except (OSError, UnicodeDecodeError, EOFError, csv.Error, zlib.error) as exc:
        raise DataError(f"{path}: cannot read as CSV: {exc}") from None
    if not header:
        raise DataError(f"{path}: empty file (no header row)")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: the header repeats a column name")
    if label_column not in header:
        names = printable(", ".join(header[:12]), 200)  # a column name may hold control characters
        raise DataError(f"{path}: label column {label_column!r} not found (columns: {names}…)")
    if time_column is not None and time_column not in header:
        raise DataError(f"{path}: time column {time_column!r} not found")

    def text_column(name: str) -> bool:
        # Text (an id, a merchant name) if no sampled value is a number; a numeric column with a
        # stray word in it stays a feature and is reported when the values are parsed.
        i = header.index(name)
        values = [row[i].strip() for row in sample if i < len(row) and row[i].strip()]
        return bool(values) and not any(_is_number(v) for v in values)

    if features is None:
        skipped = [h for h in header if h != label_column and text_column(h)]
        if skipped:
            logger.info("not using non-numeric columns as features: %s", ", ".join(skipped))
        feature_names = [h for h in header if h != label_column and h not in skipped]
    else:
        feature_names = list(features)
        for name in feature_names:
            if name not in header:
                raise DataError(f"{path}: feature column {name!r} not found")
            if name == label_column:
                raise DataError(f"{path}: the label column {name!r} cannot also be a feature")
        if len(set(feature_names)) != len(feature_names):
            raise DataError(f"{path}: a feature column is named twice")
    if not feature_names:
        raise DataError(f"{path}: no numeric feature columns")

    wanted = list(dict.fromkeys([*feature_names, label_column, *([time_column] if time_column else [])]))
    usecols = [header.index(name) for name in wanted]
    try:
        try:
            with _open_text(path) as fh:
                fh.readline()
                data = np.loadtxt(fh, delimiter=",", quotechar='"', usecols=usecols, dtype=np.float64, ndmin=2)
        except ValueError:  # (UnicodeDecodeError is one: the slow pass names it too)
            # The fast parser only says "something is wrong"; find the column and row to name.
            data = _load_slowly(path, header, wanted)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error, zlib.error) as exc:
        # Past the rows read up front: not UTF-8, a field over the csv module's limit, a cut gzip stream.
        raise DataError(f"{path}: cannot read as CSV: {exc}") from None
    columns = {name: data[:, j] for j, name in enumerate(wanted)}
    return from_columns(
        columns,
        label_column=label_column,
        features=None if features is None else feature_names,
        source=str(path),
        sha256=file_sha256(path),
        time_column=time_column,
        min_rows=min_rows,
    )


def _load_slowly(path: Path, header: list[str], wanted: list[str]) -> np.ndarray:
    """Parse with the csv module, raising a ``DataError`` at the first unusable cell."""
    idx = [header.index(name) for name in wanted]
    rows: list[list[float]] = []
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        next(reader)
        for rowno, row in enumerate(reader, start=1):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: data row {rowno} has {len(row)} fields, the header has {len(header)}")
            out = []
            for name, i in zip(wanted, idx, strict=True):
                text = row[i].strip()
                if text == "":
                    out.append(float("nan"))  # reported below as a missing value, with the count
                    continue
                try:
                    out.append(float(text))
                except ValueError:
                    raise DataError(
                        f"{path}: column {name!r} is not numeric (data row {rowno} holds {text[:40]!r})"
                    ) from None
            rows.append(out)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(wanted))


def from_columns(
    columns: Mapping[str, np.ndarray],
    label_column: str,
    features: Sequence[str] | None,
    source: str,
    sha256: str,
    time_column: str | None = None,
    min_rows: int = MIN_ROWS,
) -> Dataset:
    """Build a validated ``Dataset`` from named 1-D arrays (non-numeric arrays are never features)."""
    if label_column not in columns:
        raise DataError(f"{source}: label column {label_column!r} not found")
    excluded: list[tuple[str, str]] = []
    if features is None:
        features = []
        for name, values in columns.items():
            if name == label_column or np.asarray(values).dtype.kind not in "biuf":
                continue
            why = unusable(name, np.asarray(values, dtype=np.float64))
            if why is None:
                features.append(name)
            else:
                logger.info("not using column %r as a feature: %s", name, why)
                excluded.append((name, why))
    for name in features:
        if name not in columns:
            raise DataError(f"{source}: feature column {name!r} not found")
        if np.asarray(columns[name]).dtype.kind not in "biuf":
            raise DataError(f"{source}: column {name!r} is not numeric")
    X = np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in features]) if features else None
    label = np.asarray(columns[label_column], dtype=np.float64)
    time = np.asarray(columns[time_column], dtype=np.float64) if time_column else None
    if X is None:
        raise DataError(f"{source}: no numeric feature columns")
    y = validate(X, label, tuple(features), label_column, source, min_rows, time, time_column)
    return Dataset(X, y, tuple(features), label_column, source, sha256, time, time_column, tuple(excluded), columns)


def unusable(name: str, values: np.ndarray) -> str | None:
    """Why a numeric column cannot be a default feature (constant, an identifier), or None if it can.

    A column with a NaN or infinite value is kept, so that ``validate`` reports it.
    """
    n = values.size
    if name in RESERVED:
        return RESERVED[name]
    if n == 0 or not np.isfinite(values).all():
        return None
    if values.min() == values.max():
        return f"constant (every row is {values[0]:g})"
    lowered = name.lower()
    if lowered == "id" or lowered.endswith("_id"):
        return "an identifier (named like id or *_id)"
    if np.array_equal(values, np.round(values)):
        distinct = np.unique(values).size
        if distinct >= ID_UNIQUE_SHARE * n:
            return f"an identifier (integer values, distinct on {distinct / n:.1%} of {n} rows)"
    return None


def validate(
    X: np.ndarray,
    label: np.ndarray,
    feature_names: tuple[str, ...],
    label_column: str,
    source: str,
    min_rows: int = MIN_ROWS,
    time: np.ndarray | None = None,
    time_column: str | None = None,
) -> np.ndarray:
    """Check rows, labels and values; return the labels as int8. Raises ``DataError``."""
    n = int(label.shape[0])
    if n < min_rows:
        raise DataError(f"{source}: {n} data rows, fewer than the minimum of {min_rows}")
    bad_label = ~np.isin(label, (0.0, 1.0))
    if bad_label.any():
        shown = ", ".join(repr(v) for v in np.unique(label[bad_label])[:5].tolist())
        raise DataError(
            f"{source}: label column {label_column!r} must hold only 0 and 1; "
            f"{int(bad_label.sum())} rows hold other values ({shown})"
        )
    positives = int(label.sum())
    if positives == 0 or positives == n:
        raise DataError(f"{source}: only one class present in {label_column!r} (every row is {int(label[0])})")
    if min(positives, n - positives) < MIN_PER_CLASS:
        raise DataError(
            f"{source}: only {min(positives, n - positives)} rows of the rarer class in {label_column!r}; "
            f"need at least {MIN_PER_CLASS} to split train / validation / test"
        )
    finite = np.isfinite(X)
    if not finite.all():
        counts = (~finite).sum(axis=0)
        bad = [f"{feature_names[j]!r} ({int(counts[j])} rows)" for j in np.flatnonzero(counts)]
        raise DataError(f"{source}: NaN, infinite or missing values in column {', '.join(bad)}")
    if time is not None and not np.isfinite(time).all():
        raise DataError(
            f"{source}: NaN, infinite or missing values in time column {time_column!r} "
            f"({int((~np.isfinite(time)).sum())} rows)"
        )
    return label.astype(np.int8)
