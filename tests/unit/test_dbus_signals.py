"""The daemon's own signals written straight to bytes (taskmasterd.bus.signals,
marshall.signal_message, wire.encode_trusted) against dbus-next 0.2.3's path
(`@signal` -> `_handle_signal` -> `Message.new_signal` -> `Message._marshall`;
`emit_properties_changed` with its Variants; InterfacesAdded from Variants):
the same bytes on generated values. Also: the objects made without the class
scan (members.init_interface) have the library's members and introspection.

No bus needed: the signals are caught by stand-in buses.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypeVar, cast

from dbus_next import Message, Variant
from dbus_next._private.marshaller import Marshaller
from dbus_next.service import ServiceInterface
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmasterd.bus import wire
from taskmasterd.bus.marshall import signal_message
from taskmasterd.bus.objects import Manager, Program
from taskmasterd.bus.taskobjects import ACTIVITY_PROPERTIES, TASK_PROPERTIES, Activity, Task
from taskmasterd.events import EventBus
from taskmasterd.tasks.records import ActivityState, TaskState
from taskmasterd.tasks.spec import TaskSpec
from tests.fake_tasks import FakeController, FakeTasks
from tests.unit.test_dbus_marshall import LIBRARY, bodies, element, interfaces, paths, text

PATH = "/org/taskmaster/Taskmaster1"
R = TypeVar("R", "Recorder", "LibraryRecorder")


def library_signal(serial: int, path: str, interface: str, member: str, signature: str,
                   body: list[Any]) -> bytes:
    msg = Message.new_signal(path=path, interface=interface, member=member, signature=signature,
                             body=body)
    msg.serial = serial
    return bytes(LIBRARY(msg, True))


serials = st.integers(1, 2**32 - 1)


@settings(max_examples=300, deadline=None)
@given(serials, paths, interfaces, element, bodies | st.just(("", [])))
def test_signal_message_writes_the_library_bytes(serial: int, path: str, interface: str,
                                                  member: str, case: tuple[str, list[Any]]) -> None:
    signature, body = case
    assert signal_message(serial, path, interface, member, signature,
                          wire.encode_body(signature, body)) == \
        library_signal(serial, path, interface, member, signature, body)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_encode_trusted_writes_what_encode_body_writes(case: tuple[str, list[Any]]) -> None:
    signature, body = case
    library = Marshaller(signature, body)
    library.marshall()
    assert wire.encode_trusted(signature, body) == library.buffer


# ---- the interfaces' signals ---------------------------------------------------


class Recorder:
    """A TaskmasterBus as signals.py sees it: the messages it would write, serials from 1."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sent: list[bytes] = []

    def send_interface_signal(self, interface: Any, interface_name: str, member: str,
                              signature: str, body: bytes | bytearray) -> None:
        self.sent.append(signal_message(len(self.sent) + 1, self.path, interface_name, member,
                                        signature, body))


class LibraryRecorder:
    """A library MessageBus as dbus-next's ServiceInterface sees it: what it would write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sent: list[bytes] = []

    def _interface_signal_notify(self, interface: Any, interface_name: str, member: str,
                                 signature: str, body: list[Any], unix_fds: Any = None) -> None:
        self.sent.append(library_signal(len(self.sent) + 1, self.path, interface_name, member,
                                        signature, body))


def on(interface: ServiceInterface, bus: R) -> R:
    for other in list(ServiceInterface._get_buses(interface)):
        ServiceInterface._remove_bus(interface, other)
    ServiceInterface._add_bus(interface, bus)
    return bus


def library_emit(interface: ServiceInterface, member: str, *args: Any) -> list[bytes]:
    """The signal `member` as dbus-next's own `@signal` wrapper sends it."""
    method = getattr(type(interface), member)
    signal = method.__dict__["__DBUS_SIGNAL"]
    bus = on(interface, LibraryRecorder(PATH))
    ServiceInterface._handle_signal(interface, signal, method.__wrapped__(interface, *args))
    return bus.sent


def fast_emit(interface: ServiceInterface, member: str, *args: Any) -> list[bytes]:
    bus = on(interface, Recorder(PATH))
    getattr(interface, member)(*args)
    return bus.sent


def manager() -> Manager:
    return Manager(cast(Any, FakeController(None)))


u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-2**31, 2**31 - 1)
state = st.sampled_from(["", "queued", "running", "succeeded", "failed"])


@settings(max_examples=150, deadline=None)
@given(st.tuples(text, text, text, state, state, i32, text),
       st.tuples(text, text, state, state, text, text),
       st.tuples(text, text, state, state, u32, i32, st.booleans()),
       st.tuples(st.lists(text, max_size=3), st.lists(text, max_size=3), st.lists(text, max_size=3)))
def test_the_managers_signals_are_the_librarys(task: tuple[Any, ...], activity: tuple[Any, ...],
                                               process: tuple[Any, ...],
                                               reloaded: tuple[Any, ...]) -> None:
    mgr = manager()
    for member, args in (("TaskStateChanged", task), ("ActivityStateChanged", activity),
                         ("ProcessStateChanged", process), ("Reloaded", reloaded)):
        assert fast_emit(mgr, member, *args) == library_emit(mgr, member, *args), member


