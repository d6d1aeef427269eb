"""Per-feature transforms (worker/core/transforms.py) and the scorer that applies them before its scaler.

Each kind and clip against numpy written out by hand; the manifest entries a reader must refuse;
an old bundle without ``feature_transforms`` scoring exactly as before; and bad input (a negative
value in a log1p column, NaN or infinity) clipped or dead-lettered, never a NaN score.
"""

from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pytest

from tests.support.bundles import make_bundle
from worker.core.bundle import MANIFEST_FILE, load_bundle
from worker.core.decode import Decoder
from worker.core.errors import BundleError
from worker.core.outputs import build_outputs
from worker.core.probe import reference_scores
from worker.core.scoring import load_scorer
from worker.core.transforms import FeatureTransform, Transforms, read_transforms
from worker.edges.config import WorkerConfig

RNG = np.random.default_rng(19)
# Six features: one of each kind, clipped and not, with one-sided and null bounds.
TRANSFORMS = [
    {"kind": "identity", "clip": None},
    {"kind": "identity", "clip": [-2.0, 3.0]},
    {"kind": "log1p", "clip": [0.0, None]},
    {"kind": "log1p", "clip": [0.5, 1000.0]},
    {"kind": "signed_log1p", "clip": None},
    {"kind": "signed_log1p", "clip": [None, 50.0]},
]


def by_hand(raw: np.ndarray, specs=TRANSFORMS) -> np.ndarray:
    """clip, then kind, one column at a time in float64."""
    out = np.array(raw, dtype=np.float64)
    for j, t in enumerate(specs):
        lo, hi = t["clip"] or (None, None)
        col = out[:, j]
        col = np.where(col < lo, lo, col) if lo is not None else col
        col = np.where(col > hi, hi, col) if hi is not None else col
        if t["kind"] == "log1p":
            col = np.log(1.0 + col)
        elif t["kind"] == "signed_log1p":
            col = np.sign(col) * np.log(1.0 + np.abs(col))
        out[:, j] = col
    return out


def transforms(specs=TRANSFORMS) -> Transforms:
    return Transforms(read_transforms(specs, len(specs)), len(specs))


def raw_rows(n: int) -> np.ndarray:
    """Heavy tails on both sides, values beyond every clip bound, negatives in the log1p columns."""
    return (RNG.standard_t(1.5, size=(n, len(TRANSFORMS))) * 30).astype(np.float32)


def test_each_kind_and_clip_matches_the_formula_written_out():
    raw = np.concatenate([raw_rows(500), np.array([[0, -2, 0, 0.5, 0, 50], [-5, 3.5, -1, 2000, -1e30, 1e30]])])
    got = transforms().apply(raw.astype(np.float32))
    np.testing.assert_allclose(got, by_hand(raw.astype(np.float32)), rtol=2e-6, atol=1e-6)
    assert got[-1, 1] == 3.0 and got[-1, 2] == 0.0  # clipped to hi; a negative log1p value to its lower bound
    assert got[-1, 3] == pytest.approx(np.log1p(1000.0)) and got[-1, 5] == pytest.approx(np.log1p(50.0))
    assert got[-1, 4] == pytest.approx(-np.log1p(1e30), rel=1e-6)  # unbounded signed_log1p keeps the far tail


