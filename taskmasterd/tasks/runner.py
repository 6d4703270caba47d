"""The task runner: one process per daemon that runs the tasks and outlives
the daemon.

Run as `python -m taskmasterd.tasks.runner STATEDIR CTL_FD [LISTEN_FD]` by
the daemon (taskmasterd/tasks/runnerclient.py), in its own session: a
SIGKILL of the daemon, or a Ctrl-C on its terminal, does not reach it.
CTL_FD is a SOCK_SEQPACKET socket to the daemon that started it; the
messages are in taskmasterd/tasks/runproto.py.

Tasks are its children (taskmasterd/tasks/execute.py: own session each,
output in their directory under STATEDIR/tasks, exits collected through
pidfds, never waitpid(-1)). It writes their status.json -- running, a
heartbeat every 30 s while they run, their end -- off the loop, in a
worker thread (taskmasterd/tasks/statuswriter.py: per task in order, only
its newest status waiting), and sends each running/end status
to the attached daemon without ever blocking on it; with no daemon
attached nothing is queued: the files are the truth. It enforces timeouts
and cancels itself, so they hold while no daemon runs.

When the daemon goes away (EOF on the control socket) it goes on, and a
new daemon says hello on LISTEN_FD (a listening unix socket, peer uid
checked): it gets every task the runner holds and its connection becomes
the control socket; while a daemon is attached another one is told busy.
The runner exits once no daemon is attached and no task runs (every end
written). SIGHUP and SIGINT are ignored; SIGTERM stops its tasks as a
cancel ("the task runner was stopped (SIGTERM)"), records them and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections import deque

from taskmasterd import fastspawn
from taskmasterd.logattach import FileId, admit, refuse, socket_file, unlink_own
from taskmasterd.logfiles import raise_nofile
from taskmasterd.logproto import peer_uid_pid
from taskmasterd.tasks.execute import CANCEL, Execution, cancelled_unstarted
from taskmasterd.tasks.records import TaskStatus, encode_task
from taskmasterd.tasks.runproto import (
    BATCHES_ENV,
    TO_RUNNER,
    ProtocolError,
    encode,
    flush,
    receive,
    receive_batch,
    status_of,
    status_text,
)
from taskmasterd.tasks.spawner import Spawner
from taskmasterd.tasks.statuswriter import StatusWriter
from taskmasterd.tasks.taskfiles import TaskDir, TaskFiles

GREET_TIMEOUT = 5.0  # seconds a connection gets to say hello
# Threads starting tasks (fastspawn: each waits, without the GIL, for its
# child's exec). One: a second overlapped the waits of a burst, but each
# thread is one more to wake per loop turn and to fight for the GIL; paired
# runs of the bench (1000 `true`, 16 lanes, 2 vCPUs) cost 12 % less CPU with
# one (none, starting in the loop's thread, 1 % more than one).
SPAWNERS = 1
MAX_PENDING = 4  # connections waiting to say hello; more are refused
STOPPED = "the task runner was stopped (SIGTERM)"


def _warn(text: str) -> None:
    # The daemon's stderr: it may be a pipe nobody reads any more.
    with contextlib.suppress(OSError, ValueError):
        print(f"taskmasterd task runner (pid {os.getpid()}): {text}", file=sys.stderr, flush=True)


class Runner:
    def __init__(self, statedir: str, ctl: socket.socket | None,
                 listener: socket.socket | None, *, ctl_batches: bool = False) -> None:
        """`ctl_batches`: the daemon at the other end of `ctl` reads batches
        (runproto.py, Batches)."""
        self.loop = asyncio.get_running_loop()
        self.files = TaskFiles(statedir)
        self.ctl: socket.socket | None = None
        self.daemon_pid = 0
        self.peer_batches = False  # the attached daemon reads batches
        self.outbox: deque[bytes] = deque()
        self.listener = listener
        self.pending: dict[int, tuple[socket.socket, asyncio.TimerHandle]] = {}
        self.running: dict[str, Execution] = {}
        # The newest status of every task not yet recorded as ended on disk:
        # what a daemon that attaches is told.
        self.held: dict[str, TaskStatus] = {}
        self._ends: dict[str, bytes] = {}  # ends to tell the daemon once their file is written
        self.writer = StatusWriter(self._written)
        self.terminating = False
        self.done = asyncio.Event()
        self.base_env = dict(os.environ)  # a plain copy: os.environ decodes each value it gives
        self.environ = fastspawn.encode_environ(self.base_env)  # encoded once, not per task
        self.spawner = Spawner(SPAWNERS)
        self._listen_file: FileId | None = None
        if ctl is not None:
            self._attach(ctl, peer_uid_pid(ctl)[1], ctl_batches)
            if ctl_batches:
                self._send(encode("batches"))  # and so does this runner
        if listener is not None:
            # listen() here, not by the daemon that bound it: SO_PEERCRED,
            # what a connecting daemon reads, names who called listen().
            listener.listen(8)
            listener.setblocking(False)
            self._listen_file = socket_file(listener)
            self.loop.add_reader(listener.fileno(), self._accept)
        self._maybe_exit()

    # ---- tasks

    def run(self, status: TaskStatus, stopsignal: int, stoptime: float) -> None:
        ex = self._spawn(status, stopsignal, stoptime)
        if ex is not None:
            ex.identify()

    def _spawn(self, status: TaskStatus, stopsignal: int, stoptime: float) -> Execution | None:
        """Start a task's process; the Execution to `identify()` (None: not
        started, its status recorded already)."""
        if status.id in self.held or status.id in self.running:
            self._send(encode("refused", message=f"task {status.id} is already held by this runner"))
            return None
        taskdir = self.files.task_dir(status.id)
        if self.terminating:
            self._record(taskdir, cancelled_unstarted(status, STOPPED, os.getpid(), time.time()), True)
            return None
        ex = Execution(status, taskdir, stopsignal=stopsignal, stoptime=stoptime,
                       runner_pid=os.getpid(), record=lambda s, news: self._record(taskdir, s, news),
                       finished=self._finished, base_env=self.base_env)
        self.running[status.id] = ex
        # What a daemon attaching meanwhile is told: the runner has it (it is
        # never queued twice); `running` replaces it once it is identified.
        self.held[status.id] = status
        if ex.spawn_in(self.spawner, self.environ):
            return None  # identified by itself once started
        return ex if ex.spawn() else None

    def cancel(self, id: str, reason: str) -> None:
        ex = self.running.get(id)
        if ex is not None:  # else it has ended: its status is on its way
            ex.stop(CANCEL, reason)

    def terminate(self) -> None:
        """SIGTERM: stop every task as a cancel; exit once they are recorded."""
        self.terminating = True
        for ex in list(self.running.values()):
            ex.stop(CANCEL, STOPPED)
        self._maybe_exit()

    def _record(self, taskdir: TaskDir, status: TaskStatus, news: bool) -> None:
        self.held[status.id] = status
        data = encode_task(status)  # once, for the file and the message
        self.writer.write(taskdir, status, data)
        if news and status.state.final:
            # An end is told once its file is written: the daemon moves on at
            # once (the next task of an activity, the activity's file), and
            # the files must never say less than it acted on.
            self._ends[status.id] = data
        elif news:
            self._send(encode("status", status=data.decode()))

    def _finished(self, ex: Execution) -> None:
        self.running.pop(ex.id, None)

    def _written(self, status: TaskStatus, error: OSError | None) -> None:
        if error is not None:
            _warn(f"task {status.id}: cannot write its status.json ({status.state.value}): {error}")
        if status.state.final and status.id in self._ends:  # told even if the write failed
            self._send(encode("status", status=self._ends.pop(status.id).decode()))
        if status.state.final and self.held.get(status.id) is status:
            del self.held[status.id]
            self._maybe_exit()

    def _maybe_exit(self) -> None:
        if (self.ctl is None or self.terminating) and not self.running and not self.held \
                and not self.writer.busy():
            self.done.set()

    # ---- the control socket

    def _attach(self, sock: socket.socket, pid: int, batches: bool) -> None:
        self.ctl, self.daemon_pid, self.peer_batches = sock, pid, batches
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._control)

    def _detach(self) -> None:
        if self.ctl is None:
            return
        self.loop.remove_reader(self.ctl.fileno())
        self.loop.remove_writer(self.ctl.fileno())
        self.ctl.close()
        self.ctl, self.daemon_pid, self.peer_batches = None, 0, False
        self.outbox.clear()
        self._maybe_exit()

    def _control(self) -> None:
        spawned: list[Execution] = []
        try:
            self._read_control(spawned)
        finally:
            # Their /proc stat and `running` once all are spawned (Execution.spawn).
            for ex in spawned:
                ex.identify()

    def _read_control(self, spawned: list[Execution]) -> None:
        for _ in range(64):  # datagrams; then let the loop breathe (exits, timers)
            if self.ctl is None:
                return
            try:
                messages = receive_batch(self.ctl, TO_RUNNER - {"hello"})
            except BlockingIOError:
                return
            except (EOFError, OSError):  # the daemon is gone (or detached): go on alone
                self._detach()
                return
            for msg in messages:
                try:
                    if isinstance(msg, ProtocolError):
                        raise msg
                    if msg["op"] == "run":
                        ex = self._spawn(status_of(msg), int(str(msg["stopsignal"])),
                                         float(str(msg["stoptime"])))
                        if ex is not None:
                            spawned.append(ex)
                    elif msg["op"] == "cancel":
                        self.cancel(str(msg["id"]), str(msg["reason"]))
                except ProtocolError as exc:  # said back, never a crash
                    self._send(encode("refused", message=f"task runner: message refused: {exc}"))

    def _send(self, data: bytes) -> None:
        if self.ctl is None:
            return  # nobody to tell: the files say it
        self.outbox.append(data)
        if len(self.outbox) == 1:  # at the end of this loop turn, with the others of the turn
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self.ctl is not None and not flush(self.loop, self.ctl, self.outbox, self._flush,
                                              batches=self.peer_batches):
            self._detach()

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
                continue
            conn.setblocking(False)
            fd = conn.fileno()
            timer = self.loop.call_later(GREET_TIMEOUT, self._expire, fd)
            self.pending[fd] = (conn, timer)
            self.loop.add_reader(fd, self._greet, fd)

    def _unpend(self, fd: int) -> socket.socket:
        conn, timer = self.pending.pop(fd)
        timer.cancel()
        self.loop.remove_reader(fd)
        return conn

    def _expire(self, fd: int) -> None:
        if fd in self.pending:
            _refuse(self._unpend(fd), f"no hello within {GREET_TIMEOUT:g} s")

    def _greet(self, fd: int) -> None:
        conn = self.pending[fd][0]
        try:
            hello, _fds = receive(conn, {"hello"})
        except BlockingIOError:
            return
        except ProtocolError as exc:
            _refuse(self._unpend(fd), str(exc))
            return
        except (EOFError, OSError):
            self._unpend(fd).close()
            return
        self._unpend(fd)
        pid = admit(conn, lambda why: encode("refused", message=why), "task runner")
        if pid is None:
            return
        if self.ctl is not None:
            # Read what the attached daemon sent first: a daemon that died
            # has left its EOF there before its successor could connect.
            self._control()
        if self.ctl is not None:
            with contextlib.suppress(OSError):
                conn.send(encode("busy", pid=self.daemon_pid))
            conn.close()
            return
        self._attach(conn, pid, hello.get("batches") is True)
        self._send(encode("welcome", pid=os.getpid(), tasks=len(self.held), batches=True))
        for status in self.held.values():
            self._send(encode("held", status=status_text(status)))
        self._send(encode("end"))

    def unlink(self) -> None:
        unlink_own(self._listen_file)


def _refuse(conn: socket.socket, reason: str) -> None:
    refuse(conn, encode("refused", message=reason))


async def serve(statedir: str, ctl: socket.socket | None, listener: socket.socket | None, *,
                ctl_batches: bool = False) -> int:
    loop = asyncio.get_running_loop()
    runner = Runner(statedir, ctl, listener, ctl_batches=ctl_batches)
    loop.add_signal_handler(signal.SIGTERM, runner.terminate)
    # Caught, not SIG_IGN: an ignored signal would stay ignored in the tasks.
    for sig in (signal.SIGHUP, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None)
    try:
        while True:
            await runner.done.wait()
            await runner.writer.drain()
            runner.done.clear()
            runner._maybe_exit()  # a daemon may have attached, a task started, meanwhile
            if runner.done.is_set():
                break
    finally:
        runner.unlink()
        runner.writer.close()
        runner.spawner.close()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or not all(a.isdigit() for a in argv[2:]):
        print("usage: python -m taskmasterd.tasks.runner STATEDIR CTL_FD [LISTEN_FD] "
              "(started by taskmasterd)", file=sys.stderr)
        return 2
    raise_nofile()
    from taskmasterd.tasks.runnerclient import restore_outer_env

    restore_outer_env(os.environ)  # the tasks get the daemon's environment
    ctl_batches = os.environ.pop(BATCHES_ENV, None) == "1"
    ctl = socket.socket(fileno=int(argv[2]))
    listener = socket.socket(fileno=int(argv[3])) if len(argv) == 4 else None
    return asyncio.run(serve(argv[1], ctl, listener, ctl_batches=ctl_batches))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
