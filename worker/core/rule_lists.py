"""Named lists of a rule set (allow and deny lists of cards, merchants, devices...): one value a line in a file
of the lists directory. Pure: reads the file it is given, no settings.

A line is stripped of surrounding white space; empty lines and lines starting with ``#`` are skipped. A file
larger than ``MAX_LIST_BYTES``, not UTF-8, or with a value longer than ``MAX_VALUE_CHARS`` is refused with one
line naming the file and the problem (the worker keeps the list it had: worker/models/rules.py).
"""

from __future__ import annotations

import os

from worker.core.rules import RuleSetError

MAX_LIST_BYTES = 64 * 1024 * 1024
MAX_VALUE_CHARS = 256


def read_list(path: str) -> frozenset[str]:
    """The values of a list file; ``RuleSetError`` names the file and the problem."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_LIST_BYTES:
                raise RuleSetError(f"{path}: {size} bytes, larger than {MAX_LIST_BYTES} (a list file)")
            # At most what fstat said plus one byte: read(n) sets n bytes aside first, so never the cap itself.
            data = fh.read(min(size, MAX_LIST_BYTES) + 1)
    except OSError as exc:
        raise RuleSetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > size:
        raise RuleSetError(f"{path}: grew while it was read (write a list to another name and rename it)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleSetError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    values = set()
    for number, line in enumerate(text.splitlines(), 1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if len(value) > MAX_VALUE_CHARS:
            raise RuleSetError(f"{path}: line {number} is longer than {MAX_VALUE_CHARS} characters")
        values.add(value)
    return frozenset(values)
