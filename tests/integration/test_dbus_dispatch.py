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
