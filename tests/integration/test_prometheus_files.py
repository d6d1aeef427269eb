"""The shipped Prometheus files pass promtool: config, rules, and the rules' own unit tests.

No broker needed; in tests/integration because they run an external program (promtool from the
Debian package ``prometheus``, installed by ``tests.support.prometheus`` when missing).
"""

from __future__ import annotations

import json
import re

from tests.support.prometheus import DEPLOY, REPO, promtool


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


def test_rules_and_dashboard_use_only_metrics_the_worker_exports():
    from prometheus_client import CollectorRegistry

    from worker.metrics import WorkerMetrics

    registry = CollectorRegistry()
    WorkerMetrics(registry)
    exported = set()
    for family in registry.collect():
        exported.add(family.name)
        exported.update(f"{family.name}_{suffix}" for suffix in ("total", "bucket", "sum", "count"))
    rules = (DEPLOY / "alerts.yml").read_text()
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "fraud-worker.json").read_text())
    exprs = [rules] + [t.get("expr", "") for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for text in exprs for name in re.findall(r"\bfraud_[a-z0-9_]+", text)}
    assert used and used <= exported, used - exported
