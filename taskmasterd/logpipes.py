"""The daemon's side of the log writer (taskmasterd/logwriter.py).

A program whose output file has a size bound writes into a pipe; this
module hands each pipe's read end to the one log-writer process and keeps
its own copy of it (s6's "the supervisor holds the pipe"): when the writer
dies, a new one is started and given every pipe again, so no byte is lost
and a program only blocks while its pipe is full. The daemon never reads
the data itself. A read end is closed here once the writer reports it
drained to EOF (the program and everything in its group have exited).

The writer is started on the first bounded output, in its own session, and
outlives the daemon: a SIGKILL of the daemon does not reach it, and it goes
on draining every pipe (with rotation) while programs hold them open. It
listens on a unix socket in the runtime directory, one per statedir and
config file (taskmasterd/logattach.py). At start, `attach_surviving()`
finds it there (its uid checked with SO_PEERCRED), gets a copy of every
pipe's read end back with its key (process, stream) and file settings, and
takes it as its own writer: the daemon holds the pipes again. A writer of
another protocol version is told to leave (killed if it does not) and its
pipes go to a fresh writer; one that does not answer is left alone with its
pipes (killing it would SIGPIPE its programs) and logged. Never two writers
read one pipe. `adopt(process, stream)` then gives the pipe id of a
re-adopted process, `release(process)` forgets a gone process's keys (its
pipes drain to EOF as any other).

`finish()` at shutdown lets the writer drain and waits for it, bounded, and
removes its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from taskmasterd import logattach
from taskmasterd.logattach import Held, writer_socket
from taskmasterd.logproto import PROTOCOL, TO_DAEMON, ProtocolError, encode, receive

__all__ = ["DRAIN_WAIT", "FINISH_TIMEOUT", "Held", "LogPipes", "writer_socket"]

log = logging.getLogger("taskmasterd")

FINISH_TIMEOUT = 5.0  # seconds the writer gets to drain at shutdown
DRAIN_WAIT = 1.0  # at most this long, an exit waits for its output to land
_QUICK_DEATH = 1.0  # a writer that dies sooner than this after its start...
_RESTART_DELAY = 1.0  # ...is restarted after this delay, not at once

Key = tuple[str, str]  # (process name, stream)
KEYED_STREAMS = ("stdout", "stderr", "console")


@dataclass(eq=False)
class _Waiter:
    pending: set[int]
    done: Callable[[], None]
    timer: asyncio.TimerHandle | None = None


class LogPipes:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._held: dict[int, Held] = {}
        self._keys: dict[Key, int] = {}  # the newest pipe of each (process, stream)
        self._next_id = 1
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # a writer we started
        self._pid = 0  # the writer's, ours or re-attached
        self._pidfd = -1
        self._started_at = 0.0
        self._outbox: list[tuple[bytes, list[int]]] = []
        self._owned: set[int] = set()  # fds in the outbox that are ours to close once sent
        self._finishing = False
        self._exited: asyncio.Event = asyncio.Event()
        self._restart: asyncio.TimerHandle | None = None
        self._waiters: list[_Waiter] = []
        self._listen_path: str | None = None  # where our writer listens; None: nowhere
        self._surviving: dict[Key, Held] | None = None
        self._foreign: set[int] = set()  # re-attached pipes of processes not re-adopted

    @property
    def pid(self) -> int:
        return self._pid

    def held(self) -> int:
        return len(self._held)

    def follow(self, fd: int, path: str, maxbytes: int, backups: int, *,
               process: str = "", stream: str = "", scrollback: int = 0) -> int:
        """Take over the read end `fd` (this object closes it): its data goes
        to `path`, rotated at `maxbytes` with `backups` old files; `process`
        and `stream` are its key for the next daemon. Returns the pipe's id
        (for when_drained)."""
        held = Held(self._next_id, fd, path, maxbytes, backups, process, stream, scrollback)
        self._next_id += 1
        self._hold(held)
        if self._pid == 0 and self._restart is None:
            self._start()
        elif self._sock is not None:
            self._send(_follow_msg(held), [fd])
        return held.id

    def _hold(self, held: Held) -> None:
        self._held[held.id] = held
        if held.process:
            self._keys[(held.process, held.stream)] = held.id

    # ---- re-attachment

    def attach_surviving(self, path: str) -> dict[Key, Held]:
        """At start, before any follow(): take back the writer a dead daemon
        left listening at `path` (see writer_socket) and the pipes it holds,
        by key; {} when there is none. From now on our writer listens there.
        Once per daemon: a second call returns the first one's answer."""
        if self._surviving is not None:
            return self._surviving
        self._surviving = {}
        if self._pid or self._held:  # too late: ours would not listen, theirs would be a second
            log.warning("taskmasterd: the surviving log writer is looked for after the first bounded "
                        "output: not attached")
            return self._surviving
        self._listen_path = path
        try:
            found = logattach.connect(path)
        except OSError as exc:  # never the daemon's death
            log.warning("taskmasterd: cannot look for a surviving log writer at %s: %s", path, exc)
            return self._surviving
        except logattach.NoWriter:
            return self._surviving
        except logattach.Busy as exc:
            log.warning("taskmasterd: the log writer at %s is attached to another taskmasterd (pid %d): "
                        "not taken; this daemon's own writer cannot be re-attached after a crash",
                        path, exc.pid)
            self._listen_path = None  # its path stays its own
            return self._surviving
        except logattach.Unusable as exc:
            if not exc.pipes:
                log.warning("taskmasterd: a log writer survived but is unusable: %s; its pipes stay "
                            "with it (output of programs started before goes on through it as long "
                            "as it runs); a new writer takes over %s", exc, path)
                return self._surviving
            log.warning("taskmasterd: the surviving log writer died while attaching: %s; "
                        "a new writer takes the %d pipe(s) it handed over", exc, len(exc.pipes))
            self._take(exc.pipes)
            self._start()
            return self._surviving
        self._take(found.pipes)
        if found.version != PROTOCOL:
            how = logattach.dismiss(found)
            log.warning("taskmasterd: the surviving log writer (pid %d) speaks protocol %d, this daemon "
                        "%d: it %s; a new writer takes its %d pipe(s)", found.pid, found.version,
                        PROTOCOL, how, len(found.pipes))
            self._start()
            return self._surviving
        self._watch(found.sock, found.pid, None)
        log.info("taskmasterd: re-attached the log writer (pid %d) and its %d pipe(s)", found.pid,
                 len(found.pipes))
        return self._surviving

    def _take(self, pipes: list[Held]) -> None:
        assert self._surviving is not None
        for held in sorted(pipes, key=lambda h: h.id):
            self._hold(held)
            self._foreign.add(held.id)
            self._next_id = max(self._next_id, held.id + 1)
            if held.process:
                self._surviving[(held.process, held.stream)] = held

    def adopt(self, process: str, stream: str) -> int | None:
        """The id of the pipe a re-adopted `process` writes its `stream` to
        (for when_drained), or None when no writer kept one."""
        pipe = self._keys.get((process, stream))
        if pipe not in self._held:
            return None
        self._foreign.discard(pipe)
        return pipe

    def rename(self, old: str, new: str) -> None:
        """A reload renamed process `old` to `new` (prog <-> prog:0): its
        pipes follow, here and in the writer (the next daemon looks them up
        by the new name)."""
        for stream in KEYED_STREAMS:
            pipe = self._keys.pop((old, stream), None)
            if pipe is None or pipe not in self._held:
                continue
            self._keys[(new, stream)] = pipe
            self._held[pipe].process = new
            if self._sock is not None:
                self._send(encode("rename", id=pipe, process=new), [])

    def release(self, process: str) -> None:
        """`process` is gone (not re-adopted): forget its keys. Its pipes
        stay held until the writer drains them to EOF, as any other's."""
        for stream in KEYED_STREAMS:
            self._keys.pop((process, stream), None)

    # ---- consoles (issue 18, docs/console.md)

    def terminal(self, process: str) -> int | None:
        """The master of `process`'s console (the copy held here: the caller
        duplicates it to hand it out), or None when it has none now."""
        held = self._held.get(self._keys.get((process, "console"), 0))
        return held.fd if held is not None else None

    def watch(self, process: str, viewer: int) -> bool:
        """Give `viewer` (a stream socket; closed here in every case) to the
        writer as a viewer of `process`'s console; False when there is no
        console or no writer to serve it now (one is being restarted)."""
        pipe = self._keys.get((process, "console"))
        if pipe is None or pipe not in self._held or self._sock is None:
            os.close(viewer)
            return False
        self._owned.add(viewer)
        self._send(encode("watch", id=pipe), [viewer])
        return True

    # ---- drains and shutdown

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
        if self._pid == 0:
            self._close_held()
            return
        self._send(encode("finish"), [])
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except TimeoutError:
            foreign = self._foreign & self._held.keys()
            if foreign:
                # Programs this daemon found alive but did not take back:
                # killing the writer would SIGPIPE them. It drains on alone.
                log.warning("taskmasterd log writer (pid %d): %d pipe(s) of programs this daemon did not "
                            "re-adopt are still open; left draining them on its own", self.pid,
                            len(foreign))
                self._loop.remove_reader(self._pidfd)
                os.close(self._pidfd)
                self._pidfd = -1
                self._close_held()
                return
            log.warning("taskmasterd log writer (pid %d): %d pipe(s) still open %g s after every program "
                        "stopped (a process that left its group?); killing it",
                        self.pid, len(self._held), timeout)
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            await self._exited.wait()
        self._close_held()
        if self._listen_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._listen_path)

    # ---- the writer process

    def _start(self) -> None:
        self._restart = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener = self._listen()
        fds = [theirs.fileno(), *([listener.fileno()] if listener is not None else [])]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "taskmasterd.logwriter", *map(str, fds)],
                pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True,  # stderr: the daemon's, for a traceback
                env=_writer_env())
        except OSError as exc:
            ours.close()
            log.error("taskmasterd: cannot start the log writer: %s; bounded output waits in its pipes "
                      "(retrying in %g s)", exc, _RESTART_DELAY)
            self._restart = self._loop.call_later(_RESTART_DELAY, self._start)
            return
        finally:
            theirs.close()
            if listener is not None:
                listener.close()
        self._watch(ours, proc.pid, proc)
        for held in self._held.values():
            self._send(_follow_msg(held), [held.fd])
        if self._finishing:
            self._send(encode("finish"), [])
        log.debug("log writer started, pid %d, %d pipe(s)", proc.pid, len(self._held))

    def _listen(self) -> socket.socket | None:
        """The writer's listening socket at _listen_path (a stale one, left by
        a dead writer, is replaced), or None (logged) when it cannot be."""
        path = self._listen_path
        if path is None:
            return None
        try:
            sock = logattach.bind_private(path)  # the writer calls listen()
        except OSError as exc:
            log.warning("taskmasterd: the log writer cannot listen on %s: %s; it cannot be re-attached "
                        "if this daemon dies", path, exc.strerror or exc)
            self._listen_path = None
            return None
        return sock

    def _watch(self, sock: socket.socket, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        """Make `sock` our control socket to writer `pid` and watch its exit."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone: a dead pidfd would never be readable
            pidfd = -1
        self._proc, self._pid, self._pidfd, self._sock = proc, pid, pidfd, sock
        # A re-attached writer did start, long ago: its death is never "quick".
        self._started_at = self._loop.time() - (0 if proc is not None else _QUICK_DEATH)
        self._exited.clear()
        self._clear_outbox()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_message)
        if pidfd >= 0:
            self._loop.add_reader(pidfd, self._on_exit)
        else:
            self._loop.call_soon(self._on_exit)

    def _on_exit(self) -> None:
        pid = self._pid
        status = self._collect()
        self._drop_socket()
        self._proc, self._pid = None, 0
        self._exited.set()
        if self._finishing:
            return
        if status is None:
            how = "exit status unknown: not our child"
        else:
            how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        quick = self._loop.time() - self._started_at < _QUICK_DEATH
        log.warning("taskmasterd log writer (pid %d) died (%s); %s a new one for its %d pipe(s)", pid,
                    how, f"in {_RESTART_DELAY:g} s," if quick else "starting", len(self._held))
        if not self._held:
            return  # the next bounded output starts one
        if quick:  # don't spin on a writer that cannot start
            self._restart = self._loop.call_later(_RESTART_DELAY, self._start)
        else:
            self._start()

    def _collect(self) -> int | None:
        """Reap the writer: its returncode, None when it is not our child (a
        re-attached writer: its parent is init)."""
        status: int | None = None
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            if self._proc is not None:
                status = self._proc.wait()
            else:
                with contextlib.suppress(ChildProcessError, OSError):
                    # Our child after all when this daemon re-executed itself.
                    res = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
                    if res is not None:
                        status = -res.si_status if res.si_code != os.CLD_EXITED else res.si_status
            os.close(self._pidfd)
            self._pidfd = -1
        return status

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._clear_outbox()

    def _clear_outbox(self) -> None:
        """Unsent messages are dropped (a new writer is given every pipe
        again); a viewer among them is closed: its client sees the end."""
        self._outbox.clear()
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()

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
            for fd in fds:
                if fd in self._owned:
                    self._owned.discard(fd)
                    os.close(fd)
        if sock is not None:
            self._loop.remove_writer(sock.fileno())

    def _on_message(self) -> None:
        sock = self._sock
        assert sock is not None
        for _ in range(64):
            try:
                msg, _fds = receive(sock, TO_DAEMON)
            except BlockingIOError:
                return
            except ProtocolError as exc:
                log.warning("taskmasterd log writer (pid %d): message refused: %s", self._pid, exc)
                continue
            except (EOFError, OSError):  # its exit comes through the pidfd
                self._loop.remove_reader(sock.fileno())
                return
            self._handle(msg)

    def _handle(self, msg: dict[str, object]) -> None:
        op = msg["op"]
        if op == "eof":
            held = self._held.pop(int(str(msg["id"])), None)
            if held is not None:
                os.close(held.fd)
                self._foreign.discard(held.id)
                if held.process and self._keys.get((held.process, held.stream)) == held.id:
                    del self._keys[(held.process, held.stream)]
                for waiter in list(self._waiters):
                    waiter.pending.discard(held.id)
                    if not waiter.pending:
                        self._fire(waiter)
        elif op == "error":
            log.error("taskmasterd log writer: %s", msg["message"])
        elif op == "recovered":
            log.warning("taskmasterd log writer: %s", msg["message"])

    def _close_held(self) -> None:
        for waiter in list(self._waiters):
            self._fire(waiter)
        for held in self._held.values():
            os.close(held.fd)
        self._held.clear()
        self._keys.clear()
        self._drop_socket()


def _follow_msg(held: Held) -> bytes:
    return encode("follow", id=held.id, process=held.process, stream=held.stream, path=held.path,
                  maxbytes=held.maxbytes, backups=held.backups, scrollback=held.scrollback)


def _writer_env() -> dict[str, str]:
    """The daemon's environment, with the daemon's import path: the writer
    must import the same taskmasterd (a source tree, a venv)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
