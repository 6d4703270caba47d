"""TaskmasterBus (taskmasterd.bus.messagebus, writer, reader): its fixes of
dbus-next 0.2.3, on a private dbus-daemon. The library's own classes stay
untouched: a plain MessageBus beside it shows the library's behaviour.

No `from __future__ import annotations`: dbus-next reads D-Bus signatures
from the annotations of the service interfaces below.
"""

import array
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus
from dbus_next.service import PropertyAccess, ServiceInterface, dbus_property, method, signal

from taskmasterd.bus.messagebus import TaskmasterBus, close
from taskmasterd.bus.writer import Writer
from tests.dbus_fixtures import bus_directory, session_bus

ROOT = Path(__file__).resolve().parents[2]
MANAGER_PATH = "/org/taskmaster/Taskmaster1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
TIMEOUT = 20.0
BURST = 3000
PAD = 1000  # bytes per signal: the burst is ~3 MB, far more than a socket buffer


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with bus_directory() as d, session_bus(d) as addr:
        yield addr


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT):
            await main()

    asyncio.run(bounded())


async def add_match(bus: Any, rule: str) -> None:
    reply = await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                                   body=[rule]))
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body


async def ping(bus: Any, destination: str) -> None:
    reply = await bus.call(Message(destination=destination, path="/", member="Ping",
                                   interface="org.freedesktop.DBus.Peer"))
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body


