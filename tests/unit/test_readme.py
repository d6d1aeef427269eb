"""Every command, flag and ``FRAUD_*`` variable the README names exists and answers ``--help``.

Commands come from the README's code blocks (``$ `` prompts stripped). Each distinct program
(with its subcommand, for ``fraud-worker``) is run with ``--help`` and must exit 0; every
``--flag`` on a command line must appear in that program's help; every ``--flag`` in the prose
must appear in some program's help; every ``FRAUD_*`` name must be a worker setting or a
pass-through ``FRAUD_KAFKA_<KEY>`` with a real kafka-python key; every ``make`` target named must
be listed by ``make help``.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from worker.edges.config import KAFKA_ENV_PREFIX, SETTINGS, kafka_client_defaults
from worker.edges.credentials import secret_file_key
from worker.programs.fraud_worker import SUBCOMMANDS

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent
PROGRAMS = (
    "fraud-worker", "fraud-train", "fraud-replay", "fraud-feedback",
    "scripts/local-kafka", "scripts/run-local", "scripts/compose-secrets",
)  # fmt: skip
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


# Flags of other tools the README shows (docker compose, kafka-topics.sh).
EXTERNAL_FLAGS = {"--build", "--scale", "--if-not-exists", "--from-file"}  # docker compose, kafka-topics, kubectl


def code_lines() -> list[str]:
    """Lines of the fenced code blocks, then the inline code spans (either may hold a command)."""
    lines = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", README, flags=re.M | re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            lines.append(line.split("  #")[0].split(" # ")[0].strip())
    lines += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"^```.*?^```", "", README, flags=re.M | re.S))
    return [line for line in lines if line]


def command_of(line: str) -> tuple[str, ...] | None:
    """("fraud-worker", "tail-alerts") for a line running a program the README documents."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # leading VAR=value assignments
        words.pop(0)
    if not words:
        return None
    program = words[0].removeprefix("./")
    if program == "python" and words[1:3] == ["-m", "worker"]:
        program, words = "fraud-worker", ["fraud-worker", *words[3:]]
    if program == "make":
        return ("make", *words[1:2])
    if program not in PROGRAMS:
        return None
    if program == "fraud-worker" and len(words) > 1 and words[1] in SUBCOMMANDS:
        return (program, words[1])
    if program == "fraud-feedback" and words[1:2] == ["export"]:
        return (program, "export")
    if program == "scripts/local-kafka" and len(words) > 1 and not words[1].startswith("-"):
        return (program,)
    return (program,)


COMMANDS = sorted({c for line in code_lines() if (c := command_of(line)) and c[0] != "make"})


@functools.cache
def help_text(command: tuple[str, ...]) -> str:
    program, *sub = command
    exe = str(REPO / program) if program.startswith("scripts/") else str(BIN / program)
    done = subprocess.run([exe, *sub, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)} --help exited {done.returncode}:\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


@functools.cache
def make_help() -> str:
    done = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_names_the_commands_it_should() -> None:
    names = {c[0] for c in COMMANDS}
    assert {"fraud-worker", "fraud-train", "fraud-replay", "scripts/local-kafka"} <= names
    assert ("fraud-worker", "tail-alerts") in COMMANDS and ("fraud-worker", "create-topics") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_command_answers_help(command: tuple[str, ...]) -> None:
    assert "usage" in help_text(command).lower() or command[0].startswith("scripts/")


def test_flags_on_command_lines_exist_in_that_command() -> None:
    missing = []
    for line in code_lines():
        command = command_of(line)
        if command is None or command[0] == "make":
            continue
        for flag in FLAG.findall(line):
            if flag != "--help" and flag not in help_text(command):
                missing.append(f"{' '.join(command)} {flag}  (README line: {line})")
    assert not missing, "\n".join(missing)


def bench_help() -> str:
    """``benchmarks/bench.py --help`` (``make bench``): the Performance section names its options."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/bench.py"), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_flag_in_the_readme_exists_somewhere() -> None:
    helps = " ".join(help_text(c) for c in COMMANDS)
    helps += " ".join(help_text(("fraud-worker", sub)) for sub in SUBCOMMANDS)
    helps += bench_help()
    flags = set(FLAG.findall(README)) - EXTERNAL_FLAGS
    missing = sorted(f for f in flags if f not in helps)
    assert not missing, f"flags named in the README that no command accepts: {missing}"


def test_every_fraud_variable_in_the_readme_is_a_setting() -> None:
    settings = {s.env for s in SETTINGS}
    consumer, producer = kafka_client_defaults()
    unknown = []
    for name in sorted(set(re.findall(r"FRAUD_[A-Z0-9_]+", README))):
        if name in settings or name in ("FRAUD_", KAFKA_ENV_PREFIX):  # FRAUD_*, FRAUD_KAFKA_<KEY>
            continue
        key = name[len(KAFKA_ENV_PREFIX) :].lower()
        if name.startswith(KAFKA_ENV_PREFIX) and (key in {**consumer, **producer} or secret_file_key(key)):
            continue  # a kafka-python setting, or a secret's file (FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE)
        unknown.append(name)
    assert not unknown, f"FRAUD_* names in the README that the worker refuses: {unknown}"


def test_make_targets_in_the_readme_exist() -> None:
    targets = set(re.findall(r"`make ([a-z][a-z-]*)", README))
    targets |= {c[1] for line in code_lines() if (c := command_of(line)) and c[0] == "make" and len(c) > 1}
    listed = {line.split()[0] for line in make_help().splitlines() if line.strip()}
    assert targets and targets <= listed, f"make targets named but not in `make help`: {targets - listed}"
