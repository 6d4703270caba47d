"""Which alert wants which event (pure): the names `events:` uses, and the
`programs:` globs."""

from __future__ import annotations

import fnmatch

from taskmasterd import events
from taskmasterd.alertschema import AlertConfig
from taskmasterd.events import Event

# Event kinds that are not process states but can be alerted on.
DAEMON_KINDS = frozenset({events.RELOAD, events.RELOAD_FAILED, events.DAEMON_START,
                          events.DAEMON_STOP})
TASK_KINDS = frozenset(k for k in events.Kind if k.startswith(("TASK_", "ACTIVITY_")))
_ALERTABLE = frozenset({"STARTING", "RUNNING", "BACKOFF", "STOPPING", "STOPPED", "EXITED", "FATAL",
                        events.SPAWN_ERROR, events.ADOPTED, events.UNHEALTHY, *DAEMON_KINDS,
                        *TASK_KINDS})


def alert_name(event: Event) -> str | None:
    """The name `events:` uses for this event (EXITED is split by `expected`),
    or None for events no alert can ask for (KILLED, SIGNALLED, UNKNOWN)."""
    if event.kind not in _ALERTABLE:
        return None
    if event.kind == "EXITED":
        return "EXITED_EXPECTED" if event.expected else "EXITED_UNEXPECTED"
    return event.kind


def display_name(event: Event) -> str:
    """How messages name an event: "EXITED (unexpected)", "FATAL", ..."""
    if event.kind == "EXITED":
        return "EXITED (expected)" if event.expected else "EXITED (unexpected)"
    return event.kind


def matches(alert: AlertConfig, event: Event) -> bool:
    """Whether `alert` wants `event`: its name is in `events` (EXITED means
    both kinds of exit) and, for a process event, its program or process
    name matches one of the `programs` globs (a task's or an activity's
    name or id, for their events). Daemon events (RELOAD,
    RELOAD_FAILED, DAEMON_START, DAEMON_STOP) ignore `programs`."""
    name = alert_name(event)
    if name is None:
        return False
    wanted = name in alert.events or (name.startswith("EXITED_") and "EXITED" in alert.events)
    if not wanted:
        return False
    if event.kind in DAEMON_KINDS:
        return True
    return any(fnmatch.fnmatchcase(event.program, p) or fnmatch.fnmatchcase(event.process, p)
               for p in alert.programs)
