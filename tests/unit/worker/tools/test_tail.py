"""The alert printer's lines, built from alert JSON, worker metrics and fraud-feedback metrics without a broker."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest

from worker.edges.metrics import WorkerMetrics
from worker.feedback.metrics import FeedbackMetrics, Snapshot
from worker.programs.subcommands.tail_alerts import (
    build_parser,
    format_alert,
    format_feedback,
    format_summary,
    main,
    parse_feedback,
    parse_metrics,
    read_summary,
    serving_versions,
)

ALERT = {
    "transaction_id": "tx-000123",
    "score": 0.97312,
    "threshold": 0.9,
    "model_version": "20260101T000000Z-b24332bc",
    "reasons": [{"feature": "V14", "contribution": 3.18224}, {"feature": "V4", "contribution": -1.0501}],
    "event_time": 1767225600000,
    "scored_at": 1767225600042,
}


def test_alert_line_names_id_score_threshold_reasons_and_model() -> None:
    line = format_alert(ALERT)
    assert re.match(r"^\d\d:\d\d:\d\d ALERT tx-000123 ", line)
    assert "score 0.9731 >= 0.9000" in line
    assert "reasons: V14 +3.18, V4 -1.05" in line
    assert line.endswith("[model 20260101T000000Z-b24332bc]")
    assert "\n" not in line


def test_alert_line_names_each_reasons_raw_value_when_the_alert_carries_it() -> None:
    reasons = [
        {"feature": "Amount", "contribution": 1.2345, "value": 149.62},
        {"feature": "V14", "contribution": 0.5, "value": -9.5234571},
        {"feature": "V4", "value": "x"},
    ]
    line = format_alert({**ALERT, "reasons": reasons})
    assert "reasons: Amount=149.62 +1.23, V14=-9.52346 +0.50, V4=? ?" in line


def test_alert_line_survives_missing_or_odd_fields() -> None:
    line = format_alert({"transaction_id": "t", "score": "high", "reasons": [None, {"feature": "V1"}]})
    assert "score ? >= ?" in line and "reasons: V1 ?" in line and "[model ?]" in line
    assert "reasons: -" in format_alert({"transaction_id": "t", "score": 1.0, "threshold": 0.5})
    assert "not an alert object" in format_alert([1, 2])
    assert "not an alert object" in format_alert(b"\xff garbage")


DECISION = {
    "action": "block", "rule": "deny-terminal", "rules": ["deny-terminal", "big-web"],
    "rule_set": "20261207T101500Z-3f2a9c1d", "threshold_source": "segment",
    "segment": {"field": "channel", "value": "web"},
}  # fmt: skip


def test_alert_line_starts_with_the_decided_action_and_names_the_rules_rule_set_and_segment() -> None:
    line = format_alert({**ALERT, "score": 0.41203, "decision": DECISION})
    assert re.match(r"^\d\d:\d\d:\d\d BLOCK tx-000123 ", line)
    # A rule decided below the threshold: the comparison says so; the threshold is the segment's.
    assert "score 0.4120 < 0.9000 (segment channel=web)  reasons: V14 +3.18, V4 -1.05" in line
    assert "  by rule deny-terminal, also matched big-web  " in line
    assert line.endswith("[model 20260101T000000Z-b24332bc, rules 20261207T101500Z-3f2a9c1d]")
    assert "ALERT" not in line and "\n" not in line


def test_alert_line_for_a_custom_action_a_lone_rule_and_the_global_threshold() -> None:
    decision = {**DECISION, "action": "step_up", "rule": "new-device", "rules": ["new-device"],
                "threshold_source": "global"}  # fmt: skip
    del decision["segment"]
    line = format_alert({**ALERT, "decision": decision})
    assert re.match(r"^\d\d:\d\d:\d\d STEP_UP tx-000123 ", line)
    assert "score 0.9731 >= 0.9000  reasons:" in line and "segment" not in line
    assert "  by rule new-device  [model " in line and "also matched" not in line


def test_alert_line_when_the_threshold_decided() -> None:
    # A rule set serves and no rule matched: its default action for a score at or above the threshold.
    decision = {"action": "review", "rule": None, "rules": [], "rule_set": "rs-1", "threshold_source": "global"}
    line = format_alert({**ALERT, "decision": decision})
    assert " REVIEW tx-000123 " in line and "  by threshold  [model 20260101T000000Z-b24332bc, rules rs-1]" in line
    # Matched rules without a deciding one are still named.
    line = format_alert({**ALERT, "decision": {**decision, "rules": ["watch-list"]}})
    assert "  by threshold, also matched watch-list  [model" in line
    # No rule set serves: the model's threshold decided, action review.
    line = format_alert({**ALERT, "decision": {**decision, "rule_set": None}})
    assert " REVIEW tx-000123 " in line
    assert line.endswith("  by threshold  [model 20260101T000000Z-b24332bc, no rule set]")


def test_alert_line_without_a_decision_is_the_older_line() -> None:
    old = format_alert(ALERT)
    assert " ALERT tx-000123 " in old and "by " not in old and old.endswith("[model 20260101T000000Z-b24332bc]")
    for odd in (None, "block", [1], 5):  # a decision member that is not an object: read as none
        assert format_alert({**ALERT, "decision": odd})[8:] == old[8:]


def test_alert_line_survives_an_odd_decision_record() -> None:
    line = format_alert({**ALERT, "decision": {"action": 7, "rule": ["x"], "rules": "r", "rule_set": 12,
                                               "threshold_source": "segment", "segment": "web"}})  # fmt: skip
    assert " ALERT tx-000123 " in line  # no action text: ALERT
    assert "(segment)  reasons:" in line and "  by rule ?  [model 20260101T000000Z-b24332bc, rules 12]" in line
    line = format_alert({**ALERT, "decision": {"action": "", "rule": True, "segment": {"value": {"a": 1}}}})
    assert " ALERT tx-000123 " in line and "  by rule true  [model 20260101T000000Z-b24332bc, no rule set]" in line
    line = format_alert({**ALERT, "decision": {**DECISION, "segment": {"value": {"a": 1}}}})
    assert "(segment ?=?)" in line


def test_alert_line_caps_the_decision_texts() -> None:
    rules = [f"rule-{i}" for i in range(40)]
    decision = {**DECISION, "action": "x" * 500, "rule": "rule-0", "rules": rules,
                "segment": {"field": "channel", "value": "w" * 1000}}  # fmt: skip
    line = format_alert({**ALERT, "decision": decision})
    assert "X" * 32 + "... tx-000123" in line
    assert "also matched rule-1, rule-2, rule-3, rule-4, rule-5 and 34 more  [model" in line
    assert "(segment channel=" + "w" * 64 + "...)" in line
    assert len(line) < 600


METRICS = """\
# HELP fraud_events_scored_total Valid events scored by the model.
# TYPE fraud_events_scored_total counter
fraud_events_scored_total 1234.0
# TYPE fraud_alerts_total counter
fraud_alerts_total 7.0
# TYPE fraud_events_invalid_total counter
fraud_events_invalid_total{reason="invalid_json"} 2.0
fraud_events_invalid_total{reason="missing_field"} 3.0
# TYPE fraud_consumer_lag gauge
fraud_consumer_lag{partition="0"} 10.0
fraud_consumer_lag{partition="1"} 5.0
# TYPE fraud_events_scored_created gauge
fraud_events_scored_created 1.7e9
"""


def test_metrics_are_summed_over_labels_and_created_samples_ignored() -> None:
    totals = parse_metrics(METRICS)
    assert totals == {"consumed": 0.0, "scored": 1234.0, "alerts": 7.0, "dead_lettered": 5.0, "lag": 15.0,
                      "risk_entities": 0.0, "risk_frauds": 0.0}  # fmt: skip


def test_the_summary_line_shows_the_entity_risk_table_once_it_fills() -> None:
    totals = parse_metrics(METRICS)
    assert "risk table" not in format_summary(totals, None, 5.0)
    text = METRICS + "fraud_entity_risk_entities 12.0\nfraud_entity_risk_frauds 30.0\n"
    line = format_summary(parse_metrics(text), None, 5.0)
    assert line.endswith(" · lag 15 · risk table 12 entities, 30 frauds")


def test_summary_line_with_rate_since_the_previous_one() -> None:
    totals = parse_metrics(METRICS)
    first = format_summary(totals, None, 5.0)
    assert "scored 1,234 · alerts 7 · dead-lettered 5 · lag 15" in first and "/s" not in first
    later = format_summary({**totals, "scored": 2234.0}, totals, 5.0)
    assert "scored 2,234 (200/s)" in later


def feedback_text(snap: Snapshot) -> str:
    """What fraud-feedback's /metrics serves after publishing ``snap``."""
    registry = CollectorRegistry()
    FeedbackMetrics(registry).publish(snap)
    return generate_latest(registry).decode()


