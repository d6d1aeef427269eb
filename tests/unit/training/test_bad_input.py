"""Every bad input gives one clear line, exit code 1, and no bundle."""

from __future__ import annotations

import numpy as np
import pytest

from training.fraud_train import main
from worker.offline import synthetic


def write(tmp_path, mutate=None, n=1500, name="data.csv"):
    cols = synthetic.generate(n, 3, 0.05)
    if mutate:
        mutate(cols)
    return synthetic.write_csv(tmp_path / name, cols)


def set_value(column, value, rows=slice(0, 3)):
    def mutate(cols):
        arr = cols[column].astype(object if isinstance(value, str) else np.float64)
        arr[rows] = value
        cols[column] = arr if isinstance(value, str) else arr.astype(np.float64)

    return mutate


def only_class(value):
    def mutate(cols):
        cols["Class"] = np.full_like(cols["Class"], value)

    return mutate


CASES = {
    "missing file": (None, [], "no such file"),
    "missing label": (None, ["--label-column", "IsFraud"], "label column 'IsFraud' not found"),
    "label not 0/1": (set_value("Class", 2.0), [], "must hold only 0 and 1; 3 rows"),
    "one class": (only_class(0.0), [], "only one class present"),
    "non-numeric feature": (set_value("V7", "abc"), [], "column 'V7' is not numeric"),
    "named text feature": (None, ["--features", "V1,account_id"], "column 'account_id' is not numeric"),
    "NaN": (set_value("V3", float("nan")), [], "column 'V3' (3 rows)"),
    "infinite": (set_value("Amount", float("inf"), slice(5, 7)), [], "column 'Amount' (2 rows)"),
    "empty cell": (set_value("V9", ""), [], "column 'V9' (3 rows)"),
    "too few rows": (None, ["--min-rows", "5000"], "fewer than the minimum of 5000"),
    "missing feature": (None, ["--features", "V1,V99"], "feature column 'V99' not found"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, tmp_path, capsys):
    mutate, extra, expected = CASES[case]
    path = tmp_path / "absent.csv" if case == "missing file" else write(tmp_path, mutate)
    models = tmp_path / "models"
    rc = main(["--data", str(path), "--models-dir", str(models), "--min-rows", "500", "-q", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("fraud-train: ") and expected in err[0], err
    assert not models.exists()


def test_gzip_and_quoted_csv_load(tmp_path):
    from training.data import load_csv

    cols = synthetic.generate(1200, 1, 0.05)
    path = synthetic.write_csv(tmp_path / "d.csv.gz", cols)
    ds = load_csv(path, min_rows=500)
    assert ds.n_rows == 1200 and ds.positives == int(cols["Class"].sum())
    assert "account_id" not in ds.feature_names and ds.feature_names[0] == "Time"
    np.testing.assert_allclose(ds.X[:, ds.feature_names.index("Amount")], cols["Amount"])


def test_usage_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--synthetic", "100", "--threshold-policy", "youden"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
