"""One process's NOTIFY_SOCKET (`ready: notify`): a datagram socket the
daemon binds before the spawn and reads from the event loop.

Each supervised process gets its own endpoint, so a datagram's socket says
which process it is about; its credentials (SCM_CREDENTIALS, passed by the
kernel since SO_PASSCRED is on) say who sent it, and only a sender in the
process's own process group (each process leads its own: spawn.py starts it
in a new session) is listened to. systemd checks a sender's cgroup the same
way. Datagrams sent before `watch()` wait in the socket's queue.

Every file descriptor that comes with a datagram is closed at once: that is
how sd_notify_barrier(3) works (`systemd-notify` sends BARRIER=1 with a
pipe's write end and waits, 5 s at most, until the receiver has closed it;
closing it right after reading that datagram means every earlier datagram
was handled), and it is how nothing a program sends (FDSTORE=1 ...) is kept.

Bounded: one datagram is read at a time into a fixed buffer, handed over and
dropped; the kernel bounds the queue (net.unix.max_dgram_qlen datagrams, the
sender blocks beyond); one wake-up reads at most MAX_PER_WAKEUP datagrams,
so that a flooding program cannot starve the loop (the rest is read on the
next turn: the loop's readers are level-triggered).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
import stat
import struct
from collections.abc import Callable

from taskmasterd.notifyproto import MAX_DATAGRAM, Notice, parse

log = logging.getLogger("taskmasterd")

RCVBUF = 64 * 1024  # a full default queue (10 datagrams of 4 KiB) fits
MAX_FDS = 16  # room per datagram; more than that is refused (the kernel drops the rest)
MAX_PER_WAKEUP = 64
SUN_PATH_MAX = 107  # sun_path holds 108 bytes, with the terminating NUL
_NAME_MAX = 40  # a process name up to this long, in safe characters, is the file name
_SAFE = re.compile(r"[A-Za-z0-9_.:-]+\Z")
_UCRED = struct.Struct("iII")  # pid, uid, gid
_ANCBUF = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


class NotifySetupError(Exception):
    """The endpoint cannot be made; the message names the path and why."""


def file_name(name: str) -> str:
    """A short file name, the same for the same process name: the process
    name itself when short and plain, else a prefix and a hash (unique)."""
    if _SAFE.match(name) and len(name) <= _NAME_MAX:
        return name + ".sock"
    prefix = re.sub(r"[^A-Za-z0-9_.:-]", "_", name)[:20]
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=5).hexdigest()
    return f"{prefix}-{digest}.sock"


def sender_refusal(pid: int | None, pgid: int) -> str | None:
    """None when `pid` may speak for the process leading group `pgid`,
    else why not."""
    if pid is None or pid <= 0:
        return "no sender credentials"
    if pid == pgid:
        return None
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return f"sender pid {pid} is gone: its process group cannot be checked"
    except OSError as exc:
        return f"sender pid {pid}: its process group cannot be checked ({exc.strerror})"
    if group != pgid:
        return f"sender pid {pid} is in process group {group}, not the process's group {pgid}"
    return None


def _take_ancillary(ancdata: list[tuple[int, int, bytes]]) -> tuple[int | None, list[int]]:
    """The sender's pid (None without credentials) and the fds that came."""
    pid: int | None = None
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        elif kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            pid = _UCRED.unpack_from(data)[0]
    return pid, list(fds)