class Burst(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("org.taskmaster.Test.Burst")

    @signal()
    def Tick(self, n: 'u', pad: 's') -> 'us':  # noqa: F821
        return [n, pad]


# ---------------------------------------------------------------- 1. the writer


def test_the_library_classes_are_left_alone(address: str) -> None:
    """Every fix is an override in TaskmasterBus, its writer or its reader:
    no dbus-next class is modified, so other buses keep the library's code."""
    from dbus_next._private.unmarshaller import Unmarshaller
    from dbus_next.aio.message_bus import _MessageWriter
    from dbus_next.message_bus import BaseMessageBus

    replaced = [(_MessageWriter, "write_callback"), (_MessageWriter, "buffer_message"),
                (_MessageWriter, "schedule_write"),
                (Message, "_marshall"), (Unmarshaller, "_unmarshall"),
                (MessageBus, "_create_unmarshaller")] + [
        (BaseMessageBus, name) for name in ("_emit_interface_added", "_emit_interface_removed",
                                            "export", "unexport", "_interface_signal_notify",
                                            "_has_interface", "_send_reply", "_find_message_handler")]

    async def main() -> None:
        service = await TaskmasterBus(bus_address=address, manager_path=MANAGER_PATH).connect()
        try:
            assert isinstance(service._writer, Writer)
            assert type(service._unmarshaller).__module__ == "taskmasterd.bus.reader"
            for cls, name in replaced:
                assert getattr(cls, name).__module__.startswith("dbus_next."), (cls, name)
        finally:
            await close(service)

    run(main)


def test_burst_of_signals_arrives_in_order(address: str) -> None:
    async def main() -> None:
        service = await TaskmasterBus(bus_address=address).connect()
        client = await MessageBus(bus_address=address).connect()
        try:
            iface = Burst()
            service.export("/burst", iface)
            got: list[int] = []
            all_in = asyncio.Event()

            def on_message(msg: Any) -> None:
                if msg.message_type == MessageType.SIGNAL and msg.member == "Tick":
                    got.append(msg.body[0])
                    if len(got) == BURST:
                        all_in.set()

            client.add_message_handler(on_message)
            await add_match(client, f"type='signal',sender='{service.unique_name}',member='Tick'")
            pad = "x" * PAD
            for n in range(BURST):  # no await: everything is queued at once
                iface.Tick(n, pad)
            await all_in.wait()
            assert got == list(range(BURST))
            assert service.connected and client.connected
            await ping(client, service.unique_name)
            await ping(service, client.unique_name)
        finally:
            await close(service)
            await close(client)

    run(main)


UNPATCHED = textwrap.dedent("""
    import asyncio, sys
    from dbus_next import Message, MessageType
    from dbus_next.aio import MessageBus
    from dbus_next.service import ServiceInterface, signal

    address, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    class Burst(ServiceInterface):
        def __init__(self):
            super().__init__("org.taskmaster.Test.Burst")

        @signal()
        def Tick(self, n: 'u', pad: 's') -> 'us':
            return [n, pad]

    async def main():
        service = await MessageBus(bus_address=address).connect()
        client = await MessageBus(bus_address=address).connect()
        iface = Burst()
        service.export("/burst", iface)
        got = []
        all_in = asyncio.Event()
        def on_message(msg):
            if msg.message_type == MessageType.SIGNAL and msg.member == "Tick":
                got.append(msg.body[0])
                if len(got) == count:
                    all_in.set()
        client.add_message_handler(on_message)
        await client.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                  interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                                  body=[f"type='signal',sender='{service.unique_name}',member='Tick'"]))
        for n in range(count):
            iface.Tick(n, "x" * size)
        dropped = asyncio.ensure_future(service.wait_for_disconnect())
        done, _ = await asyncio.wait([dropped, asyncio.ensure_future(all_in.wait())], timeout=15,
                                     return_when=asyncio.FIRST_COMPLETED)
        error = dropped.exception() if dropped.done() else None
        print("dropped" if dropped in done else "delivered", type(error).__name__, len(got),
              flush=True)

    asyncio.run(main())
""")


def test_unpatched_library_drops_the_connection(address: str) -> None:
    """The trap TaskmasterBus's writer fixes, shown on the library as shipped (in a subprocess)."""
    proc = subprocess.run([sys.executable, "-c", UNPATCHED, address, str(BURST), str(PAD)],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    verdict, error, received = proc.stdout.split()
    assert (verdict, error) == ("dropped", "BlockingIOError"), proc.stdout
    assert int(received) < BURST


class FakeLoop:
    def __init__(self) -> None:
        self.writers: dict[int, Any] = {}

    def add_writer(self, fd: int, callback: Any) -> None:
        self.writers[fd] = callback

    def remove_writer(self, fd: int) -> None:
        self.writers.pop(fd, None)


class FullSocket:
    """sendmsg/send raise BlockingIOError `full` times, then accept everything."""

    def __init__(self, full: int) -> None:
        self.full = full
        self.sent: list[tuple[bytes, list[int]]] = []

    def _take(self) -> None:
        if self.full:
            self.full -= 1
            raise BlockingIOError(11, "Resource temporarily unavailable")

    def sendmsg(self, buffers: list[memoryview], ancdata: list[Any]) -> int:
        self._take()
        fds = array.array("i")
        for level, kind, data in ancdata:
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            fds.frombytes(bytes(data))
        data = b"".join(bytes(b) for b in buffers)
        self.sent.append((data, list(fds)))
        return len(data)

    def send(self, buffer: memoryview) -> int:
        self._take()
        self.sent.append((bytes(buffer), []))
        return len(buffer)

class BrokenSocket:
    def send(self, buffer: memoryview) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def fake_writer(sock: Any, finalized: list[Exception], *, unix_fds: bool = False) -> Writer:
    """Our Writer on a fake socket and loop, as MessageBus sets one up (no
    connection): what it finalizes the bus with goes to `finalized`."""
    writer = Writer.__new__(Writer)
    writer.messages = asyncio.Queue()
    writer.negotiate_unix_fd = unix_fds
    writer.bus = type("Bus", (), {"_finalize": lambda self, e: finalized.append(e)})()
    writer.sock = sock
    writer.loop = FakeLoop()
    writer.fd = 99
    writer.buf = None
    writer.offset = 0
    writer.unix_fds = None
    writer.fut = None
    return writer



def test_full_socket_keeps_the_message_and_its_fds() -> None:
    """Unit check of the patched writer: nothing lost, fds not dropped, writer stays registered."""

    async def main() -> None:
        finalized: list[Exception] = []
        writer = fake_writer(FullSocket(full=2), finalized, unix_fds=True)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future(), loop.create_future()]
        writer.messages.put_nowait((b"with-fds", [5, 6], futures[0]))
        writer.messages.put_nowait((b"plain", [], futures[1]))
        writer.loop.add_writer(writer.fd, writer.write_callback)

        writer.write_callback()  # buffer full: nothing written
        assert writer.sock.sent == [] and writer.unix_fds == [5, 6]
        assert writer.fd in writer.loop.writers and not futures[0].done()
        writer.write_callback()  # still full
        writer.write_callback()  # writable: both go, then the writer is removed
        assert writer.sock.sent == [(b"with-fds", [5, 6]), (b"plain", [])]
        assert futures[0].done() and futures[1].done()
        assert writer.fd not in writer.loop.writers
        assert finalized == []

    run(main)


class ShortSocket(FullSocket):
    """Takes at most `room` bytes per send (a nearly full buffer)."""

    def __init__(self, room: int) -> None:
        super().__init__(full=0)
        self.room = room

    def send(self, buffer: memoryview) -> int:
        self.sent.append((bytes(buffer[:self.room]), []))
        return min(self.room, len(buffer))


def test_a_burst_is_one_send_and_fds_travel_alone() -> None:
    """Messages queued in one loop turn go in one send (one wake-up of the bus
    daemon, not one per signal); a message with fds is sent alone, in order."""

    async def main() -> None:
        finalized: list[Exception] = []
        writer = fake_writer(FullSocket(full=0), finalized, unix_fds=True)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(6)]
        items = [(b"a", []), (b"b", []), (b"c", []), (b"fd", [7]), (b"d", []), (b"e", [])]
        for (data, fds), fut in zip(items, futures, strict=True):
            writer.messages.put_nowait((data, fds, fut))
        writer.write_callback()
        assert writer.sock.sent == [(b"abc", []), (b"fd", [7]), (b"de", [])]
        assert all(f.done() for f in futures) and finalized == []
        assert writer.fd not in writer.loop.writers

    run(main)


