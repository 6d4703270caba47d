"""The D-Bus side of one-shot tasks and activities (API 1.2, docs/dbus-api.md):
the Manager's task methods and signals (`TaskMethods`, mixed into
objects.Manager), one `Task` object per task and one `Activity` per activity,
and the rows of ListTasks / ListActivities. Thin adapters over the daemon's
tasks.manager.TaskManager (`Tasks` is what they need of it).

No `from __future__ import annotations` here: dbus-next reads the D-Bus
signatures ('s', 'a{sv}', ...) from the annotations (objects.py says more).

Submitted input: the `a{sv}` of a task is unwrapped here, each known key's
variant checked against its D-Bus type (a wrong one is TaskInvalid naming
the key and the type expected), then checked by tasks.spec.parse_task like
a task file: the same named errors whatever the way in, nothing queued on
an error.
"""

import dataclasses
import os
import pwd
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from dbus_next import PropertyAccess, Variant
from dbus_next.service import dbus_property, method

from taskmasterd.bus.calls import check_arg, dbus_errors, named, open_output, us
from taskmasterd.bus.messagebus import caller_uid
from taskmasterd.bus.names import ACTIVITY_IFACE, TASK_IFACE
from taskmasterd.bus.signals import TrustedInterface, trusted_signal
from taskmasterd.errors import TaskInvalid, TaskmasterError
from taskmasterd.tasks.records import ActivityStatus, TaskStatus
from taskmasterd.tasks.spec import MAX_TASKS, TaskSpec, parse_activity, parse_task


class Tasks(Protocol):
    """What the D-Bus layer needs of tasks.manager.TaskManager."""

    removed_listeners: list[Callable[[list[str], list[str]], None]]

    async def submit(self, spec: TaskSpec) -> TaskStatus: ...
    async def submit_activity(self, name: str, specs: list[TaskSpec]) -> ActivityStatus: ...
    def cancel(self, id: str, reason: str) -> None: ...
    def cancel_activity(self, id: str, reason: str) -> None: ...
    def tasks(self) -> list[TaskStatus]: ...
    def task(self, id: str) -> TaskStatus: ...
    def activities(self) -> list[ActivityStatus]: ...
    def activity(self, id: str) -> ActivityStatus: ...
    def output_file(self, id: str, stream: str) -> str: ...


# ---- submitted tasks ----------------------------------------------------------

# The D-Bus types a task's keys take (the first is the one documented).
KEY_TYPES: dict[str, tuple[str, ...]] = {
    "command": ("s",), "args": ("as",), "env": ("a{ss}",), "workingdir": ("s",),
    "timeout": ("d", "u", "i", "t", "x"), "user": ("s",), "activity": ("s",), "name": ("s",),
}


def _expected(types: tuple[str, ...]) -> str:
    first, *others = types
    return f"'{first}'" + (f" (or {', '.join(others)})" if others else "")


def unwrap_task(task: Mapping[str, Any], where: str) -> dict[str, object]:
    """The plain values of a task's `a{sv}`, for parse_task; TaskInvalid
    names a known key whose variant is not of its D-Bus type (an unknown key
    is passed alone: parse_task names it)."""
    out: dict[str, object] = {}
    for key, value in task.items():
        if not isinstance(value, Variant):  # (dbus-next always gives Variants for 'v')
            raise TaskInvalid(f"{where}.{key}: expected a variant")
        types = KEY_TYPES.get(key)
        if types is None:
            # parse_task names it (and what was meant): no need to unwrap the
            # rest (a caller may send a million keys)
            return {key: value.value}
        if value.signature not in types:
            raise TaskInvalid(f"{where}.{key}: expected the D-Bus type {_expected(types)}, got "
                              f"'{value.signature}'")
        out[key] = value.value
    return out


# ---- rows and properties ------------------------------------------------------

def exit_code(s: TaskStatus) -> int:
    return -1 if s.exit_code is None else s.exit_code


def spawn_error(s: TaskStatus) -> str:
    return "" if s.spawn_error is None else str(s.spawn_error)


def task_row(s: TaskStatus) -> list[object]:
    """One ListTasks struct, (sssssuisssttt): id, name, state, activity,
    command, pid, exit_code (-1: none), signal, spawn_error, reason,
    submitted_us, started_us, ended_us (docs/dbus-api.md)."""
    return [s.id, s.name, s.state.value, s.activity, s.spec.command, s.pid, exit_code(s),
            s.signal_name, spawn_error(s), s.reason, us(s.submitted), us(s.started), us(s.ended)]


