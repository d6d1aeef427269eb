"""A models directory written by an attacker: malformed manifests, hostile pointer files, files added
to or changed in a signed bundle, and a rollback are refused with a ``BundleError`` naming the
problem, never another exception, never a hang, never the file's raw content in a log."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.support.broker import REPO
from tests.support.bundles import make_bundle
from tests.support.keys import make_keys
from worker.core.bundle import (
    CHALLENGER_FILE,
    CURRENT_FILE,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    Manifest,
    load_bundle,
    read_current,
    set_current,
)
from worker.core.errors import BundleError, SignatureError
from worker.core.scoring import load_scorer
from worker.edges.metrics import WorkerMetrics
from worker.models.watcher import ModelWatcher

HUGE = int("9" * 400)


def _manifest(models: Path, version: str = "v1") -> dict:
    return json.loads((models / version / MANIFEST_FILE).read_text())


def _write(models: Path, data: dict, version: str = "v1") -> None:
    (models / version / MANIFEST_FILE).write_text(json.dumps(data))


# Hole 4: malformed manifests ---------------------------------------------------------------------

MALFORMED = {
    "400-digit bias": (lambda m: m.update(bias=HUGE), "'bias'"),
    "wrong-type histogram": (lambda m: m.update(score_histogram={"edges": 5, "counts": [1]}), "score_histogram"),
    "histogram a list": (lambda m: m.update(score_histogram=[1, 2]), "score_histogram"),
    "histogram counts of strings": (
        lambda m: m.update(score_histogram={"edges": [0, 0.5, 1], "counts": ["a", "b"]}), "score_histogram.counts"),
    "400-digit clip bound": (lambda m: m.update(
        feature_transforms=[{"kind": "identity", "clip": [None, HUGE]}] * len(m["feature_names"])), "clip"),
    "NaN weight": (lambda m: m["weights"].__setitem__(0, float("nan")), "'weights'"),
    "Infinity threshold": (lambda m: m.update(threshold=float("inf")), "'threshold'"),
    "400-digit mean": (lambda m: m["scaler_mean"].__setitem__(0, HUGE), "'scaler_mean'"),
    "weight beyond float32": (lambda m: m["weights"].__setitem__(0, 1e300), "'weights'"),
    "tiny scale": (lambda m: m["scaler_scale"].__setitem__(0, 1e-300), "scaler_scale"),
    "short weights": (lambda m: m.update(weights=m["weights"][:-1]), "weights has"),
    "threshold_policy a string": (lambda m: m.update(threshold_policy="ab"), "'threshold_policy'"),
    "metrics a number": (lambda m: m.update(metrics=5), "'metrics'"),
    "training a list": (lambda m: m.update(training=[["a", 1]]), "'training'"),
    "format_version true": (lambda m: m.update(format_version=True), "format_version"),
    "nested garbage": (lambda m: m.update(feature_transforms=[[[[{}]]]] * len(m["feature_names"])),
                       "feature_transforms"),
    "a version with ESC": (lambda m: m.update(version="v1\x1b[2J"), "'version'"),
    "sha256 not hex": (lambda m: m.update(model_sha256="Z" * 64), "model_sha256"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_a_bundle_error_naming_the_field(models, case):
    mutate, needle = MALFORMED[case]
    data = _manifest(models)
    mutate(data)
    _write(models, data)
    with pytest.raises(BundleError) as info:
        load_bundle(models, "v1")
    message = str(info.value)
    assert needle in message and "\n" not in message and "\x1b" not in message and len(message) < 400, message


def test_a_manifest_nested_too_deep_to_parse_is_a_bundle_error(models):
    (models / "v1" / MANIFEST_FILE).write_text("[" * 100_000)
    with pytest.raises(BundleError, match="nested too deep"):
        load_bundle(models, "v1")


def _mutations() -> st.SearchStrategy:
    """A good manifest's key, set to an arbitrary JSON value (or deleted), or one level further down."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    )  # fmt: skip
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6),
                                                                                               inner, max_size=4),
                          max_leaves=12)  # fmt: skip
    return st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), values | st.just(KeyError)), min_size=1,
                    max_size=3)  # fmt: skip


