"""The shipped Prometheus files pass promtool: config, rules, and the rules' own unit tests; every
alert has a test that sees it fire; the rules and the Grafana dashboard name only metrics that the
worker or fraud-feedback exports.

No broker needed; in tests/integration because they run an external program (promtool from the
Debian package ``prometheus``, installed by ``tests.support.prometheus`` when missing).
"""

from __future__ import annotations

import json
import re

import yaml

from tests.support.prometheus import DEPLOY, REPO, promtool

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "fraud-worker.json"


def test_promtool_check_config():
    done = promtool("check", "config", "prometheus.yml")  # loads alerts.yml relative to the config
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_check_rules():
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout + done.stderr)


def test_promtool_test_rules():
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_refuses_a_broken_rule(tmp_path):
    """The check above can fail: a rule with a syntax error is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text((DEPLOY / "alerts.yml").read_text().replace("fraud_score_psi > 0.2", "fraud_score_psi >> 0.2"))
    done = promtool("check", "rules", str(bad), cwd=tmp_path)
    assert done.returncode != 0


def exported_names(registry) -> set[str]:
    """Every series name a registry's families expose (counters with _total, histograms' parts)."""
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(f"{family.name}_{suffix}" for suffix in ("total", "bucket", "sum", "count"))
    return names


def test_rules_and_dashboard_use_only_metrics_the_worker_and_fraud_feedback_export():
    from prometheus_client import CollectorRegistry

    from worker.edges.metrics import WorkerMetrics
    from worker.feedback.metrics import FeedbackMetrics

    worker, feedback = CollectorRegistry(), CollectorRegistry()
    WorkerMetrics(worker)
    FeedbackMetrics(feedback)
    exported = exported_names(worker) | exported_names(feedback)
    rules = (DEPLOY / "alerts.yml").read_text()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [rules] + [t.get("expr", "") for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for text in exprs for name in re.findall(r"\bfraud_[a-z0-9_]+", text)}
    assert used and used <= exported, used - exported
    # The dashboard shows fraud-feedback's figures too, not only the worker's.
    assert {n for n in used if n.startswith("fraud_feedback_")} >= {
        "fraud_feedback_outcomes", "fraud_feedback_precision", "fraud_feedback_recall", "fraud_feedback_pr_auc",
        "fraud_feedback_unlabelled_ratio", "fraud_feedback_label_lag_seconds_bucket",
    }  # fmt: skip


def test_every_alert_rule_has_a_unit_test():
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    tests = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts and alerts <= tested, f"no test in alerts_test.yml sees these fire: {sorted(alerts - tested)}"


def test_dashboard_panels_have_unique_ids_and_do_not_overlap():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
