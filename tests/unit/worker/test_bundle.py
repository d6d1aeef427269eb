"""worker.core.bundle: round trip and the failures a reader must refuse."""

from __future__ import annotations

import json

import pytest

from worker.core.bundle import (
    Manifest,
    list_versions,
    load_bundle,
    read_current,
    set_current,
    sha256_hex,
    write_bundle,
)
from worker.core.errors import BundleError
from worker.core.transforms import FeatureTransform

MODEL = b"not really a flatbuffer, but the bundle layer does not care"


def manifest(version="v1", **over) -> Manifest:
    fields = dict(
        version=version, created_at="2026-01-01T00:00:00Z", feature_names=("a", "b"),
        scaler_mean=(0.0, 1.0), scaler_scale=(1.0, 2.0), weights=(0.5, -0.5), bias=-1.0, threshold=0.7,
        threshold_policy={"name": "max-f1"}, model_sha256=sha256_hex(MODEL),
        score_histogram={"edges": [0.0, 0.5, 1.0], "counts": [3.0, 1.0]},
    )
    fields.update(over)
    return Manifest(**fields)


def test_round_trip(tmp_path):
    path = write_bundle(tmp_path, manifest(), MODEL, {"metrics.json": b"{}"})
    assert path == tmp_path / "v1" and (path / "metrics.json").read_bytes() == b"{}"
    assert read_current(tmp_path) is None
    set_current(tmp_path, "v1")
    bundle = load_bundle(tmp_path)
    assert bundle.manifest == manifest() and bundle.model_bytes == MODEL
    assert list_versions(tmp_path) == ["v1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_feature_transforms_round_trip_as_the_contract_spells_them(tmp_path):
    transforms = (FeatureTransform("log1p", (0.0, None)), FeatureTransform("signed_log1p", (-5.0, 5.0)))
    path = write_bundle(tmp_path, manifest(feature_transforms=transforms), MODEL)
    written = json.loads((path / "manifest.json").read_text())["feature_transforms"]
    assert written == [{"kind": "log1p", "clip": [0.0, None]}, {"kind": "signed_log1p", "clip": [-5.0, 5.0]}]
    assert load_bundle(tmp_path, "v1").manifest.feature_transforms == transforms
    # Without the field, or with an empty list, every feature is identity (bundles written before it).
    for version, value in (("v2", None), ("v3", [])):
        path = write_bundle(tmp_path, manifest(version), MODEL)
        data = json.loads((path / "manifest.json").read_text())
        data.pop("feature_transforms")
        if value is not None:
            data["feature_transforms"] = value
        (path / "manifest.json").write_text(json.dumps(data))
        assert load_bundle(tmp_path, version).manifest.feature_transforms == ()


def test_refuses_to_overwrite_a_version(tmp_path):
    write_bundle(tmp_path, manifest(), MODEL)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(tmp_path, manifest(), MODEL)


def test_model_bytes_must_match_sha(tmp_path):
    with pytest.raises(BundleError, match="does not match"):
        write_bundle(tmp_path, manifest(), MODEL + b"x")
    assert list_versions(tmp_path) == []


def test_tampered_model_is_refused(tmp_path):
    path = write_bundle(tmp_path, manifest(), MODEL)
    (path / "model.tflite").write_bytes(MODEL + b"!")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tmp_path, "v1")


@pytest.mark.parametrize(
    "over, message",
    [
        ({"weights": (1.0,)}, "weights has 1 values"),
        ({"scaler_scale": (1.0, 0.0)}, "<= 0"),
        ({"threshold": 1.5}, "outside"),
        ({"score_histogram": {"edges": [0.0, 1.0], "counts": [1.0, 2.0]}}, "score_histogram"),
        ({"feature_names": ("a", "a")}, "duplicates"),
    ],
)
def test_invalid_manifest_is_not_written(tmp_path, over, message):
    with pytest.raises(BundleError, match=message):
        write_bundle(tmp_path, manifest(**over), MODEL)


def test_manifest_of_another_version_is_refused(tmp_path):
    path = write_bundle(tmp_path, manifest(), MODEL)
    data = json.loads((path / "manifest.json").read_text())
    data["version"] = "v2"
    (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="holds a manifest for version v2"):
        load_bundle(tmp_path, "v1")


def test_current_must_name_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        set_current(tmp_path, "missing")
    (tmp_path / "CURRENT").write_text("../etc\n")
    with pytest.raises(BundleError, match="does not name a version"):
        read_current(tmp_path)
    with pytest.raises(BundleError, match="no CURRENT|does not name"):
        load_bundle(tmp_path)
