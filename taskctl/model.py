"""What taskctl gets from taskmasterd, as plain typed values, and its errors.

Pure and cheap to import (no asyncio, no dbus-next, not even dataclasses):
the formatting code in `taskctl.format` and the unit tests use these without
touching D-Bus.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from taskmasterd.states import State

# States (as the daemon sends them: State's values) in which a process has a
# live pid and started_at means "up since".
UP_STATES = frozenset(s.value for s in (State.STARTING, State.RUNNING, State.STOPPING))


class ProcessRow(NamedTuple):
    """One row of ListProcesses (a(sssuitssuitb), docs/dbus-api.md)."""

    name: str  # "web" or "web:0"
    program: str
    state: str
    pid: int  # 0 = none
    exit_status: int  # < 0: killed by that signal
    started_at_us: int  # µs since the epoch, 0 = never
    description: str  # the daemon's: "pid 123, uptime 0:01:02", "exit status 1", ...
    spawn_error: str  # "" = none
    restarts: int  # NRestarts: automatic restarts since the last administrative start
    last_exit_status: int = 0  # the last exit ever (< 0: killed by that signal)
    last_exit_us: int = 0  # when, µs since the epoch; 0 = it never exited
    last_exit_expected: bool = False

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> ProcessRow:
        """From one struct of ListProcesses as a D-Bus library returns it."""
        (name, program, state, pid, status, started, description, spawn_error, restarts,
         last_status, last_us, last_expected) = values
        return cls(str(name), str(program), str(state), int(pid), int(status), int(started),
                   str(description), str(spawn_error), int(restarts), int(last_status),
                   int(last_us), bool(last_expected))


class StateChange(NamedTuple):
    """The ProcessStateChanged signal."""

    process: str
    program: str
    old: str
    new: str
    pid: int
    exit_status: int
    expected: bool
    time: float  # when taskctl received it (seconds since the epoch)


class Reloaded(NamedTuple):
    """The Reloaded signal, and the result of the Reload method (time 0 there)."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    time: float = 0.0


class OwnerChanged(NamedTuple):
    """The daemon left the bus (owner "") or (re)appeared on it."""

    owner: str
    time: float



# ---- tasks and activities (docs/dbus-api.md, API 1.2) ------------------------------


class TaskRow(NamedTuple):
    """One row of ListTasks (a(sssssuisssttt))."""

    id: str
    name: str
    state: str  # queued running succeeded failed cancelled lost
    activity: str  # "" = none
    command: str
    pid: int  # 0 = none
    exit_code: int  # -1 = none
    signal: str  # "SIGKILL", "" = none
    spawn_error: str  # "ENOENT (spawn x): No such file or directory", "" = none
    reason: str
    submitted_us: int  # µs since the epoch, 0 = not yet
    started_us: int
    ended_us: int

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> TaskRow:
        """From one struct of ListTasks as a D-Bus library returns it."""
        (tid, name, state, activity, command, pid, code, sig, spawn_error, reason,
         submitted, started, ended) = values
        return cls(str(tid), str(name), str(state), str(activity), str(command), int(pid),
                   int(code), str(sig), str(spawn_error), str(reason), int(submitted),
                   int(started), int(ended))


class ActivityRow(NamedTuple):
    """One row of ListActivities (a(sssasssttt))."""

    id: str
    name: str
    state: str  # queued running succeeded failed cancelled
    tasks: tuple[str, ...]
    failed_task: str  # "" = none
    reason: str
    submitted_us: int
    started_us: int
    ended_us: int


class TaskChanged(NamedTuple):
    """The TaskStateChanged signal."""

    id: str
    name: str
    activity: str
    old: str
    new: str
    exit_code: int  # -1 = none
    reason: str
    time: float


class ActivityChanged(NamedTuple):
    """The ActivityStateChanged signal."""

    id: str
    name: str
    old: str
    new: str
    failed_task: str
    reason: str
    time: float


Event = StateChange | Reloaded | OwnerChanged | TaskChanged | ActivityChanged


class TaskctlError(Exception):
    """Base of the errors `taskctl.client` raises (from `taskctl.link`)."""


class CallError(TaskctlError):
    """A D-Bus error reply. `name` is the short name ("NoSuchProgram",
    "AccessDenied", ...), `full_name` the D-Bus error name."""

    def __init__(self, full_name: str, message: str) -> None:
        super().__init__(f"{full_name}: {message}")
        self.full_name = full_name
        self.name = full_name.rsplit(".", 1)[-1]
        self.message = message


class Unreachable(TaskctlError):
    """No taskmasterd to talk to: the bus cannot be reached, or nobody owns
    the name, or the connection dropped. `bus` says which bus ("the system
    bus", "the bus at unix:path=..."), `kind` is the BusChoice kind tried
    (system/user/address/private), `address` the address if any, `cause`
    one of NO_BUS, NO_OWNER, NO_REPLY, LOST."""

    # Causes: the bus cannot be connected to; nobody owns the name; the
    # daemon did not answer a call (NoReply, timeout); the connection dropped.
    NO_BUS, NO_OWNER, NO_REPLY, LOST = "no-bus", "no-owner", "no-reply", "lost"

    def __init__(self, bus: str, reason: str, *, kind: str, address: str | None = None,
                 cause: str = "no-bus", host: str | None = None, ssh: str | None = None) -> None:
        super().__init__(f"cannot reach taskmasterd on {bus} ({reason})")
        self.bus = bus
        self.reason = reason
        self.kind = kind
        self.address = address
        self.cause = cause
        self.host = host  # taskctl -H: the [user@]host[:port] given
        self.ssh = ssh  # ... and how to type ssh to it

    def hint(self) -> str:
        """How to start the daemon so that it serves where taskctl looked."""
        if self.host is not None:
            if self.cause == self.NO_OWNER:
                return "start it there with: " + self._start_command()
            return (f"taskctl -H reaches it as `{self.ssh or 'ssh ' + self.host}` would, then "
                    "through systemd-stdio-bridge to the bus there (docs/remote.md)")
        return "start it with: " + self._start_command()

    def _start_command(self) -> str:
        if self.kind == "system":
            return "systemctl start taskmasterd  (or: taskmasterd -c FILE)"
        if self.kind == "user":
            return "systemctl --user start taskmasterd  (or: taskmasterd --user -c FILE)"
        if self.kind == "address":
            return f"taskmasterd --address '{self.address}' -c FILE"
        return "taskmasterd -c FILE"

    def line(self) -> str:
        """The one line taskctl prints (without the "taskctl: " prefix)."""
        return f"{self}; {self.hint()}"
