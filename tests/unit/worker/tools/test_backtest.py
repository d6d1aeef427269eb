"""fraud-worker backtest with a real bundle: its output lines are the worker's score-record JSON, its
rejects carry the decoder's reason codes, and its label metrics, flags and exit codes hold."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.bundles import make_bundle, swap_weights
from tests.support.keys import make_keys
from tests.unit.worker.conftest import SPEC
from worker.core.decode import Decoder
from worker.core.errors import DecodeError
from worker.core.outputs import encode_results
from worker.core.scoring import load_scorer
from worker.offline.backtest_metrics import at_thresholds, label_value
from worker.programs.subcommands import backtest

NAMES = SPEC["feature_names"]


def _event(i: int, **extra) -> dict:
    rng = np.random.default_rng(i)
    values = rng.normal(0, 2, len(NAMES)).round(6).tolist()
    return {"transaction_id": f"tx-{i}", **dict(zip(NAMES, values, strict=True)), **extra}


def _line(i: int, **extra) -> bytes:
    return json.dumps(_event(i, **extra)).encode()


def _bad_lines() -> list[bytes]:
    good = _event(999)
    body = json.dumps(good)
    no_f2 = {k: v for k, v in good.items() if k != "f2"}
    return [
        b"{this is not json",
        b'{"transaction_id": "\xff\xfe"}',
        b"[1, 2, 3]",
        json.dumps({k: v for k, v in good.items() if k != "transaction_id"}).encode(),
        json.dumps(no_f2).encode(),
        json.dumps({**good, "f1": "12.5"}).encode(),
        body.replace('"f3": ', '"f3": NaN, "x": ', 1).encode(),
        body.replace('"f0": ', '"f0": 1e999, "z": ', 1).encode(),
        json.dumps({**good, "transaction_id": ""}).encode(),
        json.dumps({**good, "event_time": "yesterday"}).encode(),
        b"",
        b"   ",
        json.dumps({**good, "padding": "x" * 70_000}).encode(),
        body.replace('"f1": ', '"f1": 0.5, "f1": ', 1).encode(),
    ]


def _run(*args: str) -> int:
    return backtest.main(["--jobs", "1", "--quiet", *args])


def _expected(models: Path, lines: list[bytes]) -> list[dict]:
    """The worker's steps for these values: decode, scale, score, encode_results (scored_at dropped)."""
    scorer = load_scorer(str(models))
    d = Decoder(scorer.feature_names).decode_batch(lines)
    scaled = scorer.scale(d.features)
    scores = scorer.score_scaled(scaled)
    times = {j: t if t is not None else 0 for j, t in enumerate(d.event_times)}
    payloads = encode_results(scorer, range(len(scores)), d.transaction_ids, times, scaled, d.features, scores, 0, 3)
    return [_without_scored_at(p) for p in payloads]


def _without_scored_at(payload: bytes) -> dict:
    doc = json.loads(payload)
    assert isinstance(doc.pop("scored_at"), int)
    return doc


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_jsonl_lines_become_the_worker_score_records(tmp_path, models, capsys, gz):
    lines = [_line(i, **({"event_time": 1_700_000_000_000 + i} if i % 2 else {})) for i in range(250)]
    path = tmp_path / ("events.jsonl.gz" if gz else "events.jsonl")
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    out = tmp_path / "scores.jsonl"
    assert _run("--input", str(path), "--models-dir", str(models), "--output", str(out), "--batch-size", "64") == 0
    got = [_without_scored_at(line) for line in out.read_bytes().splitlines()]
    assert got == _expected(models, lines)
    assert [g["event_time"] for g in got[:3]] == [0, 1_700_000_000_001, 0], "0 where the event has none"
    assert set(got[0]) == {"transaction_id", "score", "threshold", "model_version", "reasons", "event_time"}
    assert (tmp_path / "scores.rejects.jsonl").read_bytes() == b""
    summary = capsys.readouterr().out.splitlines()[0]
    assert summary.startswith("backtest: 250 events, 250 scored, 0 rejected, ") and "events/s" in summary


def test_malformed_lines_get_the_decoder_reason_codes_and_scoring_goes_on(tmp_path, models):
    bad = _bad_lines()
    lines, expected = [], []
    for i, value in enumerate(bad):
        lines += [_line(i), value]
        with pytest.raises(DecodeError) as exc:
            Decoder(NAMES).classify(value)
        expected.append({"line": len(lines), "error": exc.value.reason, "error_detail": exc.value.detail})
    assert len({e["error"] for e in expected}) == 11, "every reason code"
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines))  # the last line without its newline
    out, rejects = tmp_path / "out.jsonl", tmp_path / "bad.jsonl"
    args = ("--input", str(path), "--models-dir", str(models), "--output", str(out), "--rejects", str(rejects))
    assert _run(*args, "--batch-size", "5") == 0
    assert _read(rejects) == expected
    assert [d["transaction_id"] for d in _read(out)] == [f"tx-{i}" for i in range(len(bad))]
    # The worker's decoder, given the whole batch at once, agrees.
    decoded = Decoder(NAMES).decode_batch(lines)
    assert [(i + 1, e.reason) for i, e in decoded.errors] == [(e["line"], e["error"]) for e in expected]


