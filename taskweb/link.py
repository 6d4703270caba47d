"""taskmaster-web's link to taskmasterd: a dbus-next client (asyncio, as
aiohttp is) that keeps a mirror of the process table and hands the daemon's
signals to whoever follows them (the page's event streams).

Why a mirror: a page load, a scrape of /metrics or an event stream must not
each cost a ListProcesses of 1,000 structs (30–65 ms of unmarshalling with
dbus-next, docs in DBUS-NOTES): the table is read once, then again (one
call, coalesced) after signals say it changed. Signals are passed on at
once, the refreshed rows shortly after.

Followers get a bounded queue each: a follower that does not read (a
stalled browser) loses its queue's overflow and is told to reload
(`Lagged`), it never makes the service grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskctl.model import ProcessRow
from taskmasterd.bus.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH
from taskmasterd.busaddr import BusChoice

log = logging.getLogger("taskweb")

DBUS = "org.freedesktop.DBus"
REFRESH_DELAY = 0.05  # seconds: signals within this are one ListProcesses
QUEUE_SIZE = 1000  # events a follower may be behind before it is told to reload
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)  # then every 5 s


class DaemonError(Exception):
    """An error reply: `name` the D-Bus error name, `text` the daemon's message."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.short = name.rsplit(".", 1)[-1]
        self.text = text


class Unavailable(DaemonError):
    """No bus, or no taskmasterd on it."""

    def __init__(self, text: str) -> None:
        super().__init__("org.freedesktop.DBus.Error.ServiceUnknown", text)


@dataclass(frozen=True)
class Signal:
    """A signal of the daemon's, as followers get it: `member` and its body."""

    member: str
    body: tuple[Any, ...]


