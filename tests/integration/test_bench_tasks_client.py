"""The `tasks` bench measure's D-Bus client (bench/taskbench.py) against a
stand-in Manager on a private bus that speaks the design's API
(SubmitTask(a{sv}) -> s, TaskStateChanged(sssssis), ListTasks): the
submissions are all answered, ends signalled before the reply naming their
task are counted, and when end signals are missing ListTasks decides.
(The real daemon is measured by `make bench`; this checks the client.)"""

import asyncio
import sys
from pathlib import Path

import pytest
from dbus_next.service import ServiceInterface, method, signal

from taskmasterd.bus.messagebus import TaskmasterBus
from tests.dbus_fixtures import session_bus

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import taskbench

DEST = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
IFACE = "org.taskmaster.Taskmaster1.Manager"


class FakeManager(ServiceInterface):  # type: ignore[misc]
    """Each SubmitTask: queued, running and succeeded signalled at once,
    before the reply (the hardest order for the client); `silent` tasks'
    ends are recorded but not signalled."""

    def __init__(self, silent: int = 0) -> None:
        super().__init__(IFACE)
        self.rows: list[list[object]] = []
        self.silent = silent
        self.commands: list[str] = []

    @method()
    def SubmitTask(self, task: 'a{sv}') -> 's':  # noqa: F821, F722
        id = f"{len(self.rows):08x}"
        self.commands.append(task["command"].value)
        self.TaskStateChanged(id, "true", "", "", "queued", -1, "")
        self.TaskStateChanged(id, "true", "", "queued", "running", -1, "")
        if len(self.rows) >= self.silent:
            self.TaskStateChanged(id, "true", "", "running", "succeeded", 0, "")
        self.rows.append([id, "true", "succeeded", "", "/bin/true", 1, 0, "", "", "",
                          1, 1, 1_700_000_000_000_000])
        return id

    @method()
    def ListTasks(self) -> 'a(sssssuisssttt)':  # noqa: F821
        return self.rows

    @signal()
    def TaskStateChanged(self, id: 's', name: 's', activity: 's', old: 's',  # noqa: F821
                         new: 's', code: 'i', reason: 's') -> 'sssssis':  # noqa: F821
        return [id, name, activity, old, new, code, reason]


class Driver:
    """What the measure uses of bench/drivers.py's Taskmasterd."""

    DEST, PATH, IFACE = DEST, PATH, IFACE

    def __init__(self, address: str) -> None:
        self.address = address


def measure(tmp_path: Path, n: int, silent: int = 0) -> tuple[float | None, str, FakeManager]:
    async def go(address: str) -> tuple[float | None, str, FakeManager]:
        service = await TaskmasterBus(bus_address=address).connect()
        fake = FakeManager(silent)
        service.export(PATH, fake)
        await service.request_name(DEST)
        try:
            secs, note = await taskbench._submit_and_wait(Driver(address), n, "/bin/true", 30)
        finally:
            service.disconnect()
        return secs, note, fake

    with session_bus(tmp_path) as address:
        return asyncio.run(go(address))


def test_every_end_is_counted_from_the_signals(tmp_path: Path) -> None:
    secs, note, fake = measure(tmp_path, 1000)
    assert secs is not None and secs > 0
    assert note == "1000/1000 succeeded; ends from TaskStateChanged"
    assert len(fake.rows) == 1000 and set(fake.commands) == {"/bin/true"}


def test_missing_end_signals_are_settled_by_list_tasks(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(taskbench, "IDLE", 0.2)
    secs, note, _ = measure(tmp_path, 10, silent=3)
    assert secs is not None
    assert note == "10/10 succeeded; ends from ListTasks (3 end signals not received)"
