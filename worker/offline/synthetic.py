"""A seeded generator of ULB-like card transactions (numpy only, no TensorFlow).

Columns: ``Time`` (seconds from the start, two days with a day/night rhythm), ``V1``..``V28``
(PCA-like components), ``Amount`` (log-normal), ``Class`` (1 = fraud, about 0.5 % by default)
and ``account_id`` (text, so never a default feature). Frauds differ from genuine rows in a few
components (as V14, V17, V12, V10 do in the ULB data), are spread over the night, favour small
and very large amounts, and overlap the genuine rows enough that no model is perfect.

Then the heavy-tailed account history columns of real transaction data (``HEAVY_COLUMNS``), whose
fraud signal is a shift on a log scale, so a linear model sees it only after a log transform:

- ``txn_count_30d``: the account's transactions in the last 30 days, Poisson around a log-normal
  rate (a negative-binomial-like count with a long upper tail); frauds hit quieter accounts
- ``amount_sum_24h``: the amount spent in the last 24 hours, log-normal; frauds come in bursts
- ``days_since_last_txn``: days since the account's previous transaction, log-normal; frauds
  favour dormant accounts
- ``account_age_days``: days since the account was opened, Pareto-tailed; frauds favour new ones

They are drawn after every other column, so the columns above are the same rows for the same
``(n, seed, fraud_rate)`` as before these were added.

The same ``(n, seed, fraud_rate)`` always gives the same rows, so demos, tests and a replay tool
can share data without shipping files. It lives on the worker side because ``fraud-replay`` (which
runs in the worker image, without the training package) uses it; the training job imports it from here too.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

GENERATOR = "fraud-scoring-synthetic-v2"  # v2: the heavy-tailed columns added
N_COMPONENTS = 28
DAY_SECONDS = 86_400
# component -> mean shift (in genuine-row standard deviations) for frauds
FRAUD_SHIFT = {14: -4.5, 17: -4.0, 12: -4.0, 10: -3.0, 4: 2.8, 11: 2.4, 3: -2.2, 7: -1.8, 16: -1.8, 2: 1.2}
N_ACCOUNTS = 5_000
# The heavy-tailed columns, after the ULB-like ones; see the module docstring.
HEAVY_COLUMNS = ("txn_count_30d", "amount_sum_24h", "days_since_last_txn", "account_age_days")


def spec(n: int, seed: int, fraud_rate: float = 0.005) -> dict[str, object]:
    """What identifies a generated data set (its sha256 stands in for a file's)."""
    return {"generator": GENERATOR, "n": int(n), "seed": int(seed), "fraud_rate": float(fraud_rate)}


def spec_sha256(n: int, seed: int, fraud_rate: float = 0.005) -> str:
    return hashlib.sha256(json.dumps(spec(n, seed, fraud_rate), sort_keys=True).encode()).hexdigest()


def generate(n: int, seed: int = 0, fraud_rate: float = 0.005) -> dict[str, np.ndarray]:
    """``n`` transactions in time order as named columns; ``Class`` holds 0/1 as float64."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0.0 < fraud_rate < 0.5:
        raise ValueError("fraud_rate must be within (0, 0.5)")
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < fraud_rate).astype(np.float64)
    fraud = label == 1.0

    # Arrival times: more traffic by day than by night; frauds more uniform over the clock.
    hours = np.where(fraud, rng.uniform(0, 48, n), _daytime_hours(rng, n))
    time = np.sort(np.round(hours * 3600.0))
    # Rows come out in time order; each label follows its row's time.
    order = np.argsort(hours, kind="stable")
    label, fraud = label[order], fraud[order]

    # Components: genuine rows ~ correlated heavy-ish tails; frauds shifted and more spread out.
    scales = np.linspace(2.0, 0.3, N_COMPONENTS)
    comps = rng.standard_t(df=5, size=(n, N_COMPONENTS)) * scales * np.sqrt(3 / 5)
    comps[:, 1] += -0.4 * comps[:, 0]  # a little correlation, as the raw features had
    n_fraud = int(fraud.sum())
    for k, shift in FRAUD_SHIFT.items():
        j = k - 1
        # Each fraud shows each signature only partly, so classes overlap.
        strength = rng.beta(2.0, 1.5, n_fraud)
        comps[fraud, j] = comps[fraud, j] * 1.6 + shift * scales[j] * strength
    amount = np.where(
        fraud,
        np.where(rng.random(n) < 0.6, rng.exponential(8.0, n), rng.lognormal(5.5, 1.2, n)),
        rng.lognormal(3.2, 1.4, n),
    )
    columns: dict[str, np.ndarray] = {"Time": time}
    for j in range(N_COMPONENTS):
        columns[f"V{j + 1}"] = comps[:, j]
    columns["Amount"] = np.round(amount, 2)
    columns["Class"] = label
    columns["account_id"] = np.array([f"acct-{i:05d}" for i in rng.integers(0, N_ACCOUNTS, n)])
    columns.update(_heavy_columns(rng, fraud))
    return columns


def _heavy_columns(rng: np.random.Generator, fraud: np.ndarray) -> dict[str, np.ndarray]:
    """The account history columns: heavy upper tails, fraud shifted on the log scale (partly, per row)."""
    n = fraud.size
    f = fraud * rng.beta(2.0, 1.5, n)  # how strongly each fraud shows the signature (0 for genuine rows)
    rate = np.exp(rng.normal(np.log(20.0) - 2.5 * f, 1.2))
    count = rng.poisson(rate).astype(np.float64)
    spent = np.exp(rng.normal(np.log(60.0) + 2.5 * f, 1.5))
    idle = np.exp(rng.normal(np.log(1.5) + 2.5 * f, 1.4))
    # Pareto (Lomax, shape 1.2) tail for the age, at most 40 years; frauds' age scaled down.
    age = np.minimum(200.0 * ((1.0 - rng.random(n)) ** (-1.0 / 1.2) - 1.0), 40 * 365.0) * np.exp(-3.0 * f)
    return {
        "txn_count_30d": count,
        "amount_sum_24h": np.round(spent, 2),
        "days_since_last_txn": np.round(idle, 3),
        "account_age_days": np.floor(age),
    }


def _daytime_hours(rng: np.random.Generator, n: int) -> np.ndarray:
    day = rng.integers(0, 2, n) * 24
    hour = np.clip(rng.normal(14.0, 4.5, n), 0.0, 23.999)
    return day + hour


def write_csv(path: str | Path, columns: Mapping[str, np.ndarray], quote_header: bool = True) -> Path:
    """Write columns as a CSV (gzip when the name ends in .gz), header quoted like the ULB file."""
    path = Path(path)
    names = list(columns)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as fh:  # type: ignore[operator]
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL if quote_header else csv.QUOTE_MINIMAL)
        writer.writerow(names)
        plain = csv.writer(fh)
        cols = [_as_text(np.asarray(columns[name]), name == "Class") for name in names]
        plain.writerows(zip(*cols, strict=True))
    return path


def _as_text(values: np.ndarray, is_label: bool) -> list[str]:
    if values.dtype.kind in "iu":  # integers as integers (event_time in ms must stay one)
        return [str(v) for v in values.tolist()]
    if values.dtype.kind in "biuf":
        if is_label:
            return [str(int(v)) if v in (0.0, 1.0) else repr(float(v)) for v in values.tolist()]
        return [repr(float(v)) for v in values.tolist()]
    return [str(v) for v in values.tolist()]


# --- v3: customers and terminals with behavioural fraud -------------------------------------------------

GENERATOR_V3 = "fraud-scoring-synthetic-v3"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CHANNELS = ("pos", "web", "atm")
MERCHANT_CATEGORIES = ("grocery", "fuel", "restaurant", "travel", "electronics", "digital_goods", "fashion", "health")
V3_DAYS = 60
LABEL_DELAY_MIN_MS, LABEL_DELAY_MEAN_MS = 3_600_000, 2 * DAY_SECONDS * 1000
TERMINALS_PER_CUSTOMER = 5


def spec_v3(n: int, seed: int) -> dict[str, object]:
    return {"generator": GENERATOR_V3, "n": int(n), "seed": int(seed), "label_time": "1h + exponential(2d)"}


def spec_v3_sha256(n: int, seed: int) -> str:
    return hashlib.sha256(json.dumps(spec_v3(n, seed), sort_keys=True).encode()).hexdigest()


def generate_behavioural(n: int, seed: int = 0, days: int = V3_DAYS) -> dict[str, np.ndarray]:
    """``n`` card payments over ``days`` days by customers at terminals, in event-time order, with fraud
    that shows in history rather than in one payment (after the simulator of Le Borgne et al.,
    *Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook*, 2022):

    - **compromised terminals**: each day a few terminals are compromised; every payment at one in the
      next 14 days is fraud (seen best through the terminal's confirmed fraud, the label-derived features);
    - **account takeovers**: a taken-over customer's card pays several times (3-8x) the customer's usual
      amount, a few payments a day for three days, at terminals the customer never used, mostly on the web;
    - **card testing**: bursts of 5-15 small payments (0.5-3.00) seconds apart on one card.

    Columns: ``transaction_id``, ``event_time`` (epoch ms), ``customer_id``, ``terminal_id``, ``amount``,
    ``channel`` and ``merchant_category`` (categorical), ``Class`` (1 = fraud), ``label_time`` (epoch ms:
    when the label became known, 1 h plus an exponential delay of mean 2 days after the payment). The amounts
    alone overlap (a taken-over card's 5x is a big spender's usual); the behaviour is what tells them apart.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    rng = np.random.default_rng(seed)
    horizon = days * DAY_SECONDS * 1000
    n_customers = max(50, n // days)  # about one payment per customer and day
    n_terminals = max(25, n_customers // 2)
    mean_amount = rng.uniform(5.0, 100.0, n_customers)
    rate = rng.uniform(0.2, 1.8, n_customers)  # payments per day
    terminals = rng.integers(0, n_terminals, (n_customers, TERMINALS_PER_CUSTOMER))
    web_share = rng.beta(1.5, 4.0, n_customers)
    category = rng.integers(0, len(MERCHANT_CATEGORIES), n_terminals)

    # Genuine payments: a Poisson process per customer (a little more than n, cut to n by time below).
    counts = rng.poisson(rate * days * 1.1 * n / (n_customers * days))
    cust = np.repeat(np.arange(n_customers), counts)
    m = cust.size
    time = rng.integers(0, horizon, m)
    amount = np.maximum(rng.normal(mean_amount[cust], mean_amount[cust] / 2), 0.01)
    term = terminals[cust, rng.integers(0, TERMINALS_PER_CUSTOMER, m)]
    channel = np.where(rng.random(m) < web_share[cust], 1, np.where(rng.random(m) < 0.06, 2, 0))
    label = np.zeros(m, dtype=np.int8)
    rows = [(cust, time, amount, term, channel, label)]
    per_day = n / days

    # Account takeovers: extra payments by the fraudster on the customer's card.
    for day in range(days):
        for c in rng.integers(0, n_customers, rng.poisson(per_day / 2500)):
            k = rng.poisson(6) + 1
            rows.append((
                np.full(k, c), day * DAY_SECONDS * 1000 + rng.integers(0, 3 * DAY_SECONDS * 1000, k),
                mean_amount[c] * rng.uniform(3.0, 8.0, k), rng.integers(0, n_terminals, k),
                np.where(rng.random(k) < 0.7, 1, 0), np.ones(k, dtype=np.int8),
            ))  # fmt: skip
    # Card testing: a burst of small payments seconds apart.
    for day in range(days):
        for c in rng.integers(0, n_customers, rng.poisson(per_day / 4000)):
            k = int(rng.integers(5, 16))
            start = day * DAY_SECONDS * 1000 + int(rng.integers(0, DAY_SECONDS * 1000))
            rows.append((
                np.full(k, c), start + np.cumsum(rng.exponential(40_000, k)).astype(np.int64),
                rng.uniform(0.5, 3.0, k), rng.integers(0, n_terminals, k), np.ones(k, dtype=np.int64),
                np.ones(k, dtype=np.int8),
            ))  # fmt: skip
    joined: list[np.ndarray] = [np.concatenate(parts) for parts in zip(*rows, strict=True)]
    cust, time, amount, term, channel, label = joined
    # Compromised terminals: every payment there for 14 days is fraud.
    for day in range(days):
        for t in rng.integers(0, n_terminals, rng.poisson(per_day / 15000)):
            start = day * DAY_SECONDS * 1000
            label[(term == t) & (time >= start) & (time < start + 14 * DAY_SECONDS * 1000)] = 1

    order = np.argsort(time, kind="stable")[:n]
    if order.size < n:
        raise ValueError(f"n={n} is more than {days} days of this generator's traffic; use more days")
    cust, time, amount, term, channel, label = (a[order] for a in joined)
    # Each label becomes known an hour to days after its payment (a chargeback, an analyst's decision).
    label_delay = LABEL_DELAY_MIN_MS + rng.exponential(LABEL_DELAY_MEAN_MS, n).astype(np.int64)
    return {
        "transaction_id": np.array([f"tx-{seed}-{i:08d}" for i in range(n)]),
        "event_time": START_MS + time.astype(np.int64),
        "customer_id": np.array([f"c-{c:06d}" for c in cust.tolist()]),
        "terminal_id": np.array([f"t-{t:06d}" for t in term.tolist()]),
        "amount": np.round(amount, 2),
        "channel": np.array(CHANNELS)[channel],
        "merchant_category": np.array(MERCHANT_CATEGORIES)[category[term]],
        "Class": label.astype(np.float64),
        "label_time": START_MS + time.astype(np.int64) + label_delay,
    }
