"""The rule sets in use (worker/models/rules.py) and ``fraud-worker rules``: published, hot reloaded, refused
in one line while the old set keeps serving, lists read again when their file changes, signatures checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support.keys import make_keys
from worker.core.rules import RuleSetError
from worker.edges.metrics import WorkerMetrics
from worker.models.rules import RULES_POINTER, RulesWatcher, rule_set_dir
from worker.programs.subcommands import rules as rules_cli

GOOD = """[fields]
terminal_id = "string"
[lists]
deny = "deny.txt"
[[rule]]
id = "deny"
action = "block"
when = "terminal_id in deny"
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def publish(tmp_path: Path, models: Path, text: str, *extra: str) -> int:
    path = tmp_path / f"rules-{abs(hash(text))}.toml"
    path.write_text(text)
    return rules_cli.main(["publish", str(path), "--models-dir", str(models), *extra])


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    (path / "lists").mkdir(parents=True)
    (path / "lists" / "deny.txt").write_text("t1\n")
    return path


def watcher(models: Path, clock: Clock, registry: CollectorRegistry, **kw) -> RulesWatcher:
    return RulesWatcher(str(models), str(models / "lists"), WorkerMetrics(registry), interval=1.0, clock=clock, **kw)


def test_publish_then_reload_a_new_set_and_keep_the_old_one_when_the_next_is_bad(tmp_path, models, capsys):
    registry, clock = CollectorRegistry(), Clock()
    w = watcher(models, clock, registry)
    w.load_initial()
    assert w.serving is None  # no RULES: decisions by the threshold alone
    assert publish(tmp_path, models, GOOD) == 0
    clock.now += 1.5
    assert w.maybe_reload() is True
    first = w.version
    assert w.serving.lists == {"deny": frozenset({"t1"})}
    assert registry.get_sample_value("fraud_rule_set_info", {"role": "serving", "version": first}) == 1
    assert (models / RULES_POINTER).read_text().strip() == first

    bad = GOOD.replace("terminal_id in deny", "merchant in deny")
    assert publish(tmp_path, models, bad) == 1  # the command refuses it
    assert "unknown field 'merchant'" in capsys.readouterr().err
    # Written by hand past the command: the worker refuses it and keeps the set it has.
    version = "20990101T000000Z-deadbeef"
    rule_set_dir(models, version).mkdir(parents=True)
    (rule_set_dir(models, version) / "rules.toml").write_text(bad)
    (models / RULES_POINTER).write_text(version + "\n")
    clock.now += 1.5
    assert w.maybe_reload() is False and w.version == first
    assert registry.get_sample_value("fraud_rule_set_reloads_total", {"role": "serving", "result": "failed"}) == 1


def test_a_list_edit_is_used_within_the_interval_and_a_bad_list_keeps_the_old_values(tmp_path, models):
    registry, clock = CollectorRegistry(), Clock()
    assert publish(tmp_path, models, GOOD) == 0
    w = watcher(models, clock, registry)
    w.load_initial()
    deny = models / "lists" / "deny.txt"
    deny.write_text("t1\nt2\n")
    os.utime(deny, ns=(1, 10**18))
    assert w.maybe_reload() is False  # looked at once per interval
    clock.now += 1.5
    assert w.maybe_reload() is True
    assert w.serving.lists["deny"] == frozenset({"t1", "t2"})
    assert registry.get_sample_value("fraud_rule_list_entries", {"list": "deny"}) == 2
    deny.write_bytes(b"t3\n\xff\n")
    clock.now += 1.5
    assert w.maybe_reload() is False
    assert w.serving.lists["deny"] == frozenset({"t1", "t2"})
    assert registry.get_sample_value("fraud_rule_list_reloads_total", {"list": "deny", "result": "failed"}) == 1


def test_at_start_a_bad_set_or_a_missing_list_is_one_line(tmp_path, models):
    assert publish(tmp_path, models, GOOD) == 0
    (models / "lists" / "deny.txt").unlink()
    with pytest.raises(RuleSetError) as info:
        watcher(models, Clock(), CollectorRegistry()).load_initial()
    assert "list 'deny'" in str(info.value) and "cannot read" in str(info.value) and "\n" not in str(info.value)
    (models / RULES_POINTER).write_text("../../etc\n")
    with pytest.raises(RuleSetError):
        watcher(models, Clock(), CollectorRegistry()).load_initial()


def test_with_trusted_keys_only_a_signed_unchanged_set_is_used(tmp_path, models):
    keys = make_keys(tmp_path / "keys")
    other = make_keys(tmp_path / "keys", "other")
    assert publish(tmp_path, models, GOOD, "--signing-key", str(keys.private)) == 0
    w = watcher(models, Clock(), CollectorRegistry(), trusted_keys=keys.trusted())
    w.load_initial()
    assert w.rule_set is not None
    version = w.version
    with pytest.raises(RuleSetError, match="not a trusted key"):
        watcher(models, Clock(), CollectorRegistry(), trusted_keys=other.trusted()).load_initial()
    path = rule_set_dir(models, version) / "rules.toml"
    path.write_text(GOOD.replace("block", "review"))
    with pytest.raises(RuleSetError, match="rules.toml differs from the signed one"):
        watcher(models, Clock(), CollectorRegistry(), trusted_keys=keys.trusted()).load_initial()
    assert publish(tmp_path, models, GOOD + "\n# unsigned\n") == 0
    with pytest.raises(RuleSetError, match="is not signed"):
        watcher(models, Clock(), CollectorRegistry(), trusted_keys=keys.trusted()).load_initial()


def test_check_prints_each_rule_and_refuses_in_one_line(tmp_path, models, capsys):
    path = tmp_path / "r.toml"
    path.write_text(GOOD)
    assert rules_cli.main(["check", str(path), "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "block    deny: terminal_id in deny  [compiled]" in out and "list deny: 1 values" in out
    path.write_text(GOOD.replace('when = "terminal_id in deny"', 'when = "terminal_id in"'))
    assert rules_cli.main(["check", str(path), "--models-dir", str(models)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rule 'deny': syntax error" in err
