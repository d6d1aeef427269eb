"""The default feature set leaves out constant columns and identifiers, with one log line each."""

from __future__ import annotations

import logging

import numpy as np

from training.data import from_columns, load_csv
from worker.offline import synthetic


def columns(n: int = 2000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    label = (rng.random(n) < 0.05).astype(np.float64)
    return {
        "transaction_id": rng.permutation(n).astype(np.float64) * 3,  # named *_id, even if it were not unique
        "id": rng.integers(0, 10, n).astype(np.float64),
        "seq": np.arange(n, dtype=np.float64) + 10_000,  # integer values distinct on every row
        "country": np.full(n, 44.0),  # constant
        "Time": np.sort(rng.integers(0, 600, n)).astype(np.float64),  # integers, but repeated
        "amount": np.round(rng.lognormal(3, 1, n), 2),  # distinct on nearly every row, but not integers
        "Class": label,
        "merchant": np.array(["m"] * n),  # text: never a feature
    }


def test_constant_and_identifier_columns_are_left_out_with_one_line_each(caplog):
    with caplog.at_level(logging.INFO, logger="training.data"):
        ds = from_columns(columns(), "Class", None, "mem", "0" * 64)
    assert ds.feature_names == ("Time", "amount")
    assert [name for name, _ in ds.excluded] == ["transaction_id", "id", "seq", "country"]
    lines = [r.getMessage() for r in caplog.records if "as a feature" in r.getMessage()]
    assert lines == [
        "not using column 'transaction_id' as a feature: an identifier (named like id or *_id)",
        "not using column 'id' as a feature: an identifier (named like id or *_id)",
        "not using column 'seq' as a feature: an identifier (integer values, distinct on 100.0% of 2000 rows)",
        "not using column 'country' as a feature: constant (every row is 44)",
    ]


def test_named_features_are_used_as_given():
    ds = from_columns(columns(), "Class", ["seq", "country", "amount"], "mem", "0" * 64)
    assert ds.feature_names == ("seq", "country", "amount") and ds.excluded == ()


def test_csv_default_features_leave_out_the_same_columns(tmp_path, caplog):
    path = synthetic.write_csv(tmp_path / "d.csv", columns())
    with caplog.at_level(logging.INFO, logger="training.data"):
        ds = load_csv(path, min_rows=500)
    assert ds.feature_names == ("Time", "amount")
    assert sum("as a feature" in r.getMessage() for r in caplog.records) == 4


def test_synthetic_data_keeps_every_numeric_column():
    ds = from_columns(synthetic.generate(3000, 1, 0.03), "Class", None, "mem", "0" * 64, min_rows=500)
    assert ds.feature_names == ("Time", *(f"V{i}" for i in range(1, 29)), "Amount", *synthetic.HEAVY_COLUMNS)
    assert ds.excluded == ()


def test_an_export_s_transaction_id_and_event_time_are_never_features(tmp_path):
    """fraud-feedback export writes them beside the features; --split time orders by event_time."""
    import numpy as np

    from training.data import load_csv
    from training.pipeline import TrainConfig, time_column

    rng = np.random.default_rng(0)
    n = 2000
    path = tmp_path / "examples.csv"
    y = (rng.random(n) < 0.05).astype(int)
    with open(path, "w") as fh:
        fh.write("V1,V2,is_fraud,event_time,transaction_id\n")
        for i in range(n):
            fh.write(f"{rng.normal() + y[i]},{rng.normal()},{y[i]},{1_700_000_000_000 + i * 1000},tx-{i}\n")
    data = load_csv(path, label_column="is_fraud")
    assert data.feature_names == ("V1", "V2")
    assert ("event_time", "the event's time (the clock of --split time, not a feature)") in data.excluded
    assert time_column(TrainConfig(data_path=str(path))) == "event_time"
    assert time_column(TrainConfig(data_path=str(path), time_column="V2")) == "V2"