def activity_row(a: ActivityStatus) -> list[object]:
    """One ListActivities struct, (sssasssttt): id, name, state, task ids,
    failed_task, reason, submitted_us, started_us, ended_us."""
    return [a.id, a.name, a.state.value, list(a.tasks), a.failed_task, a.reason, us(a.submitted),
            us(a.started), us(a.ended)]


# A Task object's properties from its status (all but Directory), by name:
# the getters and the service's PropertiesChanged (which sends those that
# changed) read the same table.
TASK_PROPERTIES: dict[str, Callable[[TaskStatus], object]] = {
    "Id": lambda s: s.id,
    "Name": lambda s: s.name,
    "State": lambda s: s.state.value,
    "Activity": lambda s: s.activity,
    "Command": lambda s: s.spec.command,
    "Args": lambda s: list(s.spec.args),
    "WorkingDirectory": lambda s: s.spec.workingdir or "",
    "Pid": lambda s: s.pid,
    "ExitCode": exit_code,
    "Signal": lambda s: s.signal_name,
    "SpawnError": spawn_error,
    "Reason": lambda s: s.reason,
    "Timeout": lambda s: float(s.timeout),
    "SubmittedAt": lambda s: us(s.submitted),
    "StartedAt": lambda s: us(s.started),
    "EndedAt": lambda s: us(s.ended),
}

ACTIVITY_PROPERTIES: dict[str, Callable[[ActivityStatus], object]] = {
    "Id": lambda a: a.id,
    "Name": lambda a: a.name,
    "State": lambda a: a.state.value,
    "Tasks": lambda a: list(a.tasks),
    "FailedTask": lambda a: a.failed_task,
    "Reason": lambda a: a.reason,
    "SubmittedAt": lambda a: us(a.submitted),
    "StartedAt": lambda a: us(a.started),
    "EndedAt": lambda a: us(a.ended),
}


def changed_properties(table: Mapping[str, Callable[[Any], object]], old: object,
                       new: object) -> dict[str, object]:
    """The properties whose value differs between two statuses."""
    out = {}
    for name, value in table.items():
        now = value(new)
        if value(old) != now:
            out[name] = now
    return out


async def cancel_reason() -> str:
    """Who asked, for the cancel's reason: the caller's uid from the bus, or its name."""
    sender, uid = await caller_uid()
    if uid is not None:
        return f"cancelled over D-Bus by uid {uid}"
    return f"cancelled over D-Bus by {sender or 'an unknown caller'}"


def run_as_caller(specs: list[TaskSpec], uid: int | None, where: Callable[[int], str], *,
                  daemon_uid: int) -> list[TaskSpec]:
    """The tasks a caller of uid `uid` submitted, as a root daemon runs them.
    The group taskmaster may control the daemon, not become root through it:
    a task from a caller other than root runs as that caller (its `user`
    when not given; another user is refused, naming `where(i)`). uid None:
    the bus would not say who called, so only a daemon that is not root
    (it cannot switch users anyway) accepts the tasks."""
    if daemon_uid != 0 or uid == 0:
        return specs
    if uid is None:
        raise TaskInvalid("the bus did not say which user is submitting; this taskmasterd runs "
                          "as root and runs tasks only as the user who submitted them")
    try:
        caller = pwd.getpwuid(uid).pw_name
    except KeyError:
        caller = str(uid)  # spawn takes a numeric user too
    out = []
    for i, spec in enumerate(specs):
        if spec.user is None:
            out.append(dataclasses.replace(spec, user=caller))
            continue
        try:
            wanted = int(spec.user) if spec.user.isdigit() else pwd.getpwnam(spec.user).pw_uid
        except KeyError:
            wanted = None
        if wanted != uid:
            raise TaskInvalid(f"{where(i)}.user: {spec.user!r} is not you (uid {uid}, {caller}): "
                              "only root may submit a task that runs as another user")
        out.append(spec)
    return out


async def caller_specs(specs: list[TaskSpec], where: Callable[[int], str]) -> list[TaskSpec]:
    """run_as_caller for the method call being handled; a call from inside
    the daemon's own process (no sender) is not a user's."""
    sender, uid = await caller_uid()
    if not sender:
        return specs
    return run_as_caller(specs, uid, where, daemon_uid=os.geteuid())


# ---- the objects --------------------------------------------------------------

