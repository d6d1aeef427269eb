"""The settings parsers (worker/edges/config.py, every tool's command line): generated ``--kafka-option``
items and stray words around a secret, through a tool's parser and ``config_from_args``.

Contract: a command line is accepted or refused with one ``bad setting`` line (exit 2), and that
line never holds the secret, however the item around it is malformed.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.gen import Mutator, example_strategy

NAME = "settings"
MIN_INPUTS = 10_000
EXAMPLES = 10_200
MEMORY_BYTES = 16 << 20
SECRET = "Zq8-hunter2-S3cret"
KEYS = ("sasl_plain_password", "ssl_password", "SASL_PLAIN_PASSWORD", "sasl-plain-password", "sasl_plain_pasword",
        "sasl_plain_password_file", "password", "security_protocol", "")  # fmt: skip
SEPARATORS = ("=", ":", " ", "", "==", ": ", "\t", "=\n", "\x1b", ";", "/")


def strategy() -> st.SearchStrategy:
    return example_strategy


def setup(workdir: Path) -> Any:
    return None


def _argv(m: Mutator) -> list[str]:
    rng = m.rng
    argv: list[str] = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        key, sep = rng.choice(KEYS), rng.choice(SEPARATORS)
        secret = SECRET if rng.random() < 0.8 else SECRET + rng.choice(("=x", ":y", " z"))
        form = rng.random()
        if form < 0.6:
            argv += ["--kafka-option", key + sep + secret]
        elif form < 0.75:
            argv += [f"--kafka-option={key}{sep}{secret}"]
        elif form < 0.9:  # the value split off into its own word
            argv += ["--kafka-option", key + rng.choice(("=", ":", "")), secret]
        else:  # (a secret given as another flag's value cannot be known as one: not generated)
            argv += [rng.choice(("--kafka-option", "--nope")), secret]
    if rng.random() < 0.2:
        argv.append(rng.choice(("--kafka-option", "--max-alerts", "x", m.text(5))))
    return argv


def check(context: Any, example: Any) -> int:
    from worker.programs.subcommands import tail_alerts as tail

    argv = _argv(Mutator(*example))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        parsed = tail.parse_settings(tail.PROG, tail.build_parser(), argv)
    err = stderr.getvalue()
    assert SECRET not in err and SECRET[:10] not in err, f"the secret in: {err!r}"
    if isinstance(parsed, int):
        assert parsed == 2 and err.count("\n") == 1 and "bad setting" in err, (parsed, err)
    return 1
