"""The end of a process's stderr file, for its alert (read in the target's
worker thread, never on the event loop)."""

from __future__ import annotations

import os

TAIL_LINES = 20
TAIL_BYTES = 16384


def read_tail(path: str, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    """The last `lines` lines of a file (at most `limit` bytes read), or ""."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - limit)
            f.seek(start)
            data = f.read(limit)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    rows = text.splitlines()
    if start > 0 and rows:
        rows = rows[1:]  # the first one is cut
    return "\n".join(rows[-lines:]).rstrip()
