"""A tool's command line and settings, read the same way by every tool: (args, config) or an exit code.

Also how a tool says that the cluster refused it (``require_access``, ``failure``): one line, exit
status 4 (``EXIT_REFUSED``), as the worker does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from worker.core.errors import AccessError, ConfigError
from worker.edges import access
from worker.edges.config import WorkerConfig, client_options, config_from_args
from worker.edges.credentials import SECRET_KEYS, redact

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 1, 2, 4
# A tool's clients wait this long for a first broker (kafka-python's producer waits 30 s by default),
# so a refused client is explained well within 30 s.
TOOL_BOOTSTRAP_TIMEOUT_MS = 10_000
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")
DEFAULT_ISOLATION_LEVEL = "read_committed"


def add_isolation_level(parser: argparse.ArgumentParser) -> None:
    """``--isolation-level``: which records of Kafka transactions a reading tool sees.

    The flag is the one way to set it: ``isolation_level`` is a key the worker owns, so
    ``--kafka-option isolation_level=...`` is refused (``worker.edges.config.OWNED_KAFKA_KEYS``).
    """
    parser.add_argument(
        "--isolation-level",
        choices=ISOLATION_LEVELS,
        default=DEFAULT_ISOLATION_LEVEL,
        help="which records of Kafka transactions to read (default: %(default)s). read_committed reads only "
        "committed transactions: the worker's exactly-once output is exactly-once only for read_committed "
        "readers, and output written without transactions (at-least-once) reads the same at either level. "
        "read_uncommitted also reads the records of aborted and still-open transactions (duplicates under "
        "exactly-once), e.g. to debug the worker's transactions",
    )


def parse_settings(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    problem: Callable[[argparse.Namespace], str | None] = lambda args: None,
) -> tuple[argparse.Namespace, WorkerConfig] | int:
    """Parse ``argv``, check the tool's own flags (``problem`` names one, or None), then build the config.

    Returns the exit code instead: 0 after ``--help``, 2 after a malformed command line, a flag
    ``problem`` finds, or a setting ``config_from_args`` refuses (one line naming it, on stderr).
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a malformed command line (2, one line already printed)
        return int(exc.code or 0)
    found = problem(args)
    if found:
        print(f"{prog}: bad setting: {found}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args, config_from_args(args, os.environ)
    except ConfigError as exc:
        print(f"{prog}: bad setting: {exc}", file=sys.stderr)
        return EXIT_USAGE


def require_access(config: WorkerConfig, read: Sequence[str] = (), write: Sequence[str] = ()) -> None:
    """Raise AccessError unless the broker lets this tool's settings read ``read`` and write ``write``.

    kafka-python reads a topic it may not read as an empty one, with no error: a tool that reads
    would report nothing, and one that writes would fail later with less to say.
    """
    options = client_options(
        config, "admin", client_id="fraud-access-check", bootstrap_timeout_ms=TOOL_BOOTSTRAP_TIMEOUT_MS
    )
    cannot_read, cannot_write = access.check_topics(options, read=list(read), write=list(write))
    if cannot_read or cannot_write:
        raise AccessError("; ".join(cannot_read + cannot_write))


def failure(exc: BaseException, config: WorkerConfig) -> tuple[str, int]:
    """A tool's one line about ``exc`` and its exit status: 4 if the cluster refused it, else 1.

    A kafka-python error that is no refusal itself (a bootstrap that timed out) is explained by
    probing the bootstrap server with the tool's own settings (worker/edges/access.py).
    """
    from kafka.errors import KafkaError

    secrets = [str.__str__(v) for k, v in config.kafka_options if k in SECRET_KEYS]
    problem = str(exc) if isinstance(exc, AccessError) else access.refusal(exc, config.group_id)
    if problem is None and isinstance(exc, KafkaError):
        problem = access.diagnose(config.bootstrap_servers, client_options(config, "consumer"))
    if problem is not None:
        return f"refused by the Kafka cluster at {config.bootstrap_servers}: {redact(problem, secrets)}", EXIT_REFUSED
    return redact(f"{type(exc).__name__}: {exc}", secrets), EXIT_FAILED
