"""The log writer: one process for the whole daemon that moves programs'
output from pipes into size-bounded, rotated files (taskmasterd/logfiles.py).

Run as `python -m taskmasterd.logwriter CTL_FD [LISTEN_FD]` by the daemon
(taskmasterd/logpipes.py), in its own session so that a SIGKILL of the
daemon's process group does not take it along. CTL_FD is a SOCK_SEQPACKET
socket to the daemon; the messages are in taskmasterd/logproto.py.

Data moves pipe -> file with splice(2), never through user space: the file
is opened without O_APPEND (splice refuses it) and written at its end; when
splice says EINVAL (a file system without splice) that file falls back to
read/write.

A failing file (disk full, unwritable, removed directory) never stops the
writer nor blocks the program: its data is read and dropped, the write is
retried once a second, and the daemon hears of it once when it starts and
once when it ends (with the bytes dropped).

The writer outlives the daemon. When the daemon goes away (EOF on the
control socket) it goes on draining every pipe into its files, with
rotation, for as long as a program holds one open: a program that outlives
the daemon never blocks and never gets EPIPE. LISTEN_FD, a listening unix
socket, is where the next daemon finds it: a peer of our uid (SO_PEERCRED)
says hello, gets a copy of every pipe's read end with its key (process,
stream) and file settings, and its connection becomes the control socket.
While a daemon is attached, another one is told busy. The writer exits when
told to finish (clean shutdown: drain to EOF first), when told to leave (a
daemon of another version took the pipes: at once, reading nothing more),
or when no daemon is attached and every pipe has reached EOF.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from taskmasterd.consolefan import Console, Viewer
from taskmasterd.logattach import admit, refuse, socket_file, unlink_own
from taskmasterd.logconsole import ConsoleStreams
from taskmasterd.logfiles import (  # re-exported: the daemon and the tests use them here
    CHUNK,
    FALLOC_FL_KEEP_SIZE,
    RETRY,
    Sink,
    _pending,
    fallocate,
    grow_pipe,
    next_move,
    raise_nofile,
    rotation_renames,
)
from taskmasterd.logproto import TO_WRITER, ProtocolError, encode, peer_uid_pid, receive, scrollback

__all__ = ["FALLOC_FL_KEEP_SIZE", "Writer", "fallocate", "grow_pipe", "next_move", "raise_nofile",
           "rotation_renames"]

GREET_TIMEOUT = 5.0  # seconds a connection gets to say hello
MAX_PENDING = 4  # connections waiting to say hello; more are refused


@dataclass(eq=False)
class Stream:
    id: int
    fd: int
    sink: Sink
    process: str = ""
    stream: str = ""
    console: Console | None = None  # a terminal's master (stream "console"), not a pipe


@dataclass
class Writer(ConsoleStreams):
    ctl: socket.socket | None  # the attached daemon; None: none is
    listener: socket.socket | None = None
    streams: dict[int, Stream] = field(default_factory=dict)  # by pipe fd
    sinks: dict[str, Sink] = field(default_factory=dict)
    outbox: list[tuple[bytes, list[int]]] = field(default_factory=list)  # fds: dups, ours to close
    pending: dict[int, tuple[socket.socket, float]] = field(default_factory=dict)  # by fd: (conn, deadline)
    viewers: dict[int, tuple[Viewer, Stream]] = field(default_factory=dict)  # consoles' viewers, by fd
    draining: bool = False  # told to finish: exit once every pipe is at EOF
    leaving: bool = False  # told to leave: exit now
    daemon_pid: int = 0
    _listen_file: tuple[str, int, int] | None = None  # path, st_dev, st_ino

    def __post_init__(self) -> None:
        self.poll = select.epoll()
        if self.ctl is not None:
            self.ctl.setblocking(False)
            self.poll.register(self.ctl.fileno(), select.EPOLLIN)
            self.daemon_pid = peer_uid_pid(self.ctl)[1]
        if self.listener is not None:
            # listen() here, not by the daemon that bound it: SO_PEERCRED,
            # what a connecting daemon reads, names who called listen().
            self.listener.listen(8)
            self.listener.setblocking(False)
            self._listen_file = socket_file(self.listener)
            self.poll.register(self.listener.fileno(), select.EPOLLIN)

    def done(self) -> bool:
        return self.leaving or (not self.streams and (self.draining or self.ctl is None))

    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)  # a signal (TERM: finish) ends the wait
        self.poll.register(wake_r, select.EPOLLIN)
        while not self.done():
            for fd, ev in self.poll.poll(self._greet_timeout()):
                if self.leaving:
                    break  # the pipes are another writer's now: not one more byte
                if fd == wake_r:
                    with contextlib.suppress(OSError):
                        os.read(wake_r, 64)
                elif self.ctl is not None and fd == self.ctl.fileno():
                    if ev & select.EPOLLOUT:
                        self._flush()
                    if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                        self._control()
                elif self.listener is not None and fd == self.listener.fileno():
                    self._accept()
                elif fd in self.pending:
                    self._greet(fd)
                elif fd in self.streams:
                    stream = self.streams[fd]
                    if stream.console is not None:
                        self._pump_console(stream)
                    else:
                        self._pump(stream, bool(ev & select.EPOLLHUP))
                elif fd in self.viewers:
                    self._viewer_event(fd, ev)
            self._expire()
        if not self.leaving:
            self._flush()
            self._unlink()
        return 0

    def _unlink(self) -> None:
        unlink_own(self._listen_file)

    # ---- control socket

    def _control(self) -> None:
        # Read every message, "finish" included (one left unread would keep
        # the level-triggered socket ready and spin the loop).
        while self.ctl is not None and not self.leaving:
            try:
                msg, fds = receive(self.ctl, TO_WRITER - {"hello"})
            except BlockingIOError:
                return
            except ProtocolError as exc:  # said back, never a crash
                self._send(encode("error", path="", message=f"log writer: message refused: {exc}"))
                continue
            except (EOFError, OSError):  # the daemon is gone: go on alone
                self._stop_control()
                return
            if msg["op"] == "follow":
                self._follow(msg, fds[0])
            elif msg["op"] == "watch":
                self._watch(int(str(msg["id"])), fds[0])
            elif msg["op"] == "finish":
                self.draining = True
            elif msg["op"] == "rename":
                for s in self.streams.values():
                    if s.id == msg["id"]:
                        s.process = str(msg["process"])
            elif msg["op"] == "leave":
                self.leaving = True

    def _stop_control(self) -> None:
        if self.ctl is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.poll.unregister(self.ctl.fileno())
        for _data, fds in self.outbox:
            for fd in fds:
                os.close(fd)
        self.outbox.clear()
        self.ctl.close()
        self.ctl = None
        self.daemon_pid = 0

    def _send(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Queue a message; `fds` are duplicated (a pipe may reach EOF and be
        closed, its number reused, before the message leaves)."""
        if self.ctl is None:
            return
        self.outbox.append((data, [os.dup(fd) for fd in fds]))
        if len(self.outbox) == 1:
            self._flush()

    def _flush(self) -> None:
        while self.outbox and self.ctl is not None:
            data, fds = self.outbox[0]
            try:
                socket.send_fds(self.ctl, [data], fds) if fds else self.ctl.send(data)
            except BlockingIOError:
                self.poll.modify(self.ctl.fileno(), select.EPOLLIN | select.EPOLLOUT)
                return
            except OSError:  # the daemon is gone
                self._stop_control()
                return
            for fd in fds:
                os.close(fd)
            self.outbox.pop(0)
        if self.ctl is not None:
            self.poll.modify(self.ctl.fileno(), select.EPOLLIN)

    # ---- re-attachment

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn, _addr = self.listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError:
                return  # EMFILE...: the connection waits in the backlog
            if len(self.pending) >= MAX_PENDING:
                _refuse(conn, "too many connections waiting")
            else:
                conn.setblocking(False)
                self.pending[conn.fileno()] = (conn, time.monotonic() + GREET_TIMEOUT)
                self.poll.register(conn.fileno(), select.EPOLLIN)

    def _greet(self, fd: int) -> None:
        conn, _deadline = self.pending[fd]
        try:
            receive(conn, {"hello"})
        except BlockingIOError:
            return
        except ProtocolError as exc:
            self._unpend(fd)
            _refuse(conn, str(exc))
            return
        except (EOFError, OSError):
            self._unpend(fd)
            conn.close()
            return
        self._unpend(fd)
        pid = admit(conn, lambda why: encode("refused", message=why), "log writer")
        if pid is None:
            return
        if self.ctl is not None:
            # Read what the attached daemon sent first: a daemon that died
            # (or re-executed itself: its fds closed at exec) has left its
            # EOF there before its successor could connect.
            self._control()
        if self.ctl is not None:
            with contextlib.suppress(OSError):
                conn.send(encode("busy", pid=self.daemon_pid))
            conn.close()
            return
        # The connection becomes the control socket; the daemon gets a copy
        # of every read end (it holds the pipes again, as before its death).
        # A finish its predecessor gave is forgotten: this one says when.
        self.ctl, self.daemon_pid, self.draining = conn, pid, False
        self.poll.register(conn.fileno(), select.EPOLLIN)
        self._send(encode("welcome", pid=os.getpid(), pipes=len(self.streams)))
        for s in self.streams.values():
            ring = s.console.ring.size if s.console is not None else 0
            self._send(encode("pipe", id=s.id, process=s.process, stream=s.stream, path=s.sink.path,
                              maxbytes=s.sink.maxbytes, backups=s.sink.backups, scrollback=ring),
                       (s.fd,))
        self._send(encode("end"))

    def _unpend(self, fd: int) -> None:
        self.pending.pop(fd)
        self.poll.unregister(fd)

    def _greet_timeout(self) -> float:
        if not self.pending:
            return -1
        return max(0.0, min(d for _c, d in self.pending.values()) - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        for fd, (conn, deadline) in list(self.pending.items()):
            if deadline <= now:
                self._unpend(fd)
                _refuse(conn, f"no hello within {GREET_TIMEOUT:g} s")

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
        stream = Stream(int(str(msg["id"])), fd, sink, str(msg["process"]), str(msg["stream"]))
        if stream.stream == "console":
            try:
                ring = scrollback(msg)
            except ProtocolError as exc:  # drained all the same: never a stalled program
                self._send(encode("error", path=path, message=f"log writer: {exc}; no scrollback"))
                ring = 0
            stream.console = Console(ring)
        try:
            os.set_blocking(fd, False)
            self.poll.register(fd, select.EPOLLIN)  # EPERM for a regular file: not a pipe
        except OSError as exc:
            self._send(encode("error", path=path, message=f"log writer: follow {stream.id}: not a pipe "
                                                          f"({exc.strerror}); closed"))
            self.streams[fd] = stream
            self._eof(stream, registered=False)
            return
        self.streams[fd] = stream

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
        self._wrote(sink, n)
        return n

    def _wrote(self, sink: Sink, n: int) -> None:
        sink.size += n
        if sink.error and n > 0:
            dropped, sink.dropped, sink.error = sink.dropped, 0, ""
            self._send(encode("recovered", path=sink.path,
                              message=f"{sink.path} is written again ({dropped} bytes were dropped)"))

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
        self._send(encode("error", path=sink.path,
                          message=f"cannot {what} {sink.path}: {exc.strerror}; its output is dropped "
                                  "until it can be written again"))

    def _eof(self, stream: Stream, registered: bool = True) -> None:
        if stream.console is not None:
            for viewer in list(stream.console.viewers):
                viewer.flush()  # what waits, as far as its socket takes it now
                self._forget_viewer(viewer)
        if registered:
            self.poll.unregister(stream.fd)
        os.close(stream.fd)
        del self.streams[stream.fd]
        sink = stream.sink
        sink.refs -= 1
        if sink.refs == 0:
            sink.close()
            del self.sinks[sink.path]
        self._send(encode("eof", id=stream.id))


def _refuse(conn: socket.socket, reason: str) -> None:
    refuse(conn, encode("refused", message=reason))


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or not all(a.isdigit() for a in argv[1:]):
        print("usage: python -m taskmasterd.logwriter CTL_FD [LISTEN_FD] (started by taskmasterd)",
              file=sys.stderr)
        return 2
    raise_nofile()
    listener = socket.socket(fileno=int(argv[2])) if len(argv) == 3 else None
    writer = Writer(socket.socket(fileno=int(argv[1])), listener)

    # SIGTERM/SIGINT/SIGHUP: finish (drain, exit), as the daemon's "finish".
    def finish(_sig: int, _frame: object) -> None:
        writer.draining = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, finish)
    return writer.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
