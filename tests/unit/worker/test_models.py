"""Hot reload: a new CURRENT is served after its checks; a failing bundle leaves the old one serving."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tests.support.bundles import corrupt_sha256, make_bundle
from worker.bundle import set_current
from worker.metrics import WorkerMetrics
from worker.models import ModelWatcher


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
