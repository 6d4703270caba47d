"""What taskctl prints about tasks and activities, and the exit status a
task's end gives (pure functions of `taskctl.model` rows, tested without a
daemon).

JSON objects use the keys of status.json (`taskmasterd.tasks.records.task_json`,
`activity_json`) where ListTasks / the task's properties have the value:
times as ISO 8601 UTC text, null for "none", `spawn_error` as
`{code, syscall, message}`.
"""

from __future__ import annotations

import datetime
import re
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

from taskctl.format import format_duration, format_table
from taskctl.model import ActivityRow, TaskRow

FINAL_TASK_STATES = frozenset({"succeeded", "failed", "cancelled", "lost"})
FINAL_ACTIVITY_STATES = frozenset({"succeeded", "failed", "cancelled"})
TASK_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "lost")
_SPAWN_ERROR = re.compile(r"^(?P<code>[A-Z0-9]+) \((?P<syscall>.*?)\): (?P<message>.*)$", re.S)


def iso(us: int) -> str | None:
    """µs since the epoch as status.json writes times (None: not yet)."""
    if not us:
        return None
    return datetime.datetime.fromtimestamp(us / 1_000_000, datetime.UTC) \
        .isoformat(timespec="microseconds").replace("+00:00", "Z")


def spawn_error_json(text: str) -> dict[str, str] | None:
    """"ENOENT (spawn x): No such file or directory" as status.json's object."""
    if not text:
        return None
    m = _SPAWN_ERROR.match(text)
    if m is None:
        return {"code": "", "syscall": "", "message": text}
    return {"code": m["code"], "syscall": m["syscall"], "message": m["message"]}


def task_json(row: TaskRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "state": row.state,
        "command": row.command,
        "activity": row.activity or None,
        "submitted": iso(row.submitted_us),
        "started": iso(row.started_us),
        "ended": iso(row.ended_us),
        "pid": row.pid or None,
        "exit_code": row.exit_code if row.exit_code >= 0 else None,
        "signal": row.signal or None,
        "spawn_error": spawn_error_json(row.spawn_error),
        "reason": row.reason or None,
    }


def task_detail_json(row: TaskRow, props: Mapping[str, Any]) -> dict[str, Any]:
    """`task ID --json`: the row plus what only the object's properties have."""
    out = task_json(row)
    out["args"] = list(props.get("Args", []))
    out["workingdir"] = props.get("WorkingDirectory") or None
    out["timeout"] = props.get("Timeout")
    out["directory"] = props.get("Directory") or None
    return out


def activity_json(row: ActivityRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "state": row.state,
        "tasks": list(row.tasks),
        "submitted": iso(row.submitted_us),
        "started": iso(row.started_us),
        "ended": iso(row.ended_us),
        "failed_task": row.failed_task or None,
        "reason": row.reason or None,
    }


def when(us: int, now: float) -> str:
    """A start time: HH:MM:SS today, else the date too."""
    if not us:
        return "-"
    t = us / 1_000_000
    same_day = time.localtime(t)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", time.localtime(t))


def duration(submitted_us: int, started_us: int, ended_us: int, now: float) -> str:
    """How long it ran (so far); one that never started: how long it waited
    (`queued 0:00:12`), or `-` once it ended without starting."""
    if started_us:
        end = ended_us / 1_000_000 if ended_us else now
        return format_duration(end - started_us / 1_000_000)
    if ended_us or not submitted_us:
        return "-"
    return f"queued {format_duration(now - submitted_us / 1_000_000)}"


def exit_text(row: TaskRow) -> str:
    """The EXIT column: the exit code, the signal, or the spawn error's code."""
    if row.spawn_error:
        return row.spawn_error.split(" ", 1)[0]
    if row.signal:
        return row.signal
    return str(row.exit_code) if row.exit_code >= 0 else "-"


def cut(line: str, width: int | None) -> str:
    if width is None or len(line) <= width:
        return line
    return line[:max(0, width - 1)] + "…"