class Task(TrustedInterface):
    """/org/taskmaster/Taskmaster1/task/<id>. `sent`: the status the last
    announcement (InterfacesAdded or PropertiesChanged) described; the
    service keeps it up to date."""

    def __init__(self, tasks: Tasks, task_id: str) -> None:
        super().__init__(TASK_IFACE)
        self._tasks = tasks
        self.task_id = task_id
        self.sent: TaskStatus | None = None

    def status(self) -> TaskStatus:
        return self._tasks.task(self.task_id)

    def announced_values(self) -> dict[str, Any]:
        """Every property, as GetAll answers, for InterfacesAdded (from
        `sent`, what the service announces; signals.TrustedInterface)."""
        s = self.sent if self.sent is not None else self.status()
        values = {name: value(s) for name, value in TASK_PROPERTIES.items()}
        values["Directory"] = os.path.dirname(self._tasks.output_file(self.task_id, "stdout"))
        return values

    def _get(self, prop: str) -> Any:
        with dbus_errors(prop):
            return TASK_PROPERTIES[prop](self.status())

    @method()
    async def Cancel(self) -> None:
        with dbus_errors("Cancel"):
            self._tasks.cancel(self.task_id, await cancel_reason())

    @named("fd")
    @method()
    def OpenOutput(self, stream: 's') -> 'h':
        """A read-only fd of the task's stdout or stderr file (as Manager.OpenLog)."""
        with dbus_errors("OpenOutput"):
            task_id = self.task_id
            path = self._tasks.output_file(task_id, check_arg(stream, "stream"))
            return open_output(path, f"task {task_id} has no {stream} file yet ({path} does not "
                               "exist: it has not started)",
                               f"the {stream} of task {task_id} is {path}, not a regular file")

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> 's':
        return self.task_id

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> 's':
        return self._get("Name")

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> 's':
        return self._get("State")

    @dbus_property(access=PropertyAccess.READ)
    def Activity(self) -> 's':
        return self._get("Activity")

    @dbus_property(access=PropertyAccess.READ)
    def Command(self) -> 's':
        return self._get("Command")

    @dbus_property(access=PropertyAccess.READ)
    def Args(self) -> 'as':
        return self._get("Args")

    @dbus_property(access=PropertyAccess.READ)
    def WorkingDirectory(self) -> 's':
        return self._get("WorkingDirectory")

    @dbus_property(access=PropertyAccess.READ)
    def Pid(self) -> 'u':
        return self._get("Pid")

    @dbus_property(access=PropertyAccess.READ)
    def ExitCode(self) -> 'i':
        return self._get("ExitCode")

    @dbus_property(access=PropertyAccess.READ)
    def Signal(self) -> 's':
        return self._get("Signal")

    @dbus_property(access=PropertyAccess.READ)
    def SpawnError(self) -> 's':
        return self._get("SpawnError")

    @dbus_property(access=PropertyAccess.READ)
    def Reason(self) -> 's':
        return self._get("Reason")

    @dbus_property(access=PropertyAccess.READ)
    def Timeout(self) -> 'd':
        return self._get("Timeout")

    @dbus_property(access=PropertyAccess.READ)
    def SubmittedAt(self) -> 't':
        return self._get("SubmittedAt")

    @dbus_property(access=PropertyAccess.READ)
    def StartedAt(self) -> 't':
        return self._get("StartedAt")

    @dbus_property(access=PropertyAccess.READ)
    def EndedAt(self) -> 't':
        return self._get("EndedAt")

    @dbus_property(access=PropertyAccess.READ)
    def Directory(self) -> 's':
        """The task's directory (status.json, stdout, stderr: docs/tasks.md)."""
        with dbus_errors("Directory"):
            return os.path.dirname(self._tasks.output_file(self.task_id, "stdout"))


