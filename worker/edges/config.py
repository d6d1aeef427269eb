"""Worker settings: flags and ``FRAUD_*`` environment variables, read here and nowhere else.

``load_config(argv, environ)`` builds the worker's ``WorkerConfig``; the operator tools
(``worker/tools/``) add the flags of the settings they use with ``add_settings`` and build theirs
with ``config_from_args``, and get each kafka-python client's keyword arguments from
``client_options``. Flags win over environment variables, which win over defaults; every default
works against a local broker and is written once, on its ``WorkerConfig`` field (``SETTINGS`` is
derived from the fields). Kafka client settings (security, timeouts, ...) pass through as
``--kafka-option KEY=VALUE`` or ``FRAUD_KAFKA_<KEY>`` and are checked against kafka-python's own
configuration names, so a typo fails at start naming the key instead of being ignored.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, NoReturn

from worker.core.errors import ConfigError
from worker.core.printable import printable
from worker.edges.credentials import SECRET_KEYS, Secret, read_secret_file, redact, secret_file_key

if TYPE_CHECKING:
    from worker.core.outputs import OutputSettings

ENV_PREFIX = "FRAUD_"
_KAFKA_KEY = re.compile(r"[a-z][a-z0-9_]{0,99}")
KAFKA_ENV_PREFIX = "FRAUD_KAFKA_"
# Kafka settings the worker owns: passing them through would break its delivery guarantees.
OWNED_KAFKA_KEYS = frozenset(
    {
        "bootstrap_servers", "group_id", "enable_auto_commit", "max_poll_records", "acks",
        "key_deserializer", "value_deserializer", "key_serializer", "value_serializer",
        "consumer_timeout_ms", "default_offset_commit_callback", "group_instance_id", "transactional_id",
        "isolation_level",
    }
)  # fmt: skip


class SettingsParser(argparse.ArgumentParser):
    """A parser whose errors are one line naming the flag, exit status 2 like any other bad setting.

    The line never shows a secret: the values of ``--kafka-option`` items whose key names a password
    (and a word that follows one ending in ``=``) are masked, and unrecognized words that are not
    flags are counted, not shown (``sasl_plain_password= hunter2`` leaves ``hunter2`` unrecognized)."""

    _argv: Sequence[str] = ()

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._argv = list(args) if args is not None else sys.argv[1:]
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            words = message[len("unrecognized arguments: ") :].split(" ")
            flags = [w for w in words if w.startswith("-") and "=" not in w]
            hidden = len(words) - len(flags)
            message = "unrecognized arguments: " + ", ".join(
                [*flags, *([f"{hidden} word(s) not shown (one may be a secret)"] if hidden else [])]
            )
        message = printable(redact(message, _secret_words(self._argv)))  # one line, whatever the words hold
        self.exit(2, f"{self.prog}: bad setting: {message} (see {self.prog} --help)\n")


def _secret_words(argv: Sequence[str]) -> list[str]:
    """The words of ``argv`` that may be a secret: each ``--kafka-option`` item whose key mentions a
    password (whole, and its value), and the word after one that ends in ``=`` (a value split off)."""
    words: list[str] = []
    argv = list(argv)
    for i, word in enumerate(argv):
        item = None
        if word == "--kafka-option" and i + 1 < len(argv):
            item, after = argv[i + 1], i + 2
        elif word.startswith("--kafka-option="):
            item, after = word[len("--kafka-option=") :], i + 1
        if item is None or "password" not in item.lower():
            continue
        key, _, value = item.partition("=")
        words += [item, value] if value else [item]
        if not value and after < len(argv) and not argv[after].startswith("-"):
            words.append(argv[after])
    return sorted((w for w in words if w), key=len, reverse=True)


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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
PROCESSING_GUARANTEES = ("at-least-once", "exactly-once")
# Kafka Streams' defaults are 30 s and 100 ms; at-least-once commits more often here, since the
# batches behind the last commit are scored again after a crash (docs/delivery.md).
DEFAULT_COMMIT_INTERVAL_MS = {"at-least-once": 200, "exactly-once": 100}


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker needs to run; built only by ``load_config`` / ``config_from_args``.

    Each field with a ``help`` is a setting (flag, ``FRAUD_*`` variable, default): ``SETTINGS`` is
    derived from these fields, so a default is written here and nowhere else.
    """

    bootstrap_servers: str = field(
        default="127.0.0.1:9092", metadata={"help": "Kafka bootstrap servers, comma-separated host:port"}
    )
    input_topic: str = field(default="transactions", metadata={"help": "topic of transaction events to score"})
    alert_topic: str = field(
        default="fraud-alerts", metadata={"help": "topic for alerts (score >= the model's threshold)"}
    )
    dlq_topic: str = field(
        default="transactions-dlq", metadata={"help": "dead-letter topic for records that cannot be scored"}
    )
    scores_topic: str = field(
        default="", metadata={"help": "optional topic receiving every score (same JSON as an alert); empty = off"}
    )
    shadow_topic: str = field(
        default="",
        metadata={
            "help": "topic of the shadow challenger's score records (models/CHALLENGER, one per event, never "
            "alerting); empty = the challenger only feeds the fraud_shadow_* metrics"
        },
    )
    scores_include_features: bool = field(
        default=False,
        metadata={
            "help": "each score record also carries the event's feature values (\"features\": name -> value), "
            "so fraud-feedback can export labelled examples without a second join with the input topic"
        },
    )
    group_id: str = field(default="fraud-worker", metadata={"help": "consumer group id"})
    models_dir: str = field(
        default="models", metadata={"help": "models directory holding <version>/ bundles and CURRENT"}
    )
    lists_dir: str = field(
        default="",
        metadata={"help": "where the rule sets' named lists are (one value a line, read again when they change; "
                  "docs/rules.md); empty: <models_dir>/lists"},
    )  # fmt: skip
    rules_interpreted: bool = field(
        default=False,
        metadata={"help": "evaluate every rule row by row with rule-engine itself (about 40 us a rule and an event) "
                  "instead of compiled to numpy over the batch (each compiled rule is checked against rule-engine "
                  "when loaded; docs/rules.md)"},
    )  # fmt: skip
    feature_state_dir: str = field(
        default="feature-state",
        metadata={"help": "with a bundle's feature spec: where each input partition's feature state lives "
                  "(a SQLite file per partition; give it a volume: docs/features.md)"},
    )  # fmt: skip
    feature_changelog_topic: str = field(
        default="",
        metadata={"help": "with a feature spec: the compacted topic the feature state is logged to, so another "
                  "instance restores a partition exactly (empty: <group_id>-feature-changelog; none: no changelog, "
                  "the state stays on this instance's disk)"},
    )  # fmt: skip
    input_key_field: str = field(
        default="",
        metadata={"help": "with a feature spec: the event field the input topic is keyed by; the spec's other "
                  "entities are computed after a repartition topic each (<group_id>-repartition-<field>), so "
                  "they are exact with several instances (empty: every entity where its event arrives)"},
    )  # fmt: skip
    entity_risk_topic: str = field(
        default="fraud-entity-risk",
        metadata={"help": "with a feature spec reading labels (fraud_count, fraud_rate): the compacted topic of "
                  "per-entity fraud entries fraud-feedback publishes, read whole by every instance as a table"},
    )  # fmt: skip
    entity_risk_max_age_seconds: float = field(
        default=60.0,
        metadata={"help": "with a spec reading labels: the risk table is stale once it has not reached the end of "
                  "its topic for this long; events are then scored with the values it has, and counted"},
    )  # fmt: skip
    entity_risk_wait_seconds: float = field(
        default=10.0,
        metadata={"help": "with a spec reading labels: at most this long, when the table is first needed, to read "
                  "the risk topic to its end before scoring (0: do not wait)"},
    )  # fmt: skip
    feature_cache_entities: int = field(
        default=2_000,
        metadata={"help": "with a feature spec: entities kept in memory per partition between commits "
                  "(the rest are read from the state files when needed)"},
    )  # fmt: skip
    max_batch_size: int = field(
        default=500, metadata={"help": "most records taken per poll and scored in one invocation"}
    )
    poll_timeout_ms: int = field(default=500, metadata={"help": "how long one poll waits for records (ms)"})
    decoder_processes: int = field(
        default=1,
        metadata={
            "help": "1: decode JSON in a child process, pipelined with polling under load (a second core); "
            "0: in the worker itself"
        },
    )
    metrics_host: str = field(
        default="127.0.0.1", metadata={"help": "address of the /metrics, /healthz, /readyz server"}
    )
    metrics_port: int = field(default=9108, metadata={"help": "port of that server; 0 turns it off"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    log_format: str = field(
        default="text", metadata={"help": "text (human-readable lines) or json (one JSON object per line)"}
    )
    max_message_bytes: int = field(default=65536, metadata={"help": "larger record values go to the DLQ as too_large"})
    max_inflated_batch_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata={"help": "a compressed record batch inflating past this is not read: its records go to the DLQ "
                  "as batch_too_large"},
    )  # fmt: skip
    reasons: int = field(
        default=3, metadata={"help": "number of reason codes (top contributing features) in each alert"}
    )
    health_stall_seconds: float = field(
        default=30.0, metadata={"help": "/healthz fails when the loop has not polled for this long"}
    )
    reload_interval_seconds: float = field(
        default=1.0, metadata={"help": "how often models/CURRENT, the rule-set pointers and the list files are "
                               "checked between batches"}
    )
    retry_backoff_max_seconds: float = field(
        default=10.0, metadata={"help": "longest wait between retries while the broker is down"}
    )
    drift_window: int = field(
        default=10_000, metadata={"help": "live scores compared with the training scores for fraud_score_psi"}
    )
    fast_paths: str = field(
        default="all",
        metadata={
            "help": "kafka-python fast paths to use (worker/kafka_compat): all, none, or a comma-separated list of "
            "record_reader, handoff_shortcuts, metadata_wait, revocation_commit, batch_send, inflate_cap"
        },
    )
    processing_guarantee: str = field(
        default="at-least-once",
        metadata={
            "help": "at-least-once (a crash repeats at most one batch of outputs) or exactly-once (outputs and "
            "input offsets in one Kafka transaction; readers use read_committed)"
        },
    )
    commit_interval_ms: int = field(
        default=0,
        metadata={
            "help": "how often offsets are committed (ms); in exactly-once mode how long a transaction collects "
            "batches, so read_committed readers see alerts up to this much later; 0 = the guarantee's default "
            f"({DEFAULT_COMMIT_INTERVAL_MS['at-least-once']} at-least-once, "
            f"{DEFAULT_COMMIT_INTERVAL_MS['exactly-once']} exactly-once)"
        },
    )
    group_instance_id: str = field(
        default="",
        metadata={
            "help": "static group membership: a stable name per instance (the pod name in Kubernetes), so a "
            "restarted instance takes its partitions back at once; empty = a dynamic member"
        },
    )
    transactional_id: str = field(
        default="",
        metadata={
            "help": "exactly-once only: the producer's transactional id, stable per instance; empty = "
            "<group_id>-<group_instance_id>, or <group_id>-<host>-<pid> without an instance id"
        },
    )
    trusted_keys: str = field(
        default="",
        metadata={
            "help": "comma-separated PEM files of Ed25519 public keys (openssl pkey -in KEY.pem -pubout): serve "
            "only model bundles signed by one of them (fraud-train --signing-key); empty = bundles are not "
            "signature-checked"
        },
    )
    min_model_version: str = field(
        default="",
        metadata={
            "help": "refuse a model bundle whose version sorts before this one (a rollback); training's "
            "versions start with their UTC time (20261201T211302Z-a4d76f4c), so this is a date; empty = no limit"
        },
    )
    # Kafka client settings passed through, already typed: ((key, value), ...), sorted by key.
    kafka_options: tuple[tuple[str, Any], ...] = field(default=())

    def passed_through(self, client: str) -> dict[str, Any]:
        """The passed-through Kafka settings that one client ("admin", "consumer", "producer") accepts."""
        accepted = _client_defaults()[client]
        return {k: v for k, v in self.kafka_options if k in accepted}

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly-once"

    @property
    def commit_interval(self) -> float:
        """Seconds between commits (or transactions), the guarantee's default unless set."""
        ms = self.commit_interval_ms or DEFAULT_COMMIT_INTERVAL_MS[self.processing_guarantee]
        return ms / 1000

    def changelog_topic(self) -> str | None:
        """The feature state's changelog topic; None when turned off (``none``)."""
        if self.feature_changelog_topic.strip().lower() == "none":
            return None
        return self.feature_changelog_topic.strip() or f"{self.group_id}-feature-changelog"

    def effective_transactional_id(self) -> str:
        if self.transactional_id:
            return self.transactional_id
        if self.group_instance_id:
            return f"{self.group_id}-{self.group_instance_id}"
        import os
        import socket

        return f"{self.group_id}-{socket.gethostname()}-{os.getpid()}"

    def consumer_options(self) -> dict[str, Any]:
        return self.passed_through("consumer")

    def producer_options(self) -> dict[str, Any]:
        return self.passed_through("producer")

    @property
    def lists_directory(self) -> str:
        """Where the rule sets' named lists are: ``lists_dir``, or ``<models_dir>/lists``."""
        return self.lists_dir or os.path.join(self.models_dir, "lists")

    @property
    def output_settings(self) -> OutputSettings:
        """What a batch's outputs take of these settings (worker/core/outputs.py): the core never reads them."""
        from worker.core.outputs import PRODUCER_MAX_REQUEST_SIZE, OutputSettings  # numpy: only where outputs are

        request = dict(self.kafka_options).get("max_request_size", PRODUCER_MAX_REQUEST_SIZE)
        return OutputSettings(self.alert_topic, self.dlq_topic, self.scores_topic, self.shadow_topic, self.reasons,
                              self.scores_include_features, int(request))  # fmt: skip


_KINDS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.default, _KINDS[f.type if isinstance(f.type, str) else f.type.__name__], f.metadata["help"])
    for f in fields(WorkerConfig)
    if "help" in f.metadata
)
_BY_NAME = {s.name: s for s in SETTINGS}
_BY_ENV = {s.env: s for s in SETTINGS}
KAFKA_OPTION_HELP = "a kafka-python client setting passed through (repeatable) [FRAUD_KAFKA_<KEY>]"
# The precedence and pass-through rules, for the help of the worker and of each tool.
SETTINGS_EPILOG = (
    "Every setting has an environment variable (shown in brackets); flags win over variables, which win over "
    "the defaults. Kafka client settings pass through with --kafka-option KEY=VALUE (repeatable) or "
    "FRAUD_KAFKA_<KEY>=VALUE, e.g. FRAUD_KAFKA_SECURITY_PROTOCOL=SASL_SSL, FRAUD_KAFKA_SASL_MECHANISM=PLAIN, "
    "FRAUD_KAFKA_SSL_CAFILE=/ca.pem; KEY is a kafka-python KafkaConsumer/KafkaProducer setting. A secret "
    "(sasl_plain_password, ssl_password) can come from a file instead: FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE=/path "
    "or --kafka-option sasl_plain_password_file=/path; secrets are never logged."
)