def test_a_library_bus_gets_the_library_call() -> None:
    mgr = manager()
    args = ("t1", "n", "", "", "queued", -1, "")
    bus = on(mgr, LibraryRecorder(PATH))
    mgr.TaskStateChanged(*args)
    assert bus.sent == library_emit(mgr, "TaskStateChanged", *args)


# ---- tasks and activities ------------------------------------------------------

times = st.one_of(st.just(0.0), st.floats(1.0, 4e9))
task_changes = st.fixed_dictionaries({}, optional={
    "state": st.sampled_from(list(TaskState)), "pid": u32, "exit_code": i32 | st.none(),
    "signal": st.sampled_from([None, 9, 15, 77]), "reason": text, "started": times,
    "ended": times})
specs = st.builds(TaskSpec, command=text.filter(bool), args=st.lists(text, max_size=3).map(tuple),
                  workingdir=st.none() | text, timeout=st.none() | st.floats(0, 1e6),
                  name=text)


def fake(tmp: str) -> FakeTasks:
    return FakeTasks(EventBus(), Path(tmp))


def library_properties_changed(obj: ServiceInterface, changed: dict[str, Any]) -> list[bytes]:
    bus = on(obj, LibraryRecorder(PATH))
    ServiceInterface.emit_properties_changed(obj, changed)
    return bus.sent


def library_announced(obj: Task | Activity, values: dict[str, Any]) -> bytes:
    """InterfacesAdded's body as it was built before: a Variant per property."""
    variants = {prop.name: Variant(prop.signature, values[prop.name])
                for prop in ServiceInterface._get_properties(obj) if prop.name in values}
    library = Marshaller("oa{sa{sv}}", [PATH, {obj.name: variants}])
    library.marshall()
    return bytes(library.buffer)


@settings(max_examples=100, deadline=None)
@given(specs, task_changes)
def test_a_tasks_announcements_are_the_librarys(spec: TaskSpec, changes: dict[str, Any]) -> None:
    import asyncio
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tasks = fake(tmp)
        status = asyncio.run(tasks.submit(spec))
        task = Task(tasks, status.id)
        values = {name: value(status) for name, value in TASK_PROPERTIES.items()}
        values["Directory"] = task.Directory
        assert bytes(task.interfaces_added_body(PATH) or b"") == library_announced(task, values)

        new = tasks.change(status.id, **changes)
        changed = {name: value(new) for name, value in TASK_PROPERTIES.items()
                   if value(new) != value(status)}
        bus = on(task, Recorder(PATH))
        task.emit_properties_changed(changed)
        assert bus.sent == library_properties_changed(task, changed)


ENDED = st.sampled_from([s for s in ActivityState if s is not ActivityState.QUEUED])


@settings(max_examples=50, deadline=None)
@given(text, st.lists(specs, min_size=1, max_size=3), ENDED, text)
def test_an_activitys_announcements_are_the_librarys(name: str, specs: list[TaskSpec],
                                                     state: ActivityState, reason: str) -> None:
    import asyncio
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tasks = fake(tmp)
        status = asyncio.run(tasks.submit_activity(name, specs))
        activity = Activity(tasks, status.id)
        values = {name: value(status) for name, value in ACTIVITY_PROPERTIES.items()}
        assert bytes(activity.interfaces_added_body(PATH) or b"") == library_announced(activity, values)
        new = tasks.change_activity(status.id, state=state, reason=reason, ended=time.time())
        changed = {n: value(new) for n, value in ACTIVITY_PROPERTIES.items()
                   if value(new) != value(status)}
        bus = on(activity, Recorder(PATH))
        activity.emit_properties_changed(changed)
        assert bus.sent == library_properties_changed(activity, changed)


def test_objects_made_without_the_scan_have_the_librarys_members(tmp_path: Path) -> None:
    tasks = fake(str(tmp_path))
    first, second = (Task(tasks, "a"), Task(tasks, "b"))  # the first one ran the library's scan
    scanned = object.__new__(Task)
    ServiceInterface.__init__(scanned, first.name)
    for obj in (first, second):
        for get in (ServiceInterface._get_methods, ServiceInterface._get_properties,
                    ServiceInterface._get_signals):
            assert [m.name for m in get(obj)] == [m.name for m in get(scanned)]
        assert _xml(obj) == _xml(scanned)
        assert ServiceInterface._get_buses(obj) == set()
    assert ServiceInterface._get_buses(first) is not ServiceInterface._get_buses(second)
    controller = cast(Any, FakeController(None))
    for make in (lambda: Activity(tasks, "x"), lambda: Program(controller, "web"),
                 lambda: Program(controller, "db")):
        one = make()
        other = object.__new__(type(one))
        ServiceInterface.__init__(other, one.name)
        assert _xml(one) == _xml(other)


def _xml(obj: ServiceInterface) -> str:
    import xml.etree.ElementTree as ET

    return ET.tostring(obj.introspect().to_xml()).decode()
