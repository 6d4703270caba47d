"""A task's and an activity's recorded state, and their file format (pure:
no asyncio, no I/O).

`TaskStatus` is what `statedir/tasks/<id>/status.json` holds, `ActivityStatus`
what `statedir/activities/<id>/status.json` holds; docs/tasks.md documents
both formats for the tools that read them. `encode_*` writes small JSON with
a format name and a version; `decode_*` reads it back or refuses it with a
reason (`Refused`), never with an exception. Times are seconds since the
epoch in memory and ISO 8601 UTC text on disk (null: not yet).

Who writes which state (docs/tasks.md, "Who writes the file"): the daemon
writes `queued`, `cancelled` of a task that never ran and `lost`; the task
runner (taskmasterd/tasks/runner.py), which outlives the daemon, writes
`running`, the heartbeat and the end of every task it started.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import secrets
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from taskmasterd.errors import TaskInvalid
from taskmasterd.lifecycle import SpawnError
from taskmasterd.statestore.records import Refused
from taskmasterd.tasks.spec import ID_RE, TaskSpec, parse_task

TASK_FORMAT = "taskmaster-task"
ACTIVITY_FORMAT = "taskmaster-activity"
VERSION = 1

# Bounds of what a file may say, so that a damaged or hand-edited status is
# refused here rather than breaking a D-Bus reply (pid is `u`, exit_code `i`)
# or a signal later.
PID_MAX = 4194304  # the kernel's PID_MAX_LIMIT (64-bit)
INT_MAX = 2**63 - 1


class TaskState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def final(self) -> bool:
        return self not in (TaskState.QUEUED, TaskState.RUNNING)


class ActivityState(enum.StrEnum):
    QUEUED = "queued"  # its first task waits for a free lane
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (ActivityState.QUEUED, ActivityState.RUNNING)


@dataclass(frozen=True)
class TaskStatus:
    id: str
    spec: TaskSpec
    state: TaskState
    seq: int  # submission order: the queue's order, kept across daemon restarts
    submitted: float
    # The limit in force, fixed at submission (0: none); spec.timeout is
    # set to the same value then (None there means "the configured default").
    timeout: float = 0.0
    activity: str = ""  # the activity it belongs to ("" : none)
    position: int = 0  # its index in that activity
    started: float = 0.0
    ended: float = 0.0
    heartbeat: float = 0.0  # last sign of life written by its runner while it ran
    pid: int = 0
    start_ticks: int = 0  # /proc/PID/stat field 22: with pid, the process's identity
    runner_pid: int = 0  # the task runner that started it
    exit_code: int | None = None  # its exit status, when it exited
    signal: int | None = None  # the signal that killed it, when one did
    spawn_error: SpawnError | None = None  # why it could not be started
    reason: str = ""  # one sentence: why failed, cancelled or lost

    @property
    def name(self) -> str:
        return self.spec.label

    @property
    def signal_name(self) -> str:
        if self.signal is None:
            return ""
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"SIG{self.signal}"

    def replace(self, **changes: Any) -> TaskStatus:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ActivityStatus:
    id: str
    name: str
    state: ActivityState
    tasks: tuple[str, ...]  # task ids, in order
    seq: int
    submitted: float
    started: float = 0.0
    ended: float = 0.0
    failed_task: str = ""  # the task whose end failed it
    reason: str = ""

    def replace(self, **changes: Any) -> ActivityStatus:
        return dataclasses.replace(self, **changes)


# The exit statuses a shell user reads a task's end by (`taskctl run --wait`,
# `taskmasterd --run-task`), as a shell and timeout(1) give them.
EXIT_TIMED_OUT = 124  # stopped for its timeout: GNU timeout(1)'s
EXIT_CANNOT_RUN = 126  # found but could not be started
EXIT_NOT_FOUND = 127  # ENOENT: command not found


def shell_exit_status(state: str, *, exit_code: int | None, signal: int | None,
                      spawn_code: str, reason: str) -> int:
    """A task's end as one exit status: its exit code; 128+n when signal n
    killed it; 127 (ENOENT) or 126 (any other error) when it could not be
    started; 124 when it was stopped for its timeout; 1 when it was
    cancelled or lost (or failed with nothing more to say). The one mapping
    behind `taskctl run --wait` (from a ListTasks row) and `--run-task`."""
    if state == TaskState.SUCCEEDED:
        return 0
    if spawn_code:
        return EXIT_NOT_FOUND if spawn_code == "ENOENT" else EXIT_CANNOT_RUN
    if state == TaskState.FAILED and reason.startswith("timed out"):
        return EXIT_TIMED_OUT
    if state in (TaskState.CANCELLED, TaskState.LOST):
        return 1
    if exit_code:
        return exit_code
    if signal:
        return 128 + signal
    return 1


def new_id(taken: Callable[[str], bool]) -> str:
    """8 random hex digits (Tessia's style: "3df2bb24"), never one `taken`."""
    while True:
        candidate = secrets.token_hex(4)
        if not taken(candidate):
            return candidate


# ---- time on disk -------------------------------------------------------------


def _iso(t: float) -> str | None:
    if not t:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def _from_iso(value: object, key: str) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected an ISO 8601 time or null")
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    try:
        t = when.timestamp()
        # what _iso must be able to write back: UTC years 1970..9999
        datetime.datetime.fromtimestamp(t, datetime.UTC)
    except (OverflowError, ValueError, OSError):
        t = -1.0
    if t < 0:
        raise ValueError(f"{key}: {value!r} is out of range")
    return t


# ---- tasks ----------------------------------------------------------------------

_SEPARATORS = (", ", ": ")  # json's defaults, said: readable with `cat`


def task_json(s: TaskStatus) -> dict[str, object]:
    """The status as the JSON object of the file (and of `taskctl --json`)."""
    spec = s.spec
    return {
        "format": TASK_FORMAT,
        "version": VERSION,
        "id": s.id,
        "name": s.name,
        "state": s.state.value,
        "command": spec.command,
        "args": list(spec.args),
        "env": dict(spec.env),
        "workingdir": spec.workingdir,
        "user": spec.user,
        "label": spec.name,
        "timeout": s.timeout,
        "activity": s.activity or None,
        "position": s.position,
        "seq": s.seq,
        "submitted": _iso(s.submitted),
        "started": _iso(s.started),
        "ended": _iso(s.ended),
        "heartbeat": _iso(s.heartbeat),
        "pid": s.pid or None,
        "start_ticks": s.start_ticks or None,
        "runner_pid": s.runner_pid or None,
        "exit_code": s.exit_code,
        "signal": s.signal_name or None,
        "spawn_error": None if s.spawn_error is None else {
            "code": s.spawn_error.code, "syscall": s.spawn_error.syscall,
            "message": s.spawn_error.message},
        "reason": s.reason or None,
    }


def encode_task(s: TaskStatus) -> bytes:
    """The file's bytes: one line of JSON. Not indented: with an indent the
    json module takes its pure-Python encoder (3x slower), and a status is
    encoded two to four times per task (`jq . status.json` shows it indented)."""
    return (json.dumps(task_json(s), ensure_ascii=False, separators=_SEPARATORS) + "\n").encode()


def _int(d: Mapping[str, object], key: str, *, none: bool = True,
         limit: int = INT_MAX) -> int | None:
    value = d.get(key)
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}: expected a non-negative integer")
    if value > limit:
        raise ValueError(f"{key}: {value} is above {limit}")
    return value


