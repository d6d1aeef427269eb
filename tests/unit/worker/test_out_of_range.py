"""A feature beyond the model's range is dead-lettered ``out_of_range``, never scored (worker/core/scoring.py).

The rule: ``|(kind(x) - scaler_mean) / scaler_scale| > SCALED_LIMIT`` for some feature, ``kind`` its
transform without its clip. ``RawRange`` turns it into raw bounds per feature; these tests hold the
bounds to the rule in float64 for each kind, with and without clips, show that no value inside (or
near) the training range is refused, on the ULB data too, and that ``Scorer.admit`` moves the rows
to the batch's errors in input order, for the backtest as for the loop.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from tests.support.bundles import ULB_FEATURES
from tests.unit.worker.conftest import SPEC
from worker.core.bundle import Manifest
from worker.core.decode import OUT_OF_RANGE, DecodedBatch, Decoder, reject_rows, take_rows
from worker.core.errors import DecodeError
from worker.core.scoring import SCALED_LIMIT, RawRange, load_scorer
from worker.core.transforms import FeatureTransform
from worker.programs.subcommands import backtest

TOP = float(np.finfo(np.float32).max)
KINDS = {
    "identity": lambda x: x,
    "log1p": np.log1p,
    "signed_log1p": lambda x: np.sign(x) * np.log1p(np.abs(x)),
}


def manifest(kinds, mean, scale, clips=None) -> Manifest:
    n = len(kinds)
    clips = clips or [None] * n
    return Manifest(
        "v1", "2026-01-01T00:00:00Z", tuple(f"f{j}" for j in range(n)), tuple(mean), tuple(scale), (0.1,) * n,
        0.0, 0.5, {}, "0" * 64,
        feature_transforms=tuple(FeatureTransform(k, c) for k, c in zip(kinds, clips, strict=True)),
    )  # fmt: skip


def beyond_by_the_rule(m: Manifest, x: np.ndarray) -> np.ndarray:
    """The rule itself, in float64: True where a value lies more than SCALED_LIMIT sd from the mean; a log1p
    feature's negative values judged as 0, where its domain starts (its clip, >= 0, moves them there or above)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape, dtype=bool)
    for j, t in enumerate(m.feature_transforms):
        v = np.maximum(x[:, j], 0.0) if t.kind == "log1p" else x[:, j]
        z = (KINDS[t.kind](v) - m.scaler_mean[j]) / m.scaler_scale[j]
        out[:, j] = np.abs(z) > SCALED_LIMIT
    return out


def around_the_bounds(r: RawRange) -> np.ndarray:
    """Per feature, the float32 values at and next to each finite bound, and the float32 extremes."""
    cols = []
    for lo, hi in zip(r.lo, r.hi, strict=True):
        vals = [TOP, -TOP, 0.0, 1.0, -1.0]
        for b in (lo, hi):
            if math.isfinite(b) and abs(b) <= TOP:
                f = np.float32(b)
                vals += [f, np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf))]
                vals += [np.nextafter(np.nextafter(f, np.float32(np.inf)), np.float32(np.inf))]
        cols.append(vals)
    width = max(map(len, cols))
    return np.array([[c[i % len(c)] for c in cols] for i in range(width)], dtype=np.float32)


