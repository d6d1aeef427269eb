"""The operator tools on hostile input: one clear line and the documented exit code, never a
traceback; nothing printed rewrites the terminal; no settings error shows a secret."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from tests.unit.worker.conftest import SPEC
from worker.core.errors import ConfigError
from worker.edges.config import load_config
from worker.programs import fraud_replay as replay
from worker.programs.subcommands import backtest, reconcile
from worker.programs.subcommands import create_topics as topics
from worker.programs.subcommands import tail_alerts as tail

NAMES = SPEC["feature_names"]
SECRET = "hunter2-S3cret"
RAW_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _event(i: int, **extra: object) -> dict:
    return {"transaction_id": f"tx-{i}", **{n: 0.25 * k for k, n in enumerate(NAMES)}, **extra}


@pytest.mark.parametrize("label", ["1e999", "-1e999", "NaN", "Infinity", "123456789012345678901234567890"])
def test_backtest_label_out_of_range_is_a_reject_line_not_a_traceback(models: Path, tmp_path: Path, label, capsys):
    good = json.dumps(_event(1, Class=1))
    bad = json.dumps(_event(2))[:-1] + f', "Class": {label}}}'
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([good, bad, json.dumps(_event(3, Class=0))]) + "\n")
    out = tmp_path / "out.jsonl"
    code = backtest.main(["--jobs", "1", "--quiet", "--input", str(src), "--models-dir", str(models),
                          "--output", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    scored = [json.loads(x)["transaction_id"] for x in out.read_text().splitlines()]
    rejects = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    if label in ("NaN", "Infinity"):  # not JSON at all: the decoder's own reject
        assert scored == ["tx-1", "tx-3"] and rejects[0]["line"] == 2
        return
    if label.isdigit():  # a big integer is a readable (if useless) label: unlabelled, as before
        assert scored == ["tx-1", "tx-2", "tx-3"] and rejects == []
        return
    assert scored == ["tx-1", "tx-3"]
    assert rejects == [{"line": 2, "error": "bad_label", "error_detail": "Class: a number out of range"}]


def test_backtest_csv_label_inf_is_a_reject_line(models: Path, tmp_path: Path, capsys):
    src = tmp_path / "in.csv"
    rows = [",".join([*NAMES, "Class"])] + [",".join(["0.5"] * len(NAMES) + [c]) for c in ("1", "inf", "nan", "0")]
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.jsonl"
    assert backtest.main(["--jobs", "1", "--quiet", "--input", str(src), "--models-dir", str(models),
                          "--output", str(out)]) == 0  # fmt: skip
    assert len(out.read_text().splitlines()) == 2
    rejects = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["error"]) for r in rejects] == [(3, "bad_label"), (4, "bad_label")]
    assert "precision" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("empty.csv", b"", "empty, no header row"),
        ("empty.csv.gz", gzip.compress(b"", mtime=0), "empty, no header row"),
        ("latin1.csv", b"a,b\n1,\xe9t\xe9\n", "not UTF-8 text"),
        ("cut.csv.gz", gzip.compress(b"a,b\n1,2\n", mtime=0)[:12], "cannot read"),
        ("huge-header.csv", b"a," + b"x" * 200_000 + b"\n1,2\n", "line 1: not a CSV row"),
    ],
)
def test_replay_unreadable_csv_is_one_line_naming_the_file_before_any_broker(tmp_path, name, content, needle, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    # 127.0.0.1:1 answers nothing: the file is refused before any connection is tried.
    assert replay.main(["--data", str(path), "--bootstrap-servers", "127.0.0.1:1", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and needle in err, err
    assert "StopIteration" not in err and "Traceback" not in err


HOSTILE = "tx\x1b]0;owned\x07\x1b[2J\rFAKE\nline\x9b1m\x7f"


def test_tail_alert_line_escapes_control_characters_in_every_field():
    alert = {
        "transaction_id": HOSTILE, "score": 0.99, "threshold": 0.5, "model_version": "v\x1b[31m1",
        "reasons": [{"feature": "V\r1", "contribution": 1.0}], "scored_at": 1767225600042,
    }  # fmt: skip
    for value in (alert, "\x1b[2J not an object", [HOSTILE]):
        line = tail.format_alert(value)
        assert not RAW_CONTROLS.search(line), repr(line)
    line = tail.format_alert(alert)
    assert "tx\\x1b]0;owned\\x07\\x1b[2J\\x0dFAKE\\x0aline\\x9b1m\\x7f" in line and "v\\x1b[31m1" in line
    # The decision record's texts too: action, rules, rule set, segment.
    decision = {"action": "bl\x1b[2Jock", "rule": HOSTILE, "rules": [HOSTILE, "r\u202e2"], "rule_set": "v\r2",
                "threshold_source": "segment", "segment": {"field": "f\n", "value": HOSTILE}}  # fmt: skip
    line = tail.format_alert({**alert, "decision": decision})
    assert not RAW_CONTROLS.search(line), repr(line)
    assert "BL\\x1b[2JOCK" in line and "r\\u202e2" in line and "rules v\\x0d2" in line and "segment f\\x0a=" in line


@pytest.mark.parametrize(
    "value", [{"scored_at": 1e300}, {"scored_at": float("nan")}, {"reasons": 5}, {"score": 10**400}, None]
)
def test_tail_alert_line_for_any_json_value_is_a_line(value):
    assert "ALERT" in tail.format_alert(value)
    assert "ALERT" in tail.format_alert(tail.parse_alert(b"[" * 200_000))


@pytest.mark.parametrize(
    "argv",
    [
        ["--kafka-option", f"sasl_plain_password:{SECRET}"],
        ["--kafka-option", f"sasl_plain_password {SECRET}"],
        ["--kafka-option", f"sasl_plain_password:{SECRET}=x"],
        ["--kafka-option", f"ssl_password;{SECRET}"],
        ["--kafka-option", "sasl_plain_password=", SECRET],
        ["--kafka-option", f"sasl_plain_password_file={SECRET}"],  # the password given as the file by mistake
        ["--kafka-option", "sasl_plain_password:", SECRET, "--max-alerts", "x"],
        [f"--kafka-option=sasl_plain_password:{SECRET}"],
        ["--kafka-option", f"sasl_plain_password={SECRET}", "--kafka-option", f"sasl_plain_password={SECRET}"],
    ],
)
@pytest.mark.parametrize("module,base", [(tail, []), (replay, ["--synthetic", "5"]), (topics, []),
                                         (reconcile, ["--scores-topic", "s"])])  # fmt: skip
def test_no_settings_error_echoes_a_secret(module, base, argv, capsys):
    assert module.main(base + ["--bootstrap-servers", "127.0.0.1:1"] + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad setting" in err, err
    assert SECRET not in err and SECRET[:7] not in err, err


def test_worker_config_error_for_a_malformed_secret_item_does_not_show_it():
    with pytest.raises(ConfigError) as caught:
        load_config(["--kafka-option", f"sasl_plain_password:{SECRET}"], {})
    assert SECRET not in str(caught.value) and "number 1 of 1" in str(caught.value)


def test_replay_csv_that_breaks_after_its_header_fails_at_that_point_naming_the_file(tmp_path):
    path = tmp_path / "cut.csv.gz"
    body = "".join(f"{i},{i * 7919 % 100_003}\n" for i in range(50_000)).encode()
    path.write_bytes(gzip.compress(b"a,b\n" + body)[:20_000])
    rows = replay.rows_from_csv(path, "account_id", with_label=False)
    with pytest.raises(replay.DataFileError, match=re.escape(str(path)) + ": cannot read"):
        for _ in rows:
            pass


@pytest.mark.parametrize("cell", ["inf", "-inf", "1e999", "nan", "2", "-1", "abc", ""])
def test_replay_label_that_is_not_0_or_1_is_a_row_without_a_label(cell):
    # Found by the replay fuzz target: a Class of inf raised OverflowError (int(float("inf"))).
    labels = replay.Labels("labels", 0.0, "Class")
    labels.add("tx-1", {"Class": cell}, keep=True)
    labels.add("tx-2", {"Class": "1.0"}, keep=True)
    assert labels.missing == 1 and [flag for _, _, flag in labels.pending] == [True]


def test_command_line_error_is_one_line_whatever_the_words_hold(capsys):
    # Found by the settings fuzz target: an unrecognized "-\n" was echoed with its newline.
    assert tail.main(["-\n", "--max-alerts", "\x1b[2J"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err, err
