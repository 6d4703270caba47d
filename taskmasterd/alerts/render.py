"""A Batch as a message (pure): the built-in title and body, or the alert's
str.format templates over alertschema.TEMPLATE_FIELDS."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from taskmasterd import events
from taskmasterd.alerts.match import display_name
from taskmasterd.alerts.throttle import Batch
from taskmasterd.alertschema import TEMPLATE_FIELDS, AlertConfig
from taskmasterd.states import describe_status

MAX_LISTED = 10  # processes named in a summary

# apprise's notify types (the same strings on 1.2 and 2.x), by how bad an event is.
_FAILURE = frozenset({"FATAL", events.RELOAD_FAILED, events.Kind.TASK_FAILED,
                      events.Kind.ACTIVITY_FAILED})
_WARNING = frozenset({"EXITED_UNEXPECTED", "BACKOFF", events.SPAWN_ERROR, events.UNHEALTHY,
                      events.Kind.TASK_LOST})


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: str = "info"  # apprise notify type: info, warning or failure


def clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t)).strip()


def short_clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def listed(names: Sequence[str]) -> str:
    if len(names) <= MAX_LISTED:
        return ", ".join(names)
    return ", ".join(names[:MAX_LISTED]) + f" and {len(names) - MAX_LISTED} more"


def describe_kinds(batch: Batch) -> str:
    """"12 × EXITED (unexpected), 3 × BACKOFF"."""
    return ", ".join(f"{n} × {name}" for name, n in batch.kinds.items())


def message_fields(batch: Batch, host: str, stderr_tail: str = "") -> dict[str, str]:
    """The template fields (TEMPLATE_FIELDS), all text. Those about one
    process (pid, state, status, message, stderr_tail) describe the latest
    event; `time` is the latest event's, `since` the first one's."""
    last = batch.last
    out = {
        "host": host,
        "program": listed(batch.programs),
        "process": listed(batch.processes),
        "pid": str(last.pid) if last.pid else "",
        "event": describe_kinds(batch) if batch.summary else display_name(last),
        "state": last.task.new if last.task is not None else (last.new_state or last.kind),
        "status": describe_status(last.exit_status) if last.exit_status is not None else "",
        "time": clock(last.time),
        "since": clock(batch.first.time),
        "count": str(batch.count),
        "message": last.message,
        "stderr_tail": stderr_tail,
    }
    assert tuple(out) == TEMPLATE_FIELDS
    return out


def severity(batch: Batch) -> str:
    names = {"EXITED_UNEXPECTED" if k == "EXITED (unexpected)" else k for k in batch.kinds}
    if names & _FAILURE:
        return "failure"
    if names & _WARNING:
        return "warning"
    return "info"


def render(alert: AlertConfig, batch: Batch, host: str, stderr_tail: str = "") -> Message:
    """The message for `batch`: the alert's templates if it has them, else
    the built-in title and body."""
    f = message_fields(batch, host, stderr_tail)
    title = default_title(batch, f)
    body = default_body(batch, f)
    # Templates were checked at load with every field present: formatting
    # cannot fail, but a message is never lost to a template.
    with contextlib.suppress(Exception):
        title = alert.title.format(**f) if alert.title is not None else title
    with contextlib.suppress(Exception):
        body = alert.body.format(**f) if alert.body is not None else body
    return Message(title, body, severity(batch))


def default_title(batch: Batch, f: dict[str, str]) -> str:
    if batch.summary:
        noun = "event" if batch.count == 1 else "events"
        return f"[{f['host']}] {f['program'] or f['process']}: {batch.count} more {noun}"
    return f"[{f['host']}] {task_label(batch.last) or f['process']}: {f['event']}"


def task_label(event: events.Event) -> str:
    """"task deploy (3df2bb24)", "activity release (0a1b2c3d)"; "" for others."""
    t = event.task
    if t is None:
        return ""
    return f"{'activity' if t.is_activity else 'task'} {t.name} ({t.id})"


def default_body(batch: Batch, f: dict[str, str]) -> str:
    last = batch.last
    lines: list[str] = []
    if batch.summary:
        noun = "event" if batch.count == 1 else "events"
        who = f["program"] or f["process"]
        lines.append(f"{batch.count} more {noun} for {who} since {short_clock(batch.first.time)}: "
                     f"{f['event']}")
        lines.append(f"host: {f['host']}")
        lines.append(f"processes: {f['process']}")
        lines.append(f"latest: {display_name(last)} of {last.process} at {f['time']}")
    else:
        lines.append(f"{f['event']}: {f['process']} on {f['host']}")
        lines.append(f"time: {f['time']}")
    if last.task is not None:  # a task's or an activity's end
        lines.append(f"{task_label(last)}: {f['state']}")
        if last.task.activity and not last.task.is_activity:
            lines.append(f"activity: {last.task.activity}")
        if last.task.reason:
            lines.append(f"reason: {last.task.reason}")
    elif last.program:
        lines.append(f"program: {last.program}, process: {last.process}")
        lines.append(f"state: {f['state']}")
    if f["pid"]:
        lines.append(f"pid: {f['pid']}")
    if f["status"]:
        lines.append(f"status: {f['status']}")
    lines.append(last.message)
    if f["stderr_tail"]:
        whose = f"task {last.process}" if last.task is not None and not last.task.is_activity \
            else "its failed task" if last.task is not None else last.process
        lines += ["", f"last lines of the stderr of {whose}:", f["stderr_tail"]]
    return "\n".join(lines)


def probe_message(host: str, where: str, config_path: str) -> Message:
    """What `taskctl alert test` sends."""
    return Message(
        f"[{host}] taskmaster: test alert",
        f"A test message from taskmasterd (pid {os.getpid()}) on {host}, sent by "
        f"'taskctl alert test' to {where}.\nconfiguration: {config_path}\ntime: {clock(time.time())}",
        "info")
