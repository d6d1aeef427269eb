"""docs/design.md against the code, so the contract cannot fall behind it silently.

Each list the document holds is compared with the code's own source of truth, both ways (nothing
missing, nothing stale): the metrics a fresh ``WorkerMetrics`` registers (name, type, labels), the
decoder's reason codes (``worker.core.decode.REASONS``), the fields of ``worker.core.bundle.Manifest`` (and
which of them a manifest may leave out), and the worker's settings (``worker.edges.config.SETTINGS``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from worker.core.bundle import Manifest
from worker.core.decode import REASONS
from worker.core.errors import BundleError
from worker.edges.config import SETTINGS
from worker.edges.metrics import WorkerMetrics

DOC = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text(encoding="utf-8")
HEADING = re.compile(r"^(#{2,6}) (.+)$", re.M)
ROW = re.compile(r"^\| `([^`]+)` \|(.*)\|\s*$", re.M)


def section(title: str) -> str:
    """The text under the heading ``title`` up to the next heading of the same or a higher level."""
    for match in HEADING.finditer(DOC):
        if match.group(2).strip() == title:
            level = len(match.group(1))
            rest = DOC[match.end() :]
            end = next((m.start() for m in HEADING.finditer(rest) if len(m.group(1)) <= level), len(rest))
            return rest[:end]
    raise AssertionError(f"docs/design.md has no heading {title!r}")


def table(title: str) -> dict[str, list[str]]:
    """First-column name (in backticks) -> the other cells, for the table rows under ``title``."""
    rows = {}
    for name, cells in ROW.findall(section(title)):
        assert name not in rows, f"{name} is listed twice under {title!r}"
        rows[name] = [c.strip() for c in cells.split("|")]
    assert rows, f"no table rows under {title!r}"
    return rows


def registered_metrics() -> dict[str, tuple[str, set[str]]]:
    """Exposed name -> (type, label names) for every family a fresh WorkerMetrics registers."""
    registry = CollectorRegistry()
    m = WorkerMetrics(registry)
    # Children for the labelled gauges, so every family's label names show in its samples.
    m.set_lag({0: 1})
    m.set_model("v1", "a" * 64, 0.5)
    m.set_model("v2", "b" * 64, 0.5)  # a switch: the previous champion's series
    m.set_shadow_model(("v3", "c" * 64))
    out = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        out[name] = (family.type, labels)
    return out


def assert_documented(registered: dict[str, tuple[str, set[str]]], documented: dict[str, list[str]]) -> None:
    """The same metrics on both sides, each with the same type and label names."""
    assert set(registered) == set(documented), (
        f"missing from docs/design.md: {sorted(set(registered) - set(documented))}; "
        f"documented but not registered: {sorted(set(documented) - set(registered))}"
    )
    for name, (kind, labels) in registered.items():
        doc_type, doc_labels = documented[name][0], set(re.findall(r"`([^`]+)`", documented[name][1]))
        assert doc_type == kind, f"{name}: docs/design.md says {doc_type}, the code registers a {kind}"
        assert doc_labels == labels, f"{name}: docs/design.md says labels {doc_labels}, the code has {labels}"


def test_every_registered_metric_is_in_the_doc_with_its_type_and_labels() -> None:
    assert_documented(registered_metrics(), table("Metrics"))


def test_every_dlq_reason_code_is_in_the_doc() -> None:
    documented = table("Dead-letter record (DLQ topic, default `transactions-dlq`)")
    missing, stale = sorted(set(REASONS) - set(documented)), sorted(set(documented) - set(REASONS))
    assert not missing and not stale, f"missing: {missing}; not a reason code: {stale}"
    assert all(cells[0] for cells in documented.values()), "every reason code needs its meaning"


def _manifest_dict() -> dict:
    n = 2
    manifest = Manifest(
        version="v1", created_at="2026-01-01T00:00:00Z", feature_names=("a", "b"),
        scaler_mean=(0.0,) * n, scaler_scale=(1.0,) * n, weights=(0.5,) * n, bias=-1.0, threshold=0.5,
        threshold_policy={"name": "max-f1"}, model_sha256="0" * 64, metrics={"pr_auc": 0.5},
        training={"seed": 1}, score_histogram={"edges": [0.0, 0.5, 1.0], "counts": [1.0, 1.0]},
    )  # fmt: skip
    return json.loads(manifest.to_json())


def test_the_manifest_fixture_is_valid() -> None:
    Manifest.from_dict(_manifest_dict())  # else the required-field test below would prove nothing


def test_every_manifest_field_is_in_the_doc_and_marked_required_or_not() -> None:
    documented = table("Manifest fields")
    fields = {f.name for f in dataclasses.fields(Manifest)}
    assert set(documented) == fields, (
        f"missing: {sorted(fields - set(documented))}; not a Manifest field: {sorted(set(documented) - fields)}"
    )
    for name in sorted(fields):
        data = _manifest_dict()
        del data[name]
        try:
            Manifest.from_dict(data)
            required = False
        except BundleError:
            required = True
        doc_type, doc_required = documented[name][0], documented[name][1]
        assert doc_type, f"manifest field {name} needs its type"
        assert doc_required.startswith("yes") == required, (
            f"manifest field {name}: docs/design.md says required={doc_required!r}, the reader "
            f"{'refuses' if required else 'accepts'} a manifest without it"
        )


def _default_text(default: object) -> str:
    if isinstance(default, bool):  # a switch: "off" or "on"
        return "on" if default else "off"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default) if default != "" else "empty"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_in_the_doc_with_its_default(setting) -> None:
    documented = table("Configuration")
    assert setting.name in documented, f"setting {setting.name} is missing from docs/design.md"
    cell = documented[setting.name][0]
    assert _default_text(setting.default) in cell, f"{setting.name}: docs/design.md says {cell!r}"


def test_the_doc_lists_no_setting_the_worker_lacks() -> None:
    stale = set(table("Configuration")) - {s.name for s in SETTINGS}
    assert not stale, f"settings in docs/design.md the worker does not have: {sorted(stale)}"


def test_every_feedback_metric_is_in_the_doc_with_its_type_and_labels() -> None:
    """fraud-feedback's metrics (worker/feedback/metrics.py) against design.md's "Label feedback" table."""
    from worker.feedback.metrics import FeedbackMetrics, Snapshot

    registry = CollectorRegistry()
    metrics = FeedbackMetrics(registry)
    # A snapshot with every figure, so each per-version family shows its label names.
    metrics.publish(Snapshot({("v1", "tp"): 1}, {"v1": 1}, {"v1": 1.0}, {"v1": 1.0}, {"v1": 1.0}, {"v1": 1}))
    metrics.invalid.labels(topic="labels", reason="schema")
    registered = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        registered[name] = (family.type, {k for s in family.samples for k in s.labels} - {"le"})
    assert_documented(registered, table("Label feedback"))
