"""``fraud-worker`` (also ``python -m worker``): run the streaming worker.

Exit codes: 0 stopped cleanly, 1 unexpected error, 2 bad settings, 3 failed to start (no servable
model), 4 refused by the Kafka cluster (authentication, TLS trust, security protocol or an ACL:
worker/edges/access.py; one line says which). SIGTERM or SIGINT finishes the batch in hand, commits and
exits 0; a second one exits at once with 1. The first word is kept free for subcommands
(``fraud-worker <command> ...``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

from worker.core.errors import AccessError, BundleError, ConfigError

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_STARTUP, EXIT_REFUSED = 0, 1, 2, 3, 4
SUBCOMMANDS: dict[str, str] = {  # name -> "module:function", e.g. a later "reconcile"
    "backtest": "worker.programs.subcommands.backtest:main",
    "create-topics": "worker.programs.subcommands.create_topics:main",
    "reconcile": "worker.programs.subcommands.reconcile:main",
    "tail-alerts": "worker.programs.subcommands.tail_alerts:main",
    "promote": "worker.programs.subcommands.promote:main",
    "sign-bundle": "worker.programs.subcommands.sign_bundle:main",
    "parity": "worker.programs.subcommands.parity:main",
    "rules": "worker.programs.subcommands.rules:main",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        module, _, func = SUBCOMMANDS[args[0]].partition(":")
        return int(getattr(__import__(module, fromlist=[func]), func)(args[1:]))
    from worker.edges.config import load_config

    try:
        config = load_config(args, os.environ)
    except SystemExit as exc:  # argparse: --help (0) or a malformed command line (2)
        return int(exc.code or 0)
    except ConfigError as exc:
        print(f"fraud-worker: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from worker.edges import logs

    logs.configure(config.log_level, fmt=config.log_format)
    try:
        return _run(config)
    except ConfigError as exc:  # found while running: the feature state directory, for one
        print(f"fraud-worker: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except AccessError as exc:
        print(f"fraud-worker: refused by the Kafka cluster at {config.bootstrap_servers}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception:  # noqa: BLE001 - the last line of defence: log it whole, exit 1
        logger.exception("fraud-worker failed")
        return EXIT_ERROR


def _run(config) -> int:
    from prometheus_client import CollectorRegistry

    from worker.core.rules import RuleSetError
    from worker.core.signing import load_trusted_keys
    from worker.edges.health import HealthState
    from worker.edges.health_server import HealthServer
    from worker.edges.metrics import WorkerMetrics
    from worker.models.rules import RulesWatcher
    from worker.models.watcher import ModelWatcher, signed_by
    from worker.pipeline.loop import Worker

    try:  # checked by load_config already; read again here, so a file changed since is caught too
        trusted_keys = load_trusted_keys(config.trusted_keys) if config.trusted_keys else None
    except ConfigError as exc:
        print(f"fraud-worker: bad setting: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, drift_window=config.drift_window)
    health = HealthState(config.health_stall_seconds)
    models = ModelWatcher(
        config.models_dir, metrics, interval=config.reload_interval_seconds, trusted_keys=trusted_keys,
        min_version=config.min_model_version or None,
    )  # fmt: skip
    try:
        scorer = models.load_initial()
    except BundleError as exc:
        print(f"fraud-worker: cannot start, no servable model in {config.models_dir}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    rules = RulesWatcher(config.models_dir, config.lists_directory, metrics, config.reload_interval_seconds,
                         trusted_keys, "serving", not config.rules_interpreted)  # fmt: skip
    shadow_rules = RulesWatcher(config.models_dir, config.lists_directory, metrics, config.reload_interval_seconds,
                                trusted_keys, "shadow", not config.rules_interpreted)  # fmt: skip
    try:
        rules.load_initial()
        shadow_rules.load_initial()
    except RuleSetError as exc:
        print(f"fraud-worker: cannot start, bad rule set: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    for watcher in (rules, shadow_rules):
        if watcher.rule_set is not None:
            logger.info("%s rule set %s: %d rules (%s)", watcher.role, watcher.version, len(watcher.rule_set.rules),
                        ", ".join(f"{a} {sum(r.action == a for r in watcher.rule_set.rules)}"
                                  for a in watcher.rule_set.actions))  # fmt: skip
    health.model_version = scorer.version
    health.model_check = models.files_problem
    logger.info("serving model %s (%d features, threshold %.4f%s)", scorer.version, scorer.n_features,
                scorer.threshold, signed_by(scorer))  # fmt: skip
    if trusted_keys is None:
        # A warning, not info: without signatures whoever can write the models directory decides
        # what is flagged, and a bundle with consistent sha256 fields but other weights would serve.
        logger.warning("model bundles are not signature-checked: set trusted_keys to serve only signed ones")
    else:
        logger.info("serving only model bundles signed by one of the trusted keys %s", ", ".join(trusted_keys.ids))

    worker = Worker(config, models, metrics, health, rules=rules, shadow_rules=shadow_rules)
    _install_signals(worker)
    server = None
    if config.metrics_port:
        try:
            server = HealthServer(
                config.metrics_host, config.metrics_port, registry, health, metrics.health_connections_dropped
            ).start()
        except OSError as exc:
            print(f"fraud-worker: cannot start, metrics port {config.metrics_port}: {exc.strerror}", file=sys.stderr)
            return EXIT_STARTUP
    try:
        return worker.run()
    finally:
        if server is not None:
            server.close()


def _install_signals(worker) -> None:
    state = {"signals": 0}

    def handle(signum: int, frame) -> None:
        state["signals"] += 1
        if state["signals"] > 1:
            os.write(2, b"fraud-worker: second signal, exiting now\n")
            os._exit(EXIT_ERROR)
        logger.info("%s received: finishing the current batch, then stopping", signal.Signals(signum).name)
        worker.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