@pytest.mark.parametrize(
    "spec, raw, want",
    [
        ({"kind": "identity", "clip": [None, 1.0]}, [-7.0, 0.5, 9.0], [-7.0, 0.5, 1.0]),
        ({"kind": "identity", "clip": [-1.0, None]}, [-7.0, 0.5, 9.0], [-1.0, 0.5, 9.0]),
        ({"kind": "identity", "clip": [None, None]}, [-7.0, 0.5, 9.0], [-7.0, 0.5, 9.0]),
        ({"kind": "identity", "clip": [2.0, 2.0]}, [-7.0, 0.5, 9.0], [2.0, 2.0, 2.0]),
        ({"kind": "log1p", "clip": [0.0, None]}, [-7.0, 0.0, 9.0], [0.0, 0.0, np.log1p(9.0)]),
        ({"kind": "signed_log1p", "clip": [None, None]}, [-7.0, 0.0, 9.0], [-np.log1p(7.0), 0.0, np.log1p(9.0)]),
        ({"kind": "signed_log1p", "clip": [-1.0, 1.0]}, [-7.0, 0.25, 9.0], [-np.log1p(1), np.log1p(0.25), np.log1p(1)]),
    ],
)
def test_one_sided_null_and_degenerate_clip_bounds(spec, raw, want):
    got = transforms([spec]).apply(np.asarray(raw, dtype=np.float32)[:, None])[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_negative_value_in_a_log1p_column_is_clipped_never_nan():
    raw = np.array([[-1.0], [-1e30], [-0.5], [-np.finfo(np.float32).max]], dtype=np.float32)
    got = transforms([{"kind": "log1p", "clip": [0.0, 100.0]}]).apply(raw)
    assert np.isfinite(got).all() and (got == 0.0).all()
    got = transforms([{"kind": "log1p", "clip": [3.0, None]}]).apply(raw)
    np.testing.assert_allclose(got, np.log1p(3.0), rtol=1e-6)


def test_input_is_not_mutated_and_float32_in_gives_float32_out():
    raw = raw_rows(64)
    before = raw.copy()
    out = transforms().apply(raw)
    np.testing.assert_array_equal(raw, before)
    assert out.dtype == np.float32 and out is not raw and not np.shares_memory(out, raw)
    frozen = raw.copy()
    frozen.flags.writeable = False  # the decoder's matrix is a read-only view of its buffer
    np.testing.assert_array_equal(transforms().apply(frozen), out)
    ident = Transforms((), len(TRANSFORMS))
    assert ident.is_identity and not np.shares_memory(ident.apply(raw), raw)
    assert transforms().apply(raw.astype(np.float64)).dtype == np.float64


def test_a_batch_equals_row_by_row():
    raw = raw_rows(300)
    t = transforms()
    batch = t.apply(raw)
    rows = np.concatenate([t.apply(raw[i : i + 1]) for i in range(len(raw))])
    np.testing.assert_array_equal(batch, rows)


def test_columns_in_any_order_give_the_same_values():
    """Consecutive columns of a kind are changed in place through a view, scattered ones through a copy."""
    perm = [4, 0, 2, 5, 1, 3]  # the signed_log1p and log1p columns no longer side by side
    raw = raw_rows(200)
    np.testing.assert_array_equal(transforms([TRANSFORMS[j] for j in perm]).apply(raw[:, perm]),
                                  transforms().apply(raw)[:, perm])  # fmt: skip


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"kind": "log2", "clip": None}, {"kind": "identity", "clip": None}], r"feature_transforms\[0\] kind 'log2'"),
        ([{"kind": "identity", "clip": None}, {"clip": None}], r"feature_transforms\[1\] kind None"),
        ([{"kind": "identity", "clip": [3.0, 1.0]}, {"kind": "identity", "clip": None}], r"\[0\] clip has lo 3.0 > hi"),
        ([{"kind": "identity", "clip": [1.0]}, {"kind": "identity", "clip": None}], r"\[0\] clip must be \[lo, hi\]"),
        ([{"kind": "identity", "clip": "0,1"}, {"kind": "identity", "clip": None}], r"\[0\] clip must be \[lo, hi\]"),
        ([{"kind": "identity", "clip": [0, "1"]}, {"kind": "identity", "clip": None}], r"\[0\] clip bounds must be"),
        ([{"kind": "identity", "clip": [0, True]}, {"kind": "identity", "clip": None}], r"\[0\] clip bounds must be"),
        ([{"kind": "identity", "clip": None}, {"kind": "log1p", "clip": None}], r"\[1\]: a log1p transform needs"),
        ([{"kind": "identity", "clip": None}, {"kind": "log1p", "clip": [None, 5]}], r"\[1\]: a log1p transform needs"),
        ([{"kind": "identity", "clip": None}, {"kind": "log1p", "clip": [-1, 5]}], r"\[1\]: a log1p transform needs"),
        ([{"kind": "identity", "clip": None}, "log1p"], r"feature_transforms\[1\] is not an object"),
        ([{"kind": "identity", "clip": None}], "has 1 entries for 2 features"),
        ([{"kind": "identity", "clip": None}] * 3, "has 3 entries for 2 features"),
        ({"kind": "identity"}, "must be a list"),
        ("identity", "must be a list"),
    ],
)
def test_malformed_manifest_entries_are_refused_naming_the_entry(tmp_path, entries, message):
    spec = dict(feature_names=("a", "b"), mean=[0.0, 0.0], scale=[1.0, 1.0], weights=[0.5, -0.5], bias=-1.0)
    make_bundle(tmp_path, "v1", threshold=0.5, **spec)
    path = tmp_path / "v1" / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["feature_transforms"] = entries
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path, "v1")
    # A non-finite bound cannot be written as JSON by json.dumps's default, but a reader may meet one.
    with pytest.raises(BundleError, match="finite float32 numbers or null"):
        FeatureTransform.from_dict({"kind": "identity", "clip": [float("nan"), 1.0]})


