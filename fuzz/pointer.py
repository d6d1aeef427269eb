"""Pointer files (``models/CURRENT``, ``CHALLENGER``, read by worker/core/bundle.py ``read_current``):
generated content, and now and then a symlink to a secret, a FIFO, a directory or a large file.

Contract: ``read_current`` returns a version name (``VERSION_PATTERN``, the content stripped) or
raises ``BundleError``, at once (a FIFO never blocks it); its message holds no raw control
character and nothing of a secret file a symlink points at.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.gen import CONTROL, Mutator, example_strategy

NAME = "pointer"
MIN_INPUTS = 10_000
EXAMPLES = 10_200
MEMORY_BYTES = 8 << 20
SECRET = "s3cret-Pa55word-in-a-file"
RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
KINDS = ("text", "text", "text", "text", "text", "text", "bytes", "symlink", "fifo", "directory", "large", "empty")


def strategy() -> st.SearchStrategy:
    return st.tuples(example_strategy, st.sampled_from(KINDS), st.sampled_from(("CURRENT", "CHALLENGER")))


def setup(workdir: Path) -> Any:
    root = workdir / "pointer-target"
    shutil.rmtree(root, ignore_errors=True)
    (root / "models").mkdir(parents=True)
    (root / "secret.txt").write_text(SECRET + "\n")
    return root


def _content(m: Mutator) -> bytes:
    version = m.rng.choice(("20260101T000000Z-f022f022", "v1", "a" * 128, "a" * 129, "../etc/passwd", ".hidden"))
    r = m.rng.random()
    if r < 0.3:
        text = version + m.rng.choice(("\n", "", "\r\n", "\n\n", " ", "\t"))
    elif r < 0.6:  # control characters, escapes and forged log lines around or inside the name
        i = m.rng.randrange(len(version) + 1)
        text = version[:i] + "".join(m.rng.choice(CONTROL) for _ in range(m.rng.randrange(1, 4))) + version[i:]
        text += m.rng.choice(("", "\nERROR forged log line", "\x1b[2J\x1b]0;owned\x07"))
    else:
        text = m.text(m.rng.choice((1, 10, 100, 255, 256, 257, 2000)))
    data = text.encode("utf-8", "surrogatepass")
    return m.bytes_mutation(data) if m.rng.random() < 0.2 else data


def check(context: Any, example: Any) -> int:
    from worker.core.bundle import VERSION_PATTERN, read_current
    from worker.core.errors import BundleError

    root = context
    (seed, extra), kind, name = example
    m = Mutator(seed, extra)
    path = root / "models" / name
    if kind == "symlink":
        os.symlink(root / "secret.txt", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "large":
        with open(path, "wb") as f:  # v1 and then NULs, without holding them in memory
            f.write(b"v1\n")
            f.truncate(m.rng.choice((300, 70_000, 5_000_000)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bytes":
        path.write_bytes(bytes(m.rng.randrange(256) for _ in range(m.rng.randrange(300))))
    else:
        path.write_bytes(_content(m))
    try:
        try:
            version = read_current(root / "models", name)
        except BundleError as exc:
            text = str(exc)
            assert not RAW_CONTROL.search(text), f"raw control character in {text!r:.200}"
            assert SECRET not in text and SECRET[:8] not in text, "the secret file's content in the message"
            return 1
        assert kind in ("text", "bytes"), f"a {kind} was read as a version: {version!r}"
        assert version is not None and VERSION_PATTERN.fullmatch(version), f"not a version name: {version!r}"
        assert version == path.read_bytes().decode("ascii").strip(), version
        return 1
    finally:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
