"""Hot reload: a new CURRENT is served after its checks; a failing bundle leaves the old one serving."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tests.support.bundles import corrupt_sha256, make_bundle
from worker.core.bundle import set_current
from worker.edges.metrics import WorkerMetrics
from worker.models.watcher import ModelWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reload_switches_on_a_good_bundle_and_keeps_serving_on_a_bad_one(models, bundle_spec):
    registry, clock = CollectorRegistry(), Clock()
    watcher = ModelWatcher(str(models), WorkerMetrics(registry), interval=1.0, clock=clock)
    assert watcher.load_initial().version == "v1"
    assert watcher.maybe_reload() is False  # nothing changed

    make_bundle(models, "v2", **dict(bundle_spec, threshold=0.4))
    assert watcher.maybe_reload() is False  # checked at most once per interval
    clock.now += 1.5
    assert watcher.maybe_reload() is True and watcher.version == "v2"
    assert registry.get_sample_value("fraud_model_threshold") == 0.4

    corrupt_sha256(make_bundle(models, "v3", promote=False, **bundle_spec))
    set_current(models, "v3")
    assert watcher.maybe_reload() is False  # checked at most once per interval
    clock.now += 1.5
    assert watcher.maybe_reload() is False and watcher.version == "v2"
    get = registry.get_sample_value
    assert get("fraud_model_reloads_total", {"result": "ok"}) == 1
    assert get("fraud_model_reloads_total", {"result": "failed"}) == 1
    clock.now += 1.5
    assert watcher.maybe_reload() is False  # the same failed CURRENT is not retried every interval
    assert get("fraud_model_reloads_total", {"result": "failed"}) == 1
    assert get("fraud_model_info", {"version": "v2", "sha256": watcher.scorer.bundle.manifest.model_sha256}) == 1


def test_a_bundle_whose_model_or_transforms_disagree_with_its_manifest_is_refused_on_reload(models, bundle_spec):
    """The probe goes through the transforms: the previous model keeps serving either bundle."""
    from tests.support.bundles import tflite_for

    registry, clock = CollectorRegistry(), Clock()
    watcher = ModelWatcher(str(models), WorkerMetrics(registry), interval=1.0, clock=clock)
    watcher.load_initial()
    other = list(bundle_spec["weights"])
    other[0] += 0.1
    make_bundle(models, "wrong-weights", model_bytes=tflite_for(other, bundle_spec["bias"]), **bundle_spec)
    clock.now += 1.5
    assert watcher.maybe_reload() is False and watcher.version == "v1"
    # A log1p clipped to [0, 10] under a scaler fitted on the raw values (mean 40 > log1p(10)).
    transforms = [{"kind": "identity", "clip": None}] * 5 + [{"kind": "log1p", "clip": [0.0, 10.0]}]
    make_bundle(models, "wrong-transform", feature_transforms=transforms,
                **dict(bundle_spec, mean=[*bundle_spec["mean"][:5], 40.0]))  # fmt: skip
    clock.now += 1.5
    assert watcher.maybe_reload() is False and watcher.version == "v1"
    assert registry.get_sample_value("fraud_model_reloads_total", {"result": "failed"}) == 2
    transforms[-1] = {"kind": "log1p", "clip": [0.0, 100.0]}
    make_bundle(models, "v2", feature_transforms=transforms, **dict(bundle_spec, mean=[*bundle_spec["mean"][:5], 2.0]))
    clock.now += 1.5
    assert watcher.maybe_reload() is True and watcher.version == "v2"


def test_with_trusted_keys_only_signed_bundles_serve_and_each_refusal_is_counted(tmp_path, bundle_spec):
    """The issue's acceptance: a tampered signed bundle is refused on hot reload and at start; an
    untampered one serves."""
    from tests.support.bundles import swap_weights
    from tests.support.keys import make_keys
    from worker.core.bundle import SIGNATURE_FILE
    from worker.core.errors import SignatureError

    keys, other = make_keys(tmp_path / "keys", "trainer"), make_keys(tmp_path / "keys", "other")
    models = tmp_path / "models"
    make_bundle(models, "v1", signing_key=keys.signing_key, **bundle_spec)
    registry, clock = CollectorRegistry(), Clock()
    watcher = ModelWatcher(str(models), WorkerMetrics(registry), interval=1.0, clock=clock, trusted_keys=keys.trusted())
    assert watcher.load_initial().bundle.signed_by == keys.key_id

    make_bundle(models, "v2", signing_key=keys.signing_key, **dict(bundle_spec, threshold=0.4))
    clock.now += 1.5
    assert watcher.maybe_reload() is True and watcher.version == "v2"

    tampered = make_bundle(models, "v3", promote=False, signing_key=keys.signing_key, **bundle_spec)
    swap_weights(tampered, [w + 0.5 for w in bundle_spec["weights"]], bundle_spec["bias"])
    make_bundle(models, "v4", promote=False, **bundle_spec)  # unsigned
    make_bundle(models, "v5", promote=False, signing_key=other.signing_key, **bundle_spec)
    for version in ("v3", "v4", "v5"):
        set_current(models, version)
        clock.now += 1.5
        assert watcher.maybe_reload() is False and watcher.version == "v2", version
    get = registry.get_sample_value
    assert get("fraud_model_reloads_total", {"result": "failed"}) == 3
    assert get("fraud_model_reloads_total", {"result": "ok"}) == 1
    for reason, n in {"mismatch": 1, "unsigned": 1, "unknown_key": 1, "malformed": 0}.items():
        assert get("fraud_model_signature_failures_total", {"reason": reason}) == n, reason
    assert get("fraud_model_threshold") == 0.4  # v2 still serving

    # The serving bundle's signature is one of the files a restart needs (/readyz).
    assert watcher.files_problem() is None
    (models / "v2" / SIGNATURE_FILE).unlink()
    assert SIGNATURE_FILE in (watcher.files_problem() or "")

    # A worker started with only the tampered bundle has nothing to serve.
    set_current(models, "v3")
    fresh = ModelWatcher(str(models), WorkerMetrics(CollectorRegistry()), trusted_keys=keys.trusted())
    with pytest.raises(SignatureError, match="v3.*changed after signing"):
        fresh.load_initial()


def test_without_trusted_keys_a_bundle_with_swapped_weights_serves(models, bundle_spec):
    """What the signature check is for: every other check passes such a bundle."""
    from tests.support.bundles import swap_weights

    registry, clock = CollectorRegistry(), Clock()
    watcher = ModelWatcher(str(models), WorkerMetrics(registry), interval=1.0, clock=clock)
    watcher.load_initial()
    swap_weights(make_bundle(models, "v2", promote=False, **bundle_spec), [0.0] * 6, 5.0)
    set_current(models, "v2")
    clock.now += 1.5
    assert watcher.maybe_reload() is True and watcher.version == "v2"
    assert registry.get_sample_value("fraud_model_signature_failures_total", {"reason": "unsigned"}) == 0