class Activity(TrustedInterface):
    """/org/taskmaster/Taskmaster1/activity/<id>; `sent` as Task's."""

    def __init__(self, tasks: Tasks, activity_id: str) -> None:
        super().__init__(ACTIVITY_IFACE)
        self._tasks = tasks
        self.activity_id = activity_id
        self.sent: ActivityStatus | None = None

    def status(self) -> ActivityStatus:
        return self._tasks.activity(self.activity_id)

    def announced_values(self) -> dict[str, Any]:
        """As Task's."""
        a = self.sent if self.sent is not None else self.status()
        return {name: value(a) for name, value in ACTIVITY_PROPERTIES.items()}

    def _get(self, prop: str) -> Any:
        with dbus_errors(prop):
            return ACTIVITY_PROPERTIES[prop](self.status())

    @method()
    async def Cancel(self) -> None:
        with dbus_errors("Cancel"):
            self._tasks.cancel_activity(self.activity_id, await cancel_reason())

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> 's':
        return self.activity_id

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> 's':
        return self._get("Name")

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> 's':
        return self._get("State")

    @dbus_property(access=PropertyAccess.READ)
    def Tasks(self) -> 'as':
        return self._get("Tasks")

    @dbus_property(access=PropertyAccess.READ)
    def FailedTask(self) -> 's':
        return self._get("FailedTask")

    @dbus_property(access=PropertyAccess.READ)
    def Reason(self) -> 's':
        return self._get("Reason")

    @dbus_property(access=PropertyAccess.READ)
    def SubmittedAt(self) -> 't':
        return self._get("SubmittedAt")

    @dbus_property(access=PropertyAccess.READ)
    def StartedAt(self) -> 't':
        return self._get("StartedAt")

    @dbus_property(access=PropertyAccess.READ)
    def EndedAt(self) -> 't':
        return self._get("EndedAt")


class TaskMethods:
    """The Manager's task methods and signals (mixed into objects.Manager,
    whose `_tasks()` gives the daemon's task manager). `on_submitted(task
    ids, activity ids)` is called before a Submit* answers: the service
    exports their objects then if no event did yet, so a client that got the
    id finds the object."""

    on_submitted: Callable[[list[str], list[str]], None] | None = None

    def _tasks(self) -> Tasks | None:
        raise NotImplementedError

    def _manager(self) -> Tasks:
        tasks = self._tasks()
        if tasks is None:
            raise TaskmasterError("this taskmasterd runs no tasks")
        return tasks

    @named("id")
    @method()
    async def SubmitTask(self, task: 'a{sv}') -> 's':
        with dbus_errors("SubmitTask"):
            spec = parse_task(unwrap_task(task, "task"), "task")
            spec, = await caller_specs([spec], lambda i: "task")
            status = await self._manager().submit(spec)
            if self.on_submitted is not None:
                self.on_submitted([status.id], [status.activity] if status.activity else [])
            return status.id

    @named("id")
    @method()
    async def SubmitActivity(self, name: 's', tasks: 'aa{sv}') -> 's':
        with dbus_errors("SubmitActivity"):
            if len(tasks) > MAX_TASKS:  # before any of them is looked at
                raise TaskInvalid(f"activity.tasks: {len(tasks)} tasks; at most {MAX_TASKS} are "
                                  "accepted")
            name, specs = parse_activity(
                {"name": name,
                 "tasks": [unwrap_task(t, f"activity.tasks[{i}]") for i, t in enumerate(tasks)]})
            specs = await caller_specs(specs, lambda i: f"activity.tasks[{i}]")
            activity = await self._manager().submit_activity(name, specs)
            if self.on_submitted is not None:
                self.on_submitted(list(activity.tasks), [activity.id])
            return activity.id

    @method()
    async def CancelTask(self, id: 's') -> None:
        with dbus_errors("CancelTask"):
            check_arg(id, "id")
            self._manager().cancel(id, await cancel_reason())

    @method()
    async def CancelActivity(self, id: 's') -> None:
        with dbus_errors("CancelActivity"):
            check_arg(id, "id")
            self._manager().cancel_activity(id, await cancel_reason())

    @named("tasks")
    @method()
    def ListTasks(self) -> 'a(sssssuisssttt)':
        with dbus_errors("ListTasks"):
            return [task_row(s) for s in self._manager().tasks()]

    @named("activities")
    @method()
    def ListActivities(self) -> 'a(sssasssttt)':
        with dbus_errors("ListActivities"):
            return [activity_row(a) for a in self._manager().activities()]

    @named()
    @trusted_signal()
    def TaskStateChanged(self, id: str, name: str, activity: str, old_state: str, new_state: str,
                         exit_code: int, reason: str) -> 'sssssis':
        return [id, name, activity, old_state, new_state, exit_code, reason]

    @named()
    @trusted_signal()
    def ActivityStateChanged(self, id: str, name: str, old_state: str, new_state: str,
                             failed_task: str, reason: str) -> 'ssssss':
        return [id, name, old_state, new_state, failed_task, reason]