def _mutate(data: dict, mutations) -> dict:
    data = json.loads(json.dumps(data))
    for key_pick, index_pick, value in mutations:
        key = sorted(data)[key_pick % len(data)]
        target = data[key]
        if isinstance(target, list) and target and index_pick % 2:  # one element of a list
            if value is KeyError:
                del target[index_pick % len(target)]
            else:
                target[index_pick % len(target)] = value
        elif isinstance(target, dict) and target and index_pick % 2:  # one entry of an object
            sub = sorted(target)[index_pick % len(target)]
            if value is KeyError:
                del target[sub]
            else:
                target[sub] = value
        elif value is KeyError:
            del data[key]
        else:
            data[key] = value
    return data


@pytest.fixture(scope="module")
def good_manifest(tmp_path_factory) -> dict:
    from tests.unit.worker.conftest import SPEC

    models = tmp_path_factory.mktemp("good")
    make_bundle(models, "v1", score_histogram={"edges": [0.0, 0.5, 1.0], "counts": [3.0, 1.0]},
                feature_transforms=[{"kind": "signed_log1p", "clip": [-5.0, 5.0]}] * 6, **SPEC)  # fmt: skip
    return _manifest(models)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=_mutations())
def test_any_json_mutation_of_a_good_manifest_loads_or_is_a_bundle_error(good_manifest, mutations):
    data = _mutate(good_manifest, mutations)
    try:
        raw = json.dumps(data).encode()
    except ValueError:  # an integer too long for Python to print: not a file anyone can write this way
        return
    try:
        manifest = Manifest.from_dict(json.loads(raw))
    except BundleError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000
        return
    manifest.validate()
    from worker.core.drift import Reference
    from worker.core.transforms import Transforms

    Transforms(manifest.feature_transforms, manifest.n_features)
    try:
        Reference.from_histogram(manifest.score_histogram)
    except ValueError:
        pass  # only turns the drift metric off (docs/metrics.md, "Drift")


