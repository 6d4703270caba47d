"""The execution of ONE task, shared by the task runner
(taskmasterd/tasks/runner.py) and the standalone `taskmasterd --run-task`
(taskmasterd/tasks/standalone.py).

The decisions -- which status follows a spawn, an exit, a timeout, a
cancel -- are pure functions of the status and what happened (tested
without processes). `Execution` is the thin process side on an asyncio
loop: it spawns the task with `taskmasterd.spawn.spawn` (own session and
process group, stdout/stderr appended to the files of its TaskDir, which
the task holds itself), watches its pidfd, collects its exit with
waitid(P_PIDFD), beats every HEARTBEAT seconds while it runs, and stops it
on a timeout or a cancel: `stopsignal` to its process group, SIGKILL after
`stoptime`. Every new status goes to `record`; the owner writes it
(taskmasterd/tasks/statuswriter.py) and tells whom it must.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import select
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from taskmasterd import fastspawn, spawn
from taskmasterd.lifecycle import SpawnError
from taskmasterd.programschema import Output, OutputKind
from taskmasterd.tasks.records import TaskState, TaskStatus, shell_exit_status
from taskmasterd.tasks.spawner import Spawner
from taskmasterd.tasks.taskfiles import TaskDir

HEARTBEAT = 30.0  # seconds between two signs of life in status.json while a task runs
OUTPUT_MODE = 0o600  # a task's stdout and stderr
TIMEOUT = "timeout"
CANCEL = "cancel"


@dataclass(frozen=True)
class Stop:
    """Why a task is being stopped, and how far it went."""

    why: str  # TIMEOUT or CANCEL
    reason: str  # a cancel's reason (given by the caller); "" for a timeout
    signal: int  # the stopsignal sent
    stoptime: float
    killed: bool = False  # SIGKILL followed, stoptime after


# ---- the decisions (pure) ----------------------------------------------------------


def signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def task_env(status: TaskStatus) -> dict[str, str]:
    """The variables a task gets over the runner's environment: its own
    `env`, then TASKMASTER_TASK_ID/NAME/ACTIVITY (which win)."""
    env = dict(status.spec.env)
    env["TASKMASTER_TASK_ID"] = status.id
    env["TASKMASTER_TASK_NAME"] = status.name
    env["TASKMASTER_ACTIVITY"] = status.activity
    return env


def launch_spec(status: TaskStatus, taskdir: TaskDir, base_env: Mapping[str, str]) -> spawn.LaunchSpec:
    """The task runs with the umask of whoever runs it (the runner has the
    daemon's); its stdout and stderr are created 0600 whatever the umask
    (its environment may hold secrets, and --run-task writes them in a
    directory others may read)."""
    spec = status.spec
    return spawn.LaunchSpec(
        process=status.id, program=status.name, index=0, argv=spec.argv, base_env=base_env,
        env=task_env(status), cwd=spec.workingdir, umask=None, user=spec.user,
        stdout=Output(OutputKind.FILE, taskdir.output("stdout")),
        stderr=Output(OutputKind.FILE, taskdir.output("stderr")), logdir="", journal=False,
        output_mode=OUTPUT_MODE)


def spawn_error(error: SpawnError, command: str) -> SpawnError:
    """taskd's style for an execve failure: syscall "spawn <command as
    given>"; the other steps (chdir, open, setuid) keep spawn.py's text."""
    if error.syscall.startswith("execve "):
        return SpawnError(error.code, f"spawn {command}", error.message)
    return error


def running(status: TaskStatus, pid: int, start_ticks: int, runner_pid: int,
            now: float) -> TaskStatus:
    return status.replace(state=TaskState.RUNNING, pid=pid, start_ticks=start_ticks,
                          runner_pid=runner_pid, started=now, heartbeat=now, ended=0.0,
                          exit_code=None, signal=None, spawn_error=None, reason="")


def spawn_failed(status: TaskStatus, error: SpawnError, runner_pid: int, now: float) -> TaskStatus:
    error = spawn_error(error, status.spec.command)
    return status.replace(state=TaskState.FAILED, spawn_error=error, runner_pid=runner_pid,
                          started=now, ended=now, pid=0, start_ticks=0,
                          reason=f"could not be started: {error}")


def beat(status: TaskStatus, now: float) -> TaskStatus:
    return status.replace(heartbeat=now)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def timeout_reason(timeout: float, stop: Stop) -> str:
    text = f"timed out after {_seconds(timeout)} (stopped with {signame(stop.signal)}"
    if stop.killed:
        text += f", SIGKILL after {_seconds(stop.stoptime)}"
    return text + ")"


def ended(status: TaskStatus, returncode: int, now: float, stop: Stop | None = None) -> TaskStatus:
    """The end status from a returncode (>= 0: exit status; < 0: killed by
    that signal) and the stop under way, if any: a timeout fails the task
    whatever its exit, a cancel makes it cancelled; the real exit status is
    recorded either way."""
    code = returncode if returncode >= 0 else None
    sig = -returncode if returncode < 0 else None
    out = status.replace(ended=now, exit_code=code, signal=sig)
    if stop is not None and stop.why == CANCEL:
        return out.replace(state=TaskState.CANCELLED, reason=stop.reason)
    if stop is not None and stop.why == TIMEOUT:
        return out.replace(state=TaskState.FAILED, reason=timeout_reason(status.timeout, stop))
    if returncode == 0:
        return out.replace(state=TaskState.SUCCEEDED, reason="")
    if code is not None:
        return out.replace(state=TaskState.FAILED, reason=f"exited with status {code}")
    return out.replace(state=TaskState.FAILED, reason=f"killed by {signame(-returncode)}")


def cancelled_unstarted(status: TaskStatus, reason: str, runner_pid: int, now: float) -> TaskStatus:
    """A task the runner was asked to run while it was stopping."""
    return status.replace(state=TaskState.CANCELLED, reason=reason, runner_pid=runner_pid, ended=now)


def exit_status(status: TaskStatus) -> int:
    """The shell's view of a task's end (`taskmasterd --run-task`):
    records.shell_exit_status."""
    return shell_exit_status(status.state, exit_code=status.exit_code, signal=status.signal,
                             spawn_code=status.spawn_error.code if status.spawn_error else "",
                             reason=status.reason)


def summary(status: TaskStatus) -> str:
    """One line on how a task ended."""
    if status.state is TaskState.SUCCEEDED:
        return f"task {status.id} ({status.name}) succeeded"
    return f"task {status.id} ({status.name}) {status.state.value}: {status.reason}"


# ---- the process side -----------------------------------------------------------------

Record = Callable[[TaskStatus, bool], None]  # (status, whether it is news: not a heartbeat)


class Execution:
    """One task, from its spawn to its recorded end, on the running loop."""

    def __init__(self, status: TaskStatus, taskdir: TaskDir, *, stopsignal: int, stoptime: float,
                 runner_pid: int, record: Record, finished: Callable[[Execution], None],
                 base_env: Mapping[str, str] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.status = status
        self.taskdir = taskdir
        self.stopsignal = stopsignal
        self.stoptime = stoptime
        self.runner_pid = runner_pid
        self._record = record
        self._finished = finished
        self._base_env = os.environ if base_env is None else base_env
        self.child: spawn.Child | None = None
        self.stop_state: Stop | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._spawned_at = 0.0
        self._spawning = False  # in a spawner thread (spawn_in): no child yet

    @property
    def id(self) -> str:
        return self.status.id

    def start(self) -> None:
        if self.spawn():
            self.identify()

    def spawn(self) -> bool:
        """Start its process (False: it could not be, and has ended). Its
        `running` status comes with `identify()`, which must follow before
        the loop next waits: a runner starting a burst of tasks spawns them
        all, then reads their /proc stat (read right after a spawn, it waits
        for the child's exec to finish, a fraction of a millisecond each)."""
        now = time.time()
        try:
            child = spawn.spawn(launch_spec(self.status, self.taskdir, self._base_env),
                                identify=False)
        except spawn.SpawnFailed as exc:
            self._end(spawn_failed(self.status, exc.error, self.runner_pid, now))
            return False
        self.child = child
        self._spawned_at = now
        return True

    def spawn_in(self, spawner: Spawner, environ: Mapping[str, bytes]) -> bool:
        """As spawn(), in a thread of `spawner` with fastspawn (the GIL
        released while the child is started: see taskmasterd/fastspawn.py);
        identify() follows by itself once it is. `environ`: the base
        environment, encoded (fastspawn.encode_environ). False when it
        cannot be started that way: spawn() then."""
        spec = self.status.spec
        if not fastspawn.supported(spec.user, spec.workingdir):
            return False
        extra = task_env(self.status)
        path = fastspawn.resolve(spec.command, {"PATH": extra.get("PATH") or
                                                self._base_env.get("PATH") or os.defpath})
        if path is None:
            return False  # subprocess says which error each attempt met
        now = time.time()
        fds: list[int] = []
        try:
            for stream in ("stdout", "stderr"):
                fds.append(spawn.open_output_file(self.taskdir.output(stream), OUTPUT_MODE))
        except spawn.SpawnFailed as exc:
            for fd in fds:
                os.close(fd)
            self._end(spawn_failed(self.status, exc.error, self.runner_pid, now))
            return True
        self._spawning = True
        start = functools.partial(fastspawn.spawn, path, spec.argv,
                                  fastspawn.environ_block(environ, extra), stdout=fds[0],
                                  stderr=fds[1], cwd=spec.workingdir)
        spawner.submit(start, lambda result: self._spawned(result, fds, path, now))
        return True

    def _spawned(self, result: int | BaseException, fds: list[int], path: str, now: float) -> None:
        for fd in fds:  # the child has its copies
            os.close(fd)
        self._spawning = False
        if isinstance(result, BaseException):
            if isinstance(result, OSError):
                error = spawn.step_failed(result, f"execve {path}").error
            else:  # ValueError: a NUL byte
                error = SpawnError("EINVAL", f"execve {path}", str(result))
            self._end(spawn_failed(self.status, error, self.runner_pid, now))
            return
        try:
            child = spawn.take(result)
        except spawn.SpawnFailed as failed:
            self._end(spawn_failed(self.status, failed.error, self.runner_pid, now))
            return
        self.child = child
        self._spawned_at = now
        self.identify()
        stop = self.stop_state
        if stop is not None:  # asked while it was being started: now
            self.stop_state = None
            self.stop(stop.why, stop.reason)

    def identify(self) -> None:
        """Its start time (its identity with the pid: not yet reaped, even if
        it has exited), then its `running` status."""
        child = self.child
        assert child is not None
        stat = spawn.proc_stat(child.pid)
        child.start_ticks = stat.start_ticks if stat is not None else 0
        self._set(running(self.status, child.pid, child.start_ticks, self.runner_pid,
                          self._spawned_at))
        self._loop.add_reader(child.pidfd, self._on_exit)
        self._timers["beat"] = self._loop.call_later(HEARTBEAT, self._beat)
        if self.status.timeout > 0:
            self._timers["timeout"] = self._loop.call_later(self.status.timeout, self.stop, TIMEOUT, "")

    def stop(self, why: str, reason: str) -> bool:
        """Stop it (stopsignal to its group, SIGKILL after stoptime); False
        when it has already exited or is being stopped."""
        child = self.child
        if child is None and self._spawning and self.stop_state is None:
            # Being started (spawn_in): stopped as soon as it is.
            self.stop_state = Stop(why, reason, self.stopsignal, self.stoptime)
            return True
        if child is None or self.stop_state is not None or _readable(child.pidfd):
            return False
        self.stop_state = Stop(why, reason, self.stopsignal, self.stoptime)
        self._cancel_timer("timeout")
        spawn.kill_group(child, signal.Signals(self.stopsignal))
        self._timers["kill"] = self._loop.call_later(self.stoptime, self._kill)
        return True

    def kill_now(self) -> None:
        """A stop under way goes to SIGKILL at once (a second Ctrl-C)."""
        if self.stop_state is not None:
            self._cancel_timer("kill")
            self._kill()

    def _kill(self) -> None:
        if self.child is None or self.stop_state is None:
            return
        self.stop_state = Stop(self.stop_state.why, self.stop_state.reason, self.stop_state.signal,
                               self.stop_state.stoptime, killed=True)
        spawn.kill_group(self.child, signal.SIGKILL)

    def _beat(self) -> None:
        self.status = beat(self.status, time.time())
        self._record(self.status, False)
        self._timers["beat"] = self._loop.call_later(HEARTBEAT, self._beat)

    def _on_exit(self) -> None:
        child = self.child
        assert child is not None
        self._loop.remove_reader(child.pidfd)  # before collect() closes it
        returncode = spawn.collect(child)
        if returncode is None:  # a spurious wake-up
            self._loop.add_reader(child.pidfd, self._on_exit)
            return
        self.child = None
        self._end(ended(self.status, returncode, time.time(), self.stop_state))

    def _set(self, status: TaskStatus) -> None:
        self.status = status
        self._record(status, True)

    def _end(self, status: TaskStatus) -> None:
        for name in list(self._timers):
            self._cancel_timer(name)
        self._set(status)
        self._finished(self)

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()


def _readable(fd: int) -> bool:
    """Whether a pidfd says its process has exited (a cancel then changes
    nothing: its real end is on its way)."""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except OSError as exc:
        return exc.errno == errno.EBADF
