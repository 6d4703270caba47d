"""A task's or an activity's change of state as an Event (pure): the kind,
the one-sentence message of the log line, the fields alerts and the journal
read. `Event.process` is the id, `Event.program` the name (so that an
alert's `programs:` globs match task names)."""

from __future__ import annotations

from taskmasterd.events import Event, Kind, TaskChange
from taskmasterd.tasks.records import ActivityState, ActivityStatus, TaskState, TaskStatus

TASK_KINDS: dict[TaskState, Kind] = {
    TaskState.QUEUED: Kind.TASK_QUEUED,
    TaskState.RUNNING: Kind.TASK_STARTED,
    TaskState.SUCCEEDED: Kind.TASK_SUCCEEDED,
    TaskState.FAILED: Kind.TASK_FAILED,
    TaskState.CANCELLED: Kind.TASK_CANCELLED,
    TaskState.LOST: Kind.TASK_LOST,
}
ACTIVITY_KINDS: dict[ActivityState, Kind] = {
    ActivityState.RUNNING: Kind.ACTIVITY_STARTED,
    ActivityState.SUCCEEDED: Kind.ACTIVITY_SUCCEEDED,
    ActivityState.FAILED: Kind.ACTIVITY_FAILED,
    ActivityState.CANCELLED: Kind.ACTIVITY_CANCELLED,
}


def exit_status(s: TaskStatus) -> int | None:
    """The returncode convention of process events: >= 0 an exit status,
    < 0 the signal that killed it; None when it did not exit."""
    if s.exit_code is not None:
        return s.exit_code
    if s.signal is not None:
        return -s.signal
    return None


def task_sentence(s: TaskStatus) -> str:
    who = f"task {s.name} ({s.id})"
    where = f" in activity {s.activity}" if s.activity else ""
    if s.state == TaskState.QUEUED:
        return f"{who} queued{where}"
    if s.state == TaskState.RUNNING:
        return f"{who} running{where}: pid {s.pid}"
    if s.state == TaskState.SUCCEEDED:
        return f"{who} succeeded{where}"
    why = s.reason
    if not why and s.spawn_error is not None:
        err = s.spawn_error
        why = f"{err.code} ({err.syscall}): {err.message}" if err.message else \
            f"{err.code} ({err.syscall})"
    elif not why and s.exit_code is not None:
        why = f"exited with status {s.exit_code}"
    elif not why and s.signal is not None:
        why = f"killed by {s.signal_name}"
    return f"{who} {s.state}{where}" + (f": {why}" if why else "")


def task_event(old: TaskState | None, s: TaskStatus, *, adopted: bool = False) -> Event:
    kind = Kind.TASK_ADOPTED if adopted else TASK_KINDS[s.state]
    message = task_sentence(s)
    if adopted:
        message = f"task {s.name} ({s.id}) taken back: still running under the task runner " \
                  f"(pid {s.runner_pid or '?'}), pid {s.pid}"
    return Event(
        kind=kind, message=message, process=s.id, program=s.name, pid=s.pid,
        exit_status=exit_status(s),
        task=TaskChange(id=s.id, name=s.name, old=str(old or ""), new=str(s.state),
                        activity=s.activity, exit_code=s.exit_code, signal=s.signal,
                        reason=s.reason))


def activity_event(old: ActivityState | None, a: ActivityStatus) -> Event:
    who = f"activity {a.name} ({a.id})"
    if a.state == ActivityState.RUNNING:
        message = f"{who} started: {len(a.tasks)} task(s)"
    elif a.state == ActivityState.SUCCEEDED:
        message = f"{who} succeeded: {len(a.tasks)} task(s)"
    else:
        message = f"{who} {a.state}" + (f": {a.reason}" if a.reason else "")
    return Event(
        kind=ACTIVITY_KINDS[a.state], message=message, process=a.id, program=a.name,
        task=TaskChange(id=a.id, name=a.name, old=str(old or ""), new=str(a.state),
                        activity=a.id, reason=a.reason, is_activity=True))
