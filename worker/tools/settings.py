"""A tool's command line and settings, read the same way by every tool: (args, config) or an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from worker.config import WorkerConfig, config_from_args
from worker.errors import ConfigError

EXIT_USAGE = 2
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")
DEFAULT_ISOLATION_LEVEL = "read_committed"


def add_isolation_level(parser: argparse.ArgumentParser) -> None:
    """``--isolation-level``: which records of Kafka transactions a reading tool sees.

    The flag is the one way to set it: ``isolation_level`` is a key the worker owns, so
    ``--kafka-option isolation_level=...`` is refused (``worker.config.OWNED_KAFKA_KEYS``).
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
