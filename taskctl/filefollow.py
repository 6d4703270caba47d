"""`tail -f` of an output file across rotations, without the waiting: the
part `taskctl tail -f` (taskctl/follow.py, blocking) and the web page's
follow stream (taskweb/page.py, asyncio) share. Each caller polls: reads
what was added, and when nothing was, says so (`quiet`); after
REOPEN_AFTER s of quiet it asks the daemon for the file again and hands
the answer to `switch`.

Rotation: another file (st_dev, st_ino) from the daemon means ours was
rotated away: its rest is read, then the new one from its start. A file
truncated in place (0 backups) is read again from the top.
"""

from __future__ import annotations

import os

FOLLOW_POLL = 0.2  # seconds between two reads of a followed file
REOPEN_AFTER = 1.0  # seconds without new data before checking for a rotation
CHUNK = 65536


class FileFollow:
    """The file open at `fd` (ours to close), read from its current offset."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pos = os.lseek(fd, 0, os.SEEK_CUR)
        self._quiet = 0.0

    def seek(self, offset: int) -> None:
        """Read from `offset` on (the start of a tail)."""
        self.pos = os.lseek(self.fd, offset, os.SEEK_SET)

    def read(self, max_chunks: int | None = None) -> bytes:
        """What was added since the last read (at most `max_chunks` chunks
        of CHUNK bytes: a caller that must not hold its loop)."""
        chunks: list[bytes] = []
        while max_chunks is None or len(chunks) < max_chunks:
            chunk = os.read(self.fd, CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if data:
            self.pos += len(data)
            self._quiet = 0.0
        return data

    def quiet(self, waited: float = FOLLOW_POLL) -> bool:
        """Nothing was added for `waited` s: a truncated file is read from the
        top again; True once it is time to ask whether it was rotated."""
        if os.fstat(self.fd).st_size < self.pos:
            self.pos = os.lseek(self.fd, 0, os.SEEK_SET)
        self._quiet += waited
        if self._quiet < REOPEN_AFTER:
            return False
        self._quiet = 0.0
        return True

    def switch(self, new: int | None) -> tuple[bool, bytes]:
        """The daemon's answer when asked for the file again (None: none, we
        keep ours). Another file: ours was rotated away; (True, the rest
        of ours) and the new one is followed from its start. The same file:
        (False, b"")."""
        if new is None:
            return False, b""
        if _same_file(os.fstat(new), os.fstat(self.fd)):
            os.close(new)
            return False, b""
        rest = self.read()  # what was written before the rotation
        os.close(self.fd)
        self.fd, self.pos, self._quiet = new, 0, 0.0
        return True, rest

    def close(self) -> None:
        os.close(self.fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
