"""A file replaced whole: written to a temporary name in a directory of the same file system, synced, then
renamed over the target, so that a reader sees the old content or the new, never part of it. Pure: no Kafka."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(path: str | os.PathLike[str], data: bytes, temp_dir: str | os.PathLike[str] | None = None) -> None:
    """``path`` holds ``data`` (mode 0644). ``temp_dir``: where the temporary file lives until the rename (by
    default ``path``'s directory; another one keeps a stray file out of a signed directory, say)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=temp_dir if temp_dir is not None else target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