def worker_text(version: str | None) -> str:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    if version is not None:
        metrics.set_model(version, "a" * 64, 0.5)
    return generate_latest(registry).decode()


def test_feedback_quality_is_read_per_model_version_from_fraud_feedback_metrics() -> None:
    snap = Snapshot(
        outcomes={("v1", "tp"): 80, ("v1", "fp"): 8, ("v1", "fn"): 20, ("v1", "tn"): 1126, ("v2", "tn"): 40},
        precision={"v1": 0.9090909},
        recall={"v1": 0.8},
        window={"v1": 1234, "v2": 40},
    )
    quality = parse_feedback(feedback_text(snap))
    assert quality == {"v1": {"precision": 0.9090909, "recall": 0.8, "resolved": 1234.0}, "v2": {"resolved": 40.0}}
    assert parse_feedback(METRICS) == {}  # a worker's text has none of it


def test_serving_version_comes_from_the_workers_model_info() -> None:
    assert serving_versions(worker_text("20260101T000000Z-b24332bc")) == ["20260101T000000Z-b24332bc"]
    assert serving_versions(worker_text(None)) == []


def test_labelled_part_shows_precision_and_recall_of_the_serving_version() -> None:
    quality = {
        "v1": {"precision": 0.9090909, "recall": 0.8, "resolved": 1234.0},
        "v2": {"precision": 0.5, "recall": 0.5, "resolved": 10.0},
    }
    assert format_feedback(quality, ["v1"]) == "labelled: precision 0.91 recall 0.80 (v1, 1,234 resolved)"
    # The serving version not known (no model yet, or the worker's text without it): every version.
    assert format_feedback(quality) == (
        "labelled: precision 0.91 recall 0.80 (v1, 1,234 resolved); precision 0.50 recall 0.50 (v2, 10 resolved)"
    )


