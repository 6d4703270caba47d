"""The task half of the Manager API (D-Bus API 1.2, docs/dbus-api.md), as
typed calls over a `taskctl.client.Client`: submitting, cancelling, listing
tasks and activities, a task object's properties and output.

A task goes over the bus as `a{sv}`: the keys of `TaskSpec.to_json()`,
each in the variant type the daemon expects (command s, args as, env
a{ss}, workingdir s, timeout d, user s, activity s, name s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskctl.model import ActivityRow, TaskRow
from taskmasterd.bus.names import MANAGER_PATH

if TYPE_CHECKING:
    from taskctl.client import Client
    from taskmasterd.tasks.spec import TaskSpec

TASK_IFACE = "org.taskmaster.Taskmaster1.Task"
ACTIVITY_IFACE = "org.taskmaster.Taskmaster1.Activity"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
VARIANT_TYPES = {"command": "s", "args": "as", "env": "a{ss}", "workingdir": "s",
                 "timeout": "d", "user": "s", "activity": "s", "name": "s"}
# What the bus (or dbus-next) answers for a path nobody exports.
NO_OBJECT_ERRORS = frozenset({"UnknownObject", "UnknownMethod", "UnknownInterface"})


def task_path(task_id: str) -> str:
    return f"{MANAGER_PATH}/task/{task_id}"


def activity_path(activity_id: str) -> str:
    return f"{MANAGER_PATH}/activity/{activity_id}"


def task_variants(spec: TaskSpec) -> dict[str, tuple[str, Any]]:
    """The task as SubmitTask's a{sv} (jeepney variants: (signature, value))."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in spec.to_json().items():
        if key == "timeout":
            value = float(value)  # type: ignore[arg-type]
        out[key] = (VARIANT_TYPES[key], value)
    return out


def submit_task(client: Client, spec: TaskSpec) -> str:
    [task_id] = client.call("SubmitTask", "a{sv}", [task_variants(spec)])
    return str(task_id)


def submit_activity(client: Client, name: str, specs: Sequence[TaskSpec]) -> str:
    [activity_id] = client.call("SubmitActivity", "saa{sv}",
                                [name, [task_variants(s) for s in specs]])
    return str(activity_id)


def cancel_task(client: Client, task_id: str) -> None:
    client.call("CancelTask", "s", [task_id])


def cancel_activity(client: Client, activity_id: str) -> None:
    client.call("CancelActivity", "s", [activity_id])


def list_tasks(client: Client) -> list[TaskRow]:
    return [TaskRow.from_values(s) for s in client.call("ListTasks")[0]]


def list_activities(client: Client) -> list[ActivityRow]:
    """ListActivities: a(sssasssttt), id, name, state, task ids, failed_task,
    reason, submitted, started, ended (µs)."""
    rows = []
    for (aid, name, state, tasks, failed, reason, submitted, started,
         ended) in client.call("ListActivities")[0]:
        rows.append(ActivityRow(str(aid), str(name), str(state), tuple(str(t) for t in tasks),
                                str(failed), str(reason), int(submitted), int(started),
                                int(ended)))
    return rows


def task_properties(client: Client, task_id: str) -> dict[str, Any]:
    """The task object's properties (GetAll), values unwrapped."""
    [props] = client.call("GetAll", "s", [TASK_IFACE], path=task_path(task_id),
                          interface=PROPERTIES_IFACE)
    return unwrap(props)


def task_state(client: Client, task_id: str) -> str:
    return str(client.get_property("State", interface=TASK_IFACE, path=task_path(task_id)))


def open_output(client: Client, task_id: str, stream: str) -> int:
    """A read-only fd of the task's stdout or stderr (the caller closes it)."""
    return client.call_fd("OpenOutput", "s", [stream], path=task_path(task_id),
                          interface=TASK_IFACE)


def unwrap(props: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): v[1] if isinstance(v, tuple) and len(v) == 2 else v
            for k, v in props.items()}
