"""The vocabulary of a process's life cycle (process.py's state machine):
the events it takes, the actions it asks for, how an exit or a spawn error is
told. Pure: no asyncio, no os.*, no clock."""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from taskmasterd.startlimit import StartLimitHit
from taskmasterd.states import State, describe_status

# What is said of an exit whose status cannot be known: an adopted process
# is not our child, its pidfd tells that it exited, not how.
UNKNOWN_EXIT = "exit status unknown (adopted)"


def describe_exit(status: int | None) -> str:
    """describe_status, or UNKNOWN_EXIT for None (an adopted process's exit)."""
    return UNKNOWN_EXIT if status is None else describe_status(status)

# States in which a process is "started" for the purpose of Start requests
# (supervisord's RUNNING_STATES) and in which it has (or is getting) a pid.
STARTED_STATES = frozenset({State.STARTING, State.RUNNING, State.BACKOFF})
# Ordering used for a program's summary state: the worst of its processes.
SEVERITY = {
    State.RUNNING: 0,
    State.STOPPED: 1,
    State.EXITED: 2,
    State.STARTING: 3,
    State.STOPPING: 4,
    State.BACKOFF: 5,
    State.UNKNOWN: 6,
    State.FATAL: 7,
}


def worst_state(states: list[State]) -> State:
    return max(states, key=SEVERITY.__getitem__, default=State.STOPPED)


class Event(enum.Enum):
    START = "start"  # administrative start
    STOP = "stop"  # administrative stop
    RESTART = "restart"  # administrative restart
    SPAWNED = "spawned"  # the Spawn action succeeded
    SPAWN_FAILED = "spawn_failed"  # the Spawn action failed (exec error...)
    EXIT = "exit"  # the process exited
    TIMER = "timer"  # `deadline` was reached
    READY = "ready"  # READY=1 on its notify socket, or its readiness probe succeeded
    PING = "ping"  # WATCHDOG=1: alive (the watchdog's deadline moves)
    UNHEALTHY = "unhealthy"  # its health check failed `failures` times in a row


class AfterStop(enum.Enum):
    """What a STOPPING process does once it has exited."""

    NOTHING = "nothing"  # STOPPED
    START = "start"  # STOPPED, then an administrative start (restart, start while stopping)
    BACKOFF = "backoff"  # a failed start (not ready in time): BACKOFF, or FATAL
    AUTO_RESTART = "auto_restart"  # watchdog or unhealthy: EXITED, then an automatic restart


@dataclass(frozen=True)
class SpawnError:
    """Why a command could not be started: errno name + the syscall."""

    code: str  # errno name: ENOENT, EACCES, ...
    syscall: str  # "execve /usr/bin/x", "chdir /srv", "open /var/log/x"
    message: str  # strerror text

    def __str__(self) -> str:
        return f"{self.code} ({self.syscall}): {self.message}"


@dataclass(frozen=True)
class LastExit:
    """How the process last ended, kept across restarts (systemd's
    ExecMainStatus/ExecMainExitTimestamp): what monitoring shows for a
    crash without a trip to the log."""

    status: int | None  # returncode: >= 0 exit code, < 0 signal; None: unknown (adopted)
    at: float  # `now` (monotonic seconds) when the exit was collected
    expected: bool  # in exitcodes while RUNNING, or stopped on request


# ---- actions: what the supervisor must do ----------------------------------


@dataclass(frozen=True)
class Spawn:
    """Start the process now; answer with SPAWNED or SPAWN_FAILED at once."""


@dataclass(frozen=True)
class Kill:
    """Send `sig` to the process group."""

    sig: signal.Signals
    reason: str


@dataclass(frozen=True)
class Changed:
    """A state transition, to be published as an event (in order)."""

    old: State
    new: State
    pid: int
    exit_status: int | None = None  # returncode: >= 0 exit code, < 0 signal
    expected: bool = True
    spawn_error: SpawnError | None = None
    retry_in: float | None = None  # BACKOFF: seconds until the next try
    start_limit_hit: StartLimitHit | None = None  # FATAL: gave up on the start limit
    status_unknown: bool = False  # the exit of an adopted process: exit_status is None
    reason: str = ""  # why, when the state does not say it (STOPPING: "not ready within 60 s")


Action = Spawn | Kill | Changed


class Refused(Exception):
    """A request that the current state does not allow."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # AlreadyStarted | NotRunning


