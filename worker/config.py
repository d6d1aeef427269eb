"""Worker settings: flags and ``FRAUD_*`` environment variables, read here and nowhere else.

``load_config(argv, environ)`` is the one place a ``WorkerConfig`` is built. Flags win over
environment variables, which win over defaults. Every default works against a local broker.
Kafka client settings (security, timeouts, ...) pass through as ``--kafka-option KEY=VALUE`` or
``FRAUD_KAFKA_<KEY>`` and are checked against kafka-python's own configuration names, so a typo
fails at start naming the key instead of being ignored.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.errors import ConfigError

ENV_PREFIX = "FRAUD_"
KAFKA_ENV_PREFIX = "FRAUD_KAFKA_"
# Kafka settings the worker owns: passing them through would break its delivery guarantees.
OWNED_KAFKA_KEYS = frozenset(
    {
        "bootstrap_servers", "group_id", "enable_auto_commit", "max_poll_records", "acks",
        "key_deserializer", "value_deserializer", "key_serializer", "value_serializer",
        "consumer_timeout_ms", "default_offset_commit_callback",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Setting:
    name: str  # attribute of WorkerConfig; flag --name-with-dashes; env FRAUD_NAME_UPPER
    default: Any
    kind: type
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("bootstrap_servers", "127.0.0.1:9092", str, "Kafka bootstrap servers, comma-separated host:port"),
    Setting("input_topic", "transactions", str, "topic of transaction events to score"),
    Setting("alert_topic", "fraud-alerts", str, "topic for alerts (score >= the model's threshold)"),
    Setting("dlq_topic", "transactions-dlq", str, "dead-letter topic for records that cannot be scored"),
    Setting("scores_topic", "", str, "optional topic receiving every score (same JSON as an alert); empty = off"),
    Setting("group_id", "fraud-worker", str, "consumer group id"),
    Setting("models_dir", "models", str, "models directory holding <version>/ bundles and CURRENT"),
    Setting("max_batch_size", 500, int, "most records taken per poll and scored in one invocation"),
    Setting("poll_timeout_ms", 500, int, "how long one poll waits for records (ms)"),
    Setting("decoder_processes", 1, int,
            "1: decode JSON in a child process, pipelined with polling under load (a second core); "
            "0: in the worker itself"),
    Setting("metrics_host", "127.0.0.1", str, "address of the /metrics, /healthz, /readyz server"),
    Setting("metrics_port", 9108, int, "port of that server; 0 turns it off"),
    Setting("log_level", "INFO", str, "DEBUG, INFO, WARNING or ERROR"),
    Setting("log_format", "text", str, "text (human-readable lines) or json (one JSON object per line)"),
    Setting("max_message_bytes", 65536, int, "larger record values go to the DLQ as too_large"),
    Setting("reasons", 3, int, "number of reason codes (top contributing features) in each alert"),
    Setting("health_stall_seconds", 30.0, float, "/healthz fails when the loop has not polled for this long"),
    Setting("reload_interval_seconds", 1.0, float, "how often models/CURRENT is checked between batches"),
    Setting("retry_backoff_max_seconds", 10.0, float, "longest wait between retries while the broker is down"),
    Setting("drift_window", 10_000, int, "live scores compared with the training scores for fraud_score_psi"),
    Setting("fast_paths", "all", str,
            "kafka-python fast paths to use (worker/kafka_compat): all, none, or a comma-separated list of "
            "record_reader, handoff_shortcuts, metadata_wait, revocation_commit"),
)
_BY_ENV = {s.env: s for s in SETTINGS}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker needs to run; built only by ``load_config``."""

    bootstrap_servers: str = "127.0.0.1:9092"
    input_topic: str = "transactions"
    alert_topic: str = "fraud-alerts"
    dlq_topic: str = "transactions-dlq"
    scores_topic: str = ""
    group_id: str = "fraud-worker"
    models_dir: str = "models"
    max_batch_size: int = 500
    poll_timeout_ms: int = 500
    decoder_processes: int = 1
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    log_level: str = "INFO"
    log_format: str = "text"
    max_message_bytes: int = 65536
    reasons: int = 3
    health_stall_seconds: float = 30.0
    reload_interval_seconds: float = 1.0
    retry_backoff_max_seconds: float = 10.0
    drift_window: int = 10_000
    fast_paths: str = "all"
    # Kafka client settings passed through, already typed: ((key, value), ...), sorted by key.
    kafka_options: tuple[tuple[str, Any], ...] = field(default=())

    def consumer_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.kafka_options if k in _kafka_defaults()[0]}

    def producer_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.kafka_options if k in _kafka_defaults()[1]}


def build_parser() -> argparse.ArgumentParser:
    epilog = (
        "Every flag has an environment variable (shown in brackets); flags win. Kafka client settings pass "
        "through with --kafka-option KEY=VALUE (repeatable) or FRAUD_KAFKA_<KEY>=VALUE, e.g. "
        "FRAUD_KAFKA_SECURITY_PROTOCOL=SASL_SSL, FRAUD_KAFKA_SASL_MECHANISM=PLAIN, FRAUD_KAFKA_SSL_CAFILE=/ca.pem; "
        "KEY is a kafka-python KafkaConsumer/KafkaProducer setting. Exit codes: 0 ok, 1 error, 2 bad settings, "
        "3 failed to start (no servable model)."
    )
    parser = argparse.ArgumentParser(
        prog="fraud-worker",
        description="Score Kafka transaction events with the current model bundle; publish alerts.",
        epilog=epilog,
    )
    for s in SETTINGS:
        parser.add_argument(
            s.flag,
            dest=s.name,
            default=None,
            metavar=s.name.split("_")[-1].upper(),
            help=f"{s.help} [{s.env}, default {s.default!r}]",
        )
    parser.add_argument(
        "--kafka-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a kafka-python client setting passed through (repeatable) [FRAUD_KAFKA_<KEY>]",
    )
    return parser


