"""One event type and one bus: the log file, the journal, D-Bus and alerts
all subscribe here. Publishing is synchronous and never raises: a broken
subscriber is reported (once per failure) and the others still get the event.

The record is typed: a process transition's kind and states are
`process.State`s, the other kinds are `Kind`s (both are str enums: their
text is their name, as written in the log and the journal); a reload carries
the names it added, changed and removed as tuples, a spawn error its
`SpawnError`, the daemon's start its pid (in `pid`, as a process event does).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from taskmasterd.lifecycle import SpawnError
from taskmasterd.states import State

log = logging.getLogger("taskmasterd")


class Kind(enum.StrEnum):
    """Event kinds other than process transitions (those use the new State)."""

    SPAWN_ERROR = "SPAWN_ERROR"
    KILLED = "KILLED"  # SIGKILL sent because stoptime ran out
    SIGNALLED = "SIGNALLED"  # a signal sent on request (taskctl signal)
    RELOAD = "RELOAD"
    RELOAD_FAILED = "RELOAD_FAILED"
    DAEMON_START = "DAEMON_START"
    DAEMON_STOP = "DAEMON_STOP"
    # A process a previous daemon started, taken back alive at start-up
    # (statestore): a transition too (STOPPED -> RUNNING or STARTING).
    ADOPTED = "ADOPTED"
    # Issue 15: its health check failed `failures` times in a row (a restart
    # follows: STOPPING, EXITED, STARTING).
    UNHEALTHY = "UNHEALTHY"
    # Issue 15: a start is held until the programs of its `after:` are
    # RUNNING (taskmasterd.deps); the message says which and their state.
    WAITING = "WAITING"
    # Issue 15, `restart: overlap` (taskmasterd/overlap.py): what an overlap
    # restart does (successor spawned, ready, the old one stopped);
    # OVERLAP_FAILED: it was abandoned, the old process keeps running (a
    # RUNNING -> RUNNING transition with the same pid, expected False, so
    # that a waiting client hears of it).
    OVERLAP = "OVERLAP"
    OVERLAP_FAILED = "OVERLAP_FAILED"
    # One-shot tasks and activities (taskmasterd/tasks): `Event.task` says
    # which, and its old and new state.
    TASK_QUEUED = "TASK_QUEUED"
    TASK_STARTED = "TASK_STARTED"
    TASK_SUCCEEDED = "TASK_SUCCEEDED"
    TASK_FAILED = "TASK_FAILED"
    TASK_CANCELLED = "TASK_CANCELLED"
    TASK_LOST = "TASK_LOST"
    TASK_ADOPTED = "TASK_ADOPTED"  # running under a runner that outlived the daemon
    ACTIVITY_STARTED = "ACTIVITY_STARTED"
    ACTIVITY_SUCCEEDED = "ACTIVITY_SUCCEEDED"
    ACTIVITY_FAILED = "ACTIVITY_FAILED"
    ACTIVITY_CANCELLED = "ACTIVITY_CANCELLED"


# The kinds by their old module-level names (events.RELOAD ...), still used by alerts.
SPAWN_ERROR = Kind.SPAWN_ERROR
KILLED = Kind.KILLED
SIGNALLED = Kind.SIGNALLED
RELOAD = Kind.RELOAD
RELOAD_FAILED = Kind.RELOAD_FAILED
DAEMON_START = Kind.DAEMON_START
DAEMON_STOP = Kind.DAEMON_STOP
ADOPTED = Kind.ADOPTED
UNHEALTHY = Kind.UNHEALTHY
DAEMON = "taskmasterd"  # the `process` of daemon-level events


@dataclass(frozen=True)
class Reloaded:
    """The program names a reload added, changed (restarted, resized or
    updated in place) and removed, in config order."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskChange:
    """A task's or an activity's change of state (`is_activity`); states are
    the text of records.TaskState / ActivityState ("" : none before)."""

    id: str
    name: str
    old: str
    new: str
    activity: str = ""  # a task's activity id ("" : none)
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    is_activity: bool = False


@dataclass(frozen=True)
class Event:
    kind: State | Kind
    message: str  # one human sentence, used as-is in the log
    process: str = DAEMON
    program: str = ""
    old_state: State | None = None  # set on transitions only
    new_state: State | None = None
    pid: int = 0  # the process's, or the daemon's for DAEMON_START
    exit_status: int | None = None  # returncode convention (< 0: signal)
    exit_unknown: bool = False  # an adopted process exited: no status (exit_status None)
    expected: bool = True
    spawn_error: SpawnError | None = None  # SPAWN_ERROR
    reload: Reloaded | None = None  # RELOAD
    task: TaskChange | None = None  # TASK_* and ACTIVITY_*
    time: float = field(default_factory=time.time)

    @property
    def is_transition(self) -> bool:
        return self.new_state is not None

    def extra_fields(self) -> list[tuple[str, str]]:
        """The kind's own key=value pairs, as text, in the order the log line
        writes them (the journal prefixes the keys with TASKMASTER_)."""
        if self.spawn_error is not None:
            return [("errno", self.spawn_error.code)]
        if self.reload is not None:
            return [("added", ",".join(self.reload.added)),
                    ("changed", ",".join(self.reload.changed)),
                    ("removed", ",".join(self.reload.removed))]
        t = self.task
        if t is not None and t.is_activity:
            return [("activity", t.id), ("activity_state", t.new)]
        if t is not None:
            return [("task", t.id), *([("activity", t.activity)] if t.activity else []),
                    ("task_state", t.new)]
        return []


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def publish(self, event: Event) -> None:
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:  # a subscriber must never break supervision
                log.exception("event subscriber %r failed on %s", fn, event.kind)
