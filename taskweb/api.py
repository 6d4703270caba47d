"""Task intake over HTTP, Tessia-compatible (docs/web.md): a task JSON in,
`SubmitTask` on the bus, its id and state out; a task's status back.

    POST /v1/tasks         {"command": ..., "args": [...], ...}
                           → 201 {"taskId": ID, "state": "queued" | "running" | ...}
    GET  /v1/tasks/ID      → 200 its status (ListTasks' fields, as `taskctl task --json`)
    GET  /v1/tasks         → 200 {"tasks": [status, ...]} (?state=S: only those)

Every route needs control (`require_control`: the bearer token or a
session; a session's POST also its CSRF token), as `taskctl run` needs the
group taskmaster. A task JSON is the same as `taskctl run --file`'s, read
by the same code (`taskmasterd.tasks.spec`), turned into SubmitTask's a{sv}
by taskctl's (`taskctl.taskapi.task_variants`): a mistake is a 400 naming
the key, and nothing is sent to the daemon; the daemon checks again (its
TaskInvalid is a 400 as well, by app.daemon_errors).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskctl.model import TaskRow
from taskctl.taskapi import PROPERTIES_IFACE, TASK_IFACE, task_path, task_variants
from taskctl.taskformat import FINAL_TASK_STATES, TASK_STATES, task_detail_json, task_exit_code
from taskctl.taskformat import task_json as row_json
from taskmasterd.errors import TaskInvalid
from taskmasterd.tasks.spec import ID_RE, TaskSpec, load_json, parse_task
from taskweb.app import error, link_of, require_control
from taskweb.link import DaemonError, DaemonLink, Unavailable

BODY = "the request body"  # where a JSON mistake is, in its message


def read_task(body: bytes) -> TaskSpec:
    """The task a request carries, or TaskInvalid saying what is wrong: not
    JSON (line:col), not an object, an unknown key (named, with a
    suggestion), a value of the wrong type."""
    if not body.strip():
        raise TaskInvalid(f"{BODY} is empty: a task JSON object is expected "
                          '({"command": ..., "args": [...]})')
    return parse_task(load_json(body, BODY), "task")


def dbus_task(spec: TaskSpec) -> dict[str, Any]:
    """SubmitTask's a{sv}, as dbus-next Variants (taskctl's conversion)."""
    from dbus_next import Variant

    return {key: Variant(sig, value) for key, (sig, value) in task_variants(spec).items()}


def status_json(row: TaskRow, props: dict[str, Any] | None = None) -> dict[str, Any]:
    """A task's status: `taskctl task --json`'s fields (ListTasks' row, and
    the task object's properties when given), `taskId` as Tessia names the
    id, and `exit_status` once it ended (what `taskctl run --wait` exits
    with: the code, 128+signal, 127/126 not started, 124 timed out, 1 cancelled or lost)."""
    out = task_detail_json(row, props) if props is not None else row_json(row)
    out = {"taskId": row.id, **out}
    out["exit_status"] = task_exit_code(row) if row.state in FINAL_TASK_STATES else None
    return out


async def task_rows(link: DaemonLink) -> list[TaskRow]:
    [structs] = await link.call("ListTasks")
    return [TaskRow.from_values(s) for s in structs]


async def submit(request: web.Request) -> web.StreamResponse:
    require_control(request)
    try:
        spec = read_task(await request.read())
    except TaskInvalid as exc:
        return error(400, str(exc), name="TaskInvalid")
    link = link_of(request)
    [task_id] = await link.call("SubmitTask", "a{sv}", [dbus_task(spec)])
    task_id = str(task_id)
    try:  # queued, unless it started already (a quick one may even have ended)
        state = str(await link.get_property("State", path=task_path(task_id),
                                            interface=TASK_IFACE))
    except DaemonError:
        state = "queued"
    return web.json_response({"taskId": task_id, "state": state}, status=201,
                             headers={"Location": f"/v1/tasks/{task_id}"})


async def show(request: web.Request) -> web.StreamResponse:
    require_control(request)
    task_id = request.match_info["id"]
    if not ID_RE.match(task_id):
        return error(404, f"no task {task_id!r} (an id is 8 to 32 lowercase hex digits)",
                     name="NoSuchTask")
    link = link_of(request)
    row = next((r for r in await task_rows(link) if r.id == task_id), None)
    if row is None:
        return error(404, f"no task {task_id} (unknown, or no longer kept: tasks.keep)",
                     name="NoSuchTask")
    props: dict[str, Any] | None
    try:
        [variants] = await link.call("GetAll", "s", [TASK_IFACE], path=task_path(task_id),
                                     interface=PROPERTIES_IFACE)
        props = {str(k): v.value for k, v in variants.items()}
    except Unavailable:
        raise
    except DaemonError:  # removed between the two calls: the row is what there is
        props = None
    return web.json_response(status_json(row, props))


async def listing(request: web.Request) -> web.StreamResponse:
    require_control(request)
    state = request.query.get("state")
    if state is not None and state not in TASK_STATES:
        return error(400, f"state {state!r}: expected one of {', '.join(TASK_STATES)}")
    rows = await task_rows(link_of(request))
    return web.json_response({"tasks": [status_json(r) for r in rows
                                        if state is None or r.state == state]})


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/tasks", submit)
    app.router.add_get("/v1/tasks", listing)
    app.router.add_get("/v1/tasks/{id}", show)