def task_lines(rows: Sequence[TaskRow], now: float, width: int | None = None) -> list[str]:
    """The `tasks` table; lines cut to `width` (a terminal's; None: whole)."""
    table = format_table(
        ("ID", "NAME", "STATE", "EXIT", "STARTED", "DURATION", "REASON"),
        [(r.id, r.name, r.state, exit_text(r), when(r.started_us, now),
          duration(r.submitted_us, r.started_us, r.ended_us, now), r.reason) for r in rows])
    return [cut(line, width) for line in table]


def activity_lines(rows: Sequence[ActivityRow], now: float, width: int | None = None) -> list[str]:
    """The `activities` table."""
    table = format_table(
        ("ID", "NAME", "STATE", "TASKS", "STARTED", "DURATION", "REASON"),
        [(r.id, r.name or "-", r.state, str(len(r.tasks)), when(r.started_us, now),
          duration(r.submitted_us, r.started_us, r.ended_us, now), r.reason) for r in rows])
    return [cut(line, width) for line in table]


def task_detail_lines(row: TaskRow, props: Mapping[str, Any], now: float) -> list[str]:
    """`task ID`: one `Key: value` line per property worth showing."""
    argv = " ".join([row.command, *(str(a) for a in props.get("Args", []))])
    lines = [("Id", row.id), ("Name", row.name), ("State", row.state), ("Command", argv)]
    if row.activity:
        lines.append(("Activity", row.activity))
    if props.get("WorkingDirectory"):
        lines.append(("Directory", str(props["WorkingDirectory"])))
    if row.pid:
        lines.append(("Pid", str(row.pid)))
    if row.exit_code >= 0:
        lines.append(("Exit code", str(row.exit_code)))
    if row.signal:
        lines.append(("Signal", row.signal))
    if row.spawn_error:
        lines.append(("Spawn error", row.spawn_error))
    if row.reason:
        lines.append(("Reason", row.reason))
    if props.get("Timeout"):
        lines.append(("Timeout", f"{float(props['Timeout']):g} s"))
    for label, us in (("Submitted", row.submitted_us), ("Started", row.started_us),
                      ("Ended", row.ended_us)):
        if us:
            lines.append((label, _local(us)))
    if row.started_us or (row.submitted_us and not row.ended_us):
        lines.append(("Duration", duration(row.submitted_us, row.started_us, row.ended_us, now)))
    if props.get("Directory"):
        lines.append(("Files", str(props["Directory"])))
    width = max(len(k) for k, _ in lines) + 1
    return [f"{k + ':':<{width}} {v}" for k, v in lines]


def _local(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(us / 1_000_000))


def task_exit_code(row: TaskRow) -> int:
    """`run --wait`'s exit status, the same as `taskmasterd --run-task`
    gives (records.shell_exit_status, from a ListTasks row here)."""
    # Here, not at the top: the records module pulls in the config reader
    # (yaml), which every other taskctl command does without.
    from taskmasterd.tasks.records import shell_exit_status

    number = None
    if row.signal:
        member = signal.Signals.__members__.get(row.signal)
        digits = row.signal.removeprefix("SIG")
        number = int(member) if member is not None else int(digits) if digits.isdigit() else None
    return shell_exit_status(row.state, exit_code=row.exit_code if row.exit_code >= 0 else None,
                             signal=number, spawn_code=row.spawn_error.split(" ", 1)[0],
                             reason=row.reason)


def task_end_line(row: TaskRow) -> str:
    """One line saying how a task ended badly (stderr of `run --wait`)."""
    why = row.reason or (f"could not be started: {row.spawn_error}" if row.spawn_error else "")
    return f"task {row.id} ({row.name}) {row.state}" + (f": {why}" if why else "")


def end_json(row: TaskRow) -> dict[str, Any]:
    return {**task_json(row), "exit_status": task_exit_code(row)}