def test_a_batch_sent_in_parts_completes_its_futures_at_the_end() -> None:
    async def main() -> None:
        finalized: list[Exception] = []
        writer = fake_writer(ShortSocket(room=3), finalized)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(2)]
        writer.messages.put_nowait((b"abcd", [], futures[0]))
        writer.messages.put_nowait((b"ef", [], futures[1]))
        writer.write_callback()  # 3 of 6 bytes: wait for the socket to be writable
        assert writer.fd in writer.loop.writers and not any(f.done() for f in futures)
        writer.write_callback()
        assert b"".join(d for d, _ in writer.sock.sent) == b"abcdef"
        assert all(f.done() for f in futures) and writer.fd not in writer.loop.writers

    run(main)


def test_real_errors_still_finalize() -> None:

    async def main() -> None:
        finalized: list[Exception] = []
        writer = fake_writer(BrokenSocket(), finalized)
        fut = asyncio.get_running_loop().create_future()
        writer.messages.put_nowait((b"x", [], fut))
        writer.write_callback()
        assert len(finalized) == 1 and isinstance(finalized[0], BrokenPipeError)
        assert isinstance(fut.exception(), BrokenPipeError)

    run(main)


def test_a_send_nobody_awaits_fails_without_a_traceback() -> None:
    """Signals and replies are sent and forgotten: when the connection breaks under
    one, asyncio must not log 'Future exception was never retrieved' (issue 11, 7.)."""
    import gc

    async def main() -> None:
        reported: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        finalized: list[Exception] = []
        writer = fake_writer(BrokenSocket(), finalized)
        writer.messages.put_nowait((b"x", [], loop.create_future()))  # as bus.send() leaves it
        writer.write_callback()
        assert len(finalized) == 1 and isinstance(finalized[0], BrokenPipeError)
        del writer
        finalized.clear()  # its traceback holds the writer, and so the future
        gc.collect()
        assert [c["message"] for c in reported] == []

    run(main)


# ------------------------------------------------------- 2. the object manager


class Program(ServiceInterface):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__("org.taskmaster.Taskmaster1.Program")
        self._name = name

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> 's':  # noqa: F821
        return self._name


