"""Text from outside made safe to show to a person: ``printable(text)``.

A transaction id, a model version, a file's content or an exception's message can hold control
characters; printed raw, ESC starts a terminal escape sequence (rewriting the screen, the title,
the clipboard), CR or a newline forges a line. ``printable`` renders each C0 control (U+0000..U+001F),
DEL (U+007F) and C1 control (U+0080..U+009F) as ``\\xNN``, and the Unicode line separators and
bidirectional overrides (U+2028, U+2029, U+202A..U+202E, U+2066..U+2069) as ``\\uNNNN``; every other
character, a backslash included, is kept. Bytes are read as UTF-8 first (an undecodable byte
becomes ``\\xNN`` too). Standard library only: the tools and the worker both use it.
"""

from __future__ import annotations

_TABLE: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_TABLE.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def printable(text: str | bytes, limit: int | None = None) -> str:
    """``text`` with its control characters escaped (see the module); at most ``limit`` characters
    of it (before escaping) when given, with ``...`` where it was cut."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "backslashreplace")
    elif not isinstance(text, str):
        text = str(text)
    cut = limit is not None and len(text) > limit
    if cut:
        text = text[:limit]
    text = text.translate(_TABLE)
    # A lone surrogate (a str decoded with surrogateescape) cannot be written to a UTF-8 terminal.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text + "..." if cut else text