def test_csv_rows_are_decoded_as_the_events_fraud_replay_would_send(tmp_path, models, capsys):
    path = tmp_path / "rows.csv.gz"
    rows = [[*(f"{x}" for x in _event(i).values())][1:] for i in range(40)]
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["event_time", *NAMES, "Class"])
        for i, row in enumerate(rows):
            w.writerow([str(1000 + i) if i % 3 else "", *row, str(int(i % 4 == 0))])
        w.writerow(["5", "abc", *rows[0][1:], "0"])  # line 42: not_a_number
        w.writerow(["6", *rows[0][:3]])  # line 43: f3 is missing
        w.writerow(["soon", *rows[0], "1"])  # line 44: bad_event_time
    out = tmp_path / "out.jsonl"
    assert _run("--input", str(path), "--models-dir", str(models), "--output", str(out)) == 0
    got = _read(out)
    assert [d["transaction_id"] for d in got] == [f"line-{n}" for n in range(2, 42)]
    assert [d["event_time"] for d in got[:3]] == [0, 1001, 1002]
    docs = [json.dumps({"transaction_id": f"line-{i + 2}", **dict(zip(NAMES, map(float, r), strict=True))}).encode()
            for i, r in enumerate(rows)]  # fmt: skip
    assert [d["score"] for d in got] == [d["score"] for d in _expected(models, docs)]
    assert [(r["line"], r["error"]) for r in _read(tmp_path / "out.rejects.jsonl")] == [
        (42, "not_a_number"), (43, "missing_field"), (44, "bad_event_time"),
    ]  # fmt: skip
    assert "labels from Class: 40 scored events labelled, 10 fraud" in capsys.readouterr().out


def test_label_metrics_at_the_thresholds_and_the_pr_curve(tmp_path, models, capsys):
    lines = [_line(i, is_fraud=bool(i % 5 == 0)) for i in range(300)]
    lines[7] = _line(7, is_fraud="maybe")  # not a label: left out of the metrics
    path = tmp_path / "labelled.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out, plot = tmp_path / "out.jsonl", tmp_path / "pr.png"
    args = ("--input", str(path), "--models-dir", str(models), "--output", str(out), "--pr-curve", str(plot))
    assert _run(*args, "--thresholds", "0.2,0.5", "--cost-missed-fraud", "50", "--cost-false-alarm", "2") == 0
    text = capsys.readouterr().out
    scores = np.array([d["score"] for d in _read(out)], dtype=np.float32)
    y = np.array([i % 5 == 0 for i in range(300)])
    keep = np.arange(300) != 7
    assert "labels from is_fraud: 299 scored events labelled, 60 fraud, 1 without a label (left out)" in text
    for t in (0.2, 0.5, SPEC["threshold"]):
        flagged = scores[keep] >= np.float32(t)
        tp, fp = int((flagged & y[keep]).sum()), int((flagged & ~y[keep]).sum())
        fn = 60 - tp
        row = next(line for line in text.splitlines() if line[3:12].strip() == f"{t:.4f}")
        assert row.split()[-7:-3] == [f"{tp + fp:,}", f"{tp:,}", f"{fp:,}", f"{fn:,}"], row
        assert row.split()[-1] == f"{50 * fn + 2 * fp:,}"
    marked = [line.split()[1] for line in text.splitlines() if line.startswith(" * ")]
    assert marked == [f"{SPEC['threshold']:.4f}"], "the model's threshold is marked"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_labels_there_are_no_metrics(tmp_path, models, capsys):
    path = tmp_path / "events.jsonl"
    path.write_bytes(_line(1) + b"\n")
    assert _run("--input", str(path), "--models-dir", str(models), "--output", str(tmp_path / "o.jsonl")) == 0
    assert "no label column (Class or is_fraud)" in capsys.readouterr().out