def test_an_old_bundle_without_feature_transforms_loads_and_scores_exactly_as_before(tmp_path, bundle_spec):
    make_bundle(tmp_path, "old", promote=False, **bundle_spec)
    data = json.loads((tmp_path / "old" / MANIFEST_FILE).read_text())
    del data["feature_transforms"]  # as written before the field existed
    (tmp_path / "old" / MANIFEST_FILE).write_text(json.dumps(data))
    identity = [{"kind": "identity", "clip": None}] * len(bundle_spec["feature_names"])
    make_bundle(tmp_path, "explicit", promote=False, feature_transforms=identity, **bundle_spec)
    old, explicit = load_scorer(str(tmp_path), "old"), load_scorer(str(tmp_path), "explicit")
    assert old.bundle.manifest.feature_transforms == () and old.transforms.is_identity
    assert len(explicit.bundle.manifest.feature_transforms) == len(identity)
    raw = (RNG.normal(size=(257, len(identity))) * 5).astype(np.float32)
    # Scaling is (raw - mean) / scale, bit for bit as the scorer computed it before transforms existed.
    manual = (raw - np.asarray(bundle_spec["mean"], dtype=np.float32)) * (
        1.0 / np.asarray(bundle_spec["scale"], dtype=np.float64)
    ).astype(np.float32)
    np.testing.assert_array_equal(old.scale(raw), manual)
    np.testing.assert_array_equal(old.score(raw), old.score_scaled(manual))
    np.testing.assert_array_equal(old.score(raw), explicit.score(raw))
    z = (raw.astype(np.float64) - bundle_spec["mean"]) / bundle_spec["scale"]
    reference = 1 / (1 + np.exp(-(z @ bundle_spec["weights"] + bundle_spec["bias"])))
    np.testing.assert_allclose(old.score(raw), reference, atol=1e-6)


def transformed_spec(bundle_spec: dict) -> dict:
    """The unit bundle's six features with TRANSFORMS, and a scaler fitted on the transformed values."""
    t = by_hand(raw_rows(5000))
    return dict(bundle_spec, mean=t.mean(axis=0).tolist(), scale=t.std(axis=0).tolist(), feature_transforms=TRANSFORMS)


def test_a_bundle_with_transforms_scores_as_the_contract_says(tmp_path, bundle_spec):
    spec = transformed_spec(bundle_spec)
    make_bundle(tmp_path, "v1", **spec)
    scorer = load_scorer(str(tmp_path))
    raw = raw_rows(400)
    z = (by_hand(raw) - spec["mean"]) / spec["scale"]
    want = 1 / (1 + np.exp(-(z @ spec["weights"] + spec["bias"])))
    np.testing.assert_allclose(scorer.score(raw), want, atol=1e-5)
    np.testing.assert_allclose(reference_scores(scorer.bundle.manifest, raw), want, atol=1e-12)
    # The reasons' contributions are weight x transformed, scaled value; their values are the raw ones.
    reasons = scorer.top_reasons_many(scorer.scale(raw), raw, 2)
    for i in (0, 7, 399):
        for name, contribution, value in reasons[i]:
            j = spec["feature_names"].index(name)
            assert contribution == pytest.approx(spec["weights"][j] * z[i, j], abs=1e-3)
            assert np.float32(value) == raw[i, j]


