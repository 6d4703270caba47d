"""Replacing a file so that a reader sees the old one or the new one, never
half of one: a temporary file in the same directory, then a rename.

`durable=True` adds the two fsyncs (the file before the rename, the
directory after it) that make the new file survive a power cut. Files that
only describe live things (the daemon's processes.json, the private bus's
address and policy) skip them: a power cut takes what they describe along.

A leaf module (os and tempfile only): the state store and the private bus
both write through it, and neither may import the other.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def replace_file(path: str, data: bytes, *, mode: int = 0o600, durable: bool = False) -> None:
    """Replace `path` with `data` atomically, the new file `mode` (raises
    OSError; the temporary file is gone then)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")  # 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    """Make `directory`'s entries durable (the renames and new files in it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
