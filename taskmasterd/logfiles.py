"""Output files of the log writer (taskmasterd/logwriter.py): one bounded,
rotated file (`Sink`) and the pure decisions and system calls behind it.

Nothing is written past maxbytes: a move is at most the room left, then the
file rotates (FILE -> FILE.1 ... FILE.N, FILE.N dropped; with 0 backups the
file restarts empty), so FILE* never hold more than (backups + 1) * maxbytes.
A restarted file gets its blocks up to maxbytes at once (fallocate
KEEP_SIZE, its size unchanged), given back at close.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import sys
from dataclasses import dataclass

CHUNK = 1 << 20  # the most moved per splice call (the pipes are grown to 1 MB)
PIPE_SIZE = 1 << 20
RETRY = 1.0  # seconds between two attempts on a failing file
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY  # never O_APPEND: splice

# ---- pure parts --------------------------------------------------------------


def rotation_renames(path: str, backups: int) -> list[tuple[str, str]]:
    """The renames that rotate `path`, in order: FILE.N-1 -> FILE.N (which
    drops the old FILE.N) ... FILE -> FILE.1. Empty for 0 backups (the file
    is truncated instead)."""
    moves = [(f"{path}.{i}", f"{path}.{i + 1}") for i in range(backups - 1, 0, -1)]
    return [*moves, (path, f"{path}.1")] if backups > 0 else []


def next_move(size: int, maxbytes: int, chunk: int = CHUNK) -> tuple[bool, int]:
    """(rotate first?, bytes to move at most) for a file of `size` bytes."""
    if size >= maxbytes:
        return True, min(chunk, maxbytes)
    return False, min(chunk, maxbytes - size)


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Grow a pipe to `size` (fewer wake-ups of the writer), or as close as
    the kernel allows (pipe-max-size, the per-user pipe pages limit)."""
    import fcntl

    while size >= 65536:
        try:
            return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            size //= 4
    return 0


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: 1000 programs are 2000 pipes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _pending(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    import fcntl
    import termios

    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


@dataclass(eq=False)
class Sink:
    """One output file, shared by every stream written to that path."""

    path: str
    maxbytes: int
    backups: int
    fd: int = -1
    size: int = 0
    refs: int = 0
    splice: bool = True
    error: str = ""  # the condition reported, "" when none
    dropped: int = 0
    retry_at: float = 0.0
    reserved: int = 0  # bytes preallocated from offset 0; -1: cannot
    exchange: bool = True  # renameat2(RENAME_EXCHANGE) works here

    def open(self) -> None:
        self.fd = os.open(self.path, FILE_FLAGS, 0o644)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)

    def close(self) -> None:
        if self.fd >= 0:
            self._release()
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def _release(self) -> None:
        """Give back the blocks preallocated past the data (a truncate to
        the same size frees them on ext4, xfs, btrfs)."""
        if self.reserved > self.size:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
        if self.reserved > 0:
            self.reserved = 0

    def _reserve(self) -> None:
        """Preallocate the restarted file's blocks up to maxbytes without
        changing its size (FALLOC_FL_KEEP_SIZE): a file that rotated once is
        written fast, and ext4 otherwise reserves (delayed allocation) and
        later releases each 4 KB block one by one as the data arrives. Never
        more than maxbytes past a file's data; released when it closes."""
        if self.reserved < 0:
            return
        err = fallocate(self.fd, FALLOC_FL_KEEP_SIZE, 0, self.maxbytes)
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV, errno.ESPIPE):
            self.reserved = -1  # this file system cannot: never again
        elif not err:
            self.reserved = self.maxbytes
        # else (no room...): written as it comes; the writes report it

    def rotate(self) -> None:
        self._release()
        if self.backups == 0:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            self.size = 0
            self._reserve()
            return
        # The oldest file becomes the new, empty FILE. Creating a file per
        # rotation (and deleting one) costs ext4 an inode search
        # (recently_deleted) that was a third of the writer's CPU in a flood;
        # and no rename replaces a file, which would make ext4 flush it at
        # once (auto_da_alloc) in this process.
        oldest = f"{self.path}.{self.backups}"
        recycled = -1
        with contextlib.suppress(FileNotFoundError):
            # Emptied through an fd closed at once: ext4 flushes a file
            # truncated to 0 when that fd is closed (auto_da_alloc); closed
            # empty, there is nothing to flush.
            # O_NOFOLLOW: a backup name is no way to truncate another file.
            nofollow = os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
            os.close(os.open(oldest, os.O_WRONLY | os.O_TRUNC | nofollow))
            recycled = os.open(oldest, os.O_WRONLY | nofollow)
        old = self.fd
        self.fd = -1
        try:
            if recycled >= 0 and self.exchange:
                self._exchange_down()
            else:
                self._rename_down(recycled)
        except OSError:
            if recycled >= 0:
                os.close(recycled)
            raise  # the caller reports it; the next move opens FILE again
        finally:
            os.close(old)
        if recycled < 0:
            self.open()
        else:
            self.fd, self.size = recycled, 0
        self._reserve()

    def _exchange_down(self) -> None:
        """FILE.N (emptied) becomes FILE, each other file moves one up, by
        N swaps (renameat2 RENAME_EXCHANGE): N syscalls instead of N + 2
        renames, and every name exists at every instant."""
        names = [self.path, *(f"{self.path}.{i}" for i in range(1, self.backups + 1))]
        for i in range(self.backups, 0, -1):
            err = exchange(names[i], names[i - 1])
            if err == errno.ENOENT:  # a backup removed by hand: the emptied file moves down
                os.rename(names[i], names[i - 1])
            elif err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) and i == self.backups:
                self.exchange = False  # this file system cannot swap: rename
                self._rename_down(-2)
                return
            elif err:
                raise OSError(err, os.strerror(err), names[i])

    def _rename_down(self, recycled: int) -> None:
        """The same by renames: the oldest moved aside, the others renamed up
        (no rename replaces a file), the emptied one moved in last."""
        oldest, aside = f"{self.path}.{self.backups}", _aside(self.path)
        if recycled != -1:
            os.rename(oldest, aside)
        for src, dst in rotation_renames(self.path, self.backups):
            with contextlib.suppress(FileNotFoundError):  # fewer backups so far
                os.rename(src, dst)
        if recycled != -1:
            os.rename(aside, self.path)


def _aside(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.rotating")


FALLOC_FL_KEEP_SIZE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_renameat2 = getattr(_libc, "renameat2", None)  # glibc >= 2.28
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]


def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    """fallocate(2) (os has only posix_fallocate, which grows the size);
    0 or the errno."""
    if _fallocate is None:
        return errno.ENOSYS
    return 0 if _fallocate(fd, mode, offset, length) == 0 else ctypes.get_errno()


def exchange(a: str, b: str) -> int:
    """Swap two names atomically; 0 or the errno."""
    if _renameat2 is None:
        return errno.ENOSYS
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return 0
    return ctypes.get_errno()