def _run_worker(models: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    return subprocess.run([sys.executable, "-m", "worker", "--models-dir", str(models), "--metrics-port", "0",
                           "--bootstrap-servers", "127.0.0.1:1", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize("case", ["400-digit bias", "wrong-type histogram"])
def test_the_worker_started_on_a_malformed_manifest_exits_3_with_one_line(models, case):
    data = _manifest(models)
    MALFORMED[case][0](data)
    _write(models, data)
    proc = _run_worker(models)
    line = proc.stderr.strip()
    assert proc.returncode == 3 and line.count("\n") == 0 and "no servable model" in line, proc.stderr
    assert MALFORMED[case][1] in line, line


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_hot_reload_onto_a_malformed_manifest_keeps_serving_the_old_model(models, bundle_spec, caplog):
    registry, clock = CollectorRegistry(), Clock()
    watcher = ModelWatcher(str(models), WorkerMetrics(registry), interval=1.0, clock=clock)
    watcher.load_initial()
    for n, case in enumerate(("400-digit bias", "wrong-type histogram", "400-digit clip bound"), start=1):
        version = f"v{n + 1}"
        make_bundle(models, version, promote=False, **bundle_spec)
        data = _manifest(models, version)
        MALFORMED[case][0](data)
        _write(models, data, version)
        set_current(models, version)
        clock.now += 1.5
        assert watcher.maybe_reload() is False and watcher.version == "v1"
        assert registry.get_sample_value("fraud_model_reloads_total", {"result": "failed"}) == n
    assert "model reload refused, still serving v1" in caplog.text and "'bias'" in caplog.text


# Hole 8: pointer files ---------------------------------------------------------------------------


def _refused_pointer(models: Path, pointer: str = CURRENT_FILE) -> str:
    with pytest.raises(BundleError) as info:
        read_current(models, pointer)
    return str(info.value)


def test_a_pointer_symlink_to_a_secret_is_refused_and_the_secret_never_shown(tmp_path, models, caplog):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2-the-password\n")
    (models / CURRENT_FILE).unlink()
    (models / CURRENT_FILE).symlink_to(secret)
    message = _refused_pointer(models)
    assert "symbolic link" in message and "hunter2" not in message
    (models / CHALLENGER_FILE).symlink_to(secret)
    assert "hunter2" not in _refused_pointer(models, CHALLENGER_FILE)
    with pytest.raises(BundleError):  # at start: refused too (exit 3 in the worker)
        load_bundle(models)


def test_a_pointer_fifo_is_refused_without_hanging(models):
    (models / CURRENT_FILE).unlink()
    os.mkfifo(models / CURRENT_FILE)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(_refused_pointer(models)), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "reading a FIFO pointer hangs"
    assert result and "FIFO" in result[0], result


def test_a_pointer_directory_or_device_is_refused(models):
    (models / CURRENT_FILE).unlink()
    (models / CURRENT_FILE).mkdir()
    assert "directory" in _refused_pointer(models)
    (models / CURRENT_FILE).rmdir()
    (models / CURRENT_FILE).symlink_to("/dev/zero")
    assert "symbolic link" in _refused_pointer(models)


def test_a_pointer_with_newline_and_esc_is_refused_escaped(models, caplog):
    registry, clock = CollectorRegistry(), Clock()
    watcher = ModelWatcher(str(models), WorkerMetrics(registry), interval=1.0, clock=clock)
    watcher.load_initial()
    forged = b"v1\n2026-12-07 03:00:00 INFO fake line\x1b[2J\x1b]0;owned\x07"
    (models / CURRENT_FILE).write_bytes(forged)
    message = _refused_pointer(models)
    assert "\x1b" not in message and "\n" not in message and "\\x1b" in message and "\\n" in message
    clock.now += 1.5
    with caplog.at_level(logging.INFO):
        assert watcher.maybe_reload() is False and watcher.version == "v1"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "\\x1b[2J" in refusals[0], refusals  # shown escaped, on one line
    assert "\x1b" not in caplog.text and "\x07" not in caplog.text
    assert [r for r in caplog.records if "\n" in r.getMessage()] == []
    assert registry.get_sample_value("fraud_model_reloads_total", {"result": "failed"}) == 1


def test_an_oversized_pointer_is_refused_unread(models):
    (models / CURRENT_FILE).write_bytes(b"v1" + b" " * 10_000_000)
    assert "larger than 256 bytes" in _refused_pointer(models)


@pytest.mark.parametrize("content", [b"", b"../etc", b".", b"..", b".tmp-v1-1234", b"v1/../v1", b"\xff\xfe"])
def test_a_pointer_naming_no_version_is_refused(models, content):
    (models / CURRENT_FILE).write_bytes(content)
    assert "does not name a version" in _refused_pointer(models)


def test_pointers_written_by_set_current_read_back(models):
    set_current(models, "v1", CHALLENGER_FILE)
    assert read_current(models, CHALLENGER_FILE) == "v1" == read_current(models)
    with pytest.raises(BundleError, match="not a bundle version name"):
        set_current(models, "../v1")


# Hole 11: signatures over every file, and rollbacks -----------------------------------------------


@pytest.fixture
def keys(tmp_path):
    return make_keys(tmp_path / "keys", "trainer")


def _signed(tmp_path, bundle_spec, keys, version="20261201T000000Z-aaaaaaaa") -> Path:
    from tests.support.bundles import tflite_for
    from worker.core.bundle import Manifest, sha256_hex, write_bundle

    models = tmp_path / "signed"
    model = tflite_for(bundle_spec["weights"], bundle_spec["bias"])
    manifest = Manifest(
        version=version, created_at="2026-12-01T00:00:00Z", feature_names=tuple(bundle_spec["feature_names"]),
        scaler_mean=tuple(bundle_spec["mean"]), scaler_scale=tuple(bundle_spec["scale"]),
        weights=tuple(bundle_spec["weights"]), bias=bundle_spec["bias"], threshold=0.5, threshold_policy={},
        model_sha256=sha256_hex(model),
    )  # fmt: skip
    write_bundle(models, manifest, model, {"report.html": b"<p>PR AUC 0.80</p>", "metrics.json": b"{}"},
                 signing_key=keys.signing_key)  # fmt: skip
    set_current(models, version)
    return models


def _refused_signature(models: Path, keys, version: str | None = None, **kw) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        load_scorer(str(models), version, trusted_keys=keys.trusted(), **kw)
    return info.value


def test_the_signature_covers_the_report_and_every_other_file(tmp_path, bundle_spec, keys):
    models = _signed(tmp_path, bundle_spec, keys)
    version = read_current(models)
    assert load_scorer(str(models), trusted_keys=keys.trusted()).bundle.signed_by == keys.key_id
    doc = json.loads((models / version / SIGNATURE_FILE).read_text())
    assert sorted(doc["files"]) == ["manifest.json", "metrics.json", "model.tflite", "report.html"]

    (models / version / "report.html").write_bytes(b"<p>PR AUC 0.99</p>")
    error = _refused_signature(models, keys)
    assert error.reason == "mismatch" and "report.html differs from the signed one" in str(error), error
    (models / version / "report.html").write_bytes(b"<p>PR AUC 0.80</p>")
    load_scorer(str(models), trusted_keys=keys.trusted())

    (models / version / "extra.png").write_bytes(b"\x89PNG")
    error = _refused_signature(models, keys)
    assert error.reason == "mismatch" and "extra.png is not covered by the signature" in str(error), error
    (models / version / "extra.png").unlink()

    (models / version / "metrics.json").unlink()
    error = _refused_signature(models, keys)
    assert error.reason == "mismatch" and "metrics.json is signed but missing" in str(error), error
    (models / version / "metrics.json").write_bytes(b"{}")

    (models / version / "plots").mkdir()
    assert "plots is a directory" in str(_refused_signature(models, keys))
    (models / version / "plots").rmdir()
    os.mkfifo(models / version / "pipe")
    assert "pipe is a FIFO" in str(_refused_signature(models, keys))
    (models / version / "pipe").unlink()
    load_scorer(str(models), trusted_keys=keys.trusted())


def test_an_old_format_signature_is_refused_naming_the_command_that_signs_again(tmp_path, bundle_spec, keys):
    models = _signed(tmp_path, bundle_spec, keys)
    version = read_current(models)
    doc = json.loads((models / version / SIGNATURE_FILE).read_text())
    old = {k: doc[k] for k in ("algorithm", "key_id", "signature")}
    (models / version / SIGNATURE_FILE).write_text(json.dumps(old))
    error = _refused_signature(models, keys)
    assert error.reason == "old_format" and "fraud-worker sign-bundle" in str(error), error

    from worker.programs.subcommands.sign_bundle import main

    assert main(["--models-dir", str(models), "--signing-key", str(keys.private), version]) == 0
    assert load_scorer(str(models), trusted_keys=keys.trusted()).bundle.signed_by == keys.key_id
    assert sorted(p.name for p in models.iterdir()) == sorted([CURRENT_FILE, version])  # no temporary file left


def test_min_model_version_refuses_an_older_signed_bundle(tmp_path, bundle_spec, keys):
    models = _signed(tmp_path, bundle_spec, keys, "20261201T000000Z-aaaaaaaa")
    newer = "20261202T000000Z-bbbbbbbb"
    shutil.copytree(_signed(tmp_path / "newer", bundle_spec, keys, newer) / newer, models / newer)
    error = _refused_signature(models, keys, min_version="20261202T000000Z")
    assert error.reason == "rollback" and "20261201T000000Z-aaaaaaaa is older than" in str(error), error
    assert load_scorer(str(models), "20261202T000000Z-bbbbbbbb", trusted_keys=keys.trusted(),
                       min_version="20261202T000000Z").version == "20261202T000000Z-bbbbbbbb"  # fmt: skip

    # The hot reload of a worker with the setting: counted with reason rollback, the newer model serves on.
    set_current(models, "20261202T000000Z-bbbbbbbb")
    registry, clock = CollectorRegistry(), Clock()
    watcher = ModelWatcher(str(models), WorkerMetrics(registry), interval=1.0, clock=clock,
                           trusted_keys=keys.trusted(), min_version="20261202T000000Z")  # fmt: skip
    watcher.load_initial()
    set_current(models, "20261201T000000Z-aaaaaaaa")
    clock.now += 1.5
    assert watcher.maybe_reload() is False and watcher.version == "20261202T000000Z-bbbbbbbb"
    assert registry.get_sample_value("fraud_model_signature_failures_total", {"reason": "rollback"}) == 1

    # At start: exit 3 with one line.
    proc = _run_worker(models, "--trusted-keys", str(keys.public), "--min-model-version", "20261202T000000Z")
    assert proc.returncode == 3 and proc.stderr.strip().count("\n") == 0 and "rollback" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "histogram",
    [{"edges": 5, "counts": [1]}, {"edges": [0, {}], "counts": [1]}, [1, 2], {"edges": [0, HUGE], "counts": [1]},
     {"edges": ["a", "b"], "counts": [1]}],
)  # fmt: skip
def test_the_drift_reference_turns_any_malformed_histogram_into_a_value_error(histogram):
    from worker.core.drift import Reference

    with pytest.raises(ValueError):
        Reference.from_histogram(histogram)


def test_sign_bundle_refuses_a_bundle_that_fails_its_checks_and_a_bad_key(models, keys, capsys):
    from worker.programs.subcommands.sign_bundle import main

    data = _manifest(models)
    data["bias"] = HUGE
    _write(models, data)
    assert main(["--models-dir", str(models), "--signing-key", str(keys.private), "v1"]) == 1
    assert "'bias'" in capsys.readouterr().err and not (models / "v1" / SIGNATURE_FILE).exists()
    assert main(["--models-dir", str(models), "--signing-key", str(keys.public), "v1"]) == 2
    assert main(["--models-dir", str(models), "--signing-key", str(keys.private), "../v1"]) == 2


def test_min_model_version_refuses_an_older_challenger_too(tmp_path, bundle_spec, keys):
    from worker.core.bundle import CHALLENGER_FILE
    from worker.models.challenger import ChallengerWatcher

    models = _signed(tmp_path, bundle_spec, keys, "20261202T000000Z-bbbbbbbb")
    older = "20261201T000000Z-aaaaaaaa"
    shutil.copytree(_signed(tmp_path / "older", bundle_spec, keys, older) / older, models / older)
    champion = load_scorer(str(models), trusted_keys=keys.trusted())
    registry, clock = CollectorRegistry(), Clock()
    watcher = ChallengerWatcher(str(models), WorkerMetrics(registry), interval=1.0, clock=clock,
                                trusted_keys=keys.trusted(), min_version="20261202T000000Z")  # fmt: skip
    set_current(models, older, CHALLENGER_FILE)
    clock.now += 1.5
    assert watcher.maybe_reload(champion) is False and watcher.scorer is None
    assert registry.get_sample_value("fraud_model_signature_failures_total", {"reason": "rollback"}) == 1
    assert registry.get_sample_value("fraud_shadow_reloads_total", {"result": "failed"}) == 1


def test_a_model_or_bundle_file_past_its_bound_is_refused_unread(tmp_path, bundle_spec, keys):
    from worker.core.bundle import MAX_BUNDLE_FILE_BYTES, MAX_MODEL_BYTES, MODEL_FILE

    models = _signed(tmp_path, bundle_spec, keys)
    version = read_current(models)
    with open(models / version / "report.html", "ab") as fh:  # sparse: no disk, and nothing to read
        fh.truncate(MAX_BUNDLE_FILE_BYTES + 1)
    error = _refused_signature(models, keys)
    assert error.reason == "mismatch" and f"report.html is larger than {MAX_BUNDLE_FILE_BYTES} bytes" in str(error)

    plain = tmp_path / "plain"
    make_bundle(plain, "v1", **bundle_spec)
    with open(plain / "v1" / MODEL_FILE, "ab") as fh:
        fh.truncate(MAX_MODEL_BYTES + 1)
    with pytest.raises(BundleError, match=f"model.tflite is larger than {MAX_MODEL_BYTES} bytes"):
        load_scorer(str(plain))
