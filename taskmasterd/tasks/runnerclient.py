"""The daemon's side of the task runner (taskmasterd/tasks/runner.py).

`RunnerClient` starts the one runner process (`warm()`, when the daemon
starts; again on the first `run()` after one died), in its own session so
that it outlives the daemon, sends it `run`/`cancel`, and hands
every status it reports to `on_status`: running, then the end. At start,
`attach_surviving()` finds a runner a dead daemon left behind, on its unix
socket in the runtime directory (`runner_socket()`, keyed by statedir and
config file like the log writer's), checks its uid (SO_PEERCRED), and gets
the statuses of the tasks it holds; its connection is the control socket
from then on. Blocking, with a timeout per answer: it runs before the
daemon does anything else.

When the runner dies while attached, `on_gone(pid, reason)` says so (the
daemon decides what becomes of its tasks); the next `run()` starts a new
one. `close()` detaches: the runner keeps its tasks, writes their ends, and
exits once the last one ended. A runner started here is our child: its exit
is collected through its pidfd, never left a zombie.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable

from taskmasterd import logattach
from taskmasterd.logpipes import _writer_env
from taskmasterd.logproto import peer_uid_pid, unexpected_op
from taskmasterd.tasks.execute import signame
from taskmasterd.tasks.records import TaskState, TaskStatus
from taskmasterd.tasks.runproto import (
    BATCHES_ENV,
    MAX_MESSAGE,
    TO_DAEMON,
    ProtocolError,
    encode,
    flush,
    receive_batch,
    status_of,
    status_text,
)
from taskmasterd.tasks.taskfiles import TaskFiles

log = logging.getLogger("taskmasterd")

ATTACH_TIMEOUT = logattach.ATTACH_TIMEOUT  # seconds a surviving runner gets for each answer


def runner_socket(runtime: str, statedir: str, config_path: str) -> str:
    """Where this daemon's task runner listens (one per statedir and config file)."""
    return logattach.instance_socket(runtime, statedir, config_path, "taskrunner")


OUTER_PYTHONPATH = "TASKMASTER_RUNNER_OUTER_PYTHONPATH"


def runner_env() -> dict[str, str]:
    """The daemon's environment, with the daemon's import path (the runner
    must import the same taskmasterd) and, in OUTER_PYTHONPATH, the
    PYTHONPATH the daemon had ("unset" or "set:VALUE"): the runner gives
    its tasks the daemon's environment, not its own import path."""
    env = _writer_env()
    outer = os.environ.get("PYTHONPATH")
    env[OUTER_PYTHONPATH] = "unset" if outer is None else f"set:{outer}"
    env[BATCHES_ENV] = "1"  # this daemon reads batches (runproto.py)
    return env


def restore_outer_env(environ: dict[str, str] | os._Environ[str]) -> None:
    """In the runner: PYTHONPATH back to the daemon's (runner_env)."""
    outer = environ.pop(OUTER_PYTHONPATH, None)
    if outer == "unset":
        environ.pop("PYTHONPATH", None)
    elif outer is not None and outer.startswith("set:"):
        environ["PYTHONPATH"] = outer[4:]