def load_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> WorkerConfig:
    """Build the config from flags, then ``FRAUD_*`` variables, then defaults; raise ``ConfigError``."""
    args = build_parser().parse_args(list(argv) if argv is not None else [])
    values: dict[str, Any] = {}
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key.startswith(KAFKA_ENV_PREFIX):
            continue
        if key not in _BY_ENV:
            raise ConfigError(f"{key} is not a known setting (see fraud-worker --help)")
    for s in SETTINGS:
        raw, source = getattr(args, s.name), s.flag
        if raw is None and s.env in environ:
            raw, source = environ[s.env], s.env
        values[s.name] = s.default if raw is None else _convert(s, raw, source)

    kafka: dict[str, Any] = {}
    for key in sorted(environ):
        if key.startswith(KAFKA_ENV_PREFIX):
            name = key[len(KAFKA_ENV_PREFIX) :].lower()
            kafka[name] = _kafka_value(name, environ[key], key)
    for item in args.kafka_option:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--kafka-option {item!r} is not KEY=VALUE")
        name = name.strip().lower().replace("-", "_")
        kafka[name] = _kafka_value(name, raw, f"--kafka-option {name}")
    values["kafka_options"] = tuple(sorted(kafka.items()))
    config = WorkerConfig(**values)
    _check(config)
    return config


def _convert(s: Setting, raw: str, source: str) -> Any:
    raw = raw.strip()
    try:
        return s.kind(raw)
    except ValueError:
        raise ConfigError(f"{source}={raw!r} is not a valid {s.kind.__name__}") from None


def _check(c: WorkerConfig) -> None:
    for name in ("bootstrap_servers", "input_topic", "alert_topic", "dlq_topic", "group_id", "models_dir"):
        if not getattr(c, name).strip():
            raise ConfigError(f"{name} must not be empty")
    outputs = {"alert_topic": c.alert_topic, "dlq_topic": c.dlq_topic}
    if c.scores_topic:
        outputs["scores_topic"] = c.scores_topic
    for name, topic in outputs.items():
        if topic == c.input_topic:
            raise ConfigError(f"{name} and input_topic are both {topic!r}: the worker would consume its own output")
    seen: dict[str, str] = {}
    for name, topic in outputs.items():
        if topic in seen:
            raise ConfigError(f"{seen[topic]} and {name} are both {topic!r}: they carry different records")
        seen[topic] = name
    for name in ("max_batch_size", "poll_timeout_ms", "max_message_bytes", "reasons", "drift_window"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{name} must be > 0 (got {getattr(c, name)})")
    for name in ("health_stall_seconds", "reload_interval_seconds", "retry_backoff_max_seconds"):
        if not getattr(c, name) > 0:
            raise ConfigError(f"{name} must be > 0 (got {getattr(c, name)})")
    if c.decoder_processes not in (0, 1):
        raise ConfigError(f"decoder_processes must be 0 or 1 (got {c.decoder_processes})")
    if c.health_stall_seconds * 1000 <= c.poll_timeout_ms:
        raise ConfigError("health_stall_seconds must be longer than poll_timeout_ms, or /healthz would flap")
    if not 0 <= c.metrics_port <= 65535:
        raise ConfigError(f"metrics_port {c.metrics_port} is not a TCP port")
    if c.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level {c.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if c.log_format.lower() not in LOG_FORMATS:
        raise ConfigError(f"log_format {c.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    from worker.kafka_compat import parse_fast_paths

    try:
        parse_fast_paths(c.fast_paths)
    except ValueError as exc:
        raise ConfigError(f"fast_paths: {exc}") from None
    options = dict(c.kafka_options)
    if "max_partition_fetch_bytes" in options and options["max_partition_fetch_bytes"] < c.max_message_bytes:
        raise ConfigError("kafka option max_partition_fetch_bytes is smaller than max_message_bytes")


def _kafka_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    # Imported lazily: `fraud-worker --help` should not pay for kafka-python.
    from kafka import KafkaConsumer, KafkaProducer

    return KafkaConsumer.DEFAULT_CONFIG, KafkaProducer.DEFAULT_CONFIG


def _kafka_value(name: str, raw: str, source: str) -> Any:
    consumer, producer = _kafka_defaults()
    if name in OWNED_KAFKA_KEYS:
        raise ConfigError(f"{source}: {name} is set by the worker itself and cannot be passed through")
    if name not in consumer and name not in producer:
        raise ConfigError(f"{source}: {name!r} is not a kafka-python consumer or producer setting")
    default = consumer.get(name, producer.get(name))
    if name != "api_version" and not isinstance(default, (str, int, float, type(None))):
        raise ConfigError(f"{source}: {name} takes a Python object and cannot be set from text")
    raw = raw.strip()
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if name == "api_version":
            return tuple(int(p) for p in raw.split("."))
    except ValueError:
        raise ConfigError(f"{source}={raw!r} does not fit {name} (default {default!r})") from None
    return raw