Record = namedtuple("Record", "topic partition offset timestamp key value")


def test_bad_input_in_a_transformed_column_is_clipped_or_dead_lettered_never_a_nan_score(tmp_path, bundle_spec):
    spec = transformed_spec(bundle_spec)
    make_bundle(tmp_path, "v1", **spec)
    scorer = load_scorer(str(tmp_path))
    names = spec["feature_names"]

    def event(i: int, **over: object) -> bytes:
        doc: dict[str, object] = {"transaction_id": f"tx-{i}", **dict.fromkeys(names, 1.0)}
        doc.update(over)
        return json.dumps(doc, allow_nan=True).encode()

    values = [
        event(0, f2=-5.0, f3=-1e30),  # negative values in both log1p columns: clipped, scored
        event(1, f2=float("nan")),
        event(2, f3=float("inf")),
        event(3, f4=float("-inf")),
        b'{"transaction_id": "tx-4", "f0": 1, "f1": 1, "f2": 1e400, "f3": 1, "f4": 1, "f5": 1}',
        event(5, f5=1e35, f4=-1e35),
    ]
    decoded = Decoder(scorer.feature_names).decode_batch(values)
    assert decoded.index == [0, 5]
    assert [(i, e.reason) for i, e in decoded.errors] == [(1, "non_finite"), (2, "non_finite"), (3, "non_finite"),
                                                          (4, "non_finite")]  # fmt: skip
    scaled = scorer.scale(decoded.features)
    scores = scorer.score_scaled(scaled)
    assert np.isfinite(scaled).all() and np.isfinite(scores).all()
    np.testing.assert_allclose(scores, reference_scores(scorer.bundle.manifest, decoded.features), atol=1e-5)
    records = [Record("in", 0, n, 1_000 + n, None, v) for n, v in enumerate(values)]
    config = WorkerConfig(scores_topic="scores")
    out = build_outputs(config.output_settings, scorer, records, decoded, scaled, scores, 2_000)
    by_topic: dict[str, list] = {}
    for topic, _, value, headers in out.records:
        by_topic.setdefault(topic, []).append((value, dict(headers or [])))
    assert [json.loads(v)["transaction_id"] for v, _ in by_topic["scores"]] == ["tx-0", "tx-5"]
    assert [h["error"] for _, h in by_topic[config.dlq_topic]] == [b"non_finite"] * 4
    first = json.loads(by_topic["scores"][0][0])
    assert first["score"] == pytest.approx(float(scores[0]))
    raw_of = dict(zip(names, decoded.features[0].tolist(), strict=True))
    assert all(r["value"] == pytest.approx(raw_of[r["feature"]]) for r in first["reasons"])
    assert "features" not in first, "score records carry the features only when asked"
    with_features = WorkerConfig(scores_topic="scores", scores_include_features=True)
    out = build_outputs(with_features.output_settings, scorer, records, decoded, scaled, scores, 2_000)
    docs = [json.loads(v) for topic, _, v, _ in out.records if topic == "scores"]
    assert list(docs[0]["features"]) == list(names), "every feature, in the model's order"
    assert docs[0]["features"]["f2"] == -5.0 and docs[1]["features"]["f5"] == pytest.approx(1e35, rel=1e-7)
    alerts = [json.loads(v) for topic, _, v, _ in out.records if topic == with_features.alert_topic]
    assert all("features" not in a for a in alerts), "alerts stay as they are"


def test_transforms_reject_a_list_of_the_wrong_length_in_code():
    with pytest.raises(ValueError, match="2 transforms for 3 features"):
        Transforms([FeatureTransform(), FeatureTransform()], 3)
