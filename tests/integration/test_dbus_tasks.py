"""The D-Bus side of tasks and activities (API 1.2): bus.service.BusService in
this process, over a stand-in task manager (tests/fake_tasks.py: the
design's TaskManager API), on a private session-like dbus-daemon; the
client is a dbus-next MessageBus (and busctl). Every wait is on a signal or
a reply, with a timeout; a client subscribes before it acts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from dbus_next import Message, Variant

from taskmasterd.bus.introspect import normalised
from taskmasterd.bus.service import BusService
from taskmasterd.events import EventBus
from taskmasterd.lifecycle import SpawnError
from taskmasterd.tasks.records import ActivityState, TaskState
from taskmasterd.tasks.spec import MAX_ARGS, MAX_TASKS, TaskSpec
from tests.fake_tasks import FakeController, FakeTasks
from tests.integration.test_dbus_service import Client, client

NAME = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
TASK = "org.taskmaster.Taskmaster1.Task"
ACTIVITY = "org.taskmaster.Taskmaster1.Activity"
ERR = "org.taskmaster.Taskmaster1.Error."
OM = "org.freedesktop.DBus.ObjectManager"
PROPS = "org.freedesktop.DBus.Properties"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def task_path(id: str) -> str:
    return f"{PATH}/task/{id}"


def activity_path(id: str) -> str:
    return f"{PATH}/activity/{id}"


@asynccontextmanager
async def serving(address: str, statedir: Path, *, tasks: bool = True,
                  before: Callable[[FakeTasks], Any] | None = None
                  ) -> AsyncIterator[tuple[FakeTasks, BusService]]:
    """BusService over a FakeTasks (`before(fake)` runs before it connects)."""
    events = EventBus()
    fake = FakeTasks(events, statedir)
    if before is not None:
        await before(fake)
    service = BusService(FakeController(fake if tasks else None))
    await service.connect(address=address)
    events.subscribe(service.on_event)
    try:
        yield fake, service
    finally:
        await service.close()


def run(address: str, statedir: Path, body: Callable[[FakeTasks, Client], Any], **kw: Any) -> None:
    async def main() -> None:
        async with serving(address, statedir, **kw) as (fake, _service), client(address) as c:
            await body(fake, c)
    asyncio.run(main())


def good_task(**extra: Variant) -> dict[str, Variant]:
    return {"command": Variant("s", "/bin/echo"), "args": Variant("as", ["hello", "world"]),
            "env": Variant("a{ss}", {"GREETING": "hi"}), "workingdir": Variant("s", "/tmp"),
            "timeout": Variant("d", 30.0), "name": Variant("s", "greet"), **extra}


def signal_of(member: str, *, path: str = PATH, first: str | None = None) -> Callable[[Message], bool]:
    return lambda m: (m.member == member and m.path == path
                      and (first is None or m.body[0] == first))


async def get_all(c: Client, path: str, interface: str) -> dict[str, Any]:
    [props] = await c.ok("GetAll", "s", [interface], path=path, interface=PROPS)
    return {k: v.value for k, v in props.items()}


def test_submit_task_exports_its_object_then_signals(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        before = time.time()
        [id] = await c.ok("SubmitTask", "a{sv}", [good_task()])
        assert fake.task(id).spec == TaskSpec(command="/bin/echo", args=("hello", "world"),
                                              env=(("GREETING", "hi"),), workingdir="/tmp",
                                              timeout=30.0, name="greet")
        added = await c.next_signal(signal_of("InterfacesAdded"))
        assert added.body[0] == task_path(id)
        shown = {k: v.value for k, v in added.body[1][TASK].items()}
        changed = await c.next_signal(signal_of("TaskStateChanged"))
        assert changed.body == [id, "greet", "", "", "queued", -1, ""]
        props = await get_all(c, task_path(id), TASK)
        assert props == shown
        # the same D-Bus types too (InterfacesAdded is built without GetAll)
        [raw] = await c.ok("GetAll", "s", [TASK], path=task_path(id), interface=PROPS)
        assert {k: v.signature for k, v in added.body[1][TASK].items()} == \
            {k: v.signature for k, v in raw.items()}
        submitted = props.pop("SubmittedAt")
        assert before * 1e6 <= submitted <= time.time() * 1e6
        assert props == {
            "Id": id, "Name": "greet", "State": "queued", "Activity": "", "Command": "/bin/echo",
            "Args": ["hello", "world"], "WorkingDirectory": "/tmp", "Pid": 0, "ExitCode": -1,
            "Signal": "", "SpawnError": "", "Reason": "", "Timeout": 30.0, "StartedAt": 0,
            "EndedAt": 0, "Directory": str(tmp_path / "tasks" / id)}
        [rows] = await c.ok("ListTasks")
        assert rows == [[id, "greet", "queued", "", "/bin/echo", 0, -1, "", "", "", submitted, 0, 0]]

        # A change: the signal, then one PropertiesChanged with what changed only.
        fake.change(id, state=TaskState.RUNNING, pid=4242, started=1_800_000_000.5)
        changed = await c.next_signal(signal_of("TaskStateChanged"))
        assert changed.body == [id, "greet", "", "queued", "running", -1, ""]
        props_changed = await c.next_signal(signal_of("PropertiesChanged", path=task_path(id)))
        assert props_changed.body[0] == TASK
        assert {k: v.value for k, v in props_changed.body[1].items()} == {
            "State": "running", "Pid": 4242, "StartedAt": 1_800_000_000_500_000}

        # Two changes in one loop turn: two signals, one PropertiesChanged.
        fake.change(id, state=TaskState.FAILED, exit_code=3, reason="exited with status 3",
                    ended=1_800_000_001.0)
        fake.change(id, spawn_error=SpawnError("ENOENT", "spawn x", "No such file or directory"))
        changed = await c.next_signal(signal_of("TaskStateChanged"))
        assert changed.body == [id, "greet", "", "running", "failed", 3, "exited with status 3"]
        props_changed = await c.next_signal(signal_of("PropertiesChanged", path=task_path(id)))
        assert {k: v.value for k, v in props_changed.body[1].items()} == {
            "State": "failed", "ExitCode": 3, "Reason": "exited with status 3",
            "EndedAt": 1_800_000_001_000_000,
            "SpawnError": "ENOENT (spawn x): No such file or directory"}
        [rows] = await c.ok("ListTasks")
        assert rows[0][5:10] == [4242, 3, "", "ENOENT (spawn x): No such file or directory",
                                 "exited with status 3"]
        assert rows[0][11:] == [1_800_000_000_500_000, 1_800_000_001_000_000]
        # Nothing else was sent: no PropertiesChanged for the submission
        # (InterfacesAdded showed it), none for the changes' other properties.
        await c.ok("Ping", path=PATH, interface="org.freedesktop.DBus.Peer")
        while not c.signals.empty():
            c.history.append(c.signals.get_nowait())
        sent = [m for m in c.history if m.member == "PropertiesChanged"]
        assert len(sent) == 2 and all(m.path == task_path(id) for m in sent), sent

    run(bus_address, tmp_path, body)


WRONG: list[tuple[str, Variant, str]] = [
    ("command", Variant("i", 1), "'s'"),
    ("args", Variant("s", "-l"), "'as'"),
    ("env", Variant("a{sv}", {"A": Variant("s", "1")}), "'a{ss}'"),
    ("env", Variant("as", ["A=1"]), "'a{ss}'"),
    ("workingdir", Variant("as", ["/tmp"]), "'s'"),
    ("timeout", Variant("s", "30"), "'d' (or u, i, t, x)"),
    ("timeout", Variant("b", True), "'d' (or u, i, t, x)"),
    ("user", Variant("u", 0), "'s'"),
    ("activity", Variant("i", 7), "'s'"),
    ("name", Variant("ay", b"x"), "'s'"),
]


def test_every_wrong_variant_type_is_named(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        for key, value, expected in WRONG:
            name, text = await c.error("SubmitTask", "a{sv}", [good_task(**{key: value})])
            assert name == ERR + "TaskInvalid", (key, name, text)
            assert text == (f"task.{key}: expected the D-Bus type {expected}, got "
                            f"'{value.signature}'"), text
        assert fake.tasks() == []

    run(bus_address, tmp_path, body)


def test_timeout_takes_any_number_type(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        for signature in ("d", "u", "i", "t", "x"):
            value = 2.5 if signature == "d" else 7
            [id] = await c.ok("SubmitTask", "a{sv}",
                              [{"command": Variant("s", "true"),
                                "timeout": Variant(signature, value)}])
            assert fake.task(id).spec.timeout == value
        name, text = await c.error("SubmitTask", "a{sv}", [{"command": Variant("s", "true"),
                                                             "timeout": Variant("i", -1)}])
        assert name == ERR + "TaskInvalid" and text.startswith("task.timeout: expected 0"), text

    run(bus_address, tmp_path, body)


def test_bad_tasks_get_a_named_error_and_nothing_is_queued(bus_address: str,
                                                           tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        cases: list[tuple[dict[str, Variant], str]] = [
            ({"comand": Variant("s", "true")},
             "task: unknown key 'comand' (did you mean 'command'?); a task has command, args, "
             "env, workingdir, timeout, user, activity, name"),
            ({"args": Variant("as", [])}, "task: 'command' is required (the program to run)"),
            ({"command": Variant("s", "")}, "task.command: must not be empty"),
            ({"command": Variant("s", "x" * 5000)},
             "task.command: 5000 characters long; at most 4096 are accepted"),
            ({"command": Variant("s", "true"), "args": Variant("as", ["a"] * (MAX_ARGS + 1))},
             f"task.args: {MAX_ARGS + 1} arguments; at most {MAX_ARGS} are accepted"),
            ({"command": Variant("s", "true"), "workingdir": Variant("s", "tmp")},
             "task.workingdir: must be an absolute path, got 'tmp'"),
            ({"command": Variant("s", "true"), "env": Variant("a{ss}", {"1A": "x"})},
             "task.env: '1A' is not a variable name (letters, digits and _, not starting with a "
             "digit)"),
            ({"command": Variant("s", "true"), "activity": Variant("s", "nothex!")},
             "task.activity: 'nothex!' is not an activity id (8 to 32 lowercase hex digits, as "
             "SubmitActivity returns)"),
        ]
        for task, expected in cases:
            name, text = await c.error("SubmitTask", "a{sv}", [task])
            assert (name, text) == (ERR + "TaskInvalid", expected)
        # an activity that does not exist: the manager's own error
        name, text = await c.error("SubmitTask", "a{sv}", [good_task(
            activity=Variant("s", "0123abcd"))])
        assert (name, text) == (ERR + "NoSuchTask", "no activity 0123abcd")
        assert fake.tasks() == []

    run(bus_address, tmp_path, body)


def test_submit_activity(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        one = {"command": Variant("s", "/bin/true")}
        two = {"command": Variant("s", "/bin/false"), "name": Variant("s", "second")}
        [id] = await c.ok("SubmitActivity", "saa{sv}", ["deploy", [one, two]])
        activity = fake.activity(id)
        assert activity.name == "deploy" and len(activity.tasks) == 2
        first, second = activity.tasks
        # The activity's object before its tasks'; each task's object before its signal.
        seen = [await c.next_signal(lambda m: m.member in ("InterfacesAdded", "TaskStateChanged"))
                for _ in range(5)]
        assert [(m.member, m.body[0]) for m in seen] == [
            ("InterfacesAdded", activity_path(id)),
            ("InterfacesAdded", task_path(first)), ("TaskStateChanged", first),
            ("InterfacesAdded", task_path(second)), ("TaskStateChanged", second)]
        assert seen[2].body == [first, "true", id, "", "queued", -1, ""]
        assert seen[4].body == [second, "second", id, "", "queued", -1, ""]
        props = await get_all(c, activity_path(id), ACTIVITY)
        submitted = props.pop("SubmittedAt")
        assert props == {"Id": id, "Name": "deploy", "State": "queued",
                         "Tasks": [first, second], "FailedTask": "", "Reason": "",
                         "StartedAt": 0, "EndedAt": 0}
        assert (await get_all(c, task_path(second), TASK))["Activity"] == id
        [rows] = await c.ok("ListActivities")
        assert rows == [[id, "deploy", "queued", [first, second], "", "", submitted, 0, 0]]

        # A task appended to it (SubmitTask with activity).
        [third] = await c.ok("SubmitTask", "a{sv}", [{"command": Variant("s", "/bin/true"),
                                                      "activity": Variant("s", id)}])
        assert fake.activity(id).tasks == (first, second, third)
        msg = await c.next_signal(signal_of("PropertiesChanged", path=activity_path(id)))
        assert {k: v.value for k, v in msg.body[1].items()} == {"Tasks": [first, second, third]}

        # Its changes: ActivityStateChanged (with the failed task), PropertiesChanged.
        fake.change_activity(id, state=ActivityState.FAILED, failed_task=second,
                             reason=f"activity {id} failed at task {second}")
        msg = await c.next_signal(signal_of("ActivityStateChanged"))
        assert msg.body == [id, "deploy", "queued", "failed", second,
                            f"activity {id} failed at task {second}"]
        msg = await c.next_signal(signal_of("PropertiesChanged", path=activity_path(id)))
        assert {k: v.value for k, v in msg.body[1].items()} == {
            "State": "failed", "FailedTask": second,
            "Reason": f"activity {id} failed at task {second}"}
        name, text = await c.error("SubmitTask", "a{sv}", [{"command": Variant("s", "true"),
                                                             "activity": Variant("s", id)}])
        assert (name, text) == (ERR + "TaskInvalid", f"activity {id} has ended (failed)")

    run(bus_address, tmp_path, body)


def test_bad_activities(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        ok = {"command": Variant("s", "true")}
        cases: list[tuple[str, list[dict[str, Variant]], str]] = [
            ("a", [], "activity.tasks: expected a non-empty list of tasks, got an empty list"),
            ("a", [ok, {"command": Variant("s", "x"), "args": Variant("s", "y")}],
             "activity.tasks[1].args: expected the D-Bus type 'as', got 's'"),
            ("a", [ok, {"command": Variant("s", "x"), "activity": Variant("s", "0123abcd")}],
             "activity.tasks[1].activity: a task of an activity cannot name another activity"),
            ("a", [{"cmd": Variant("s", "x")}],
             "activity.tasks[0]: unknown key 'cmd' (did you mean 'command'?); a task has "
             "command, args, env, workingdir, timeout, user, activity, name"),
            ("bad\nname", [ok], "activity.name: contains a control character"),
            ("a", [ok] * (MAX_TASKS + 1),
             f"activity.tasks: {MAX_TASKS + 1} tasks; at most {MAX_TASKS} are accepted"),
        ]
        for name, tasks, expected in cases:
            error, text = await c.error("SubmitActivity", "saa{sv}", [name, tasks])
            assert (error, text) == (ERR + "TaskInvalid", expected)
        assert fake.tasks() == [] and fake.activities() == []

    run(bus_address, tmp_path, body)


def test_cancel_says_who_asked(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        ids = [(await c.ok("SubmitTask", "a{sv}", [good_task()]))[0] for _ in range(3)]
        [activity] = await c.ok("SubmitActivity", "saa{sv}", ["a", [good_task()]])
        [activity2] = await c.ok("SubmitActivity", "saa{sv}", ["b", [good_task()]])
        reason = f"cancelled over D-Bus by uid {os.getuid()}"

        await c.ok("CancelTask", "s", [ids[0]])
        msg = await c.next_signal(lambda m: m.member == "TaskStateChanged" and m.body[4] == "cancelled")
        assert msg.body == [ids[0], "greet", "", "queued", "cancelled", -1, reason]
        await c.ok("Cancel", path=task_path(ids[1]), interface=TASK)
        await c.ok("CancelActivity", "s", [activity])
        await c.ok("Cancel", path=activity_path(activity2), interface=ACTIVITY)
        assert fake.cancelled == [(ids[0], reason), (ids[1], reason), (activity, reason),
                                  (activity2, reason)]
        msg = await c.next_signal(signal_of("ActivityStateChanged", first=activity2))
        assert msg.body == [activity2, "b", "queued", "cancelled", "", reason]

        assert await c.error("CancelTask", "s", [ids[0]]) == (
            ERR + "NotRunning", f"task {ids[0]} has already ended (cancelled)")
        assert await c.error("Cancel", path=activity_path(activity), interface=ACTIVITY) == (
            ERR + "NotRunning", f"activity {activity} has already ended (cancelled)")
        assert await c.error("CancelTask", "s", ["0000dead"]) == (ERR + "NoSuchTask",
                                                                   "no task 0000dead")
        assert await c.error("CancelActivity", "s", ["0000dead"]) == (ERR + "NoSuchTask",
                                                                       "no activity 0000dead")
        assert (await c.error("CancelTask", "s", ["f" * 5000]))[0] == ERR + "BadName"
        assert len(fake.cancelled) == 4

    run(bus_address, tmp_path, body)


def test_objects_known_at_connection_and_removed_by_the_manager(bus_address: str,
                                                                tmp_path: Path) -> None:
    ids: dict[str, str] = {}

    async def before(fake: FakeTasks) -> None:
        ids["task"] = (await fake.submit(TaskSpec(command="/bin/true"))).id
        ids["activity"] = (await fake.submit_activity("a", [TaskSpec(command="x")])).id
        ids["member"] = fake.activity(ids["activity"]).tasks[0]

    async def body(fake: FakeTasks, c: Client) -> None:
        [managed] = await c.ok("GetManagedObjects", interface=OM)
        assert set(managed) == {task_path(ids["task"]), task_path(ids["member"]),
                                activity_path(ids["activity"])}
        assert managed[task_path(ids["task"])][TASK]["Command"].value == "/bin/true"
        assert managed[activity_path(ids["activity"])][ACTIVITY]["Tasks"].value == [ids["member"]]

        fake.remove([ids["task"], ids["member"]], [ids["activity"]])
        removed = [(await c.next_signal(signal_of("InterfacesRemoved"))).body for _ in range(3)]
        assert removed == [[task_path(ids["task"]), [TASK]], [task_path(ids["member"]), [TASK]],
                           [activity_path(ids["activity"]), [ACTIVITY]]]
        [managed] = await c.ok("GetManagedObjects", interface=OM)
        assert managed == {}
        assert (await c.ok("ListTasks")) == [[]]

    run(bus_address, tmp_path, body, before=before)


def test_an_unknown_id_is_exported_on_its_first_event(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        id = fake.add_silently(TaskSpec(command="/bin/sleep", args=("1",))).id
        fake.change(id, state=TaskState.RUNNING, pid=77)
        seen = [await c.next_signal(lambda m: m.member in ("InterfacesAdded", "TaskStateChanged",
                                                           "PropertiesChanged"))
                for _ in range(2)]
        assert [(m.member, m.body[0]) for m in seen] == [("InterfacesAdded", task_path(id)),
                                                          ("TaskStateChanged", id)]
        assert seen[0].body[1][TASK]["State"].value == "running"
        # what InterfacesAdded showed is not sent again as PropertiesChanged
        await c.ok("Ping", path=PATH, interface="org.freedesktop.DBus.Peer")
        assert c.signals.empty()
        assert (await get_all(c, task_path(id), TASK))["Pid"] == 77

    run(bus_address, tmp_path, body)


def test_the_object_exists_when_submit_answers(bus_address: str, tmp_path: Path) -> None:
    """Even if the manager published nothing yet."""
    async def body(fake: FakeTasks, c: Client) -> None:
        fake.quiet = True
        [id] = await c.ok("SubmitTask", "a{sv}", [good_task()])
        assert (await get_all(c, task_path(id), TASK))["State"] == "queued"
        [activity] = await c.ok("SubmitActivity", "saa{sv}", ["a", [good_task()]])
        [member] = fake.activity(activity).tasks
        assert (await get_all(c, activity_path(activity), ACTIVITY))["Tasks"] == [member]
        assert (await get_all(c, task_path(member), TASK))["Activity"] == activity

    run(bus_address, tmp_path, body)


def test_open_output(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        [id] = await c.ok("SubmitTask", "a{sv}", [good_task()])
        path = task_path(id)
        name, text = await c.error("OpenOutput", "s", ["stdout"], path=path, interface=TASK)
        assert name == ERR + "NoOutput" and f"task {id} has no stdout file yet" in text, text
        assert (await c.error("OpenOutput", "s", ["stdin"], path=path, interface=TASK))[0] == \
            ERR + "BadName"
        directory = tmp_path / "tasks" / id
        directory.mkdir(parents=True)
        (directory / "stderr").write_text("oops\n")
        reply = await c.call("OpenOutput", "s", ["stderr"], path=path, interface=TASK)
        assert reply.signature == "h" and len(reply.unix_fds) == 1
        fd = reply.unix_fds[reply.body[0]]
        try:
            assert os.read(fd, 100) == b"oops\n"
            with pytest.raises(OSError):
                os.write(fd, b"x")  # read-only
        finally:
            os.close(fd)

    run(bus_address, tmp_path, body)


def test_a_daemon_without_tasks(bus_address: str, tmp_path: Path) -> None:
    async def body(fake: FakeTasks, c: Client) -> None:
        for member, signature, args in (("ListTasks", "", []), ("ListActivities", "", []),
                                        ("SubmitTask", "a{sv}", [good_task()]),
                                        ("CancelTask", "s", ["0123abcd"])):
            assert await c.error(member, signature, args) == (
                ERR + "Failed", "this taskmasterd runs no tasks"), member

    run(bus_address, tmp_path, body, tasks=False)


def test_a_burst_of_a_thousand_tasks(bus_address: str, tmp_path: Path) -> None:
    """1,000 tasks at once (an activity), then 1,000 SubmitTask calls, 100 at once:
    every object and signal arrives, the connection survives (DBUS-NOTES:
    the library dropped the bus on a burst of a few hundred signals)."""
    async def body(fake: FakeTasks, c: Client) -> None:
        [id] = await c.ok("SubmitActivity", "saa{sv}",
                          ["many", [{"command": Variant("s", "true")}] * 1000])
        replies = []
        for _ in range(10):  # 100 calls at a time: the test's client is the library's
            # MessageBus, whose writer drops the connection on a full socket
            replies += await asyncio.gather(*(c.ok("SubmitTask", "a{sv}", [good_task()])
                                              for _ in range(100)))
        wanted = {task_path(t) for t in fake.activity(id).tasks} | \
            {task_path(r[0]) for r in replies}
        assert len(wanted) == 2000
        added: set[str] = set()
        states = 0
        while len(added) < 2000 or states < 2000:
            msg = await c.next_signal(lambda m: m.member in ("InterfacesAdded",
                                                             "TaskStateChanged"), timeout=60)
            if msg.member == "InterfacesAdded" and msg.body[0] != activity_path(id):
                added.add(msg.body[0])
            elif msg.member == "TaskStateChanged":
                states += 1
        assert added == wanted
        [rows] = await c.ok("ListTasks")
        assert len(rows) == 2000

    run(bus_address, tmp_path, body)


def test_served_task_and_activity_nodes_are_the_golden_ones(bus_address: str,
                                                            tmp_path: Path) -> None:
    """tests/golden/task.xml and activity.xml (the API 1.2) as served; also
    checked: every argument named, no ObjectManager on them."""
    async def body(fake: FakeTasks, c: Client) -> None:
        [id] = await c.ok("SubmitTask", "a{sv}", [good_task()])
        [activity] = await c.ok("SubmitActivity", "saa{sv}", ["a", [good_task()]])
        for golden, path in (("task.xml", task_path(id)), ("activity.xml", activity_path(activity))):
            served = await asyncio.to_thread(subprocess.run, [
                "busctl", f"--address={bus_address}", "introspect", "--xml-interface", NAME, path],
                capture_output=True, text=True, timeout=30, check=True)
            assert normalised(served.stdout) == normalised((GOLDEN / golden).read_text()), path
            shown = await asyncio.to_thread(subprocess.run, [
                "gdbus", "introspect", "--address", bus_address, "--dest", NAME,
                "--object-path", path], capture_output=True, text=True, timeout=30, check=True)
            assert "arg_" not in shown.stdout and OM not in shown.stdout, shown.stdout

    run(bus_address, tmp_path, body)