CASES = {
    "identity": (["identity"] * 3, [0.0, 1e5, -3.0], [1.0, 2e3, 1e-3], None),
    "identity-clipped": (["identity"] * 2, [0.5, 1e5], [0.3, 4e4], [(0.0, 1.0), (0.0, 172792.0)]),
    "log1p": (["log1p"] * 3, [4.0, 1.0, 60.0], [1.5, 1e-3, 1e-3], [(0.0, 25691.16)] * 3),
    "signed_log1p": (["signed_log1p"] * 3, [0.0, -2.0, 50.0], [1.0, 1e-4, 1e-3], [None, (-50.0, None), None]),
    "mixed": (["identity", "log1p", "signed_log1p"], [94813.0, 3.2, -0.1], [47488.0, 1.6, 0.9], None),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_bounds_refuse_exactly_what_the_rule_refuses(case):
    kinds, mean, scale, clips = CASES[case]
    m = manifest(kinds, mean, scale, clips)
    r = RawRange(m)
    for x in (around_the_bounds(r), around_the_bounds(r).astype(np.float64)):
        expected = beyond_by_the_rule(m, x).any(axis=1)
        got = np.zeros(len(x), dtype=bool)
        got[[j for j, _ in r.rows(x)]] = True
        np.testing.assert_array_equal(got, expected, err_msg=f"{case} {x.dtype}: rows {x[got != expected]}")
    assert r.rows(np.full((1, len(kinds)), TOP, dtype=np.float32)) or case == "signed_log1p"


def test_the_bounds_of_each_kind():
    kinds = ["identity", "log1p", "log1p", "signed_log1p", "signed_log1p"]
    clips = [None, (0.0, None), (0.0, None), None, None]
    m = manifest(kinds, [5.0, 2.0, 60.0, 0.0, 3.0], [2.0, 1.0, 1e-3, 1e-3, 1.0], clips)
    r = RawRange(m)
    assert (r.lo[0], r.hi[0]) == (5.0 - 2e4, 5.0 + 2e4)  # identity: mean ± 1e4 · scale
    assert r.lo[1] == -np.inf and r.hi[1] == np.inf  # log1p: 0 is within 1e4 sd (the clip governs below); inf
    np.testing.assert_allclose([r.lo[2], r.hi[2]], np.expm1([50.0, 70.0]))  # a narrow log1p column far from 0
    assert r.rows(np.array([[5.0, 0.0, 0.0, 0.0, 0.0]]))[0][1].detail.startswith("'f2' is 0.0")  # 6e4 sd below
    np.testing.assert_allclose([r.lo[3], r.hi[3]], [-np.expm1(10.0), np.expm1(10.0)])
    assert (r.lo[4], r.hi[4]) == (-np.inf, np.inf)  # sign(t) · expm1(|t|) overflows at t = ±1e4: no bound


def test_no_value_within_or_near_the_training_range_is_refused():
    """Values up to 100 training standard deviations beyond the training range (clipped, never refused)."""
    rng = np.random.default_rng(3)
    train = np.column_stack([rng.normal(100, 5, 5000), rng.lognormal(3, 2, 5000), rng.standard_t(3, 5000)])
    kinds = ["identity", "log1p", "signed_log1p"]
    t = np.column_stack([KINDS[k](train[:, j]) for j, k in enumerate(kinds)])
    clips = [(float(a), float(b)) for a, b in zip(train.min(axis=0), train.max(axis=0), strict=True)]
    m = manifest(kinds, t.mean(axis=0), t.std(axis=0), clips)
    r = RawRange(m)
    assert r.rows(train.astype(np.float32)) == [] and r.rows(train) == []
    lo, hi = np.array(clips).T
    near = np.vstack([lo, hi, np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf), lo - 100 * t.std(axis=0),
                      hi + 100 * t.std(axis=0), hi * 10]).astype(np.float32)  # fmt: skip
    near[:, 1] = np.maximum(near[:, 1], 0.0)
    assert r.rows(near) == []


@pytest.fixture(scope="module")
def ulb_rows() -> np.ndarray:
    from tests.support.broker import REPO

    path = REPO.parent / "shared" / "datasets" / "creditcard.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    from training.data import load_csv

    data = load_csv(path)
    assert tuple(data.feature_names) == ULB_FEATURES
    return np.asarray(data.X, dtype=np.float64)


@pytest.mark.parametrize("transforms", [False, True], ids=["identity-no-clips", "as-fraud-train-chooses"])
def test_a_bundle_trained_on_a_ulb_slice_refuses_none_of_the_284807_ulb_rows(ulb_rows, transforms):
    """Fitted on the first 20,000 rows (as the integration tests' model), every row of the data set is scored."""
    from training.transforms import choose
    from worker.core.transforms import Transforms

    train = ulb_rows[:20_000]
    fts = [c.transform for c in choose(train, ULB_FEATURES)] if transforms else [FeatureTransform()] * 30
    t = Transforms(fts, 30).apply(train)
    m = manifest([f.kind for f in fts], t.mean(axis=0), t.std(axis=0), [f.clip for f in fts])
    r = RawRange(m)
    assert r.rows(ulb_rows.astype(np.float32)) == []
    extreme = np.full((3, 30), TOP, dtype=np.float32)
    extreme[1] = -TOP
    extreme[2, ::2] = -TOP
    assert [j for j, _ in r.rows(extreme)] == [0, 1, 2]  # Time is identity in both: 3.4e38 is refused


