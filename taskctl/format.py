"""taskctl's output: pure functions of plain values (`taskctl.model`).

Everything that decides what is printed or which exit code is returned lives
here and is tested without a daemon.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from taskctl.exitcodes import (
    EXIT_ERROR,
    EXIT_NO_SUCH,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from taskctl.model import (
    UP_STATES,
    ActivityChanged,
    CallError,
    Event,
    ProcessRow,
    Reloaded,
    StateChange,
    TaskChanged,
)
from taskctl.plan import Setting
from taskmasterd.states import State, describe_status

GLOB_CHARS = frozenset("*?[")
# States whose event line shows the exit status when there is one (EXITED always does).
STATUS_STATES = frozenset(s.value for s in (State.STOPPED, State.BACKOFF, State.FATAL))

ERROR_LABELS = {
    "NoSuchProgram": "no such process",
    "NoSuchTask": "no such task",
    "TaskInvalid": "invalid task",
    "QueueFull": "task queue full",
    "BadName": "bad name",
    "AlreadyStarted": "already started",
    "NotRunning": "not running",
    "ShuttingDown": "shutting down",
    "AccessDenied": "access denied",
    "ConfigInvalid": "invalid configuration",
    "NotAFile": "not a file",
    "NoOutput": "no output yet",
    "NoConsole": "no console",
    "Failed": "failed",
}
ACCESS_DENIED = "only root and members of the group taskmaster may do this (refused by the bus policy)"
VERBS = {"start": "started", "stop": "stopped", "restart": "restarted", "signal": "signalled"}


# ---- pure rendering -----------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """H:MM:SS, hours unbounded (as the daemon's descriptions)."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"



def uptime(row: ProcessRow, now: float) -> float | None:
    """Seconds the process has been up (None unless it is up)."""
    if row.state in UP_STATES and row.pid and row.started_at_us:
        return max(0.0, now - row.started_at_us / 1_000_000)
    return None


def describe_row(row: ProcessRow, now: float) -> str:
    """The last column of `status`: uptime, or what the daemon says (exit
    status, spawn error, ...), then `restarts N` once the process has been
    restarted automatically. The pid has its own column."""
    text = _describe_state(row, now)
    if row.restarts:
        return f"{text}, restarts {row.restarts}" if text else f"restarts {row.restarts}"
    return text


_UP_PREFIX = re.compile(r"pid \d+, uptime [0-9:]+")


def _describe_state(row: ProcessRow, now: float) -> str:
    up = uptime(row, now)
    if up is not None:
        # what the daemon adds after its own "pid N, uptime H:MM:SS":
        # readiness, STATUS= of the process, its health (issue 15)
        m = _UP_PREFIX.match(row.description)
        more = row.description[m.end():] if m else ""
        return f"uptime {format_duration(up)}{more}"
    if row.spawn_error and "spawn error" not in row.description:
        return f"spawn error: {row.spawn_error}"
    text = row.description
    if text.startswith("pid ") and ", " in text:
        text = text.split(", ", 1)[1]
    if not text and row.exit_status:
        text = describe_status(row.exit_status)
    return text


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns, 3 spaces apart; the last column is not padded."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    out = []
    for r in table:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + r[len(widths):]
        out.append("   ".join(cells).rstrip())
    return out


def status_lines(rows: Sequence[ProcessRow], now: float) -> list[str]:
    """The `status` table (a header, then one line per process)."""
    return format_table(("NAME", "STATE", "PID", "DESCRIPTION"),
                        [(r.name, r.state, str(r.pid) if r.pid else "-", describe_row(r, now))
                         for r in rows])


def matches(target: str, row: ProcessRow) -> bool:
    """The daemon's target rules: `all`, a glob on program or process names,
    an exact process name (`web`, `web:0`), or a program name."""
    if target == "all":
        return True
    if GLOB_CHARS & set(target):
        return fnmatch.fnmatchcase(row.program, target) or fnmatch.fnmatchcase(row.name, target)
    return target in (row.name, row.program)


def filter_rows(rows: Sequence[ProcessRow], targets: Sequence[str]
                ) -> tuple[list[ProcessRow], list[str]]:
    """(rows selected, in the daemon's order; targets that matched nothing).
    No targets: every row."""
    if not targets:
        return list(rows), []
    missing = [t for t in targets if not any(matches(t, r) for r in rows)]
    return [r for r in rows if any(matches(t, r) for t in targets)], missing


def status_exit_code(rows: Sequence[ProcessRow], missing: Sequence[str] = ()) -> int:
    if missing:
        return EXIT_NO_SUCH
    return EXIT_NOT_RUNNING if any(r.state != State.RUNNING.value for r in rows) else EXIT_OK


def exit_code_for(error: str) -> int:
    """Exit code for a D-Bus error (short name)."""
    if error in ("NoSuchProgram", "BadName", "NoSuchTask"):
        return EXIT_NO_SUCH
    if error == "TaskInvalid":  # what was submitted is not a task: bad usage
        return EXIT_USAGE
    if error in ("ServiceUnknown", "NameHasNoOwner", "NoReply", "Disconnected"):
        return EXIT_UNREACHABLE
    return EXIT_ERROR


def error_message(exc: CallError) -> str:
    if exc.name == "AccessDenied":
        return ACCESS_DENIED
    return exc.message.strip()


def error_line(target: str, exc: CallError) -> str:
    """supervisorctl's "name: ERROR (reason)" plus the daemon's message."""
    label = ERROR_LABELS.get(exc.name, exc.name)
    message = error_message(exc)
    return f"{target}: ERROR ({label}): {message}" if message else f"{target}: ERROR ({label})"


def action_lines(command: str, names: Sequence[str]) -> list[str]:
    verb = VERBS.get(command, command)
    return [f"{n}: {verb}" for n in names]


def row_json(row: ProcessRow, now: float) -> dict[str, Any]:
    up = uptime(row, now)
    return {
        "name": row.name,
        "program": row.program,
        "state": row.state,
        "pid": row.pid or None,
        "exit_status": row.exit_status,
        "started_at": row.started_at_us / 1_000_000 if row.started_at_us else None,
        "uptime": int(up) if up is not None else None,
        "description": describe_row(row, now),
        "spawn_error": row.spawn_error or None,
        "restarts": row.restarts,
        "last_exit": {"status": row.last_exit_status, "time": row.last_exit_us / 1_000_000,
                      "expected": row.last_exit_expected} if row.last_exit_us else None,
    }


def result_json(target: str, names: Sequence[str] | None, exc: CallError | None = None
                ) -> dict[str, Any]:
    """One target's outcome of start/stop/restart/signal."""
    if exc is None:
        return {"target": target, "ok": True, "processes": list(names or [])}
    return {"target": target, "ok": False, "error": exc.name, "message": error_message(exc)}


def reload_lines(result: Reloaded, settings: Sequence[Setting] = ()) -> list[str]:
    """The programs the reload touched, then the settings it changed."""
    lines = [f"{what}: {', '.join(names)}"
             for what, names in (("added", result.added), ("changed", result.changed),
                                 ("removed", result.removed)) if names]
    lines += [s.line() for s in settings]
    return lines or ["no changes"]


def reload_json(result: Reloaded, settings: Sequence[Setting] | None = None) -> dict[str, Any]:
    """`settings` None: not known (the Reloaded signal carries the programs only)."""
    out: dict[str, Any] = {"added": list(result.added), "changed": list(result.changed),
                           "removed": list(result.removed)}
    if settings is not None:
        out["settings"] = [s._asdict() for s in settings]
    return out


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def event_line(event: Event) -> str:
    """One human line per event."""
    if isinstance(event, StateChange):
        details = []
        if event.pid:
            details.append(f"pid {event.pid}")
        if event.new == State.EXITED.value or (event.exit_status and event.new in STATUS_STATES):
            details.append(describe_status(event.exit_status))
        if event.new == State.EXITED.value:
            details.append("expected" if event.expected else "unexpected")
        tail = f" ({', '.join(details)})" if details else ""
        return f"{clock(event.time)} {event.process}: {event.old} -> {event.new}{tail}"
    if isinstance(event, Reloaded):
        return f"{clock(event.time)} reloaded: " + "; ".join(reload_lines(event))
    if isinstance(event, TaskChanged | ActivityChanged):
        kind = "task" if isinstance(event, TaskChanged) else "activity"
        why = f" ({event.reason})" if event.reason else ""
        # a new one's first change comes from "" (nothing): the new state alone
        change = f"{event.old} -> {event.new}" if event.old else event.new
        return f"{clock(event.time)} {kind} {event.id} {event.name}: {change}{why}"
    if event.owner:
        return f"{clock(event.time)} taskmasterd is on the bus"
    return f"{clock(event.time)} taskmasterd left the bus"


def event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, StateChange):
        return {"event": "ProcessStateChanged", "time": event.time, "process": event.process,
                "program": event.program, "old": event.old, "new": event.new,
                "pid": event.pid or None, "exit_status": event.exit_status,
                "expected": event.expected}
    if isinstance(event, Reloaded):
        return {"event": "Reloaded", "time": event.time, **reload_json(event)}
    if isinstance(event, TaskChanged):
        return {"event": "TaskStateChanged", "time": event.time, "id": event.id,
                "name": event.name, "activity": event.activity or None, "old": event.old,
                "new": event.new, "exit_code": None if event.exit_code < 0 else event.exit_code,
                "reason": event.reason or None}
    if isinstance(event, ActivityChanged):
        return {"event": "ActivityStateChanged", "time": event.time, "id": event.id,
                "name": event.name, "old": event.old, "new": event.new,
                "failed_task": event.failed_task or None, "reason": event.reason or None}
    return {"event": "NameOwnerChanged", "time": event.time, "owner": event.owner or None}


def alert_lines(results: Sequence[tuple[str, bool, str]]) -> list[str]:
    """`alert test`: `OK  url` or `FAIL url : why`, one line per target."""
    return [f"OK  {url}" if ok else f"FAIL {url} : {detail}" for url, ok, detail in results]


def alert_json(results: Sequence[tuple[str, bool, str]]) -> list[dict[str, Any]]:
    return [{"url": url, "ok": ok, "detail": detail} for url, ok, detail in results]


def alert_exit_code(results: Sequence[tuple[str, bool, str]]) -> int:
    """0 when every target got its message; 1 if one did not, or there is none."""
    return EXIT_OK if results and all(ok for _url, ok, _detail in results) else EXIT_ERROR


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2)