def test_labelled_part_before_labels_and_where_a_figure_is_undefined() -> None:
    assert format_feedback({}, ["v1"]) == "labelled: none resolved yet (v1)"  # fraud-feedback just started
    assert format_feedback({}) == "labelled: none resolved yet"
    assert format_feedback({"v1": {"resolved": 0.0}}, ["v1"]) == "labelled: none resolved yet (v1)"
    # Resolved rows but nothing flagged (no precision) and no fraud among them (no recall).
    assert format_feedback({"v1": {"resolved": 500.0}}, ["v1"]) == "labelled: precision - recall - (v1, 500 resolved)"
    assert format_feedback({"v1": {"recall": 0.0, "resolved": 7.0}}, ["v1"]) == (
        "labelled: precision - recall 0.00 (v1, 7 resolved)"
    )


def test_summary_line_ends_with_the_labelled_part_and_leaves_it_out_without_one() -> None:
    totals = parse_metrics(METRICS)
    labelled = format_feedback({"v1": {"precision": 0.91, "recall": 0.8, "resolved": 1234.0}}, ["v1"])
    line = format_summary(totals, None, 5.0, labelled)
    assert line.endswith(" · lag 15 · labelled: precision 0.91 recall 0.80 (v1, 1,234 resolved)")
    assert format_summary(totals, None, 5.0, "").endswith(" · lag 15")  # fraud-feedback not answering
    assert "\n" not in line


def test_summary_from_the_two_metrics_texts_end_to_end() -> None:
    version = "20260101T000000Z-b24332bc"
    snap = Snapshot(
        outcomes={(version, "tp"): 9, (version, "fp"): 1, (version, "fn"): 3, (version, "tn"): 987},
        precision={version: 0.9},
        recall={version: 0.75},
        window={version: 1000, "old": 50},
        pending={version: 12},
    )
    labelled = format_feedback(parse_feedback(feedback_text(snap)), serving_versions(worker_text(version)))
    assert labelled == f"labelled: precision 0.90 recall 0.75 ({version}, 1,000 resolved)"


def serve(pages: dict[str, str]) -> ThreadingHTTPServer:
    """A local HTTP server answering each path in ``pages`` with its text, others with 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            body = pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write((body or "").encode())

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_summary_reads_both_urls_and_leaves_out_a_fraud_feedback_that_does_not_answer() -> None:
    version = "v1"
    snap = Snapshot(outcomes={(version, "tp"): 1}, precision={version: 1.0}, recall={version: 1.0}, window={version: 1})
    server = serve({"/worker": worker_text(version), "/feedback": feedback_text(snap), "/junk": "{not metrics"})
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        totals, labelled = read_summary(f"{base}/worker", f"{base}/feedback")
        assert totals["scored"] == 0 and labelled == "labelled: precision 1.00 recall 1.00 (v1, 1 resolved)"
        assert read_summary(f"{base}/worker", f"{base}/missing")[1] == ""  # 404
        assert read_summary(f"{base}/worker", f"{base}/junk")[1] == ""  # not Prometheus text
        assert read_summary(f"{base}/worker", None)[1] == ""
        assert read_summary(f"{base}/missing", f"{base}/feedback") is None  # no worker: no line at all
    finally:
        server.shutdown()
        server.server_close()
    assert read_summary(f"{base}/worker", f"{base}/feedback") is None  # nothing answers any more


def test_feedback_metrics_url_needs_the_workers_metrics_url(capsys) -> None:
    assert main(["--feedback-metrics-url", "http://127.0.0.1:9109/metrics"]) == 2
    assert "--feedback-metrics-url needs --metrics-url" in capsys.readouterr().err
    args = build_parser().parse_args(["--metrics-url", "u", "--feedback-metrics-url", "f"])
    assert args.feedback_metrics_url == "f" and build_parser().parse_args([]).feedback_metrics_url is None


def test_parser_defaults_match_the_worker_defaults() -> None:
    from worker.edges.config import WorkerConfig, config_from_args

    args = build_parser().parse_args([])
    config = config_from_args(args, {})
    assert config.alert_topic == WorkerConfig.alert_topic
    assert config.bootstrap_servers == WorkerConfig.bootstrap_servers
    assert not args.from_beginning and args.max_alerts == 0
    # --topic (the older spelling, used by scripts/run-local) still names the alert topic.
    assert config_from_args(build_parser().parse_args(["--topic", "al"]), {}).alert_topic == "al"
