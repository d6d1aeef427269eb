"""Kafka secrets: read from a file or the environment, and never shown.

A secret setting (``SECRET_KEYS``: the SASL password, the TLS key's password) comes either as
``FRAUD_KAFKA_<KEY>=value`` / ``--kafka-option key=value`` or, for a mounted Kubernetes Secret, as
``FRAUD_KAFKA_<KEY>_FILE=/path`` / ``--kafka-option key_file=/path`` (the file's content, one
trailing newline removed). Its value is a ``Secret``: a ``str`` that kafka-python uses as any other
(it encodes it, joins it into the SASL message), but whose ``repr``, ``str`` and ``format`` are
``***``, so a log line, an error message or a logged settings dict (kafka-python logs its admin
client's at DEBUG) cannot show it. ``redact`` removes the known secret values from any text, for
messages built from a library's exception.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from worker.core.errors import ConfigError

SECRET_KEYS = frozenset({"sasl_plain_password", "ssl_password"})
FILE_SUFFIX = "_file"
MASK = "***"
MAX_SECRET_FILE_BYTES = 64 * 1024


class Secret(str):
    """A setting's secret value: usable as the string it is, shown as ``***``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK.__format__(spec)

    def reveal(self) -> str:
        """The value as a plain ``str`` (for a client that needs exactly ``str``)."""
        return str.__str__(self)


def secret_file_key(name: str) -> str | None:
    """``sasl_plain_password`` for ``sasl_plain_password_file``; None for any other setting name."""
    if name.endswith(FILE_SUFFIX) and name[: -len(FILE_SUFFIX)] in SECRET_KEYS:
        return name[: -len(FILE_SUFFIX)]
    return None


def read_secret_file(path: str, source: str) -> Secret:
    """The secret held in ``path``; ConfigError naming ``source`` and the path (never the content)."""
    path = path.strip()
    try:
        if os.path.getsize(path) > MAX_SECRET_FILE_BYTES:
            raise ConfigError(f"{source}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes, not a password file")
        with open(path, encoding="utf-8") as f:
            value = f.read()
    except OSError as exc:
        # A value that is no path (the password itself, given as the file by mistake) is not shown.
        named = path if "/" in path else "the file it names"
        raise ConfigError(f"{source}: cannot read {named}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: {path} is not UTF-8 text") from None
    value = value[:-1] if value.endswith("\n") else value
    value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise ConfigError(f"{source}: {path} is empty")
    return Secret(value)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each (non-empty) secret replaced by ``***``."""
    for secret in secrets:
        plain = str.__str__(secret)
        if plain:
            text = text.replace(plain, MASK)
    return text
