"""TaskmasterBus finds a call's method in an index (messagebus._find_message_handler):
the same answers as dbus-next 0.2.3's own search. The same interface is
exported on a TaskmasterBus and on a plain MessageBus, on a private
dbus-daemon; a client makes the same calls to both and gets the same replies
and errors.

No `from __future__ import annotations`: dbus-next reads D-Bus signatures
from the annotations of the service interface below.
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method

from taskmasterd.bus.messagebus import TaskmasterBus, close
from tests.dbus_fixtures import bus_directory, session_bus

IFACE = "org.taskmaster.Test.Dispatch"
OTHER = "org.taskmaster.Test.Other"


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with bus_directory() as d, session_bus(d) as addr:
        yield addr


class Dispatch(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(IFACE)

    @method()
    def Echo(self, text: 's') -> 's':  # noqa: F821
        return text

    @method(name="Echo")
    def echo_number(self, n: 'u') -> 'u':  # noqa: F821
        return n + 1

    @method()
    async def Later(self) -> 'b':  # noqa: F821
        return True

    @method(disabled=True)
    def Hidden(self) -> None:
        pass

    @method()
    def Fails(self) -> None:
        raise ValueError("no")


class Other(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(OTHER)

    @method()
    def Echo(self, text: 's') -> 's':  # noqa: F821
        return "other " + text


CALLS: list[tuple[str | None, str, str, list[Any], str]] = [
    # (interface, member, signature, body, path)
    (IFACE, "Echo", "s", ["hi"], "/d"),
    (IFACE, "Echo", "u", [41], "/d"),
    (IFACE, "Echo", "i", [41], "/d"),
    (IFACE, "Echo", "", [], "/d"),
    (IFACE, "Later", "", [], "/d"),
    (IFACE, "Hidden", "", [], "/d"),
    (IFACE, "Fails", "", [], "/d"),
    (IFACE, "Nothing", "", [], "/d"),
    (OTHER, "Echo", "s", ["hi"], "/d"),
    (None, "Echo", "s", ["hi"], "/d"),
    (IFACE, "Echo", "s", ["hi"], "/elsewhere"),
    ("org.freedesktop.DBus.Peer", "Ping", "", [], "/d"),
    ("org.freedesktop.DBus.Properties", "GetAll", "s", [IFACE], "/d"),
    ("org.freedesktop.DBus.Introspectable", "Nope", "", [], "/d"),
]


def answer(reply: Message) -> tuple[Any, ...]:
    text = reply.body[0].split("\n")[0] if reply.message_type is MessageType.ERROR else None
    return (reply.message_type, reply.error_name, reply.signature,
            text if text is not None else reply.body)


def test_calls_are_answered_as_the_library_answers_them(address: str) -> None:
    async def main() -> None:
        ours = await TaskmasterBus(bus_address=address).connect()
        library = await MessageBus(bus_address=address).connect()
        client = await MessageBus(bus_address=address).connect()
        try:
            for bus in (ours, library):
                bus.export("/d", Dispatch())
                bus.export("/d", Other())
            for interface, member, signature, body, path in CALLS:
                replies = []
                for service in (ours, library):
                    replies.append(answer(await client.call(Message(
                        destination=service.unique_name, path=path, interface=interface,
                        member=member, signature=signature, body=body))))
                assert replies[0] == replies[1], (interface, member, signature)
        finally:
            for bus in (client, library, ours):
                await close(bus)

    async def bounded() -> None:
        async with asyncio.timeout(20):
            await main()
    asyncio.run(bounded())


class Counting(ServiceInterface):  # type: ignore[misc]
    """Records how many messages its bus had read when each call ran."""

    def __init__(self, bus: TaskmasterBus, seen: list[int], read: list[int]) -> None:
        super().__init__(IFACE)
        self._seen, self._read = seen, read

    @method()
    async def Later(self) -> 'b':  # noqa: F821
        self._seen.append(self._read[0])
        return True


def test_a_burst_of_calls_is_read_a_few_at_a_time_and_none_is_left_unread(address: str) -> None:
    """dbus-next reads every message waiting before a handler runs; the
    TaskmasterBus reads READ_BURST per loop turn, so the first calls of a
    burst are handled while the rest are still being read, and the rest are
    read on the next turns even when they already sit in its buffer (no
    epoll event would say so)."""
    from taskmasterd.bus import messagebus

    n = 5 * messagebus.READ_BURST + 7

    async def main() -> None:
        from taskmasterd.bus.writer import Writer

        ours = await TaskmasterBus(bus_address=address).connect()
        client = MessageBus(bus_address=address)
        client._writer = Writer(client)  # the library's drops the connection when a burst fills the socket
        await client.connect()
        read = [0]
        seen: list[int] = []
        on_message = ours._on_message

        def counting(msg: Message) -> None:
            read[0] += 1
            on_message(msg)
        ours._on_message = counting
        try:
            ours.export("/d", Counting(ours, seen, read))
            calls = [Message(destination=ours.unique_name, path="/d", interface=IFACE,
                             member="Later") for _ in range(n)]
            # The whole burst waits in the service's socket before it reads any.
            ours._loop.remove_reader(ours._fd)
            for m in calls:
                client.send(m)
            await _until(lambda: _unread(ours._sock) > 0)
            while True:  # until the bus has forwarded all of it
                before = _unread(ours._sock)
                await asyncio.sleep(0.1)  # sleep-ok: the socket's fill level, checked for stillness
                if _unread(ours._sock) == before:
                    break
            ours._loop.add_reader(ours._fd, ours._message_reader)
            replies = await asyncio.gather(*(client.call(Message(
                destination=ours.unique_name, path="/d", interface=IFACE, member="Later"))
                for _ in range(3)))
            assert [r.body for r in replies] == [[True]] * 3
            await asyncio.wait_for(_until(lambda: len(seen) == n + 3), 10)
            assert min(seen) == messagebus.READ_BURST  # the first ran once a burst was read, not all
        finally:
            for bus in (client, ours):
                await close(bus)

    async def bounded() -> None:
        async with asyncio.timeout(20):
            await main()
    asyncio.run(bounded())


def _unread(sock: Any) -> int:
    import fcntl
    import struct
    import termios
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.005)  # sleep-ok: the poll step of a wait with a timeout
