"""The state store's file: atomic writes, careful reads, one owner at a time.

`StateStore(statedir)` keeps `processes.json` in `statedir` (created 0700 if
missing; the file is 0600: it names every program and its pid). A write
goes to a temporary file in the same directory, is fsynced, renamed over
the old one and the directory fsynced: a crash at any point leaves the old
file or the new one, never half of one.

`durable=False` skips the two fsyncs, keeping the temporary file and the
rename: a reader (the next daemon after a SIGKILL) sees the old file or the
new one, and sees the new one as soon as the write returns. That is what
the daemon's processes.json needs: it names live processes only, and a
power cut, the one thing the fsyncs guard against, kills every one of them.
The fsyncs there did harm: on a busy disk they took seconds, and a daemon
killed meanwhile left a file without the processes it had just started,
which its successor then started a second time.

A file that cannot be trusted is refused with a logged reason and kept
aside as `processes.json.bad` for inspection (the next good write does not
touch it).

`lock()` takes an exclusive flock on `statedir/lock` for the daemon's life:
two daemons on one statedir would otherwise adopt (and stop) each other's
processes. The kernel drops the lock when its holder dies, SIGKILL too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os

from taskmasterd.atomicfile import fsync_dir, replace_file
from taskmasterd.statestore.records import Refused, Snapshot, decode, encode

log = logging.getLogger("taskmasterd")

FILE_NAME = "processes.json"
MAX_SIZE = 16 * 1024 * 1024  # 1,000 processes are ~300 KB; more is not ours


class StoreBusy(Exception):
    """Another live daemon holds the store's lock."""


class StateStore:
    def __init__(self, statedir: str, name: str = FILE_NAME, *, durable: bool = True) -> None:
        self.statedir = statedir
        self.path = os.path.join(statedir, name)
        self.durable = durable
        self._lock_fd: int | None = None

    # ---- reading ----------------------------------------------------------

    def load(self) -> Snapshot | Refused:
        """The recorded snapshot; an empty one when there is no file. A
        refused file is logged and moved aside to `<path>.bad`."""
        self._remove_leftovers()
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_SIZE + 1)
        except FileNotFoundError:
            return Snapshot()
        except OSError as exc:
            refused = Refused(f"cannot read it: {exc.strerror}")
            log.warning("state store %s refused: %s; no process is re-adopted", self.path,
                        refused.reason)
            return refused
        result = Refused(f"larger than {MAX_SIZE} bytes") if len(data) > MAX_SIZE else decode(data)
        if isinstance(result, Refused):
            kept = self.path + ".bad"
            try:
                os.replace(self.path, kept)
                where = f"kept as {kept}"
            except OSError as exc:
                where = f"could not be moved to {kept}: {exc.strerror}"
            log.warning("state store %s refused: %s (%s); no process is re-adopted, starting "
                        "afresh", self.path, result.reason, where)
        return result

    def _remove_leftovers(self) -> None:
        """Temporary files of a write a crash interrupted (only the lock's
        owner loads, so none of them is being written)."""
        prefix = f".{os.path.basename(self.path)}."
        try:
            names = os.listdir(self.statedir)
        except OSError:
            return
        for name in names:
            if name.startswith(prefix) and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.statedir, name))

    # ---- writing ----------------------------------------------------------

    def save(self, snapshot: Snapshot) -> None:
        self.save_bytes(encode(snapshot))

    def save_bytes(self, data: bytes) -> None:
        """Replace the file with `data` atomically, durably unless the store
        is not `durable` (raises OSError)."""
        self._makedir()
        replace_file(self.path, data, durable=self.durable)

    def remove(self) -> None:
        """No file: nothing runs (the daemon's clean shutdown)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        if self.durable:
            self._sync_dir()

    def _makedir(self) -> None:
        os.makedirs(self.statedir, mode=0o700, exist_ok=True)

    def _sync_dir(self) -> None:
        fsync_dir(self.statedir)

    # ---- ownership --------------------------------------------------------

    def lock(self) -> None:
        """Hold `statedir/lock` until `unlock()` or death; raise StoreBusy
        if another process holds it, OSError if it cannot be created."""
        self._makedir()
        fd = os.open(os.path.join(self.statedir, "lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreBusy(f"another taskmasterd uses {self.statedir}") from None
            raise
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
