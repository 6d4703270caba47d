"""dbus/org.taskmaster.Taskmaster1.conf on a system-like private bus.

A stand-in service (dbus-next, as root, in this process) owns the name; the
callers are busctl (and a dbus-next client) run as root, as uid 65534 with no
groups, and as uid 65534 in the group `taskmaster`.
"""

import asyncio
import contextlib
import grp
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmasterd.bus.messagebus import close
from tests.dbus_fixtures import bus_directory, system_bus

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the policy is about root, other "
                       "uids and the taskmaster group (setpriv to uid 65534, groupadd)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("dbus-daemon", "busctl", "setpriv")),
                       reason="needs dbus-daemon, busctl and setpriv"),
]

POLICY = Path(__file__).resolve().parents[2] / "dbus" / "org.taskmaster.Taskmaster1.conf"
NAME = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
NOBODY = 65534
TIMEOUT = 20.0

AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]



def _make_interface() -> Any:
    from dbus_next.service import PropertyAccess, ServiceInterface, dbus_property, method, signal

    # D-Bus signatures in annotations, as dbus-next wants them (hence no
    # `from __future__ import annotations` in this module).
    class Manager(ServiceInterface):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(MANAGER)
            self.restarted: list[str] = []

        @method()
        def Restart(self, target: 's') -> 'as':  # noqa: F821, F722
            self.restarted.append(target)
            return [target]

        @method()
        def ListProcesses(self) -> 'a(sssuitssu)':  # noqa: F821
            return [["web:0", "web", "RUNNING", 42, 0, 1_700_000_000_000_000, "pid 42", "", 0]]

        @dbus_property(access=PropertyAccess.READ)
        def Version(self) -> 's':  # noqa: F821
            return "1.0-test"

        @signal()
        def Reloaded(self, added: 'as', changed: 'as', removed: 'as') -> 'asasas':  # noqa: F821, F722
            return [added, changed, removed]

    return Manager()


async def _with_service(address: str, body: Callable[[Any], Awaitable[None]]) -> None:
    """Own NAME as root, export the stand-in Manager, run `body(interface)`."""
    from dbus_next import RequestNameReply
    from dbus_next.aio import MessageBus

    bus = await MessageBus(bus_address=address).connect()
    try:
        iface = _make_interface()
        bus.export(PATH, iface)
        reply = await bus.request_name(NAME)
        assert reply == RequestNameReply.PRIMARY_OWNER
        await body(iface)
    finally:
        await close(bus)