def add_settings(
    parser: argparse.ArgumentParser, names: Sequence[str], aliases: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Give ``parser`` the flags of the named settings and ``--kafka-option``, as the worker has them.

    Each flag defaults to None, so ``config_from_args`` can tell a flag given from one left out (then
    the ``FRAUD_*`` variable or the default applies). ``aliases`` adds older flag spellings.
    """
    for name in names:
        s = _BY_NAME[name]
        if s.kind is bool:  # a switch: the flag alone turns it on; the variable takes true or false
            parser.add_argument(
                s.flag, *(aliases or {}).get(name, ()), dest=s.name, action="store_const", const="true",
                default=None, help=f"{s.help} [{s.env}=true, default off]",
            )  # fmt: skip
            continue
        parser.add_argument(
            s.flag,
            *(aliases or {}).get(name, ()),
            dest=s.name,
            default=None,
            metavar=s.name.split("_")[-1].upper(),
            help=f"{s.help} [{s.env}, default {s.default!r}]",
        )
    parser.add_argument("--kafka-option", action="append", default=[], metavar="KEY=VALUE", help=KAFKA_OPTION_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = SettingsParser(
        prog="fraud-worker",
        description="Score Kafka transaction events with the current model bundle; publish alerts.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 ok, 1 error, 2 bad settings, 3 failed to start (no servable model), "
        "4 refused by the Kafka cluster (authentication, TLS trust, security protocol or an ACL).",
    )
    add_settings(parser, [s.name for s in SETTINGS])
    return parser


def load_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> WorkerConfig:
    """Build the config from flags, then ``FRAUD_*`` variables, then defaults; raise ``ConfigError``."""
    return config_from_args(build_parser().parse_args(list(argv) if argv is not None else []), environ)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> WorkerConfig:
    """The config from parsed flags (``add_settings``; any subset of them), ``FRAUD_*`` variables, defaults.

    The one way a tool gets its settings too, so a tool and the worker never disagree about a
    topic, the bootstrap servers or a Kafka option. Raises ``ConfigError`` naming the setting.
    """
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key.startswith(KAFKA_ENV_PREFIX):
            continue
        if key not in _BY_ENV:
            raise ConfigError(f"{key} is not a known setting (see fraud-worker --help)")
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw, source = getattr(args, s.name, None), s.flag
        if raw is None and s.env in environ:
            raw, source = environ[s.env], s.env
        values[s.name] = s.default if raw is None else _convert(s, raw, source)

    kafka: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each setting came from, to name both of two that clash
    given: list[tuple[str, str, str]] = [
        (key[len(KAFKA_ENV_PREFIX) :].lower(), environ[key], key)
        for key in sorted(environ)
        if key.startswith(KAFKA_ENV_PREFIX)
    ]
    items = getattr(args, "kafka_option", None) or []
    for n, item in enumerate(items, 1):
        name, sep, raw = item.partition("=")
        # Never the item's text: a malformed one (sasl_plain_password:x) may be all secret.
        if not sep or not name.strip():
            raise ConfigError(f"--kafka-option number {n} of {len(items)} is not KEY=VALUE (its text is not shown)")
        name = name.strip().lower().replace("-", "_")
        if not _KAFKA_KEY.fullmatch(name):
            raise ConfigError(f"--kafka-option number {n} of {len(items)}: the key is not a setting name "
                              "(letters, digits and '_'; its text is not shown)")  # fmt: skip
        given.append((name, raw, f"--kafka-option {name}"))
    for name, raw, source in given:
        if not _KAFKA_KEY.fullmatch(name):
            raise ConfigError("a FRAUD_KAFKA_ variable's name is not a setting name (letters, digits and '_')")
        secret_of = secret_file_key(name)
        if secret_of:
            key, value = secret_of, read_secret_file(raw, source)
        else:
            key, value = name, _kafka_value(name, raw, source)
        earlier = sources.get(key)
        # A flag overrides a variable (variables come first); two of one kind clash (a password and a file).
        if earlier is not None and source.startswith("--") == earlier.startswith("--"):
            raise ConfigError(f"{source} and {earlier} both set {key}: give one")
        if key in SECRET_KEYS:
            value = value if isinstance(value, Secret) else Secret(value)
        kafka[key], sources[key] = value, source
    values["kafka_options"] = tuple(sorted(kafka.items()))
    config = WorkerConfig(**values)
    _check(config)
    return config


def client_options(config: WorkerConfig, client: str, **defaults: Any) -> dict[str, Any]:
    """Keyword arguments for one kafka-python client ("admin", "consumer" or "producer") of a tool.

    ``defaults`` (the tool's own, e.g. its ``client_id``) are overridden by the passed-through
    settings that this client accepts; ``bootstrap_servers`` comes from the config.
    """
    return {**defaults, **config.passed_through(client), "bootstrap_servers": config.bootstrap_servers}


def _convert(s: Setting, raw: str, source: str) -> Any:
    raw = raw.strip()
    if s.kind is bool:
        if raw.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"{source}={raw!r} is not true or false")
        return raw.lower() in _TRUE
    try:
        return s.kind(raw)
    except ValueError:
        raise ConfigError(f"{source}={raw!r} is not a valid {s.kind.__name__}") from None


def _check(c: WorkerConfig) -> None:
    for name in ("bootstrap_servers", "input_topic", "alert_topic", "dlq_topic", "group_id", "models_dir",
                 "feature_state_dir"):
        if not getattr(c, name).strip():
            raise ConfigError(f"{name} must not be empty")
    outputs = {"alert_topic": c.alert_topic, "dlq_topic": c.dlq_topic}
    if c.scores_topic:
        outputs["scores_topic"] = c.scores_topic
    if c.shadow_topic:
        outputs["shadow_topic"] = c.shadow_topic
    if c.scores_include_features and not c.scores_topic:
        raise ConfigError("scores_include_features is set but scores_topic is empty: there are no score records")
    for name, topic in outputs.items():
        if topic == c.input_topic:
            raise ConfigError(f"{name} and input_topic are both {topic!r}: the worker would consume its own output")
    seen: dict[str, str] = {}
    for name, topic in outputs.items():
        if topic in seen:
            raise ConfigError(f"{seen[topic]} and {name} are both {topic!r}: they carry different records")
        seen[topic] = name
    for name in ("max_batch_size", "poll_timeout_ms", "max_message_bytes", "reasons", "drift_window",
                 "feature_cache_entities"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{name} must be > 0 (got {getattr(c, name)})")
    for name in ("health_stall_seconds", "reload_interval_seconds", "retry_backoff_max_seconds",
                 "entity_risk_max_age_seconds"):  # fmt: skip
        if not getattr(c, name) > 0:
            raise ConfigError(f"{name} must be > 0 (got {getattr(c, name)})")
    if not 0 <= c.entity_risk_wait_seconds <= 3600:
        raise ConfigError(f"entity_risk_wait_seconds must be in [0, 3600] (got {c.entity_risk_wait_seconds})")
    if not c.entity_risk_topic.strip():
        raise ConfigError("entity_risk_topic must name a topic")
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
    if c.processing_guarantee not in PROCESSING_GUARANTEES:
        raise ConfigError(
            f"processing_guarantee {c.processing_guarantee!r} is not one of {', '.join(PROCESSING_GUARANTEES)}"
        )
    if c.commit_interval_ms < 0:
        raise ConfigError(f"commit_interval_ms must be >= 0 (got {c.commit_interval_ms})")
    if c.group_instance_id and not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", c.group_instance_id):
        raise ConfigError(
            f"group_instance_id {c.group_instance_id!r} may hold only ASCII letters, digits, '.', '_' and '-' "
            "(at most 200)"
        )
    if c.transactional_id and not c.exactly_once:
        raise ConfigError("transactional_id is set but processing_guarantee is at-least-once: it would be unused")
    if c.min_model_version:
        from worker.core.bundle import VERSION_PATTERN

        if not VERSION_PATTERN.fullmatch(c.min_model_version):
            raise ConfigError(f"min_model_version {c.min_model_version[:80]!r} is not a bundle version name")
    if c.trusted_keys:
        from worker.core.signing import load_trusted_keys

        load_trusted_keys(c.trusted_keys)  # a ConfigError names the file that is not an Ed25519 public key
    from worker.kafka_compat import parse_fast_paths

    try:
        parse_fast_paths(c.fast_paths)
    except ValueError as exc:
        raise ConfigError(f"fast_paths: {exc}") from None
    if c.max_inflated_batch_bytes < c.max_message_bytes:
        raise ConfigError(
            f"max_inflated_batch_bytes ({c.max_inflated_batch_bytes}) is smaller than max_message_bytes "
            f"({c.max_message_bytes}): a valid event's batch could not be read"
        )
    options = dict(c.kafka_options)
    if "max_partition_fetch_bytes" in options and options["max_partition_fetch_bytes"] < c.max_message_bytes:
        raise ConfigError("kafka option max_partition_fetch_bytes is smaller than max_message_bytes")


def kafka_client_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """kafka-python's consumer and producer settings with their defaults."""
    clients = _client_defaults()
    return clients["consumer"], clients["producer"]


def _client_defaults() -> dict[str, dict[str, Any]]:
    # Imported lazily: `fraud-worker --help` should not pay for kafka-python.
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    return {
        "admin": KafkaAdminClient.DEFAULT_CONFIG,
        "consumer": KafkaConsumer.DEFAULT_CONFIG,
        "producer": KafkaProducer.DEFAULT_CONFIG,
    }


def _kafka_value(name: str, raw: str, source: str) -> Any:
    consumer, producer = kafka_client_defaults()
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
        shown = "(not shown)" if name in SECRET_KEYS or "password" in name else repr(raw)
        raise ConfigError(f"{source}={shown} does not fit {name} (default {default!r})") from None
    return raw
