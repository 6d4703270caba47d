"""The daemon's side of the log writer (taskmasterd/logwriter.py).

A program whose output file has a size bound writes into a pipe; this
module hands each pipe's read end to the one log-writer process and keeps
its own copy of it (s6's "the supervisor holds the pipe"): when the writer
dies, a new one is started and given every pipe again, so no byte is lost
and a program only blocks while its pipe is full. The daemon never reads
the data itself. A read end is closed here once the writer reports it
drained to EOF (the program and everything in its group have exited).

The writer is started on the first bounded output, in its own session (a
SIGKILL of the daemon does not reach it: it drains the pipes to EOF, then
exits). `finish()` at shutdown lets it drain and waits for it, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from taskmasterd.logwriter import encode

log = logging.getLogger("taskmasterd")

FINISH_TIMEOUT = 5.0  # seconds the writer gets to drain at shutdown
DRAIN_WAIT = 1.0  # at most this long, an exit waits for its output to land
_QUICK_DEATH = 1.0  # a writer that dies sooner than this after its start...
_RESTART_DELAY = 1.0  # ...is restarted after this delay, not at once


@dataclass
class Held:
    """A pipe read end the daemon keeps, and where its data goes."""

    id: int
    fd: int
    path: str
    maxbytes: int
    backups: int


@dataclass(eq=False)
class _Waiter:
    pending: set[int]
    done: Callable[[], None]
    timer: asyncio.TimerHandle | None = None


class LogPipes:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._held: dict[int, Held] = {}
        self._next_id = 1
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        self._started_at = 0.0
        self._outbox: list[tuple[bytes, list[int]]] = []
        self._finishing = False
        self._exited: asyncio.Event = asyncio.Event()
        self._restart: asyncio.TimerHandle | None = None
        self._waiters: list[_Waiter] = []

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def held(self) -> int:
        return len(self._held)

    def follow(self, fd: int, path: str, maxbytes: int, backups: int) -> int:
        """Take over the read end `fd` (this object closes it): its data goes
        to `path`, rotated at `maxbytes` with `backups` old files. Returns
        the pipe's id (for when_drained)."""
        held = Held(self._next_id, fd, path, maxbytes, backups)
        self._next_id += 1
        self._held[held.id] = held
        if self._proc is None and self._restart is None:
            self._start()
        elif self._sock is not None:
            self._send(_follow_msg(held), [fd])
        return held.id

    def when_drained(self, ids: list[int], done: Callable[[], None],
                     timeout: float = DRAIN_WAIT) -> None:
        """Call `done` once the pipes `ids` are drained to EOF (at once if
        they are), or after `timeout` s (a process that left the group may
        hold a pipe open forever; a restarting writer takes a while): so a
        process's last lines are in its file when its exit is published
        (alerts quote the stderr tail)."""
        pending = {i for i in ids if i in self._held}
        if not pending:
            done()
            return
        waiter = _Waiter(pending, done)
        waiter.timer = self._loop.call_later(timeout, self._fire, waiter)
        self._waiters.append(waiter)

    def _fire(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            if waiter.timer is not None:
                waiter.timer.cancel()
            waiter.done()

    async def finish(self, timeout: float = FINISH_TIMEOUT) -> None:
        """Shutdown: the writer drains every pipe to EOF and exits; wait for
        it, at most `timeout` s (a pipe held open by a process that escaped
        its group would keep it forever), then kill it."""
        self._finishing = True
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
            self._start()  # pipes are waiting: somebody must drain them
        if self._proc is None:
            self._close_held()
            return
        self._send(encode({"op": "finish"}), [])
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except TimeoutError:
            log.warning("taskmasterd log writer (pid %d): %d pipe(s) still open %g s after every program "
                        "stopped (a process that left its group?); killing it",
                        self.pid, len(self._held), timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await self._exited.wait()
        self._close_held()

    # ---- the writer process

    def _start(self) -> None:
        self._restart = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "taskmasterd.logwriter", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True,  # stderr: the daemon's, for a traceback
                env=_writer_env())
            self._pidfd = os.pidfd_open(proc.pid)
        except OSError as exc:
            ours.close()
            log.error("taskmasterd: cannot start the log writer: %s; bounded output waits in its pipes "
                      "(retrying in %g s)", exc, _RESTART_DELAY)
            self._restart = self._loop.call_later(_RESTART_DELAY, self._start)
            return
        finally:
            theirs.close()
        self._proc, self._sock = proc, ours
        self._started_at = self._loop.time()
        self._exited.clear()
        ours.setblocking(False)
        self._loop.add_reader(ours.fileno(), self._on_message)
        self._loop.add_reader(self._pidfd, self._on_exit)
        self._outbox.clear()
        for held in self._held.values():
            self._send(_follow_msg(held), [held.fd])
        if self._finishing:
            self._send(encode({"op": "finish"}), [])
        log.debug("log writer started, pid %d, %d pipe(s)", proc.pid, len(self._held))

    def _on_exit(self) -> None:
        proc = self._proc
        assert proc is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        status = proc.wait()
        self._drop_socket()
        self._proc = None
        self._exited.set()
        if self._finishing:
            return
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        quick = self._loop.time() - self._started_at < _QUICK_DEATH
        log.warning("taskmasterd log writer (pid %d) died (%s); %s a new one for its %d pipe(s)", proc.pid,
                    how, f"in {_RESTART_DELAY:g} s," if quick else "starting", len(self._held))
        if not self._held:
            return  # the next bounded output starts one
        if quick:  # don't spin on a writer that cannot start
            self._restart = self._loop.call_later(_RESTART_DELAY, self._start)
        else:
            self._start()

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._outbox.clear()

    # ---- messages

    def _send(self, data: bytes, fds: list[int]) -> None:
        self._outbox.append((data, fds))
        if len(self._outbox) == 1:
            self._flush()

    def _flush(self) -> None:
        sock = self._sock
        while self._outbox and sock is not None:
            data, fds = self._outbox[0]
            try:
                socket.send_fds(sock, [data], fds)
            except BlockingIOError:
                self._loop.add_writer(sock.fileno(), self._flush)
                return
            except OSError:
                return  # the writer is gone: _on_exit restarts it and resends
            self._outbox.pop(0)
        if sock is not None:
            self._loop.remove_writer(sock.fileno())

    def _on_message(self) -> None:
        sock = self._sock
        assert sock is not None
        for _ in range(64):
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # its exit comes through the pidfd
                self._loop.remove_reader(sock.fileno())
                return
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            self._handle(msg)

    def _handle(self, msg: dict[str, object]) -> None:
        op = msg.get("op")
        if op == "eof":
            held = self._held.pop(int(str(msg.get("id"))), None)
            if held is not None:
                os.close(held.fd)
                for waiter in list(self._waiters):
                    waiter.pending.discard(held.id)
                    if not waiter.pending:
                        self._fire(waiter)
        elif op == "error":
            log.error("taskmasterd log writer: %s", msg.get("message"))
        elif op == "recovered":
            log.warning("taskmasterd log writer: %s", msg.get("message"))

    def _close_held(self) -> None:
        for waiter in list(self._waiters):
            self._fire(waiter)
        for held in self._held.values():
            os.close(held.fd)
        self._held.clear()
        self._drop_socket()


def _follow_msg(held: Held) -> bytes:
    return encode({"op": "follow", "id": held.id, "path": held.path, "maxbytes": held.maxbytes,
                   "backups": held.backups})


def _writer_env() -> dict[str, str]:
    """The daemon's environment, with the daemon's import path: the writer
    must import the same taskmasterd (a source tree, a venv)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
