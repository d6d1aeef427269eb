"""The seeded synthetic generator: same rows for the same seed, and heavy-tailed account columns
whose fraud signal is on a log scale (what the training job's transforms are for)."""

from __future__ import annotations

import numpy as np

from worker.offline.synthetic import HEAVY_COLUMNS, generate


def test_same_seed_same_rows_and_every_column_in_order():
    a, b = generate(2000, 5, 0.02), generate(2000, 5, 0.02)
    assert list(a) == ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class", "account_id", *HEAVY_COLUMNS]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["txn_count_30d"], generate(2000, 6, 0.02)["txn_count_30d"])


def test_heavy_columns_are_non_negative_long_tailed_and_separate_frauds_on_a_log_scale():
    cols = generate(40_000, 1, 0.05)
    fraud = cols["Class"] == 1
    assert np.array_equal(cols["txn_count_30d"], np.round(cols["txn_count_30d"]))  # a count
    for name in HEAVY_COLUMNS:
        x = cols[name]
        assert x.min() >= 0 and np.isfinite(x).all(), name
        q001, q25, q50, q75, q999 = np.quantile(x, [0.001, 0.25, 0.5, 0.75, 0.999])
        assert (q999 - q50) / (q75 - q25) > 10, f"{name}: upper tail not long"
        # Frauds' values are the genuine ones times a factor (a shift on the log scale), well beyond e.
        logs = np.log1p(x)
        assert abs(np.median(logs[fraud]) - np.median(logs[~fraud])) > 1.0, name
        assert abs(logs[fraud].mean() - logs[~fraud].mean()) > 0.5 * logs[~fraud].std(), name
