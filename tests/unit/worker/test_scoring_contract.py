"""The contract every bundle meets: scores in [0, 1], input untouched, equal to the reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.support.bundles import corrupt_sha256, drop_last_feature, make_bundle, tflite_for
from worker.core.bundle import Bundle, load_bundle
from worker.core.decimals import float32_decimals
from worker.core.errors import BundleError
from worker.core.probe import probe_rows, reference_scores
from worker.core.scoring import Scorer, load_scorer
from worker.core.transforms import FeatureTransform, Transforms


def _reference(spec, raw: np.ndarray) -> np.ndarray:
    scaled = (raw - np.asarray(spec["mean"])) / np.asarray(spec["scale"])
    return 1 / (1 + np.exp(-(scaled @ np.asarray(spec["weights"]) + spec["bias"])))


def test_scores_are_probabilities_equal_to_the_reference_and_input_is_untouched(models, bundle_spec):
    scorer = load_scorer(str(models))
    rng = np.random.default_rng(7)
    for n in (1, 5, 64, 5, 300):  # the interpreter is resized only when the batch size changes
        raw = rng.normal(scale=3, size=(n, 6)).astype(np.float32)
        before = raw.copy()
        scores = scorer.score(raw)
        np.testing.assert_array_equal(raw, before)
        assert scores.shape == (n,) and scores.dtype == np.float32
        assert ((scores >= 0) & (scores <= 1)).all()
        np.testing.assert_allclose(scores, _reference(bundle_spec, raw.astype(np.float64)), atol=1e-5)
    assert scorer.score(np.empty((0, 6), dtype=np.float32)).shape == (0,)


def test_reasons_in_a_batch_equal_reasons_one_row_at_a_time(models):
    scorer = load_scorer(str(models))
    raw = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)
    scaled = scorer.scale(raw)
    many = scorer.top_reasons_many(scaled, raw, 3)
    assert many == [scorer.top_reasons(s, r, 3) for s, r in zip(scaled, raw, strict=True)]
    contrib = scaled[0] * scorer.weights
    assert [c for _, c, _ in many[0]] == sorted((round(float(c), 4) for c in contrib), reverse=True)[:3]
    for row, reasons in zip(raw, many, strict=True):
        for name, _, value in reasons:  # each reason names its feature's raw value, as the worker read it
            assert np.float32(value) == row[scorer.feature_names.index(name)]


def test_reason_values_are_the_shortest_decimals_of_the_float32s_read():
    read = np.array([[149.62, -1.3598071336738, 0.0, 25691.16, 1e-30, -3.4e38]], dtype=np.float32)
    got = float32_decimals(read)
    assert got.tolist() == [[149.62, -1.3598071, 0.0, 25691.16, 1e-30, -3.4e38]]
    wide = (np.random.default_rng(3).normal(size=(400, 3)) * 10.0 ** np.arange(-40, 38, 13)[:, None].repeat(
        67, axis=0)[:400]).astype(np.float32)  # fmt: skip
    values = float32_decimals(wide)
    np.testing.assert_array_equal(values.astype(np.float32), wide)  # each reads back as the float32 scored
    normal = (np.abs(wide) > 1e-15) & (np.abs(wide) < 1e22)
    assert values[normal].tolist() == [float(str(v)) for v in wide[normal]]  # numpy's shortest float32 repr


def test_a_model_whose_weights_are_not_the_manifests_is_refused(tmp_path, bundle_spec):
    """One weight differs: the scaled-zero row (the old probe) scores sigmoid(bias) all the same."""
    other = list(bundle_spec["weights"])
    other[2] += 0.05
    make_bundle(tmp_path, "skewed", promote=False, model_bytes=tflite_for(other, bundle_spec["bias"]), **bundle_spec)
    scorer = Scorer(load_bundle(tmp_path, "skewed"))
    zero = float(scorer.score_scaled(np.zeros((1, 6), dtype=np.float32))[0])
    assert zero == pytest.approx(1 / (1 + np.exp(-bundle_spec["bias"])), abs=1e-6)
    with pytest.raises(BundleError, match=r"probe score .*\(f2 one sd above its mean\) disagrees"):
        load_scorer(str(tmp_path), "skewed")
    fitted = tflite_for(bundle_spec["weights"], bundle_spec["bias"])
    biased = dict(bundle_spec, bias=bundle_spec["bias"] + 0.01)
    make_bundle(tmp_path, "biased", promote=False, model_bytes=fitted, **biased)
    with pytest.raises(BundleError, match="disagrees"):  # its model is the one fitted with the other bias
        load_scorer(str(tmp_path), "biased")


TRANSFORMED = [{"kind": "identity", "clip": [-2.0, 2.0]}, {"kind": "log1p", "clip": [0.0, 100.0]},
               {"kind": "signed_log1p", "clip": None}, {"kind": "identity", "clip": None},
               {"kind": "signed_log1p", "clip": [-50.0, None]}, {"kind": "log1p", "clip": [1.0, None]}]  # fmt: skip


def transformed(bundle_spec: dict) -> dict:
    """The unit bundle with TRANSFORMED and a scaler whose means lie in the transformed clip ranges."""
    return dict(bundle_spec, mean=[0.1, 2.0, -0.3, 0.0, 1.0, 1.5], feature_transforms=TRANSFORMED)


def test_the_probe_goes_through_the_transforms_and_passes_a_consistent_bundle(tmp_path, bundle_spec):
    spec = transformed(bundle_spec)
    make_bundle(tmp_path, "v1", **spec)
    scorer = load_scorer(str(tmp_path))  # probed
    labels, rows = probe_rows(scorer.bundle.manifest)
    assert rows.dtype == np.float32 and np.isfinite(rows).all()
    # Zeros, the centre, six one-sd rows, and the four clipped features beyond each bound they set.
    assert len(labels) == len(rows) == 2 + 6 + (2 + 2 + 1 + 1)
    assert "f1 below its clip 0" in labels and "f1 above its clip 100" in labels and "f4 below its clip -50" in labels
    centre = rows[labels.index("the scaler's mean")]
    np.testing.assert_allclose(scorer.scale(centre[None, :]), 0.0, atol=1e-5)  # through the transforms
    np.testing.assert_allclose(centre[[1, 5]], np.expm1([2.0, 1.5]), rtol=1e-6)  # log1p's inverse of the mean
    np.testing.assert_allclose(scorer.score(rows), reference_scores(scorer.bundle.manifest, rows), atol=1e-5)


def test_a_bundle_whose_transforms_disagree_with_its_scaler_is_refused(tmp_path, bundle_spec):
    """The scaler fitted on raw amounts (mean 88) under a log1p clipped to [0, 100]: log1p(100) = 4.6."""
    spec = transformed(bundle_spec)
    spec["mean"] = [0.1, 88.0, -0.3, 0.0, 1.0, 1.5]
    make_bundle(tmp_path, "raw-scaler", promote=False, **spec)
    with pytest.raises(BundleError, match=r"scaler_mean 88 of f1 lies outside its transformed clip range \[0, 4.6"):
        load_scorer(str(tmp_path), "raw-scaler")
    spec["mean"] = [5.0, 2.0, -0.3, 0.0, 1.0, 1.5]  # identity clipped to [-2, 2]
    make_bundle(tmp_path, "wide", promote=False, **spec)
    with pytest.raises(BundleError, match="scaler_mean 5 of f0"):
        load_scorer(str(tmp_path), "wide")
    spec["mean"] = [0.1, 2.0, -0.3, 0.0, 1.0, 0.2]  # log1p clipped to [1, inf): at least log1p(1) = 0.69
    make_bundle(tmp_path, "low", promote=False, **spec)
    with pytest.raises(BundleError, match=r"scaler_mean 0.2 of f5 .*\[0.693147, inf\]"):
        load_scorer(str(tmp_path), "low")


def test_a_transform_the_scorer_does_not_apply_as_the_contract_says_is_refused(tmp_path, bundle_spec, monkeypatch):
    make_bundle(tmp_path, "v1", **transformed(bundle_spec))
    bundle = load_bundle(tmp_path, "v1")
    Scorer(bundle).probe()
    # A manifest built in code skips the reader's checks; the probe applies them again.
    for bad, message in [
        (FeatureTransform("log1p", None), r"feature_transforms\[1\]: a log1p transform needs"),
        (FeatureTransform("log10", None), r"feature_transforms\[1\] kind 'log10'"),
    ]:
        ts = list(bundle.manifest.feature_transforms)
        ts[1] = bad
        manifest = dataclasses.replace(bundle.manifest, feature_transforms=tuple(ts))
        with pytest.raises(BundleError, match=message):
            Scorer(Bundle(bundle.path, manifest, bundle.model_bytes)).probe()
    # A scorer whose signed_log1p loses the sign, and one that forgets to clip.
    real = Transforms.apply

    def unsigned(self, raw):
        out = real(self, raw)
        out[:, self._signed] = np.abs(out[:, self._signed])
        return out

    monkeypatch.setattr(Transforms, "apply", unsigned)
    with pytest.raises(BundleError, match=r"probe score .* disagrees"):
        Scorer(bundle).probe()

    def unclipped(self, raw):
        self._clipped = None
        return real(self, raw)

    monkeypatch.setattr(Transforms, "apply", unclipped)
    with np.errstate(all="ignore"), pytest.raises(BundleError, match=r"probe score .*(above|below) its clip"):
        Scorer(bundle).probe()  # log1p(-1): a NaN or an infinity, or a score past the clip


def test_a_bundle_with_a_wrong_sha256_or_feature_count_is_refused(tmp_path, bundle_spec):
    corrupt_sha256(make_bundle(tmp_path, "bad-sha", promote=False, **bundle_spec))
    with pytest.raises(BundleError, match="sha256"):
        load_scorer(str(tmp_path), "bad-sha")
    drop_last_feature(make_bundle(tmp_path, "narrow", promote=False, **bundle_spec))
    with pytest.raises(BundleError, match="features"):
        load_scorer(str(tmp_path), "narrow")