def _str(d: Mapping[str, object], key: str) -> str:
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string or null")
    return value


def _signal_number(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("SIG"):
        raise ValueError("signal: expected a name like SIGTERM or null")
    member = signal.Signals.__members__.get(value)
    if member is not None:
        return int(member)
    number = value[3:]
    if number.isascii() and number.isdigit() and 0 < int(number) <= signal.SIGRTMAX:
        return int(number)
    raise ValueError(f"signal: unknown signal {value!r}")


def _header(d: object, fmt: str) -> Mapping[str, object]:
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    if d.get("format") != fmt:
        raise ValueError(f"format is {d.get('format')!r}, not {fmt!r}")
    if d.get("version") != VERSION:
        raise ValueError(f"version {d.get('version')!r} is not {VERSION}")
    if not isinstance(d.get("id"), str) or (not ID_RE.match(str(d["id"])) and d["id"] != "cli"):
        raise ValueError("id: expected 8 to 32 lowercase hex digits")
    return d


def decode_task(data: bytes) -> TaskStatus | Refused:
    try:
        d = _header(json.loads(data), TASK_FORMAT)
        try:
            state = TaskState(str(d.get("state")))
        except ValueError:
            raise ValueError(f"state: {d.get('state')!r} is not a task state") from None
        spec_obj: dict[str, object] = {"command": d.get("command"), "args": d.get("args") or [],
                                       "env": d.get("env") or {}}
        for key in ("workingdir", "user"):
            if d.get(key) is not None:
                spec_obj[key] = d[key]
        if d.get("label"):
            spec_obj["name"] = d["label"]
        timeout = d.get("timeout", 0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise ValueError("timeout: expected a non-negative number")
        spec_obj["timeout"] = timeout  # the limit in force (spec.timeout == status.timeout)
        spec = parse_task(spec_obj, "the recorded task")
        err = d.get("spawn_error")
        spawn_error = None
        if err is not None:
            if not isinstance(err, dict) or not all(isinstance(err.get(k), str)
                                                    for k in ("code", "syscall")):
                raise ValueError("spawn_error: expected {code, syscall, message} strings")
            spawn_error = SpawnError(str(err["code"]), str(err["syscall"]),
                                     str(err.get("message") or ""))
        activity = _str(d, "activity")
        if activity and not ID_RE.match(activity):
            raise ValueError("activity: expected an activity id or null")
        return TaskStatus(
            id=str(d["id"]), spec=spec, state=state, seq=_int(d, "seq", none=False) or 0,
            submitted=_from_iso(d.get("submitted"), "submitted"), timeout=float(timeout),
            activity=activity, position=_int(d, "position", none=False) or 0,
            started=_from_iso(d.get("started"), "started"),
            ended=_from_iso(d.get("ended"), "ended"),
            heartbeat=_from_iso(d.get("heartbeat"), "heartbeat"),
            pid=_int(d, "pid", limit=PID_MAX) or 0, start_ticks=_int(d, "start_ticks") or 0,
            runner_pid=_int(d, "runner_pid", limit=PID_MAX) or 0,
            exit_code=_int(d, "exit_code", limit=255), signal=_signal_number(d.get("signal")),
            spawn_error=spawn_error, reason=_str(d, "reason"))
    except (ValueError, TaskInvalid, RecursionError, OverflowError) as exc:  # JSONDecodeError is a ValueError
        return Refused(str(exc))


# ---- activities -----------------------------------------------------------------


def activity_json(a: ActivityStatus) -> dict[str, object]:
    return {
        "format": ACTIVITY_FORMAT,
        "version": VERSION,
        "id": a.id,
        "name": a.name,
        "state": a.state.value,
        "tasks": list(a.tasks),
        "seq": a.seq,
        "submitted": _iso(a.submitted),
        "started": _iso(a.started),
        "ended": _iso(a.ended),
        "failed_task": a.failed_task or None,
        "reason": a.reason or None,
    }


def encode_activity(a: ActivityStatus) -> bytes:
    """As encode_task."""
    return (json.dumps(activity_json(a), ensure_ascii=False, separators=_SEPARATORS) + "\n").encode()


def decode_activity(data: bytes) -> ActivityStatus | Refused:
    try:
        d = _header(json.loads(data), ACTIVITY_FORMAT)
        try:
            state = ActivityState(str(d.get("state")))
        except ValueError:
            raise ValueError(f"state: {d.get('state')!r} is not an activity state") from None
        tasks = d.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, str) and ID_RE.match(t)
                                                  for t in tasks):
            raise ValueError("tasks: expected a list of task ids")
        failed = _str(d, "failed_task")
        return ActivityStatus(
            id=str(d["id"]), name=_str(d, "name"), state=state, tasks=tuple(tasks),
            seq=_int(d, "seq", none=False) or 0,
            submitted=_from_iso(d.get("submitted"), "submitted"),
            started=_from_iso(d.get("started"), "started"),
            ended=_from_iso(d.get("ended"), "ended"), failed_task=failed,
            reason=_str(d, "reason"))
    except (ValueError, RecursionError, OverflowError) as exc:
        return Refused(str(exc))