async def _run(*argv: str, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _busctl(address: str, *args: str, prefix: list[str] | None = None) -> list[str]:
    return [*(prefix or []), "busctl", f"--address={address}", *args]


def _restart(address: str, prefix: list[str] | None = None) -> list[str]:
    return _busctl(address, "call", NAME, PATH, MANAGER, "Restart", "s", "web", prefix=prefix)


def _list(address: str, prefix: list[str] | None = None) -> list[str]:
    return _busctl(address, "call", NAME, PATH, MANAGER, "ListProcesses", prefix=prefix)


def _version(address: str, prefix: list[str] | None = None) -> list[str]:
    return _busctl(address, "get-property", NAME, PATH, MANAGER, "Version", prefix=prefix)


def _denied(rc: int, err: str) -> bool:
    return rc != 0 and ("AccessDenied" in err or "Access denied" in err)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with bus_directory() as d, system_bus(d, POLICY) as addr:
        yield addr


def test_policy_file_loads_without_the_group(tmp_path: Path) -> None:
    """dbus-daemon warns about an unknown group and ignores it; the file still loads."""
    config = POLICY.read_text().replace('group="taskmaster"', 'group="tm-no-such-group-x"')
    policy = tmp_path / "policy.conf"
    policy.write_text(config)
    with bus_directory() as d, system_bus(d, policy) as addr:
        assert addr.startswith("unix:path=")


def test_nobody_is_denied_restart(address: str) -> None:
    async def body(iface: Any) -> None:
        rc, _, err = await _run(*_restart(address, AS_NOBODY))
        assert _denied(rc, err), (rc, err)
        assert iface.restarted == []

    asyncio.run(_with_service(address, body))


def test_nobody_may_read(address: str) -> None:
    async def body(iface: Any) -> None:
        rc, out, err = await _run(*_list(address, AS_NOBODY))
        assert rc == 0, err
        assert out.startswith("a(sssuitssu) 1 ") and '"web:0"' in out, out
        rc, out, err = await _run(*_version(address, AS_NOBODY))
        assert rc == 0, err
        assert out.strip() == 's "1.0-test"'
        rc, out, err = await _run(*_busctl(address, "call", NAME, PATH,
                                           "org.freedesktop.DBus.Properties", "GetAll", "s", MANAGER,
                                           prefix=AS_NOBODY))
        assert rc == 0 and "1.0-test" in out, (out, err)
        rc, out, err = await _run(*_busctl(address, "introspect", "--xml-interface", NAME, PATH,
                                           prefix=AS_NOBODY))
        assert rc == 0 and MANAGER in out, err
        rc, out, err = await _run(*_busctl(address, "call", NAME, PATH,
                                           "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                                           prefix=AS_NOBODY))
        assert rc == 0 and out.startswith("a{oa{sa{sv}}}"), err
        rc, out, err = await _run(*_busctl(address, "call", NAME, PATH,
                                           "org.freedesktop.DBus.Peer", "Ping", prefix=AS_NOBODY))
        assert rc == 0, err

    asyncio.run(_with_service(address, body))


def test_nobody_may_not_set_or_call_other_methods(address: str) -> None:
    async def body(iface: Any) -> None:
        rc, _, err = await _run(*_busctl(address, "set-property", NAME, PATH, MANAGER, "Version",
                                         "s", "x", prefix=AS_NOBODY))
        assert _denied(rc, err), (rc, err)
        for member in ("Start", "Stop", "Reload", "Shutdown", "SubmitTask", "PlanReload",
                       "PlanReloadReasons", "PlanReloadSettings"):  # the plan reads a file that may be 0640
            rc, _, err = await _run(*_busctl(address, "call", NAME, PATH, MANAGER, member,
                                             prefix=AS_NOBODY))
            assert _denied(rc, err), (member, rc, err)
        for member in ("OpenConsole", "WatchConsole"):  # a terminal is control: keys and output
            rc, _, err = await _run(*_busctl(address, "call", NAME, PATH, MANAGER, member, "s", "web",
                                             prefix=AS_NOBODY))
            assert _denied(rc, err), (member, rc, err)
        rc, _, err = await _run(*_busctl(address, "call", NAME, f"{PATH}/program/web",
                                         "org.taskmaster.Taskmaster1.Program", "Start",
                                         prefix=AS_NOBODY))
        assert _denied(rc, err), (rc, err)

    asyncio.run(_with_service(address, body))


def test_nobody_gets_access_denied_by_name(address: str) -> None:
    """The exact error name, seen by a dbus-next client as uid 65534: owning the name, Restart."""
    script = ("import asyncio\n"
              "from dbus_next import Message\n"
              "from dbus_next.aio import MessageBus\n"
              "from dbus_next.errors import DBusError\n"
              "async def main():\n"
              f"    bus = await MessageBus(bus_address={address!r}).connect()\n"
              "    try:\n"
              f"        await bus.request_name({NAME!r})\n"
              "        print('owned')\n"
              "    except DBusError as e:\n"
              "        print(e.type)\n"
              f"    r = await bus.call(Message(destination={NAME!r}, path={PATH!r}, "
              f"interface={MANAGER!r}, member='Restart', signature='s', body=['web']))\n"
              "    print(r.error_name)\n"
              "asyncio.run(main())\n")

    async def body(iface: Any) -> None:
        rc, out, err = await _run(*AS_NOBODY, sys.executable, "-c", script)
        assert rc == 0, err
        assert out.split() == ["org.freedesktop.DBus.Error.AccessDenied"] * 2, (out, err)
        assert iface.restarted == []

    asyncio.run(_with_service(address, body))


def test_nobody_receives_signals(address: str) -> None:
    script = ("import asyncio, sys\n"
              "from dbus_next import Message, MessageType\n"
              "from dbus_next.aio import MessageBus\n"
              "async def main():\n"
              f"    bus = await MessageBus(bus_address={address!r}).connect()\n"
              "    got = asyncio.get_running_loop().create_future()\n"
              "    def on(m):\n"
              "        if m.message_type == MessageType.SIGNAL and m.member == 'Reloaded' "
              "and not got.done():\n"
              "            got.set_result(m.body)\n"
              "    bus.add_message_handler(on)\n"
              "    await bus.call(Message(destination='org.freedesktop.DBus', "
              "path='/org/freedesktop/DBus', interface='org.freedesktop.DBus', member='AddMatch', "
              f"signature='s', body=[\"type='signal',sender='{NAME}',member='Reloaded'\"]))\n"
              "    print('ready', flush=True)\n"
              "    print(await got, flush=True)\n"
              "asyncio.run(main())\n")

    async def body(iface: Any) -> None:
        proc = await asyncio.create_subprocess_exec(
            *AS_NOBODY, sys.executable, "-c", script, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                line = await proc.stdout.readline()
                assert line == b"ready\n", (line, await proc.stderr.read())
                iface.Reloaded(["a"], [], ["b"])
                line = await proc.stdout.readline()
                assert line == b"[['a'], [], ['b']]\n", line
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    asyncio.run(_with_service(address, body))


def test_root_may_call_everything(address: str) -> None:
    async def body(iface: Any) -> None:
        rc, out, err = await _run(*_restart(address))
        assert rc == 0, err
        assert out.strip() == 'as 1 "web"'
        assert iface.restarted == ["web"]
        rc, _, err = await _run(*_list(address))
        assert rc == 0, err

    asyncio.run(_with_service(address, body))


@contextlib.contextmanager
def _taskmaster_gid() -> Iterator[int]:
    """The gid of group `taskmaster`, created for the test if missing (and removed after)."""
    with contextlib.suppress(KeyError):
        yield grp.getgrnam("taskmaster").gr_gid
        return
    created = subprocess.run(["groupadd", "taskmaster"], capture_output=True, text=True).returncode == 0
    try:
        try:
            gid = grp.getgrnam("taskmaster").gr_gid
        except KeyError:
            pytest.skip("could not create the group taskmaster (groupadd failed)")
        yield gid
    finally:
        if created:
            subprocess.run(["groupdel", "taskmaster"], capture_output=True)


def test_group_taskmaster_may_call_everything() -> None:
    if not shutil.which("groupadd"):
        pytest.skip("needs groupadd")
    # dbus-daemon resolves group names when it loads the configuration: the
    # group must exist before the bus starts.
    with _taskmaster_gid() as gid, bus_directory() as d, system_bus(d, POLICY) as addr:
        member = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={gid}"]

        async def body(iface: Any) -> None:
            rc, out, err = await _run(*_restart(addr, member))
            assert rc == 0, err
            assert out.strip() == 'as 1 "web"'
            assert iface.restarted == ["web"]
            # and a uid outside the group still may not
            rc, _, err = await _run(*_restart(addr, AS_NOBODY))
            assert _denied(rc, err), (rc, err)

        asyncio.run(_with_service(addr, body))


def test_real_daemon_on_a_system_like_bus() -> None:
    """The real taskmasterd behind the policy: nobody may look, not touch."""
    from tests.harness import Daemon, event

    with bus_directory() as d, system_bus(d, POLICY) as address:
        cfg = d / "taskmaster.yaml"
        cfg.write_text(f"taskmasterd: {{logfile: {d}/t.log, logdir: {d}/logs}}\n"
                       "programs:\n  web: {cmd: sleep 100000, starttime: 0}\n")
        daemon = Daemon(cfg, "--address", address)
        try:
            pid = daemon.wait_for(event("RUNNING", "web")).pid
            call = ["busctl", f"--address={address}", "call", NAME, PATH, MANAGER]
            denied = subprocess.run(AS_NOBODY + call + ["Restart", "s", "web"],
                                    capture_output=True, text=True, timeout=TIMEOUT)
            assert denied.returncode != 0 and "Access denied" in denied.stderr
            listed = subprocess.run(AS_NOBODY + call + ["ListProcesses"],
                                    capture_output=True, text=True, timeout=TIMEOUT)
            assert listed.returncode == 0 and f'"web" "web" "RUNNING" {pid}' in listed.stdout
            state = subprocess.run([*AS_NOBODY, "busctl", f"--address={address}", "get-property",
                                    NAME, PATH, MANAGER, "State"],
                                   capture_output=True, text=True, timeout=TIMEOUT)
            assert state.stdout.strip() == 's "running"'
            assert daemon.latest_pids() == {"web": pid}  # nothing was restarted
            root = subprocess.run([*call, "Restart", "s", "web"], capture_output=True, text=True,
                                  timeout=TIMEOUT)
            assert root.returncode == 0
            daemon.wait_for(event("RUNNING", "web"))
            assert daemon.latest_pids()["web"] != pid
        finally:
            assert daemon.terminate() == 0


async def _with_tasks(address: str, body: Callable[[Any, str, str], Awaitable[None]]) -> None:
    """The real BusService over a stand-in task manager (tests/fake_tasks.py)
    with a task and an activity: `body(fake, task id, activity id)`."""
    from taskmasterd.bus.service import BusService
    from taskmasterd.events import EventBus
    from taskmasterd.tasks.spec import TaskSpec
    from tests.fake_tasks import FakeController, FakeTasks

    with bus_directory() as statedir:
        events = EventBus()
        fake = FakeTasks(events, statedir)
        task = await fake.submit(TaskSpec(command="/bin/true", name="web-task"))
        activity = await fake.submit_activity("deploy", [TaskSpec(command="/bin/true")])
        (statedir / "tasks" / task.id).mkdir(parents=True)
        (statedir / "tasks" / task.id / "stdout").write_text("out\n")
        service = BusService(FakeController(fake))
        await service.connect(address=address)
        events.subscribe(service.on_event)
        try:
            await body(fake, task.id, activity.id)
        finally:
            await service.close()


def test_nobody_may_list_and_read_tasks_but_not_submit_or_cancel(address: str) -> None:
    async def body(fake: Any, task: str, activity: str) -> None:
        task_path, activity_path = f"{PATH}/task/{task}", f"{PATH}/activity/{activity}"
        rc, out, err = await _run(*_busctl(address, "call", NAME, PATH, MANAGER, "ListTasks",
                                           prefix=AS_NOBODY))
        assert rc == 0 and f'"{task}" "web-task" "queued"' in out, (out, err)
        rc, out, err = await _run(*_busctl(address, "call", NAME, PATH, MANAGER, "ListActivities",
                                           prefix=AS_NOBODY))
        assert rc == 0 and f'"{activity}" "deploy" "queued"' in out, (out, err)
        rc, out, err = await _run(*_busctl(address, "get-property", NAME, task_path,
                                           "org.taskmaster.Taskmaster1.Task", "State",
                                           prefix=AS_NOBODY))
        assert rc == 0 and out.strip() == 's "queued"', (out, err)
        rc, out, err = await _run(*_busctl(address, "call", NAME, activity_path,
                                           "org.freedesktop.DBus.Properties", "GetAll", "s",
                                           "org.taskmaster.Taskmaster1.Activity",
                                           prefix=AS_NOBODY))
        assert rc == 0 and '"deploy"' in out, (out, err)
        denied = [
            (PATH, MANAGER, "SubmitTask", "a{sv}", "1", "command", "s", "/bin/true"),
            (PATH, MANAGER, "SubmitActivity", "saa{sv}", "a", "1", "1", "command", "s", "true"),
            (PATH, MANAGER, "CancelTask", "s", task),
            (PATH, MANAGER, "CancelActivity", "s", activity),
            (task_path, "org.taskmaster.Taskmaster1.Task", "Cancel"),
            (task_path, "org.taskmaster.Taskmaster1.Task", "OpenOutput", "s", "stdout"),
            (activity_path, "org.taskmaster.Taskmaster1.Activity", "Cancel"),
        ]
        for path, interface, member, *args in denied:
            rc, _, err = await _run(*_busctl(address, "call", NAME, path, interface, member,
                                             *args, prefix=AS_NOBODY))
            assert _denied(rc, err), (member, rc, err)
        assert len(fake.tasks()) == 2 and fake.cancelled == []
        # root may
        rc, out, err = await _run(*_busctl(address, "call", NAME, PATH, MANAGER, "SubmitTask",
                                           "a{sv}", "1", "command", "s", "/bin/true"))
        assert rc == 0 and out.startswith('s "'), (out, err)
        rc, out, err = await _run(*_busctl(address, "call", NAME, task_path,
                                           "org.taskmaster.Taskmaster1.Task", "Cancel"))
        assert rc == 0, err
        assert fake.cancelled == [(task, "cancelled over D-Bus by uid 0")]
        assert len(fake.tasks()) == 3

    asyncio.run(_with_tasks(address, body))


def test_group_taskmaster_may_submit_and_cancel_tasks() -> None:
    if not shutil.which("groupadd"):
        pytest.skip("needs groupadd")
    with _taskmaster_gid() as gid, bus_directory() as d, system_bus(d, POLICY) as addr:
        member = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={gid}"]

        async def body(fake: Any, task: str, activity: str) -> None:
            rc, out, err = await _run(*_busctl(addr, "call", NAME, PATH, MANAGER, "SubmitTask",
                                               "a{sv}", "1", "command", "s", "/bin/true",
                                               prefix=member))
            assert rc == 0 and out.startswith('s "'), (out, err)
            rc, _, err = await _run(*_busctl(addr, "call", NAME, PATH, MANAGER, "CancelActivity",
                                             "s", activity, prefix=member))
            assert rc == 0, err
            assert fake.cancelled == [(activity, f"cancelled over D-Bus by uid {NOBODY}")]
            rc, out, err = await _run(*_busctl(addr, "call", NAME, f"{PATH}/task/{task}",
                                               "org.taskmaster.Taskmaster1.Task", "OpenOutput",
                                               "s", "stdout", prefix=member))
            assert rc == 0 and out.startswith("h "), (out, err)

        asyncio.run(_with_tasks(addr, body))
