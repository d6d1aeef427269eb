"""``fraud-feedback``: join the worker's scores with late labels; ``fraud-feedback export``: the examples.

    fraud-feedback [--scores-topic fraud-scores] [--labels-topic fraud-labels] [--state-dir DIR]
                   [--entity-risk-topic fraud-entity-risk | none] [--risk-horizon 40d] ...
    fraud-feedback export (--state-dir DIR | --from-topics) --out FILE.csv[.gz] [--since T] [--until T]

The bootstrap servers, the scores topic and the Kafka settings (``FRAUD_KAFKA_*``,
``--kafka-option``) are the worker's own settings, read the same way; the rest are this program's
flags. Exit codes: 0 stopped cleanly (SIGTERM or SIGINT), 1 error, 2 bad settings, 4 refused by the
Kafka cluster (as the worker).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from worker.core.errors import AccessError, ConfigError
from worker.edges.config import SETTINGS_EPILOG, SettingsParser, add_settings, client_options, config_from_args

PROG = "fraud-feedback"
DEFAULT_SCORES_TOPIC = "fraud-scores"
DEFAULT_LABELS_TOPIC = "fraud-labels"
DEFAULT_LABEL_WINDOW = "120d"
DEFAULT_ENTITY_RISK_TOPIC = "fraud-entity-risk"
DEFAULT_RISK_HORIZON = "40d"
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_REFUSED = 0, 1, 2, 4


def build_parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog=PROG,
        description="Join the worker's score records with labels that arrive later (analyst decisions, "
        "chargebacks) in an embedded store per partition, and export fraud caught and false alarms per model "
        "version (and, with rule sets, per rule and action) as Prometheus metrics. `fraud-feedback export "
        "--help`: the labelled examples as a CSV.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 stopped cleanly, 1 error, 2 bad settings, 4 refused by the Kafka "
        "cluster.",
    )
    add_settings(p, ["bootstrap_servers", "scores_topic", "shadow_topic"])
    p.add_argument("--labels-topic", default=DEFAULT_LABELS_TOPIC, help="topic of labels (default: %(default)s)")
    p.add_argument("--group-id", dest="feedback_group", default="fraud-feedback",
                   help="consumer group of the fraud-feedback instances (default: %(default)s)")  # fmt: skip
    p.add_argument("--state-dir", default="feedback-state",
                   help="directory of the stores, one SQLite file per partition (default: %(default)s)")  # fmt: skip
    add_window_flag(p)
    p.add_argument("--entity-risk-topic", dest="fb_entity_risk_topic", default=DEFAULT_ENTITY_RISK_TOPIC,
                   metavar="TOPIC",
                   help="compacted topic the fraud entries of each entity are published to, for the workers' "
                   "label-derived features (fraud_count, fraud_rate); created when missing; none: not published "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--risk-horizon", default=DEFAULT_RISK_HORIZON,
                   help="fraud entries of transactions this much older than the newest one are dropped; at least "
                   "the longest label-derived window plus its delay (default: %(default)s)")  # fmt: skip
    p.add_argument("--quality-window", default="7d",
                   help="precision, recall and PR AUC (per version, and per rule) over the transactions resolved "
                   "in this window (default: %(default)s)")  # fmt: skip
    p.add_argument("--quality-max-rows", type=int, default=200_000,
                   help="at most this many of the newest resolved transactions per version in that window (default: "
                   "%(default)s)")  # fmt: skip
    p.add_argument("--refresh-seconds", type=float, default=5.0,
                   help="how often the per-version metrics are computed from the stores (default: "
                   "%(default)s)")  # fmt: skip
    p.add_argument("--metrics-host", dest="fb_metrics_host", default="127.0.0.1",
                   help="address of /metrics (default: %(default)s)")  # fmt: skip
    p.add_argument("--metrics-port", dest="fb_metrics_port", type=int, default=9109,
                   help="port of /metrics; 0 = off (default: %(default)s)")  # fmt: skip
    p.add_argument("--log-level", dest="fb_log_level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="DEBUG, INFO, WARNING or ERROR (default: %(default)s)")  # fmt: skip
    return p


def add_window_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--label-window", default=DEFAULT_LABEL_WINDOW,
        help="a transaction without a label counts as genuine once its event is this old (default: %(default)s, "
        "about the longest chargeback delay)",
    )  # fmt: skip


def build_export_parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog=f"{PROG} export",
        description="Write the labelled examples as a CSV (plain or .gz): the feature columns, is_fraud (0/1), "
        "event_time (epoch ms), transaction_id, label_time (epoch ms, empty without a label) and, when the score "
        "records carry them, the raw fields the model's feature spec reads; fraud-train --data FILE --label-column "
        "is_fraud [--feature-spec SPEC.toml] reads it. A "
        "transaction without a label counts as genuine once older than the label window. The examples come from "
        "fraud-feedback's stores (--state-dir, opened read-only: nothing is written to them) or from the topics "
        "alone (--from-topics: every partition of the scores and labels topics up to their end offsets at start, "
        "no consumer group, nothing committed; the scores from a day before --since, the labels from the "
        "beginning; joined in temporary stores under $TMPDIR as fraud-feedback joins them). For --from-topics the "
        "scores topic must retain the export window plus the label window, and so must the labels topic.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 written, 1 error (one line naming the file or topic), 2 bad "
        "settings, 4 refused by the Kafka cluster.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--state-dir", help="fraud-feedback's --state-dir: read its stores (read-only)")
    source.add_argument("--from-topics", action="store_true",
                        help="read the scores and labels topics instead of any store")  # fmt: skip
    p.add_argument("--out", required=True, help="the CSV to write (.gz: gzip)")
    add_settings(p, ["bootstrap_servers", "scores_topic"])
    p.add_argument("--labels-topic", default=DEFAULT_LABELS_TOPIC,
                   help="--from-topics: topic of labels (default: %(default)s)")  # fmt: skip
    p.add_argument("--since", help="events at or after this time: epoch ms, an ISO date (UTC) or an age such as 30d")
    p.add_argument("--until", help="events before this time (same forms)")
    add_window_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["export"]:
        return export_main(args_list[1:])
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0)
    from worker.feedback.export import parse_duration_ms

    try:
        config = config_from_args(args, os.environ)
        label_window = parse_duration_ms(args.label_window)
        quality_window = parse_duration_ms(args.quality_window)
        risk_horizon = parse_duration_ms(args.risk_horizon)
        if risk_horizon <= 0:
            raise ConfigError(f"--risk-horizon must be > 0 (got {args.risk_horizon!r})")
        risk_topic = args.fb_entity_risk_topic.strip()
        if not risk_topic:
            raise ConfigError("--entity-risk-topic must name a topic (none: not published)")
        risk_topic = "" if risk_topic.lower() == "none" else risk_topic
        if risk_topic and risk_topic in (config.scores_topic or DEFAULT_SCORES_TOPIC, args.labels_topic,
                                         config.shadow_topic):  # fmt: skip
            raise ConfigError(f"--entity-risk-topic {risk_topic!r} is also a topic fraud-feedback reads")
        if args.quality_max_rows <= 0:
            raise ConfigError(f"--quality-max-rows must be > 0 (got {args.quality_max_rows})")
        if not args.refresh_seconds > 0:
            raise ConfigError(f"--refresh-seconds must be > 0 (got {args.refresh_seconds})")
        if not 0 <= args.fb_metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {args.fb_metrics_port} is not a TCP port")
    except ConfigError as exc:
        print(f"{PROG}: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from worker.edges import logs

    logs.configure(args.fb_log_level)
    from prometheus_client import CollectorRegistry

    from worker.edges.health import HealthState
    from worker.edges.health_server import HealthServer
    from worker.feedback.consumer import FeedbackConsumer, FeedbackSettings
    from worker.feedback.metrics import FeedbackMetrics
    from worker.feedback.store import StoreError
    from worker.kafka_compat import parse_fast_paths

    settings = FeedbackSettings(
        bootstrap_servers=config.bootstrap_servers,
        scores_topic=config.scores_topic or DEFAULT_SCORES_TOPIC,
        labels_topic=args.labels_topic,
        group_id=args.feedback_group,
        state_dir=args.state_dir,
        label_window_ms=label_window,
        quality_window_ms=quality_window,
        quality_max_rows=args.quality_max_rows,
        refresh_seconds=args.refresh_seconds,
        shadow_topic=config.shadow_topic,
        consumer_options={k: v for k, v in client_options(config, "consumer").items() if k != "bootstrap_servers"},
        inflate_cap=config.max_inflated_batch_bytes if "inflate_cap" in parse_fast_paths(config.fast_paths) else None,
        entity_risk_topic=risk_topic,
        risk_horizon_ms=risk_horizon,
    )
    registry = CollectorRegistry()
    metrics = FeedbackMetrics(registry)
    consumer = FeedbackConsumer(settings, metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: consumer.request_stop())
    server = None
    if args.fb_metrics_port:
        # /healthz: the loop polled within 60 s (it polls every 0.5 s); /readyz: partitions are held.
        health = HealthState(stall_seconds=60)
        health.model_version = "-"
        consumer.health = health
        try:
            server = HealthServer(args.fb_metrics_host, args.fb_metrics_port, registry, health).start()
        except OSError as exc:
            print(f"{PROG}: cannot start, metrics port {args.fb_metrics_port}: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
    risk = f"entity risk to {risk_topic}, horizon {args.risk_horizon}" if risk_topic else "entity risk not published"
    logging.getLogger(__name__).info(
        "joining %s and %s as group %s into %s (label window %s; %s)", settings.scores_topic, settings.labels_topic,
        settings.group_id, settings.state_dir, args.label_window, risk,
    )  # fmt: skip
    try:
        return consumer.run()
    except AccessError as exc:
        print(f"{PROG}: refused by the Kafka cluster at {settings.bootstrap_servers}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if server is not None:
            server.close()


def export_main(argv: Sequence[str]) -> int:
    import sqlite3

    from worker.feedback.export import export, export_from_topics, parse_duration_ms, parse_time
    from worker.feedback.store import StoreError

    try:
        args = build_export_parser().parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        window = parse_duration_ms(args.label_window)
        config = config_from_args(args, os.environ) if args.from_topics else None
    except ConfigError as exc:
        print(f"{PROG} export: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    read = None
    try:
        if config is not None:
            options = {k: v for k, v in client_options(config, "consumer").items() if k != "bootstrap_servers"}
            scores_topic = config.scores_topic or DEFAULT_SCORES_TOPIC
            summary, read = export_from_topics(
                config.bootstrap_servers, options, scores_topic, args.labels_topic, args.out, window, since, until
            )
            source = f"partitions of {scores_topic} and {args.labels_topic}"
        else:
            summary = export(args.state_dir, args.out, window, since, until)
            source = "partition stores"
    except AccessError as exc:
        print(f"{PROG} export: refused by the Kafka cluster: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ConfigError as exc:
        print(f"{PROG} export: {exc}", file=sys.stderr)
        return EXIT_CONFIG if "not a" in str(exc) else EXIT_ERROR
    except (OSError, StoreError, sqlite3.Error) as exc:
        print(f"{PROG} export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    extra = f"; {summary.skipped_other_features} with other features left out" if summary.skipped_other_features else ""
    if read is not None:
        records = ", ".join(f"{n:,} {kind}" for kind, n in sorted(read.records.items())) or "no records"
        skipped = ", ".join(f"{n:,} {key}" for key, n in sorted(read.invalid.items()))
        extra += f"; read {records}" + (f", skipped {skipped}" if skipped else "")
    print(
        f"{PROG} export: {summary.rows:,} labelled examples ({summary.frauds:,} fraud) with "
        f"{len(summary.feature_names)} features from {summary.partitions} {source} to {args.out}{extra}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
