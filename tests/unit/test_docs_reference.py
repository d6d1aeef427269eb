"""The reference tables under docs/ against the code, so the docs cannot fall behind it silently.

Each table is compared with the code's own source of truth, both ways (nothing missing, nothing
stale): the metrics a fresh ``WorkerMetrics`` registers (name, type, labels; docs/metrics.md) and
fraud-feedback's (docs/feedback.md), the decoder's reason codes (``worker.core.decode.REASONS``) and
the fields of ``worker.core.bundle.Manifest`` (and which of them a manifest may leave out;
docs/formats.md), the worker's settings (``worker.edges.config.SETTINGS``; docs/configuration.md)
and the alert rules (deploy/prometheus/alerts.yml; docs/metrics.md). Each table exists once: no
other page under docs/, nor the README, lists one of its rows again.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from worker.core.bundle import Manifest
from worker.core.decode import REASONS
from worker.core.errors import BundleError
from worker.edges.config import SETTINGS
from worker.edges.metrics import WorkerMetrics

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
HEADING = re.compile(r"^(#{2,6}) (.+)$", re.M)
ROW = re.compile(r"^\| `([^`]+)` \|(.*)\|\s*$", re.M)

# The reference tables: (page, heading) of each.
WORKER_METRICS = ("metrics.md", "Worker metrics")
ALERTS = ("metrics.md", "Alert rules")
FEEDBACK_METRICS = ("feedback.md", "Metrics")
REASON_CODES = ("formats.md", "Reason codes")
MANIFEST_FIELDS = ("formats.md", "Manifest fields")
SETTINGS_TABLE = ("configuration.md", "Settings")
REFERENCE_TABLES = (WORKER_METRICS, ALERTS, FEEDBACK_METRICS, REASON_CODES, MANIFEST_FIELDS, SETTINGS_TABLE)


def read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def section(where: tuple[str, str]) -> str:
    """The text under the heading ``title`` of ``page`` up to the next heading of the same or a higher level."""
    page, title = where
    doc = read(page)
    for match in HEADING.finditer(doc):
        if match.group(2).strip() == title:
            level = len(match.group(1))
            rest = doc[match.end() :]
            end = next((m.start() for m in HEADING.finditer(rest) if len(m.group(1)) <= level), len(rest))
            return rest[:end]
    raise AssertionError(f"docs/{page} has no heading {title!r}")


def table(where: tuple[str, str]) -> dict[str, list[str]]:
    """First-column name (in backticks) -> the other cells, for the table rows under the heading."""
    rows = {}
    for name, cells in ROW.findall(section(where)):
        assert name not in rows, f"{name} is listed twice under {where}"
        rows[name] = [c.strip() for c in cells.split("|")]
    assert rows, f"no table rows under {where}"
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
    m.set_feature_partitions({("transactions", 0): (10, 4096)})
    m.set_rule_set("serving", "r1", None, [("deny-terminal", "block"), ("trusted", "allow")], 1)
    m.set_rule_set("shadow", "r2", None, [("deny-terminal", "block")])
    m.rule_list_reloads.labels(list="deny_terminals", result="ok")
    m.rule_list_entries.labels(list="deny_terminals").set(3)
    out = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        out[name] = (family.type, labels)
    return out


def assert_documented(registered: dict[str, tuple[str, set[str]]], documented: dict[str, list[str]]) -> None:
    """The same metrics on both sides, each with the same type and label names."""
    assert set(registered) == set(documented), (
        f"missing from the docs: {sorted(set(registered) - set(documented))}; "
        f"documented but not registered: {sorted(set(documented) - set(registered))}"
    )
    for name, (kind, labels) in registered.items():
        doc_type, doc_labels = documented[name][0], set(re.findall(r"`([^`]+)`", documented[name][1]))
        assert doc_type == kind, f"{name}: the docs say {doc_type}, the code registers a {kind}"
        assert doc_labels == labels, f"{name}: the docs say labels {doc_labels}, the code has {labels}"


def test_every_registered_metric_is_in_the_doc_with_its_type_and_labels() -> None:
    assert_documented(registered_metrics(), table(WORKER_METRICS))


def test_every_dlq_reason_code_is_in_the_doc() -> None:
    documented = table(REASON_CODES)
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
    documented = table(MANIFEST_FIELDS)
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
            f"manifest field {name}: docs/formats.md says required={doc_required!r}, the reader "
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
    documented = table(SETTINGS_TABLE)
    assert setting.name in documented, f"setting {setting.name} is missing from docs/configuration.md"
    cell = documented[setting.name][0]
    assert _default_text(setting.default) in cell, f"{setting.name}: docs/configuration.md says {cell!r}"
    names = documented[setting.name][1]
    assert f"`{setting.flag}`" in names and f"`{setting.env}`" in names, (
        f"{setting.name}: docs/configuration.md names {names!r}, the worker reads {setting.flag} and {setting.env}"
    )


def test_the_doc_lists_no_setting_the_worker_lacks() -> None:
    stale = set(table(SETTINGS_TABLE)) - {s.name for s in SETTINGS}
    assert not stale, f"settings in docs/configuration.md the worker does not have: {sorted(stale)}"


def test_every_feedback_metric_is_in_the_doc_with_its_type_and_labels() -> None:
    """fraud-feedback's metrics (worker/feedback/metrics.py) against docs/feedback.md's "Metrics" table."""
    from worker.feedback.metrics import FeedbackMetrics, Snapshot

    registry = CollectorRegistry()
    metrics = FeedbackMetrics(registry)
    # A snapshot with every figure, so each per-version family shows its label names.
    rule, action = {("serving", "rs1", "r1"): 1.0}, {("serving", "rs1", "block"): 1.0}
    metrics.publish(Snapshot({("v1", "tp"): 1}, {"v1": 1}, {"v1": 1.0}, {"v1": 1.0}, {"v1": 1.0}, {"v1": 1},
                             rule, rule, rule, action, action, action))  # fmt: skip
    metrics.invalid.labels(topic="labels", reason="schema")
    registered = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        registered[name] = (family.type, {k for s in family.samples for k in s.labels} - {"le"})
    assert_documented(registered, table(FEEDBACK_METRICS))


def test_every_alert_rule_is_in_the_doc_with_its_duration_and_severity() -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"] if "alert" in r}
    documented = table(ALERTS)
    assert set(documented) == set(alerts), (
        f"missing from docs/metrics.md: {sorted(set(alerts) - set(documented))}; "
        f"not in alerts.yml: {sorted(set(documented) - set(alerts))}"
    )
    for name, rule in alerts.items():
        fires, duration, severity, meaning = documented[name][:4]
        assert fires and meaning, f"{name}: docs/metrics.md needs when it fires and what it tells"
        assert duration == rule.get("for", "—"), f"{name}: docs/metrics.md says for {duration!r}"
        assert severity == rule["labels"]["severity"], f"{name}: docs/metrics.md says severity {severity!r}"


def _doc_files() -> list[Path]:
    return [*sorted(DOCS.rglob("*.md")), REPO / "README.md"]


@pytest.mark.parametrize("where", REFERENCE_TABLES, ids=lambda w: f"{w[0]}:{w[1]}")
def test_each_reference_table_exists_once(where: tuple[str, str]) -> None:
    """No other page (nor another section of the same page) lists a row of the table again."""
    own = section(where)
    names = set(table(where))
    repeats = []
    for path in _doc_files():
        text = path.read_text(encoding="utf-8")
        if path == DOCS / where[0]:
            text = text.replace(own, "", 1)
        repeats += [f"{path.relative_to(REPO)}: {name}" for name, _ in ROW.findall(text) if name in names]
    assert not repeats, f"rows of the {where} table repeated elsewhere: {repeats}"