def test_child_processes_give_the_same_records_in_order(tmp_path, models):
    lines = [_line(i) for i in range(500)] + [b"oops"]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    args = ["--input", str(path), "--models-dir", str(models), "--output", str(out), "--batch-size", "60"]
    assert backtest.main([*args, "--jobs", "2", "--quiet"]) == 0
    assert [_without_scored_at(line) for line in out.read_bytes().splitlines()] == _expected(models, lines)
    detail = "Expecting value: line 1 column 1 (char 0)"
    assert _read(tmp_path / "out.rejects.jsonl") == [{"line": 501, "error": "invalid_json", "error_detail": detail}]


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--jobs", "-1"], "--jobs"),
        (["--thresholds", "0.5,x"], "--thresholds"),
        (["--thresholds", "1.5"], "--thresholds"),
        (["--cost-false-alarm", "-1"], "--cost-false-alarm"),
        (["--output", "/nonexistent-dir/out.jsonl"], "--output"),
        (["--rejects", "OUT"], "--rejects"),
        (["--label-column", "Label"], "--label-column"),
    ],
)
def test_bad_settings_exit_2_in_one_line_naming_the_flag(tmp_path, models, capsys, extra, names):
    path = tmp_path / "rows.csv"
    path.write_text(",".join(NAMES) + "\n" + ",".join("1" for _ in NAMES) + "\n")
    out = str(tmp_path / "out.jsonl")
    args = ["--input", str(path), "--models-dir", str(models), "--output", out]
    assert _run(*args, *[out if x == "OUT" else x for x in extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and names in err, err


def test_unreadable_input_exits_1_and_no_model_exits_3(tmp_path, models, capsys):
    out = str(tmp_path / "out.jsonl")
    assert _run("--input", str(tmp_path / "missing.jsonl"), "--models-dir", str(models), "--output", out) == 1
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(_line(1) * 1000)[:200])
    assert _run("--input", str(broken), "--models-dir", str(models), "--output", out) == 1
    path = tmp_path / "events.jsonl"
    path.write_bytes(_line(1))
    assert _run("--input", str(path), "--models-dir", str(tmp_path / "none"), "--output", out) == 3
    assert _run("--input", str(path), "--models-dir", str(models), "--version", "v9", "--output", out) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("fraud-worker backtest: ") for line in lines), lines


def test_trusted_keys_score_only_with_a_bundle_signed_by_one_of_them(tmp_path, capsys):
    trusted, other = make_keys(tmp_path / "keys", "trusted"), make_keys(tmp_path / "keys", "other")
    models = tmp_path / "models"
    make_bundle(models, "v1", **SPEC, signing_key=trusted.signing_key)
    make_bundle(models, "v2", **SPEC, signing_key=other.signing_key, promote=False)
    make_bundle(models, "v3", **SPEC, promote=False)  # unsigned
    path, out = tmp_path / "events.jsonl", tmp_path / "out.jsonl"
    path.write_bytes(b"\n".join(_line(i) for i in range(20)))
    args = [
        "--input",
        str(path),
        "--models-dir",
        str(models),
        "--output",
        str(out),
        "--trusted-keys",
        str(trusted.public),
    ]
    assert _run(*args) == 0 and len(out.read_bytes().splitlines()) == 20
    capsys.readouterr()
    assert _run(*args, "--version", "v2") == 3
    assert _run(*args, "--version", "v3") == 3
    swap_weights(models / "v1", [0.0] * len(NAMES), -9.0)  # changed after signing, sha256 fields fixed up
    assert _run(*args) == 3
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("fraud-worker backtest: no servable model") for e in errors), errors
    assert _run(*args[:-1], str(trusted.private)) == 2  # a private key where a public one belongs
    assert "--trusted-keys" in capsys.readouterr().err


def test_scores_include_features_adds_each_events_values_as_the_scores_topic_would(tmp_path, models):
    path, out = tmp_path / "events.jsonl", tmp_path / "out.jsonl"
    lines = [_line(i) for i in range(30)]
    path.write_bytes(b"\n".join(lines))
    assert (
        _run("--input", str(path), "--models-dir", str(models), "--output", str(out), "--scores-include-features") == 0
    )
    got = [json.loads(line) for line in out.read_bytes().splitlines()]
    for doc, line in zip(got, lines, strict=True):
        event = json.loads(line)
        assert doc["features"] == {name: pytest.approx(event[name], rel=1e-6) for name in NAMES}
        assert list(doc["features"]) == list(NAMES)


def test_the_subcommand_is_registered():
    from worker.programs.fraud_worker import SUBCOMMANDS

    assert SUBCOMMANDS["backtest"] == "worker.programs.subcommands.backtest:main"


def test_counts_at_thresholds_match_a_direct_count():
    rng = np.random.default_rng(3)
    scores, y = rng.random(2000).astype(np.float32), rng.random(2000) < 0.1
    for r in at_thresholds(y, scores, [0.0, 0.25, 0.9, 1.0], 10.0, 1.0):
        flagged = scores >= np.float32(r.threshold)
        assert (r.tp, r.fp, r.fn) == (int((flagged & y).sum()), int((flagged & ~y).sum()), int((~flagged & y).sum()))
        assert r.cost == 10 * r.fn + r.fp


@pytest.mark.parametrize(("raw", "want"), [(1, 1), (0, 0), (True, 1), ("1", 1), ("false", 0), (0.0, 0), (2, None),
                                           ("yes", None), (None, None)])  # fmt: skip
def test_label_values(raw, want):
    assert label_value(raw) == want
