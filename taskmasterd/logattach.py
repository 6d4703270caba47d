"""Finding the log writer a dead daemon left behind (taskmasterd/logpipes.py
uses it once, at start).

The writer listens on a unix socket in the runtime directory, one per
(statedir, config file): `writer_socket()`. `connect()` says hello there and
collects the read end of every pipe the writer holds, with its key and file
settings (taskmasterd/logproto.py). Blocking, with a timeout per message: it
runs before the daemon does anything else.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from taskmasterd.logproto import PROTOCOL, ProtocolError, encode, peer_uid_pid, receive, scrollback

ATTACH_TIMEOUT = 2.0  # seconds a surviving writer gets for each answer


@dataclass
class Held:
    """A pipe read end the daemon keeps, and where its data goes."""

    id: int
    fd: int
    path: str
    maxbytes: int
    backups: int
    process: str = ""  # the key: process name and stream ("" for none)
    stream: str = ""
    scrollback: int = 0  # a console's (stream "console": fd is a terminal's master)


@dataclass
class Survivor:
    """A writer that answered: its connection (the control socket from now
    on, unless its version differs), pid, version and pipes."""

    sock: socket.socket
    pid: int
    version: int
    pipes: list[Held]


class NoWriter(Exception):
    """Nobody listens there (no writer survived): nothing to say."""


class Busy(Exception):
    """Another daemon, alive, is attached to that writer."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"daemon pid {pid}")
        self.pid = pid


class Unusable(Exception):
    """A writer is there but cannot be used; str() says why. `pipes` are
    those it handed over before it died (ours to keep: nobody else reads
    them), `pid` is 0 when unknown."""

    def __init__(self, reason: str, pid: int = 0, pipes: list[Held] | None = None) -> None:
        super().__init__(reason)
        self.pid = pid
        self.pipes = pipes or []


def writer_socket(runtime: str, statedir: str, config_path: str) -> str:
    """Where this daemon's writer listens. Keyed by statedir and config file
    (the instance that re-adopts the programs): a daemon never takes the
    writer of another instance sharing the runtime directory."""
    return instance_socket(runtime, statedir, config_path, "logwriter")


def instance_socket(runtime: str, statedir: str, config_path: str, helper: str) -> str:
    """`runtime/<helper>-<digest>.sock`, the digest naming the daemon
    instance (statedir + config file); the task runner's is keyed the same."""
    key = f"{os.path.abspath(statedir)}\0{os.path.realpath(config_path)}"
    digest = hashlib.sha256(os.fsencode(key)).hexdigest()[:16]  # fsencode: any bytes in a path
    return os.path.join(runtime, f"{helper}-{digest}.sock")


def bind_private(path: str) -> socket.socket:
    """A SOCK_SEQPACKET socket bound at `path` (0600; a stale socket there,
    left by a dead helper, is replaced), for a helper to listen() on: the
    directory must be ours alone, or another user could swap our socket.
    Raises OSError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        st = os.stat(os.path.dirname(path))
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise OSError(errno.EPERM, f"{os.path.dirname(path)} is not ours alone (uid {st.st_uid}, "
                                       f"mode {st.st_mode & 0o7777:o})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock.bind(path)
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    return sock


FileId = tuple[str, int, int]  # path, st_dev, st_ino


def socket_file(listener: socket.socket) -> FileId | None:
    """A listening socket's path and file identity (None when unnamed), for
    `unlink_own` when its helper exits."""
    path = listener.getsockname()
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_dev, st.st_ino


def unlink_own(file: FileId | None) -> None:
    """Remove a helper's socket name, unless it names another's by now (a
    daemon that found the helper unusable bound a new one there)."""
    if file is None:
        return
    path, dev, ino = file
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == (dev, ino):
            os.unlink(path)


def refuse(conn: socket.socket, message: bytes) -> None:
    """Say why (a `refused` message), then hang up (never blocks: one small
    datagram)."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(message)
    conn.close()


def admit(conn: socket.socket, refused: Callable[[str], bytes], what: str) -> int | None:
    """A peer that said hello on a listening socket: its pid if it runs as
    our uid (SO_PEERCRED, read at its connect); else None, and it was told
    why (`refused(reason)`: its protocol's message) or is gone. Called once
    its hello is read: a socket closed with unread data would reset the
    connection, and the peer would never read why."""
    try:
        uid, pid = peer_uid_pid(conn)
    except OSError:
        conn.close()
        return None
    if uid != os.geteuid():
        refuse(conn, refused(f"uid {uid} may not attach to a {what} of uid {os.geteuid()}"))
        return None
    return pid


