"""One event type and one bus: the log file, the journal, D-Bus and alerts
all subscribe here. Publishing is synchronous and never raises: a broken
subscriber is reported (once per failure) and the others still get the event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("taskmasterd")

# Event kinds. Process transitions use the new state's name (STARTING,
# RUNNING, BACKOFF, STOPPING, STOPPED, EXITED, FATAL, UNKNOWN); the others:
SPAWN_ERROR = "SPAWN_ERROR"
KILLED = "KILLED"  # SIGKILL sent because stoptime ran out
SIGNALLED = "SIGNALLED"  # a signal sent on request (taskctl signal)
RELOAD = "RELOAD"
RELOAD_FAILED = "RELOAD_FAILED"
DAEMON_START = "DAEMON_START"
DAEMON_STOP = "DAEMON_STOP"
DAEMON = "taskmasterd"  # the `process` of daemon-level events


@dataclass(frozen=True)
class Event:
    kind: str
    message: str  # one human sentence, used as-is in the log
    process: str = DAEMON
    program: str = ""
    old_state: str = ""
    new_state: str = ""
    pid: int = 0
    exit_status: int | None = None  # returncode convention (< 0: signal)
    expected: bool = True
    fields: dict[str, str] = field(default_factory=dict)  # extra key=value
    time: float = field(default_factory=time.time)

    @property
    def is_transition(self) -> bool:
        return bool(self.new_state)


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
