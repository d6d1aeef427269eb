"""The alert printer's lines, built from alert JSON and worker metrics without a broker."""

from __future__ import annotations

import re

from worker.tools.tail import build_parser, format_alert, format_summary, parse_metrics

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
    assert totals == {"consumed": 0.0, "scored": 1234.0, "alerts": 7.0, "dead_lettered": 5.0, "lag": 15.0}


def test_summary_line_with_rate_since_the_previous_one() -> None:
    totals = parse_metrics(METRICS)
    first = format_summary(totals, None, 5.0)
    assert "scored 1,234 · alerts 7 · dead-lettered 5 · lag 15" in first and "/s" not in first
    later = format_summary({**totals, "scored": 2234.0}, totals, 5.0)
    assert "scored 2,234 (200/s)" in later


def test_parser_defaults_match_the_worker_defaults() -> None:
    from worker.config import WorkerConfig, config_from_args

    args = build_parser().parse_args([])
    config = config_from_args(args, {})
    assert config.alert_topic == WorkerConfig.alert_topic
    assert config.bootstrap_servers == WorkerConfig.bootstrap_servers
    assert not args.from_beginning and args.max_alerts == 0
    # --topic (the older spelling, used by scripts/run-local) still names the alert topic.
    assert config_from_args(build_parser().parse_args(["--topic", "al"]), {}).alert_topic == "al"
