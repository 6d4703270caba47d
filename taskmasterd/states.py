"""Process states and exit statuses as text: one definition for the daemon
and taskctl (pure and cheap to import: enum and signal only).

States are supervisord's (SPEC section 3); an exit status < 0 means the
process was killed by that signal (Popen's returncode convention).
"""

from __future__ import annotations

import enum
import signal


class State(enum.StrEnum):
    """A process state. A str (its name): the event record, the log, the
    journal and D-Bus carry it as is."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"
    UNKNOWN = "UNKNOWN"


def signal_name(number: int) -> str:
    """SIGTERM for 15; "signal 99" for a number that names no signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_status(status: int) -> str:
    """An exit status as words: "exit status 1", "killed by SIGKILL"."""
    if status < 0:
        return f"killed by {signal_name(-status)}"
    return f"exit status {status}"