class Manager(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("org.taskmaster.Taskmaster1.Manager")

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> 's':  # noqa: F821
        return "1"


async def next_signal(queue: "asyncio.Queue[Any]") -> Any:
    return await queue.get()


def test_object_manager_signals_come_from_the_manager_path(address: str) -> None:
    async def main() -> None:
        service = await TaskmasterBus(bus_address=address, manager_path=MANAGER_PATH).connect()
        plain = await MessageBus(bus_address=address).connect()  # the library's
        client = await MessageBus(bus_address=address).connect()
        try:
            signals: asyncio.Queue[Any] = asyncio.Queue()

            def on_message(msg: Any) -> None:
                if msg.message_type == MessageType.SIGNAL and msg.interface == OBJECT_MANAGER:
                    signals.put_nowait(msg)

            client.add_message_handler(on_message)
            for sender in (service.unique_name, plain.unique_name):
                await add_match(client, f"type='signal',sender='{sender}',interface='{OBJECT_MANAGER}'")

            service.export(MANAGER_PATH, Manager())
            msg = await next_signal(signals)  # the manager itself: library behaviour
            assert (msg.path, msg.body[0]) == (MANAGER_PATH, MANAGER_PATH)

            x = f"{MANAGER_PATH}/program/x"
            service.export(x, Program("x"))
            msg = await next_signal(signals)
            assert (msg.sender, msg.path, msg.member) == (service.unique_name, MANAGER_PATH,
                                                          "InterfacesAdded")
            assert msg.signature == "oa{sa{sv}}"
            assert msg.body[0] == x
            props = msg.body[1]["org.taskmaster.Taskmaster1.Program"]
            assert props["Name"].signature == "s" and props["Name"].value == "x"

            # GetManagedObjects on the manager path: what is below it, not the manager itself
            reply = await client.call(Message(destination=service.unique_name, path=MANAGER_PATH,
                                              interface=OBJECT_MANAGER, member="GetManagedObjects"))
            assert reply.message_type == MessageType.METHOD_RETURN, reply.body
            assert list(reply.body[0]) == [x]

            service.unexport(x)
            msg = await next_signal(signals)
            assert (msg.path, msg.member, msg.signature) == (MANAGER_PATH, "InterfacesRemoved", "oas")
            assert msg.body == [x, ["org.taskmaster.Taskmaster1.Program"]]

            # outside the manager's subtree: unchanged
            service.export("/elsewhere/y", Program("y"))
            msg = await next_signal(signals)
            assert (msg.path, msg.body[0]) == ("/elsewhere/y", "/elsewhere/y")

            # another bus keeps the library behaviour
            plain.export(x, Program("x"))
            msg = await next_signal(signals)
            assert (msg.sender, msg.path, msg.body[0]) == (plain.unique_name, x, x)
        finally:
            for bus in (service, plain, client):
                await close(bus)

    run(main)


class Talker(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("org.example.Talker")

    @signal()
    def Hello(self, text: 's') -> 's':  # noqa: F821
        return text


def test_indexed_signal_paths_follow_export_and_unexport(address: str) -> None:
    async def main() -> None:
        service = await TaskmasterBus(bus_address=address).connect()
        client = await MessageBus(bus_address=address).connect()
        try:
            signals: asyncio.Queue[Any] = asyncio.Queue()
            client.add_message_handler(
                lambda m: signals.put_nowait(m) if m.message_type == MessageType.SIGNAL
                and m.member == "Hello" else None)
            await add_match(client, f"type='signal',sender='{service.unique_name}',member='Hello'")
            objs = [Talker() for _ in range(3)]
            for i, obj in enumerate(objs):
                service.export(f"/t/{i}", obj)
            for i in (2, 0, 1):
                objs[i].Hello(f"from {i}")
                msg = await next_signal(signals)
                assert (msg.path, msg.interface, msg.body) == (f"/t/{i}", "org.example.Talker",
                                                               [f"from {i}"])
            service.unexport("/t/1")
            assert not service._has_interface(objs[1]) and service._has_interface(objs[0])
            service.export("/moved/1", objs[1])  # the new path
            service.export("/also/1", objs[1])  # two paths: signals on the last one
            objs[1].Hello("moved")
            assert (await next_signal(signals)).path == "/also/1"
            service.unexport("/also/1", "org.example.Talker")  # by name: back to the other path
            objs[1].Hello("back")
            assert (await next_signal(signals)).path == "/moved/1"
            service.unexport("/nowhere", objs[1])  # not exported there: nothing changes
            service.unexport("/moved/1", objs[1])
            assert not service._has_interface(objs[1])
            objs[1].Hello("gone")  # no longer on the bus: not sent (the library's behaviour)
            objs[0].Hello("still")
            msg = await next_signal(signals)
            assert (msg.path, msg.body) == ("/t/0", ["still"])
        finally:
            for bus in (service, client):
                await close(bus)

    run(main)


def test_unexporting_many_is_linear(address: str) -> None:
    """unexport asks `_has_interface` for each interface leaving: with the
    library's scan of every export, removing N objects (a `tasks.keep`
    clean-up, a disconnect) took O(N^2). Counted in scanned exports, not
    timed: the index looks at none."""

    class Counting(dict):  # type: ignore[type-arg]
        scanned = 0

        def items(self):  # type: ignore[no-untyped-def]
            Counting.scanned += len(self)
            return super().items()

    async def main() -> None:
        service = await TaskmasterBus(bus_address=address, manager_path=MANAGER_PATH).connect()
        try:
            service._path_exports = Counting(service._path_exports)
            objs = [Talker() for _ in range(200)]
            for i, obj in enumerate(objs):
                service.export(f"{MANAGER_PATH}/t/{i}", obj)
            for i, obj in enumerate(objs):
                service.unexport(f"{MANAGER_PATH}/t/{i}", obj)
            assert service._paths_of == {} and Counting.scanned == 0
        finally:
            await close(service)

    run(main)


def test_unannounced_exports_send_no_interfaces_added(address: str) -> None:
    async def main() -> None:
        service = await TaskmasterBus(bus_address=address, manager_path=MANAGER_PATH).connect()
        client = await MessageBus(bus_address=address).connect()
        try:
            signals: asyncio.Queue[Any] = asyncio.Queue()
            client.add_message_handler(
                lambda m: signals.put_nowait(m) if m.message_type == MessageType.SIGNAL
                and m.interface == OBJECT_MANAGER else None)
            await add_match(client, f"type='signal',sender='{service.unique_name}',"
                                    f"interface='{OBJECT_MANAGER}'")
            with service.unannounced_exports():
                service.export(MANAGER_PATH, Manager())
                service.export(f"{MANAGER_PATH}/program/quiet", Program("quiet"))
            service.export(f"{MANAGER_PATH}/program/loud", Program("loud"))  # announced again
            msg = await next_signal(signals)
            assert (msg.member, msg.path, msg.body[0]) == (
                "InterfacesAdded", MANAGER_PATH, f"{MANAGER_PATH}/program/loud")
            assert signals.empty()
            reply = await client.call(Message(destination=service.unique_name, path=MANAGER_PATH,
                                              interface=OBJECT_MANAGER, member="GetManagedObjects"))
            assert set(reply.body[0]) == {f"{MANAGER_PATH}/program/quiet",
                                          f"{MANAGER_PATH}/program/loud"}
        finally:
            for bus in (service, client):
                await close(bus)

    run(main)


def test_busctl_sees_interfaces_added_on_the_manager_path(address: str) -> None:
    """The same, watched by an independent client: `busctl monitor`."""
    async def main() -> None:
        service = await TaskmasterBus(bus_address=address, manager_path=MANAGER_PATH).connect()
        try:
            proc = await asyncio.create_subprocess_exec(
                "busctl", f"--address={address}", "monitor", "--json=short", service.unique_name,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout is not None and proc.stderr is not None
            try:
                # busctl says so once BecomeMonitor has succeeded
                while True:
                    said = await proc.stderr.readline()
                    assert said, "busctl monitor exited"
                    if b"Monitoring bus message stream" in said:
                        break
                service.export(f"{MANAGER_PATH}/program/x", Program("x"))
                while True:
                    raw = await proc.stdout.readline()
                    assert raw, "busctl monitor exited"
                    line = json.loads(raw)
                    if line.get("member") == "InterfacesAdded":
                        break
                assert line["path"] == MANAGER_PATH
                assert line["payload"]["data"][0] == f"{MANAGER_PATH}/program/x"
            finally:
                proc.kill()
                await proc.wait()
        finally:
            await close(service)

    if not shutil.which("busctl"):
        pytest.skip("needs busctl")
    run(main)


# -------------------------------------------- 3. caller gone during a handler


class Slow(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("org.taskmaster.Test.Slow")
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = asyncio.Event()

    @method()
    async def Wait(self) -> 's':  # noqa: F821
        self.started.set()
        await self.release.wait()
        self.finished.set()
        return "done"

    @method()
    def Echo(self, text: 's') -> 's':  # noqa: F821
        return text


def test_caller_disconnecting_during_a_coroutine_handler(address: str) -> None:
    async def main() -> None:
        service = await TaskmasterBus(bus_address=address).connect()
        leaver = await MessageBus(bus_address=address).connect()
        other = await MessageBus(bus_address=address).connect()
        try:
            iface = Slow()
            service.export("/slow", iface)
            call = asyncio.ensure_future(leaver.call(Message(
                destination=service.unique_name, path="/slow", interface="org.taskmaster.Test.Slow",
                member="Wait")))
            await iface.started.wait()
            leaver.disconnect()
            await leaver.wait_for_disconnect()
            with pytest.raises(Exception):  # noqa: B017 - whatever error the library gives
                await call
            iface.release.set()
            await iface.finished.wait()
            # the reply to the departed caller has been queued before this one
            for text in ("a", "b"):
                reply = await other.call(Message(
                    destination=service.unique_name, path="/slow", interface="org.taskmaster.Test.Slow",
                    member="Echo", signature="s", body=[text]))
                assert reply.message_type == MessageType.METHOD_RETURN and reply.body == [text]
            assert service.connected
            await ping(other, service.unique_name)
        finally:
            for bus in (service, leaver, other):
                await close(bus)

    run(main)


# ------------------------------------------- 4. DBusError replies, no traceback

ERRORS = textwrap.dedent("""
    import asyncio, sys
    from dbus_next import Message
    from dbus_next.aio import MessageBus
    from dbus_next.errors import DBusError
    from dbus_next.service import ServiceInterface, method
    from taskmasterd.bus.messagebus import TaskmasterBus, close

    Bus = TaskmasterBus if sys.argv[2] == "fix" else MessageBus

    class Failing(ServiceInterface):
        def __init__(self):
            super().__init__("org.taskmaster.Test.Failing")

        @method()
        def Sync(self) -> 's':
            raise DBusError("org.taskmaster.Test.Error.Nope", "sync nope")

        @method()
        async def Async(self) -> 's':
            raise DBusError("org.taskmaster.Test.Error.Nope", "async nope")

        @method()
        def Bug(self) -> 's':
            raise KeyError("bug")

    async def main():
        service = await Bus(bus_address=sys.argv[1]).connect()
        client = await MessageBus(bus_address=sys.argv[1]).connect()
        service.export("/f", Failing())
        for member in ("Sync", "Async", "Bug"):
            reply = await client.call(Message(destination=service.unique_name, path="/f",
                                              interface="org.taskmaster.Test.Failing", member=member))
            print(member, reply.error_name, flush=True)
        print("MARK", file=sys.stderr, flush=True)
        await close(service)
        await close(client)

    asyncio.run(main())
""")


@pytest.mark.parametrize("mode", ["fix", "library"])
def test_error_reply_fix(address: str, mode: str) -> None:
    """Without the fix every DBusError raised by a handler is also logged with a traceback."""
    proc = subprocess.run([sys.executable, "-c", ERRORS, address, mode], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["Sync org.taskmaster.Test.Error.Nope",
                                           "Async org.taskmaster.Test.Error.Nope",
                                           "Bug com.dubstepdish.dbus.next.ServiceError"]
    logged = proc.stderr.split("MARK")[0]
    assert "KeyError" in logged  # a real bug is still logged
    if mode == "fix":
        assert "sync nope" not in logged and "async nope" not in logged, logged
    else:
        assert "sync nope" in logged and "async nope" in logged, logged