class RunnerClient:
    def __init__(self, statedir: str, socket_path: str, *,
                 on_status: Callable[[TaskStatus], None],
                 on_gone: Callable[[int, str], None],
                 on_statuses: Callable[[list[TaskStatus]], None] | None = None) -> None:
        """`on_statuses`, when given, takes the statuses of one datagram
        together (else `on_status` each)."""
        self.statedir = statedir
        self.socket_path: str | None = socket_path  # None: our runner cannot listen there
        self.on_status = on_status
        self.on_statuses = on_statuses
        self.on_gone = on_gone
        self.timeout = ATTACH_TIMEOUT
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # a runner we started
        self._pid = 0
        self._pidfd = -1
        self._outbox: deque[bytes] = deque()
        self._peer_batches = False  # the attached runner reads batches
        self._closed = False

    @property
    def pid(self) -> int:
        """The attached runner's pid (0: none)."""
        return self._pid

    @property
    def peer_batches(self) -> bool:
        """Whether the attached runner said it reads batches (runproto.py)."""
        return self._peer_batches

    # ---- re-attachment

    def attach_surviving(self) -> list[TaskStatus] | None:
        """The statuses of the tasks a surviving runner holds (it is our
        runner from now on), or None when no runner listens (or it cannot
        be used: logged). Blocking, called on the running loop at start.

        Held are the running tasks and the ended ones whose final
        status.json write is still under way: a held status is never older
        than the file. A task ended while no daemon was attached is not held:
        its end is in its status.json."""
        path = self.socket_path
        if path is None or self._sock is not None:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(self.timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        except OSError as exc:
            sock.close()
            log.warning("taskmasterd: cannot reach a surviving task runner at %s: %s", path, exc)
            return None
        try:
            found = self._greet(sock, path)
        except BaseException:
            sock.close()
            raise
        if found is None:
            sock.close()
            return None
        pid, held, batches, after = found
        self._watch(sock, pid, None)
        self._peer_batches = batches
        if after:  # what came in the datagram of its `end`: as if read next
            self._get_loop().call_soon(self._take, after)
        log.info("taskmasterd: re-attached the task runner (pid %d) and its %d task(s)", pid, len(held))
        return held

    def _greet(self, sock: socket.socket, path: str
               ) -> tuple[int, list[TaskStatus], bool, list[dict[str, object] | ProtocolError]] | None:
        """(its pid, the statuses it holds, whether it reads batches, the
        messages that came after its `end`), or None (logged)."""
        try:
            uid, pid = peer_uid_pid(sock)
        except OSError as exc:
            log.warning("taskmasterd: task runner at %s: no peer credentials: %s", path, exc.strerror)
            return None
        if uid != os.geteuid():  # somebody else's socket in our directory: never trusted
            log.warning("taskmasterd: %s is served by uid %d, not %d: not attached", path, uid,
                        os.geteuid())
            return None
        held: list[TaskStatus] = []
        pending: deque[dict[str, object] | ProtocolError] = deque()

        def receive(expect: set[str]) -> dict[str, object]:
            # The runner may send several messages per datagram (we said so).
            while not pending:
                pending.extend(receive_batch(sock, TO_DAEMON))
            msg = pending.popleft()
            if isinstance(msg, ProtocolError):
                raise msg
            if msg["op"] not in expect:
                raise unexpected_op(msg["op"], expect)
            return msg

        try:
            sock.send(encode("hello", pid=os.getpid(), batches=True))
            welcome = msg = receive({"welcome", "busy", "refused"})
            if msg["op"] == "busy":
                log.warning("taskmasterd: the task runner at %s is attached to another taskmasterd "
                            "(pid %s): not taken", path, msg["pid"])
                self.socket_path = None  # its path stays its own
                return None
            if msg["op"] == "refused":
                log.warning("taskmasterd: the task runner (pid %d) at %s refused this daemon: %s", pid,
                            path, msg["message"])
                return None
            while True:
                msg = receive({"held", "end"})
                if msg["op"] == "end":
                    return pid, held, welcome.get("batches") is True, list(pending)
                held.append(status_of(msg))
        except (TimeoutError, ProtocolError, EOFError, OSError) as exc:
            why = "does not answer" if isinstance(exc, TimeoutError) else f"answers badly: {exc or 'hung up'}"
            log.warning("taskmasterd: the task runner (pid %d) at %s %s; a new one takes its place "
                        "(its tasks go on under it; their ends are in their status.json)", pid, path, why)
            return None

    # ---- tasks

    def run(self, status: TaskStatus, stopsignal: int, stoptime: float) -> None:
        """Start `status`'s task (its status.json says queued); a runner is
        started first when none is attached."""
        data = encode("run", status=status_text(status), stopsignal=int(stopsignal),
                      stoptime=float(stoptime))
        if len(data) >= MAX_MESSAGE:
            self._fail(status, f"too large for the task runner: its status is {len(data)} bytes, at "
                               f"most {MAX_MESSAGE} are accepted (fewer or shorter arguments and "
                               "environment variables)")
            return
        if self._sock is None:
            try:
                self._start()
            except OSError as exc:
                log.error("taskmasterd: cannot start the task runner: %s", exc)
                self._fail(status, f"the task runner could not be started: {exc.strerror or exc}")
                return
        self._send(data)

    def warm(self) -> None:
        """Start the runner now if none is attached (the daemon's start), so
        the first task does not wait for its start-up (~0.15 s of Python
        imports, in which a burst of tasks would wait); idle, it sleeps in
        epoll. A failure is logged; the next run() tries again (and fails
        its task if it cannot)."""
        if self._sock is not None:
            return
        try:
            self._start()
        except OSError as exc:
            log.error("taskmasterd: cannot start the task runner: %s", exc)

    def _fail(self, status: TaskStatus, reason: str) -> None:
        """A task that never reached the runner fails, recorded here (it
        never started: the daemon's to write), reported as the runner's
        statuses are (on the next loop turn, as those come)."""
        failed = status.replace(state=TaskState.FAILED, reason=reason, ended=time.time())
        try:
            TaskFiles(self.statedir).write_task(failed)
        except OSError as exc:
            log.error("taskmasterd: task %s: cannot write its status.json: %s", status.id, exc)
        self._soon(self.on_status, failed)

    def cancel(self, id: str, reason: str) -> None:
        """Stop a task the runner runs (its end comes through on_status)."""
        if self._sock is not None:
            self._send(encode("cancel", id=id, reason=reason))

    async def close(self) -> None:
        """Detach: the runner keeps its tasks and exits after the last one."""
        self._closed = True
        if self._sock is not None:
            loop = self._get_loop()
            loop.remove_reader(self._sock.fileno())
            loop.remove_writer(self._sock.fileno())
            self._flush_blocking()
            self._sock.close()
            self._sock = None
        self._outbox.clear()
        if self._proc is None and self._pidfd >= 0:  # not ours to reap
            self._get_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        # A runner we started stays watched: its exit is collected (no zombie).

    # ---- the runner process

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _soon(self, fn: Callable[[TaskStatus], None], status: TaskStatus) -> None:
        self._get_loop().call_soon(fn, status)

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener = self._listen()
        fds = [theirs.fileno(), *([listener.fileno()] if listener is not None else [])]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "taskmasterd.tasks.runner", os.path.abspath(self.statedir),
                 *map(str, fds)],
                pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True,  # stderr: the daemon's, for its warnings
                env=runner_env())
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
            if listener is not None:
                listener.close()
        self._watch(ours, proc.pid, proc)
        log.debug("task runner started, pid %d", proc.pid)

    def _listen(self) -> socket.socket | None:
        path = self.socket_path
        if path is None:
            return None
        try:
            return logattach.bind_private(path)
        except OSError as exc:
            log.warning("taskmasterd: the task runner cannot listen on %s: %s; it cannot be re-attached "
                        "if this daemon dies", path, exc.strerror or exc)
            self.socket_path = None
            return None

    def _watch(self, sock: socket.socket, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        loop = self._get_loop()
        if self._pidfd >= 0:  # a previous runner we still reap
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self._proc, self._pid, self._sock = proc, pid, sock
        self._closed = False
        self._peer_batches = False  # until it says so
        self._outbox.clear()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_message)
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone
            loop.call_soon(self._on_exit)
            return
        loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        pid, proc = self._pid, self._proc
        status: int | None = None
        if self._pidfd >= 0:
            self._get_loop().remove_reader(self._pidfd)
            if proc is not None:
                status = proc.wait()
            os.close(self._pidfd)
            self._pidfd = -1
        attached = self._sock is not None
        if self._sock is not None:
            self._on_message()  # the statuses it sent before it died
        if self._sock is not None:
            loop = self._get_loop()
            loop.remove_reader(self._sock.fileno())
            loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._outbox.clear()
        self._proc, self._pid = None, 0
        if not attached or self._closed:
            return
        if status is None:
            how = "it ended (exit status unknown: not our child)"
        elif status < 0:
            how = f"killed by {signame(-status)}"
        else:
            how = f"exited with status {status}"
        log.warning("taskmasterd: the task runner (pid %d) %s", pid, how)
        self.on_gone(pid, how)

    # ---- messages

    def _send(self, data: bytes) -> None:
        """Queued; sent at the end of this loop turn with the others of the
        turn (the runner is woken once for a burst, not once per message)."""
        self._outbox.append(data)
        if len(self._outbox) == 1:
            self._get_loop().call_soon(self._flush)

    def flush(self) -> None:
        """Send what is queued now, not at the end of this loop turn."""
        if self._outbox:
            self._flush()

    def _flush(self) -> None:
        if self._sock is not None:  # a failure: the runner is gone, _on_exit says so
            flush(self._get_loop(), self._sock, self._outbox, self._flush, batches=self._peer_batches)

    def _flush_blocking(self) -> None:
        """What close() must not lose (a last run or cancel), bounded."""
        sock = self._sock
        if sock is None or not self._outbox:
            return
        sock.settimeout(self.timeout)
        with contextlib.suppress(OSError):
            while self._outbox:
                sock.send(self._outbox.popleft())

    def _on_message(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                messages = receive_batch(sock, TO_DAEMON)
            except BlockingIOError:
                return
            except (EOFError, OSError):  # its exit comes through the pidfd
                self._get_loop().remove_reader(sock.fileno())
                return
            self._take(messages)

    def _take(self, messages: list[dict[str, object] | ProtocolError]) -> None:
        """The messages of one datagram; their statuses delivered together."""
        statuses: list[TaskStatus] = []
        for msg in messages:
            self._handle(msg, statuses)
        if not statuses:
            return
        if self.on_statuses is not None:
            self.on_statuses(statuses)
        else:
            for status in statuses:
                self.on_status(status)

    def _handle(self, msg: dict[str, object] | ProtocolError, statuses: list[TaskStatus]) -> None:
        """One message; a status goes to `statuses` (delivered with the
        others of its datagram)."""
        if isinstance(msg, ProtocolError):
            log.warning("taskmasterd task runner (pid %d): message refused: %s", self._pid, msg)
        elif msg["op"] == "status":
            try:
                status = status_of(msg)
            except ProtocolError as exc:
                log.warning("taskmasterd task runner (pid %d): %s", self._pid, exc)
                return
            statuses.append(status)
        elif msg["op"] == "refused":
            log.warning("taskmasterd task runner (pid %d): %s", self._pid, msg["message"])
        elif msg["op"] == "batches":
            self._peer_batches = True
