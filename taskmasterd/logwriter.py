"""The log writer: one process for the whole daemon that moves programs'
output from pipes into size-bounded, rotated files.

Run as `python -m taskmasterd.logwriter CTL_FD` by the daemon
(taskmasterd/logpipes.py), in its own session so that a SIGKILL of the
daemon's process group does not take it along. CTL_FD is a SOCK_SEQPACKET
socket to the daemon; each message is one JSON object:

    daemon -> writer  {"op": "follow", "id": N, "path": P, "maxbytes": M, "backups": B}
                      + the pipe's read end (SCM_RIGHTS)
                      {"op": "finish"}: drain every pipe to EOF, then exit
    writer -> daemon  {"op": "eof", "id": N}: drained and closed
                      {"op": "error", "path": P, "message": ...}: once per condition
                      {"op": "recovered", "path": P, "message": ...}

Data moves pipe -> file with splice(2), never through user space: the file
is opened without O_APPEND (splice refuses it) and written at its end; when
splice says EINVAL (a file system without splice) that file falls back to
read/write. Nothing is written past maxbytes: a move is at most the room
left, then the file rotates (FILE -> FILE.1 ... FILE.N, FILE.N dropped; with
0 backups the file restarts empty), so FILE* never hold more than
(backups + 1) * maxbytes. A restarted file gets its blocks up to maxbytes
at once (fallocate KEEP_SIZE, its size unchanged), given back at close.

A failing file (disk full, unwritable, removed directory) never stops the
writer nor blocks the program: its data is read and dropped, the write is
retried once a second, and the daemon hears of it once when it starts and
once when it ends (with the bytes dropped).

When the daemon goes away (EOF on CTL_FD) or says "finish", the writer
drains until every pipe reaches EOF (the programs have exited), then exits:
a SIGKILL of the daemon loses no output and never SIGPIPEs a program.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

CHUNK = 1 << 20  # the most moved per splice call (the pipes are grown to 1 MB)
PIPE_SIZE = 1 << 20
RETRY = 1.0  # seconds between two attempts on a failing file
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY  # never O_APPEND: splice
# Write errors that mean "this file cannot take data now": the data is dropped.
_DROP_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS, errno.EACCES,
                errno.EPERM, errno.ENOENT, errno.ESTALE, errno.EBADF}


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


def encode(msg: dict[str, object]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


# ---- the process -------------------------------------------------------------


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


@dataclass(eq=False)
class Stream:
    id: int
    fd: int
    sink: Sink


@dataclass
class Writer:
    ctl: socket.socket
    streams: dict[int, Stream] = field(default_factory=dict)  # by pipe fd
    sinks: dict[str, Sink] = field(default_factory=dict)
    outbox: list[bytes] = field(default_factory=list)
    draining: bool = False  # the daemon is gone or said "finish"

    def __post_init__(self) -> None:
        self.poll = select.epoll()
        self.ctl.setblocking(False)
        self.poll.register(self.ctl.fileno(), select.EPOLLIN)

    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)  # a signal (TERM: finish) ends the wait
        self.poll.register(wake_r, select.EPOLLIN)
        while not (self.draining and not self.streams):
            for fd, ev in self.poll.poll():
                if fd == wake_r:
                    with contextlib.suppress(OSError):
                        os.read(wake_r, 64)
                elif fd == self.ctl.fileno():
                    if ev & select.EPOLLOUT:
                        self._flush()
                    if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                        self._control()
                elif fd in self.streams:
                    self._pump(self.streams[fd], bool(ev & select.EPOLLHUP))
        self._flush()
        return 0

    # ---- control socket

    def _control(self) -> None:
        # Read every message, "finish" included (one left unread would keep
        # the level-triggered socket ready and spin the loop).
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.ctl, 65536, 4)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:  # the daemon is gone: drain what we have, then exit
                self._stop_control()
                return
            try:
                msg = json.loads(data)
            except ValueError:
                msg = {}
            if msg.get("op") == "follow" and fds:
                self._follow(msg, fds[0])
                fds = fds[1:]
            elif msg.get("op") == "finish":
                self.draining = True
            for fd in fds:
                os.close(fd)

    def _stop_control(self) -> None:
        self.draining = True
        with contextlib.suppress(OSError, ValueError):
            self.poll.unregister(self.ctl.fileno())
        self.outbox.clear()
        self.ctl.close()

    def _send(self, msg: dict[str, object]) -> None:
        if self.ctl.fileno() < 0:
            return
        self.outbox.append(encode(msg))
        self._flush()

    def _flush(self) -> None:
        while self.outbox and self.ctl.fileno() >= 0:
            try:
                self.ctl.send(self.outbox[0])
            except BlockingIOError:
                self.poll.modify(self.ctl.fileno(), select.EPOLLIN | select.EPOLLOUT)
                return
            except OSError:  # the daemon is gone
                self._stop_control()
                return
            self.outbox.pop(0)
        if self.ctl.fileno() >= 0:
            self.poll.modify(self.ctl.fileno(), select.EPOLLIN)

    # ---- streams

    def _follow(self, msg: dict[str, object], fd: int) -> None:
        path = str(msg["path"])
        maxbytes, backups = int(str(msg["maxbytes"])), int(str(msg["backups"]))
        sink = self.sinks.get(path)
        if sink is None:
            sink = self.sinks[path] = Sink(path, maxbytes, backups)
            try:
                sink.open()
            except OSError as exc:
                self._fail(sink, exc, "open")
        sink.maxbytes, sink.backups = maxbytes, backups  # the newest config wins
        sink.refs += 1
        os.set_blocking(fd, False)
        self.streams[fd] = Stream(int(str(msg["id"])), fd, sink)
        self.poll.register(fd, select.EPOLLIN)

    def _pump(self, stream: Stream, hup: bool) -> int:
        """Move what the pipe holds (up to a few MB per wake-up, to be fair);
        returns the bytes moved."""
        sink = stream.sink
        total = 0
        for _ in range(8):
            if sink.error and time.monotonic() < sink.retry_at:
                n, asked = self._drop(stream), CHUNK
            else:
                asked = next_move(sink.size, sink.maxbytes)[1]
                n = self._move(stream, sink, hup)
            if n is None:
                break
            if n == 0:
                self._eof(stream)
                break
            total += max(n, 0)
            if 0 < n < asked and not hup:
                break  # the pipe is empty now: spare the call that would say so
        return total

    def _move(self, stream: Stream, sink: Sink, hup: bool) -> int | None:
        """Bytes moved, 0 at EOF, None when the pipe is empty, -1 on failure."""
        rotate, count = next_move(sink.size, sink.maxbytes)
        try:
            if sink.fd < 0:  # its open (or the one after a rotation) failed
                sink.open()
                rotate, count = next_move(sink.size, sink.maxbytes)
            if rotate and _pending(stream.fd) == 0:
                # Rotate only for data: a full file stays FILE at EOF.
                return 0 if hup else None
            if rotate:
                sink.rotate()
            if sink.splice:
                n = os.splice(stream.fd, sink.fd, count, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            else:
                data = os.read(stream.fd, count)
                n = len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(sink.fd, view):]
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL and sink.splice:
                sink.splice = False  # this file system has no splice: copy
                return self._move(stream, sink, hup)
            self._fail(sink, exc, "rotate" if rotate else "write")
            return -1
        sink.size += n
        if sink.error and n > 0:
            dropped, sink.dropped, sink.error = sink.dropped, 0, ""
            self._send({"op": "recovered", "path": sink.path,
                        "message": f"{sink.path} is written again ({dropped} bytes were dropped)"})
        return n

    def _drop(self, stream: Stream) -> int | None:
        try:
            data = os.read(stream.fd, CHUNK)
        except BlockingIOError:
            return None
        stream.sink.dropped += len(data)
        return len(data)

    def _fail(self, sink: Sink, exc: OSError, what: str) -> None:
        sink.retry_at = time.monotonic() + RETRY
        if sink.error:
            return
        sink.error = f"{what}: {os.strerror(exc.errno or 0)}"
        self._send({"op": "error", "path": sink.path,
                    "message": f"cannot {what} {sink.path}: {exc.strerror}; its output is dropped "
                               "until it can be written again"})

    def _eof(self, stream: Stream) -> None:
        self.poll.unregister(stream.fd)
        os.close(stream.fd)
        del self.streams[stream.fd]
        sink = stream.sink
        sink.refs -= 1
        if sink.refs == 0:
            sink.close()
            del self.sinks[sink.path]
        self._send({"op": "eof", "id": stream.id})


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m taskmasterd.logwriter CTL_FD (started by taskmasterd)", file=sys.stderr)
        return 2
    raise_nofile()
    # SIGTERM/SIGINT/SIGHUP: finish the way a lost daemon does (drain, exit).
    writer = Writer(socket.socket(fileno=int(argv[1])))

    def finish(_sig: int, _frame: object) -> None:
        writer.draining = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, finish)
    return writer.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