class NotifyEndpoint:
    """A bound notify socket; `open` it, give the child `path` as
    NOTIFY_SOCKET, `watch` it once the child's pid is known, `close` it
    when the process is gone."""

    def __init__(self, sock: socket.socket, path: str, identity: tuple[int, int]) -> None:
        self._sock = sock
        self._path = path
        self._identity = identity  # (st_dev, st_ino) of the file we bound
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @classmethod
    def open(cls, directory: str, name: str, owner_uid: int | None = None) -> NotifyEndpoint:
        """Bind the socket of process `name` in `directory` (created 0755
        when missing), mode 0600, owned by `owner_uid` when given (the
        program's user: it must be able to send). A stale file there is
        replaced. Raises NotifySetupError."""
        directory = os.path.abspath(directory)  # sd_notify wants an absolute path
        path = os.path.join(directory, file_name(name))
        size = len(os.fsencode(path))
        if size > SUN_PATH_MAX:
            raise NotifySetupError(
                f"notify socket path {path!r} is {size} bytes, longer than the {SUN_PATH_MAX} "
                f"a unix socket address holds: use a shorter directory than {directory!r}")
        sock = socket.socket(socket.AF_UNIX,
                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o755, exist_ok=True)
                os.chmod(directory, 0o755)  # makedirs' mode is masked by the umask
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a previous daemon's, or a previous run's of this process
            sock.bind(path)
            os.chmod(path, 0o600)
            if owner_uid is not None:
                os.chown(path, owner_uid, -1)
            st = os.stat(path)
        except OSError as exc:
            sock.close()
            raise NotifySetupError(f"notify socket {path!r}: {exc.strerror or exc}") from None
        return cls(sock, path, (st.st_dev, st.st_ino))

    @property
    def path(self) -> str:
        """The child's NOTIFY_SOCKET."""
        return self._path

    def watch(self, loop: asyncio.AbstractEventLoop, pgid: int,
              on_notice: Callable[[Notice], None], on_ignored: Callable[[str], None]) -> None:
        """Read from now on, in `loop`: accepted datagrams go to `on_notice`,
        refused ones (their reason) to `on_ignored`, both in the loop's
        thread. A datagram is accepted from a process in group `pgid` only.
        Watching again replaces the previous watch."""
        if self._closed:
            raise RuntimeError(f"notify socket {self._path!r} is closed")
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable, pgid, on_notice, on_ignored)

    def _readable(self, pgid: int, on_notice: Callable[[Notice], None],
                  on_ignored: Callable[[str], None]) -> None:
        for _ in range(MAX_PER_WAKEUP):
            if self._closed:  # a callback closed us
                return
            try:
                data, ancdata, flags, _ = self._sock.recvmsg(
                    MAX_DATAGRAM + 1, _ANCBUF, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Not expected on a bound datagram socket. The reader is
                # level-triggered: going on would log this every loop turn.
                log.error("notify socket %s: %s; no longer reading it", self._path, exc)
                if self._loop is not None:
                    self._loop.remove_reader(self._sock.fileno())
                    self._loop = None
                return
            pid, fds = _take_ancillary(ancdata)
            try:
                # Judged before the fds are closed: a sender waiting on a
                # barrier is still there for its process group to be checked.
                result = self._judge(data, flags, pid, pgid)
            finally:
                for fd in fds:  # whatever the datagram says: nothing is kept
                    with contextlib.suppress(OSError):
                        os.close(fd)
            try:
                if isinstance(result, Notice):
                    on_notice(result)
                else:
                    on_ignored(result)
            except Exception:
                log.exception("notify socket %s: the handler of a datagram failed", self._path)

    @staticmethod
    def _judge(data: bytes, flags: int, pid: int | None, pgid: int) -> Notice | str:
        """The Notice of an accepted datagram, else why it is ignored."""
        refusal = sender_refusal(pid, pgid)
        if refusal is not None:
            return f"datagram ignored: {refusal}"
        sender = f"datagram from pid {pid} ignored"
        if flags & socket.MSG_TRUNC:
            return f"{sender}: longer than {MAX_DATAGRAM} bytes"
        if flags & socket.MSG_CTRUNC:
            return f"{sender}: more than {MAX_FDS} file descriptors (all closed)"
        notice = parse(data)
        return f"{sender}: {notice}" if isinstance(notice, str) else notice

    def close(self) -> None:
        """Stop reading, close the socket, remove its file (only if it is
        still the one we bound: a newer endpoint of the same name may have
        replaced it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            with contextlib.suppress(Exception):  # a closed loop has no reader left to remove
                self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        self._sock.close()
        with contextlib.suppress(OSError):
            st = os.lstat(self._path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self._path)