@dataclass(frozen=True)
class RowsChanged:
    """The mirror changed: these rows are new or different (`removed`: gone)."""

    rows: tuple[ProcessRow, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class Presence:
    """taskmasterd appeared on the bus (True) or left it (False)."""

    present: bool


class Lagged:
    """This follower fell QUEUE_SIZE events behind: what it shows is stale."""


Event = Signal | RowsChanged | Presence | Lagged
MANAGER_SIGNALS = ("ProcessStateChanged", "Reloaded", "TaskStateChanged", "ActivityStateChanged")


def bus_address(choice: BusChoice | None) -> str:
    """The address to connect to (None: the system bus, the packaged daemon's),
    found as taskctl finds it (taskctl.buses)."""
    from taskctl.buses import session_address, system_address

    if choice is not None and choice.kind == "address" and choice.address:
        return choice.address
    found = session_address(os.environ) if choice is not None and choice.kind == "user" \
        else system_address(os.environ)
    if found.address is None:
        raise Unavailable(f"--user: {found.why}")
    return found.address


class Follower:
    """One follower's queue of events (`get`), bounded."""

    def __init__(self, link: DaemonLink) -> None:
        self._link = link
        self._queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._lagged = False

    def put(self, event: Event) -> None:
        if self._lagged:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._lagged = True
            while not self._queue.empty():  # what it would read is stale anyway
                self._queue.get_nowait()
            self._queue.put_nowait(Lagged())

    async def get(self) -> Event:
        event = await self._queue.get()
        if isinstance(event, Lagged):
            self._lagged = False
        return event

    def close(self) -> None:
        self._link.followers.discard(self)


class DaemonLink:
    """The connection to taskmasterd's bus, made again when it drops; the
    process table mirrored (`rows`), the signals passed on to `followers`."""

    def __init__(self, choice: BusChoice | None = None) -> None:
        self.choice = choice
        self.bus: Any = None  # dbus_next.aio.MessageBus
        self.present = False  # taskmasterd owns its name
        self.rows: dict[str, ProcessRow] = {}  # by process name, in the daemon's order
        self.followers: set[Follower] = set()
        self._refresh: asyncio.TimerHandle | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    # -- connection ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, then keep connected in the background (a bus that cannot
        be reached yet is tried again, as after a drop)."""
        try:
            await self._connect()
        except Unavailable as exc:
            log.warning("%s; trying again", exc.text)
        self._keeper = asyncio.create_task(self._keep())

    async def _connect(self) -> None:
        from dbus_next import Message, MessageType
        from dbus_next.aio import MessageBus

        address = bus_address(self.choice)
        try:
            bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
        except Exception as exc:  # dbus-next raises several kinds
            raise Unavailable(f"cannot connect to the bus {address}: {exc}") from None
        self.bus = bus
        bus.add_message_handler(self._on_message)
        rules = [f"type='signal',sender='{BUS_NAME}',interface='{MANAGER_IFACE}',"
                 f"path='{MANAGER_PATH}'",
                 f"type='signal',sender='{DBUS}',member='NameOwnerChanged',arg0='{BUS_NAME}'"]
        for rule in rules:
            reply = await bus.call(Message(destination=DBUS, path="/org/freedesktop/DBus",
                                           interface=DBUS, member="AddMatch", signature="s",
                                           body=[rule]))
            if reply.message_type is MessageType.ERROR:
                raise Unavailable(f"AddMatch refused: {reply.error_name}")
        await self.refresh()

    async def _keep(self) -> None:
        """Connect again after the bus connection dropped."""
        attempt = 0
        while not self._closed:
            if self.bus is not None:
                # shielded: cancelling _keep (close) must not cancel the bus's own
                # future, which close() then awaits
                await asyncio.shield(self.bus.wait_for_disconnect())
                self.bus = None
                self._set_present(False)
                log.warning("the bus connection dropped; connecting again")
            try:
                await self._connect()
                attempt = 0
            except Unavailable as exc:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.warning("%s; again in %g s", exc.text, delay)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._refresh is not None:
            self._refresh.cancel()
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        if self.bus is not None:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await self.bus.wait_for_disconnect()
            self.bus = None

    # -- calls -------------------------------------------------------------------

    async def call(self, member: str, signature: str = "", body: Sequence[Any] = (), *,
                   path: str = MANAGER_PATH, interface: str = MANAGER_IFACE) -> list[Any]:
        """A method of the daemon's; its reply body. DaemonError on an error
        reply, Unavailable without a bus or a daemon."""
        from dbus_next import Message, MessageType

        bus = self.bus
        if bus is None:
            raise Unavailable("not connected to the bus (connecting again)")
        try:
            reply = await bus.call(Message(destination=BUS_NAME, path=path, interface=interface,
                                           member=member, signature=signature, body=list(body)))
        except Exception as exc:  # the connection dropped under the call
            raise Unavailable(f"the bus connection dropped: {exc}") from None
        if reply.message_type is MessageType.ERROR:
            for fd in reply.unix_fds or ():
                os.close(fd)
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            if reply.error_name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                                    "org.freedesktop.DBus.Error.NameHasNoOwner"):
                raise Unavailable(f"taskmasterd is not on the bus ({text})")
            raise DaemonError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)
        if not reply.unix_fds:
            return list(reply.body)
        # dbus-next leaves an 'h' as its index into the message's descriptors:
        # the caller gets the descriptor (and closes it); any other is closed.
        fds = list(reply.unix_fds)
        body = [fds[v] if t.token == "h" and 0 <= v < len(fds) else v
                for t, v in zip(reply.signature_tree.types, reply.body, strict=True)]
        for fd in fds:
            if fd not in body:
                os.close(fd)
        return body

    async def get_property(self, name: str, *, path: str = MANAGER_PATH,
                           interface: str = MANAGER_IFACE) -> Any:
        [variant] = await self.call("Get", "ss", [interface, name], path=path,
                                    interface="org.freedesktop.DBus.Properties")
        return variant.value

    # -- the mirror ----------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the process table again; followers get what changed."""
        try:
            [structs] = await self.call("ListProcesses")
        except Unavailable:
            self._set_present(False)
            if self.rows:
                removed = tuple(self.rows)
                self.rows = {}
                self._publish(RowsChanged((), removed))
            return
        self._set_present(True)
        new = {row.name: row for row in map(ProcessRow.from_values, structs)}
        changed = tuple(row for name, row in new.items() if self.rows.get(name) != row)
        removed = tuple(name for name in self.rows if name not in new)
        self.rows = new
        if changed or removed:
            self._publish(RowsChanged(changed, removed))

    def _schedule_refresh(self) -> None:
        if self._refresh is None:
            self._refresh = asyncio.get_running_loop().call_later(REFRESH_DELAY, self._run_refresh)

    def _run_refresh(self) -> None:
        self._refresh = None
        if self._refreshing is not None and not self._refreshing.done():
            self._schedule_refresh()  # one at a time: after this one
            return
        self._refreshing = asyncio.create_task(self.refresh())

    # -- signals -------------------------------------------------------------------

    def _on_message(self, msg: Any) -> bool:
        from dbus_next import MessageType

        if msg.message_type is not MessageType.SIGNAL:
            return False
        if msg.member == "NameOwnerChanged" and msg.interface == DBUS:
            if msg.body and msg.body[0] == BUS_NAME:
                present = bool(msg.body[2])
                self._set_present(present)
                self._schedule_refresh()  # its table (or none)
            return False
        if msg.interface == MANAGER_IFACE and msg.path == MANAGER_PATH \
                and msg.member in MANAGER_SIGNALS:
            self._publish(Signal(msg.member, tuple(msg.body)))
            if msg.member in ("ProcessStateChanged", "Reloaded"):
                self._schedule_refresh()
        return False

    def _set_present(self, present: bool) -> None:
        if present != self.present:
            self.present = present
            self._publish(Presence(present))

    def _publish(self, event: Event) -> None:
        for follower in list(self.followers):
            follower.put(event)

    def follow(self) -> Follower:
        """A new follower (close() it when done)."""
        follower = Follower(self)
        self.followers.add(follower)
        return follower