def test_the_error_names_the_first_feature_its_value_and_range():
    r = RawRange(manifest(["identity"] * 3, [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]))
    x = np.array([[0.0, 0.0, 0.0], [0.0, 3.4e38, -4e4], [1e4, -2e4, 3e4]], dtype=np.float32)
    [(j, err)] = r.rows(x)
    assert j == 1 and err.reason == OUT_OF_RANGE == "out_of_range"
    assert err.detail == ("'f1' is 3.4e+38, more than 10000 training standard deviations from its mean "
                          "(its range [-20000, 20000]) (and 1 more features)")  # fmt: skip
    odd = RawRange(dataclasses.replace(manifest(["identity"], [0.0], [1.0]), feature_names=("\x1b[2J" + "x" * 200,)))
    [(_, err)] = odd.rows(np.array([[TOP]], dtype=np.float32))
    assert err.detail.startswith("'\\x1b[2Jxxx") and len(err.detail) < 220  # escaped and cut, as other details


def _batch(n: int, errors: list[tuple[int, DecodeError]], width: int = 2) -> DecodedBatch:
    """A decoded batch of ``n`` records: the positions not in ``errors`` are its valid rows."""
    bad = {i for i, _ in errors}
    index = [i for i in range(n) if i not in bad]
    features = np.array([[i, -i] for i in index], dtype=np.float32).reshape(len(index), width)
    return DecodedBatch(features, [f"tx-{i}" for i in index], [i * 10 for i in index], index, errors)


def test_reject_rows_moves_rows_to_the_errors_in_input_order():
    e = [(1, DecodeError("invalid_json", "x")), (4, DecodeError("too_large", "y"))]
    d = _batch(7, e)  # valid rows 0, 2, 3, 5, 6
    out = reject_rows(d, [(1, DecodeError(OUT_OF_RANGE, "a")), (4, DecodeError(OUT_OF_RANGE, "b"))])
    assert out.index == [0, 3, 5] and out.transaction_ids == ["tx-0", "tx-3", "tx-5"]
    assert out.event_times == [0, 30, 50] and out.features[:, 0].tolist() == [0.0, 3.0, 5.0]
    assert [(i, err.reason) for i, err in out.errors] == [
        (1, "invalid_json"), (2, OUT_OF_RANGE), (4, "too_large"), (6, OUT_OF_RANGE)
    ]  # fmt: skip
    assert reject_rows(d, []) is d
    everything = reject_rows(d, [(j, DecodeError(OUT_OF_RANGE, "")) for j in range(5)])
    assert everything.index == [] and everything.features.shape == (0, 2) and len(everything.errors) == 7
    assert take_rows(d, [4]).index == [6] and take_rows(d, [4]).errors is d.errors


def test_admit_dead_letters_the_rows_beyond_the_range_and_scores_the_rest(models):
    scorer = load_scorer(str(models))
    decoder = Decoder(scorer.feature_names)
    names = scorer.feature_names

    def event(tid: str, **values: float) -> bytes:
        return json.dumps({"transaction_id": tid, **dict.fromkeys(names, 0.0), **values}).encode()

    hi = SPEC["mean"][2] + 0.99 * SCALED_LIMIT * SPEC["scale"][2]  # 9,900 sd: inside the range, scored
    values = [event("ok-0"), b"{", event("plus", **dict.fromkeys(names, TOP)), event("near", f2=hi),
              event("minus", f5=-TOP), event("ok-5", f0=3.0)]  # fmt: skip
    decoded = scorer.admit(decoder.decode_batch(values))
    assert decoded.transaction_ids == ["ok-0", "near", "ok-5"] and decoded.index == [0, 3, 5]
    assert [(i, e.reason) for i, e in decoded.errors] == [(1, "invalid_json"), (2, OUT_OF_RANGE), (4, OUT_OF_RANGE)]
    assert "'f5' is -3.4028235e+38" in decoded.errors[2][1].detail
    scored = scorer.score_batch(decoded.features)
    assert scored.clipped_scaled == 0 and np.isfinite(scored.scores).all()
    clean = decoder.decode_batch([event("a"), event("b")])
    assert scorer.admit(clean) is clean


def test_backtest_rejects_an_event_beyond_the_range_with_the_same_code(models, tmp_path):
    names = SPEC["feature_names"]
    lines = [json.dumps({"transaction_id": f"tx-{i}", **dict.fromkeys(names, float(i))}) for i in range(3)]
    lines.insert(1, json.dumps({"transaction_id": "far", **dict.fromkeys(names, 0.0), "f3": -3.4e38}))
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n")
    assert backtest.main(["--jobs", "1", "--quiet", "--models-dir", str(models), "--input", str(src),
                          "--output", str(out)]) == 0  # fmt: skip
    assert [json.loads(x)["transaction_id"] for x in out.read_text().splitlines()] == ["tx-0", "tx-1", "tx-2"]
    [reject] = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert reject["line"] == 2 and reject["error"] == OUT_OF_RANGE
    assert reject["error_detail"].startswith("'f3' is -3.4e+38")