def connect(path: str, timeout: float | None = None) -> Survivor:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(ATTACH_TIMEOUT if timeout is None else timeout)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise NoWriter(path) from None
    except OSError as exc:
        sock.close()
        raise Unusable(f"cannot connect to {path}: {exc.strerror}") from None
    try:
        return _greet(sock, path)
    except BaseException:
        sock.close()
        raise


def _greet(sock: socket.socket, path: str) -> Survivor:
    try:
        uid, pid = peer_uid_pid(sock)
    except OSError as exc:
        raise Unusable(f"{path}: no peer credentials: {exc.strerror}") from None
    if uid != os.geteuid():  # somebody else's socket in our directory: never trusted
        raise Unusable(f"{path} is served by uid {uid}, not {os.geteuid()}")
    try:
        sock.send(encode("hello", pid=os.getpid()))
        msg, _fds = receive(sock, {"welcome", "busy", "refused"})
    except TimeoutError:
        raise Unusable(f"pid {pid} at {path} does not answer", pid) from None
    except (ProtocolError, EOFError, OSError) as exc:
        raise Unusable(f"pid {pid} at {path} answers badly: {exc or 'hung up'}", pid) from None
    if msg["op"] == "busy":
        raise Busy(int(str(msg["pid"])))
    if msg["op"] == "refused":
        raise Unusable(f"pid {pid} at {path} refused this daemon: {msg['message']}", pid)
    return Survivor(sock, pid, int(str(msg["v"])), _pipes(sock, pid, int(str(msg["pipes"]))))


def _pipes(sock: socket.socket, pid: int, announced: int) -> list[Held]:
    pipes: list[Held] = []
    try:
        while True:
            msg, fds = receive(sock, {"pipe", "end"})
            if msg["op"] == "end":
                return pipes
            try:
                ring = scrollback(msg)
            except ProtocolError:
                os.close(fds[0])
                raise
            pipes.append(Held(int(str(msg["id"])), fds[0], str(msg["path"]), int(str(msg["maxbytes"])),
                              int(str(msg["backups"])), str(msg["process"]), str(msg["stream"]),
                              ring))
    except EOFError:
        # It died while handing them over: those we got have no other reader.
        raise Unusable(f"pid {pid} hung up after {len(pipes)} of {announced} pipe(s)",
                       pid, pipes) from None
    except (TimeoutError, ProtocolError, OSError) as exc:
        # Alive but garbled: it still reads the pipes, so our copies go (two
        # readers on one pipe would interleave its data).
        for held in pipes:
            os.close(held.fd)
        why = "stopped answering" if isinstance(exc, TimeoutError) else f"sent a bad message: {exc}"
        raise Unusable(f"pid {pid} {why} after {len(pipes)} of {announced} pipe(s)", pid) from None


def dismiss(survivor: Survivor, timeout: float | None = None) -> str:
    """Tell a writer of another version to leave and wait for its exit
    (SIGKILL after `timeout`): after this nobody else reads its pipes.
    Returns how it went, for the log."""
    how = "left"
    timeout = ATTACH_TIMEOUT if timeout is None else timeout
    try:
        pidfd = os.pidfd_open(survivor.pid)
    except ProcessLookupError:
        survivor.sock.close()
        return "was gone"
    try:
        with contextlib.suppress(OSError):
            survivor.sock.send(encode("leave"))
        if not _wait_fd(pidfd, timeout):
            import signal

            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            how = f"did not leave within {timeout:g} s, killed"
            _wait_fd(pidfd, 10.0)
    finally:
        os.close(pidfd)
        survivor.sock.close()
    return how


def _wait_fd(fd: int, timeout: float) -> bool:
    import select

    return bool(select.select([fd], [], [], timeout)[0])


__all__ = ["ATTACH_TIMEOUT", "PROTOCOL", "Busy", "FileId", "Held", "NoWriter", "Survivor", "Unusable",
           "bind_private", "connect", "dismiss", "instance_socket", "refuse", "socket_file", "unlink_own",
           "writer_socket"]
