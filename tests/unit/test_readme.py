"""Every command, flag and ``FRAUD_*`` variable the README and the docs/ pages name exists and answers ``--help``.

Commands come from the pages' code blocks (``$ `` prompts stripped) and inline code. Each distinct
program (with its subcommand, for ``fraud-worker``) is run with ``--help`` and must exit 0; every
``--flag`` on a command line must appear in that program's help; every ``--flag`` in the prose
must appear in some program's help; every ``FRAUD_*`` name must be a worker setting or a
pass-through ``FRAUD_KAFKA_<KEY>`` with a real kafka-python key; every ``make`` target named must
be listed by ``make help``; every relative link must reach a file, and a heading where it names
one. The README itself must name the programs and subcommands and link every page under docs/.
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
DOCS = sorted((REPO / "docs").glob("*.md"))
# The README and every docs/ page, by their path from the repository root.
PAGES = {"README.md": README} | {f"docs/{p.name}": p.read_text() for p in DOCS}
BIN = Path(sys.executable).parent
PROGRAMS = (
    "fraud-worker", "fraud-train", "fraud-replay", "fraud-feedback",
    "scripts/local-kafka", "scripts/run-local", "scripts/compose-secrets",
)  # fmt: skip
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


# Flags of other tools the README shows (docker compose, kafka-topics.sh).
EXTERNAL_FLAGS = {"--build", "--scale", "--if-not-exists", "--from-file"}  # docker compose, kafka-topics, kubectl
# The naming rule of the settings (docs/configuration.md): a setting `name` is `--name-with-dashes`, `FRAUD_NAME`.
PLACEHOLDERS = {"--name-with-dashes", "FRAUD_NAME"}


def code_lines(text: str = README) -> list[str]:
    """Lines of the fenced code blocks, then the inline code spans (either may hold a command)."""
    lines = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            lines.append(line.split("  #")[0].split(" # ")[0].strip())
    lines += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
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


COMMANDS = sorted(
    {c for text in PAGES.values() for line in code_lines(text) if (c := command_of(line)) and c[0] != "make"}
)


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
    readme = {c for line in code_lines() if (c := command_of(line)) and c[0] != "make"}
    names = {c[0] for c in readme}
    assert {"fraud-worker", "fraud-train", "fraud-replay", "scripts/local-kafka"} <= names
    assert ("fraud-worker", "tail-alerts") in readme and ("fraud-worker", "create-topics") in readme


def test_the_readme_lists_every_program_and_subcommand() -> None:
    """The README's programs table: a row for each console script, each worker subcommand, fraud-feedback export."""
    rows = set(re.findall(r"^\| `([a-z][a-z -]*)` \|", README, flags=re.M))
    expected = {"fraud-worker", "fraud-train", "fraud-replay", "fraud-feedback", "fraud-feedback export"}
    expected |= {f"fraud-worker {sub}" for sub in SUBCOMMANDS}
    assert expected <= rows, f"programs missing from the README's table: {sorted(expected - rows)}"


def test_the_readme_links_every_docs_page() -> None:
    linked = set(re.findall(r"\]\(docs/([^)#\s]+\.md)", README))
    pages = {p.name for p in DOCS}
    assert pages, "no pages under docs/"
    assert pages <= linked, f"docs/ pages the README's map does not link: {sorted(pages - linked)}"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_command_answers_help(command: tuple[str, ...]) -> None:
    assert "usage" in help_text(command).lower() or command[0].startswith("scripts/")


@pytest.mark.parametrize("page", PAGES)
def test_flags_on_command_lines_exist_in_that_command(page: str) -> None:
    missing = []
    for line in code_lines(PAGES[page]):
        command = command_of(line)
        if command is None or command[0] == "make":
            continue
        for flag in FLAG.findall(line):
            if flag != "--help" and flag not in help_text(command):
                missing.append(f"{' '.join(command)} {flag}  ({page} line: {line})")
    assert not missing, "\n".join(missing)


@functools.cache
def bench_help() -> str:
    """``benchmarks/bench.py --help`` (``make bench``): docs/performance.md names its options."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/bench.py"), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@functools.cache
def fuzz_help() -> str:
    """``python -m fuzz --help`` (``make fuzz``): docs/development.md names its options (``FUZZ_ARGS``)."""
    done = subprocess.run([sys.executable, "-m", "fuzz", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("page", PAGES)
def test_every_flag_in_the_readme_exists_somewhere(page: str) -> None:
    helps = " ".join(help_text(c) for c in COMMANDS)
    helps += " ".join(help_text(("fraud-worker", sub)) for sub in SUBCOMMANDS)
    helps += bench_help() + fuzz_help()
    flags = set(FLAG.findall(PAGES[page])) - EXTERNAL_FLAGS - PLACEHOLDERS
    missing = sorted(f for f in flags if f not in helps)
    assert not missing, f"flags named in {page} that no command accepts: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_every_fraud_variable_in_the_readme_is_a_setting(page: str) -> None:
    settings = {s.env for s in SETTINGS}
    consumer, producer = kafka_client_defaults()
    unknown = []
    for name in sorted(set(re.findall(r"FRAUD_[A-Z0-9_]+", PAGES[page])) - PLACEHOLDERS):
        if name in settings or name in ("FRAUD_", KAFKA_ENV_PREFIX):  # FRAUD_*, FRAUD_KAFKA_<KEY>
            continue
        key = name[len(KAFKA_ENV_PREFIX) :].lower()
        if name.startswith(KAFKA_ENV_PREFIX) and (key in {**consumer, **producer} or secret_file_key(key)):
            continue  # a kafka-python setting, or a secret's file (FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE)
        unknown.append(name)
    assert not unknown, f"FRAUD_* names in {page} that the worker refuses: {unknown}"


@pytest.mark.parametrize("page", PAGES)
def test_make_targets_in_the_readme_exist(page: str) -> None:
    text = PAGES[page]
    targets = set(re.findall(r"`make ([a-z][a-z-]*)", text))
    targets |= {c[1] for line in code_lines(text) if (c := command_of(line)) and c[0] == "make" and len(c) > 1}
    listed = {line.split()[0] for line in make_help().splitlines() if line.strip()}
    assert targets or page != "README.md", "the README names no make target"
    assert targets <= listed, f"make targets named in {page} but not in `make help`: {targets - listed}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens; repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*#*$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_reaches_a_file_and_heading(page: str) -> None:
    text = re.sub(r"^```.*?^```", "", PAGES[page], flags=re.M | re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (REPO / page).parent / path if path else REPO / page
        if not file.resolve().is_relative_to(REPO) or not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not broken, f"links in {page}:\n" + "\n".join(broken)


def test_anchors_follow_github() -> None:
    assert anchors("# Backtests and shadow mode\n## The data's way: `x`, y\n## Metrics\n## Metrics\n") == {
        "backtests-and-shadow-mode", "the-datas-way-x-y", "metrics", "metrics-1",
    }  # fmt: skip
