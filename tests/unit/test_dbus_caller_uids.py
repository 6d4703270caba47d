"""caller_uid (bus/messagebus.py): a TaskmasterBus asks the bus daemon once per
sender (unique names are never reused on a bus), calls arriving while the
question is out share it, at most CALLER_UIDS senders are kept, and an
answer the bus would not give (None) is asked again next time.

No bus needed: a stand-in with the TaskmasterBus's `caller_uids` and a `call`
answering GetConnectionUnixUser."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import pytest
from dbus_next import Message, MessageType

from taskmasterd.bus import messagebus
from taskmasterd.bus.messagebus import CALLER, caller_uid


class Bus:
    """What caller_uid uses of a TaskmasterBus; `uids` (sender -> uid, absent:
    an error reply) answers; `asked` lists the senders asked, in order."""

    def __init__(self, uids: dict[str, int], *, cache: bool = True) -> None:
        self.uids = uids
        self.asked: list[str] = []
        self.gate: asyncio.Event | None = None  # set: answers wait for it
        if cache:
            self.caller_uids: OrderedDict[str, Any] = OrderedDict()

    async def call(self, msg: Message) -> Message:
        assert msg.member == "GetConnectionUnixUser"
        sender = msg.body[0]
        self.asked.append(sender)
        if self.gate is not None:
            await self.gate.wait()
        if sender not in self.uids:
            return Message.new_error(msg, "org.freedesktop.DBus.Error.NameHasNoOwner", "gone")
        return Message(message_type=MessageType.METHOD_RETURN, reply_serial=1, signature="u",
                       body=[self.uids[sender]])


async def as_caller(bus: Any, sender: str) -> tuple[str, int | None]:
    """caller_uid() inside a call from `sender` (a task: its own context, as a handler's)."""
    async def call() -> tuple[str, int | None]:
        CALLER.set((bus, sender))
        return await caller_uid()
    return await asyncio.create_task(call())


def test_a_sender_is_asked_once() -> None:
    async def main() -> None:
        bus = Bus({":1.5": 1000, ":1.6": 0})
        assert await as_caller(bus, ":1.5") == (":1.5", 1000)
        assert await as_caller(bus, ":1.5") == (":1.5", 1000)
        assert await as_caller(bus, ":1.6") == (":1.6", 0)
        assert await as_caller(bus, ":1.5") == (":1.5", 1000)
        assert bus.asked == [":1.5", ":1.6"]
    asyncio.run(main())


def test_calls_arriving_together_share_one_question() -> None:
    async def main() -> None:
        bus = Bus({":1.5": 1000})
        bus.gate = asyncio.Event()
        calls = [asyncio.create_task(as_caller(bus, ":1.5")) for _ in range(16)]
        while not bus.asked:
            await asyncio.sleep(0)  # sleep-ok: a loop turn, until the question is out
        bus.gate.set()
        assert await asyncio.gather(*calls) == [(":1.5", 1000)] * 16
        assert bus.asked == [":1.5"]
    asyncio.run(main())


def test_a_sender_the_bus_would_not_tell_about_is_asked_again() -> None:
    async def main() -> None:
        bus = Bus({})
        assert await as_caller(bus, ":1.7") == (":1.7", None)
        bus.uids[":1.7"] = 1000
        assert await as_caller(bus, ":1.7") == (":1.7", 1000)
        assert await as_caller(bus, ":1.7") == (":1.7", 1000)
        assert bus.asked == [":1.7", ":1.7"]
    asyncio.run(main())


def test_the_least_recently_seen_senders_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messagebus, "CALLER_UIDS", 2)

    async def main() -> None:
        bus = Bus({":1.1": 1, ":1.2": 2, ":1.3": 3})
        for sender in (":1.1", ":1.2", ":1.1", ":1.3", ":1.1", ":1.2"):
            await as_caller(bus, sender)
        # :1.2 was the least recently seen when :1.3 came
        assert bus.asked == [":1.1", ":1.2", ":1.3", ":1.2"]
        assert list(bus.caller_uids) == [":1.1", ":1.2"]
    asyncio.run(main())


def test_each_bus_keeps_its_own() -> None:
    async def main() -> None:
        # a restarted bus daemon gives the same unique names again
        old, new = Bus({":1.5": 1000}), Bus({":1.5": 0})
        assert await as_caller(old, ":1.5") == (":1.5", 1000)
        assert await as_caller(new, ":1.5") == (":1.5", 0)
    asyncio.run(main())


def test_a_bus_without_the_cache_is_asked_every_time() -> None:
    async def main() -> None:
        bus = Bus({":1.5": 1000}, cache=False)
        assert await as_caller(bus, ":1.5") == (":1.5", 1000)
        assert await as_caller(bus, ":1.5") == (":1.5", 1000)
        assert bus.asked == [":1.5", ":1.5"]
    asyncio.run(main())


def test_outside_a_call_nobody_is_asked() -> None:
    async def main() -> None:
        assert await caller_uid() == ("", None)
        bus = Bus({})
        assert await as_caller(bus, "") == ("", None)
        assert bus.asked == []
    asyncio.run(main())
