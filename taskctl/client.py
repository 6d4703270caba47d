"""The only module of taskctl that talks D-Bus (dbus-next).

`Client` is synchronous at its edges: it owns a private asyncio event loop
and runs each request on it to completion, so it works the same from a
command line, from the interactive shell, and from a thread of another
program (taskmasterd --shell) that has an event loop of its own elsewhere.
asyncio and dbus-next are imported only when the first request is made:
`taskctl --help` and usage errors never pay for them.

Method calls are raw `Message`s (no introspection round trip). Errors come
back typed (`taskctl.model`): `CallError` for a D-Bus error reply (short name
such as "NoSuchProgram" and the daemon's message), `Unreachable` when there
is no bus, nobody owns org.taskmaster.Taskmaster1, or the connection drops.

Interrupts: in the main thread, while a request runs, SIGINT cancels it and
`KeyboardInterrupt` is raised (the loop stays usable). From another thread,
`cancel()` does the same for the request under way.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from taskctl.model import (
    CallError,
    Event,
    OwnerChanged,
    ProcessRow,
    Reloaded,
    StateChange,
    Unreachable,
)
from taskmasterd.bus.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH
from taskmasterd.busaddr import SYSTEM_SOCKET, BusChoice, address_file, read_address

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
# Error replies that mean "there is no taskmasterd on this bus".
GONE_ERRORS = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
})
# Error replies that mean "it was there but did not answer".
SILENT_ERRORS = frozenset({
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
})
CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0
ALERT_TEST_TIMEOUT = 45.0  # the daemon gives each target 20 s, all at once

_DISCONNECTED = object()  # queue sentinel: the bus connection is gone


# ---- where to connect (pure) ------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A bus to try: its choice, its address (None: cannot even be tried, see `why`)."""

    choice: BusChoice
    address: str | None
    why: str = ""


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def session_address(environ: Mapping[str, str]) -> Candidate:
    choice = BusChoice("user")
    if environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return Candidate(choice, environ["DBUS_SESSION_BUS_ADDRESS"])
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and _is_socket(os.path.join(runtime, "bus")):
        return Candidate(choice, "unix:path=" + os.path.join(runtime, "bus"))
    return Candidate(choice, None, "DBUS_SESSION_BUS_ADDRESS is not set and there is no "
                                   "$XDG_RUNTIME_DIR/bus")


def system_address(environ: Mapping[str, str]) -> Candidate:
    return Candidate(BusChoice("system"),
                     environ.get("DBUS_SYSTEM_BUS_ADDRESS") or f"unix:path={SYSTEM_SOCKET}")


def embedded_address(uid: int, environ: Mapping[str, str]) -> Candidate:
    path = address_file(uid, environ)
    address = read_address(path)
    return Candidate(BusChoice("private"), address, "" if address else f"no address in {path}")


def candidates(choice: BusChoice | None, uid: int | None = None,
               environ: Mapping[str, str] = os.environ) -> list[Candidate]:
    """The buses to try, in order. No choice (taskctl without a bus flag): the
    embedded bus if its address file exists, then (not root) the session bus
    if there is one, then the system bus. The first of them where
    taskmasterd owns its name wins (see Client._ensure): a user reaches the
    system-wide daemon without a flag."""
    uid = os.geteuid() if uid is None else uid
    if choice is None:
        out = []
        embedded = embedded_address(uid, environ)
        if embedded.address:
            out.append(embedded)
        if uid != 0:
            session = session_address(environ)
            if session.address:
                out.append(session)
        out.append(system_address(environ))
        return out
    if choice.kind == "system":
        return [system_address(environ)]
    if choice.kind == "user":
        return [session_address(environ)]
    if choice.kind == "address":
        return [Candidate(choice, choice.address or None, "empty address")]
    if choice.kind == "private":
        return [embedded_address(uid, environ)]
    raise ValueError(f"unknown bus kind {choice.kind!r}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _unreachable(choice: BusChoice, reason: str, cause: str = Unreachable.NO_BUS) -> Unreachable:
    return Unreachable(choice.describe(), reason, kind=choice.kind, address=choice.address,
                       cause=cause)


def _row(values: Sequence[Any]) -> ProcessRow:
    name, program, state, pid, status, started, description, spawn_error = values
    return ProcessRow(str(name), str(program), str(state), int(pid), int(status), int(started),
                      str(description), str(spawn_error))


# ---- the client ---------------------------------------------------------------


class Client:
    """A connection to taskmasterd, made at the first request (or `connect()`).

    `choice`: a `busaddr.BusChoice` (system/user/address/private) or None for
    taskctl's default resolution (see `candidates`). After a connection drops,
    the next request connects again.
    """

    def __init__(self, choice: BusChoice | None = None, *, timeout: float = CALL_TIMEOUT) -> None:
        self.requested = choice
        self.timeout = timeout
        self.choice: BusChoice | None = None  # the bus connected to (None: not connected)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bus: Any = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled: asyncio.Task[Any] | None = None
        self._queue: asyncio.Queue[object] | None = None  # events, while subscribed
        self._matches: list[str] = []
        self._closed = False

    # -- plumbing ------------------------------------------------------------

    def _run(self, coro: Awaitable[T]) -> T:
        """Run `coro` on our loop to completion; SIGINT (main thread) or
        `cancel()` turn into KeyboardInterrupt."""
        import asyncio

        if self._closed:
            raise RuntimeError("the client is closed")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        loop = self._loop

        async def wrapper() -> T:
            return await coro

        task = loop.create_task(wrapper())
        self._task = task
        interrupted = False
        previous: Any = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            def on_sigint(signum: int, frame: Any) -> None:
                nonlocal interrupted
                interrupted = True
                loop.call_soon_threadsafe(task.cancel)
            previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupted or self._cancelled is task:
                raise KeyboardInterrupt from None
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self._task = None
            if not task.done():  # left by an exception out of the loop itself
                task.cancel()
                try:
                    loop.run_until_complete(task)
                except BaseException:
                    pass

    def cancel(self) -> None:
        """Interrupt the request under way (from any thread): it raises KeyboardInterrupt."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            self._cancelled = task
            loop.call_soon_threadsafe(task.cancel)

    async def _ensure(self) -> Any:
        if self._bus is not None and self._bus.connected:
            return self._bus
        await self._drop()
        import asyncio

        from dbus_next.aio import MessageBus

        from taskmasterd.bus import compat

        compat.install_fast_unmarshall()  # a status of 1000 rows: 14 -> 4 ms to read

        last: Unreachable | None = None
        cands = candidates(self.requested)
        fallback: tuple[Any, Candidate] | None = None  # connected, but no daemon there
        for i, cand in enumerate(cands):
            if cand.address is None:
                last = _unreachable(cand.choice, cand.why)
                continue
            bus = None
            try:
                bus = MessageBus(bus_address=cand.address, negotiate_unix_fd=True)
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await bus.connect()
                # With other buses left to try, take this one only if
                # taskmasterd is on it.
                if i < len(cands) - 1 and not await _has_owner(bus):
                    if fallback is None:
                        fallback, bus = (bus, cand), None
                    continue
            except Exception as exc:
                if bus is not None:
                    await _close_bus(bus)
                why = "timed out" if isinstance(exc, TimeoutError) else _reason(exc)
                last = _unreachable(cand.choice, f"cannot connect to it: {why}")
                continue
            if fallback is not None:
                await _close_bus(fallback[0])
            return self._adopt(bus, cand)
        if fallback is not None:  # no daemon anywhere: report it on the first bus
            return self._adopt(*fallback)
        assert last is not None
        raise last

    def _adopt(self, bus: Any, cand: Candidate) -> Any:
        self._bus = bus
        self.choice = cand.choice
        self._matches = []
        bus.add_message_handler(self._on_message)
        return bus

    async def _drop(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            await _close_bus(bus)

    def _where(self) -> BusChoice:
        if self.choice is not None:
            return self.choice
        return self.requested or BusChoice("system" if os.geteuid() == 0 else "user")

    def _on_message(self, msg: Any) -> None:
        from dbus_next import MessageType

        if msg.message_type is not MessageType.SIGNAL or self._queue is None:
            return
        now = time.time()
        event: Event | None = None
        try:
            if msg.interface == MANAGER_IFACE and msg.path == MANAGER_PATH:
                if msg.member == "ProcessStateChanged" and msg.signature == "ssssiib":
                    process, program, old, new, pid, status, expected = msg.body
                    event = StateChange(process, program, old, new, int(pid), int(status),
                                        bool(expected), now)
                elif msg.member == "Reloaded" and msg.signature == "asasas":
                    added, changed, removed = msg.body
                    event = Reloaded(tuple(added), tuple(changed), tuple(removed), now)
            elif (msg.member == "NameOwnerChanged" and msg.sender == DBUS_NAME
                  and msg.body and msg.body[0] == BUS_NAME):
                event = OwnerChanged(str(msg.body[2]), now)
        except (ValueError, TypeError):
            return
        if event is not None:
            self._queue.put_nowait(event)

    async def _call(self, member: str, signature: str = "", body: Sequence[Any] = (), *,
                    destination: str = BUS_NAME, path: str = MANAGER_PATH,
                    interface: str = MANAGER_IFACE, timeout: float | None = None) -> Any:
        """The reply Message (a METHOD_RETURN); errors raised typed. `timeout`:
        seconds to wait for the reply (default: the client's)."""
        import asyncio

        from dbus_next import Message, MessageType

        bus = await self._ensure()
        msg = Message(destination=destination, path=path, interface=interface, member=member,
                      signature=signature, body=list(body))
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                reply = await bus.call(msg)
        except TimeoutError:
            raise _unreachable(self._where(), f"no reply to {member} within {limit:g} s",
                               Unreachable.NO_REPLY) from None
        except Exception as exc:  # the connection dropped under us
            await self._drop()
            raise _unreachable(self._where(), f"connection lost: {_reason(exc)}",
                               Unreachable.LOST) from None
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            _close_fds(reply.unix_fds)
            name = reply.error_name or "org.freedesktop.DBus.Error.Failed"
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            if (name in GONE_ERRORS and destination == BUS_NAME) or (
                    name == "org.freedesktop.DBus.Error.NameHasNoOwner" and destination == DBUS_NAME):
                raise _unreachable(self._where(), f"{BUS_NAME} has no owner", Unreachable.NO_OWNER)
            if name in SILENT_ERRORS:
                raise _unreachable(self._where(), f"taskmasterd did not reply: {text or name}",
                                   Unreachable.NO_REPLY)
            raise CallError(name, text)
        return reply

    # -- generic API ---------------------------------------------------------------

    def connect(self) -> BusChoice:
        """Connect now (else the first request does); returns the bus chosen."""
        self._run(self._ensure())
        assert self.choice is not None
        return self.choice

    def call(self, member: str, signature: str = "", body: Sequence[Any] = (), *,
             destination: str = BUS_NAME, path: str = MANAGER_PATH,
             interface: str = MANAGER_IFACE) -> list[Any]:
        """Any method call; returns the reply body (unix fds in it are closed)."""
        async def go() -> list[Any]:
            reply = await self._call(member, signature, body, destination=destination, path=path,
                                     interface=interface)
            _close_fds(reply.unix_fds)
            return list(reply.body)
        return self._run(go())

    def get_property(self, name: str, *, interface: str = MANAGER_IFACE,
                     path: str = MANAGER_PATH) -> Any:
        [variant] = self.call("Get", "ss", [interface, name], path=path, interface=PROPERTIES_IFACE)
        return variant.value

    # -- the Manager API -------------------------------------------------------------

    def start(self, target: str) -> list[str]:
        return [str(n) for n in self.call("Start", "s", [target])[0]]

    def stop(self, target: str) -> list[str]:
        return [str(n) for n in self.call("Stop", "s", [target])[0]]

    def restart(self, target: str) -> list[str]:
        return [str(n) for n in self.call("Restart", "s", [target])[0]]

    def signal(self, target: str, sig: str) -> list[str]:
        return [str(n) for n in self.call("Signal", "ss", [target, sig])[0]]

    def reload(self) -> Reloaded:
        added, changed, removed = self.call("Reload")
        return Reloaded(tuple(added), tuple(changed), tuple(removed))

    def list_processes(self) -> list[ProcessRow]:
        return [_row(r) for r in self.call("ListProcesses")[0]]

    def shutdown(self) -> None:
        """Ask taskmasterd to stop everything and exit. A daemon that leaves
        the bus without replying did what was asked: that is no error."""
        try:
            self.call("Shutdown")
        except Unreachable as exc:
            if exc.cause != Unreachable.NO_REPLY or self.has_owner():
                raise

    def has_owner(self) -> bool:
        """Whether somebody owns org.taskmaster.Taskmaster1 on the bus now."""
        [has] = self.call("NameHasOwner", "s", [BUS_NAME], destination=DBUS_NAME, path=DBUS_PATH,
                          interface=DBUS_NAME)
        return bool(has)

    def open_log(self, process: str, stream: str = "stdout") -> int:
        """A read-only fd of the process's output file (the caller closes it).
        CallError "NotAFile" when the output goes to the journal or is discarded."""
        async def go() -> int:
            reply = await self._call("OpenLog", "ss", [process, stream])
            fds = list(reply.unix_fds or [])
            index = reply.body[0] if reply.body else -1
            if not isinstance(index, int) or not 0 <= index < len(fds):
                _close_fds(fds)
                raise CallError("org.taskmaster.Taskmaster1.Error.Failed",
                                "OpenLog returned no file descriptor (is fd passing "
                                "supported by this bus?)")
            fd = fds.pop(index)
            _close_fds(fds)
            return int(fd)
        return self._run(go())

    def test_alerts(self, target: str = "") -> list[tuple[str, bool, str]]:
        """Manager.TestAlerts: a test message to every alert target ("") or to
        one (index or URL); (redacted url, delivered, detail) per target."""
        async def go() -> list[tuple[str, bool, str]]:
            reply = await self._call("TestAlerts", "s", [target],
                                     timeout=max(self.timeout, ALERT_TEST_TIMEOUT))
            return [(str(url), bool(ok), str(detail)) for url, ok, detail in reply.body[0]]
        return self._run(go())

    def version(self) -> str:
        return str(self.get_property("Version"))

    def state(self) -> str:
        return str(self.get_property("State"))

    def config_file(self) -> str:
        return str(self.get_property("ConfigFile"))

    def daemon_pid(self) -> int:
        """The pid of the process owning org.taskmaster.Taskmaster1 (from the bus)."""
        [pid] = self.call("GetConnectionUnixProcessID", "s", [BUS_NAME], destination=DBUS_NAME,
                          path=DBUS_PATH, interface=DBUS_NAME)
        return int(pid)

    # -- signals -----------------------------------------------------------------------

    def subscribe(self) -> None:
        """Start receiving events (ProcessStateChanged, Reloaded, the daemon
        leaving/joining the bus) for `next_event`. Subscribe BEFORE acting."""
        import asyncio

        async def go() -> None:
            await self._ensure()
            if self._queue is None:
                self._queue = asyncio.Queue()
            rules = [f"type='signal',sender='{BUS_NAME}',path='{MANAGER_PATH}',"
                     f"interface='{MANAGER_IFACE}'",
                     f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
                     f"member='NameOwnerChanged',arg0='{BUS_NAME}'"]
            for rule in rules:
                if rule not in self._matches:
                    await self._call("AddMatch", "s", [rule], destination=DBUS_NAME, path=DBUS_PATH,
                                     interface=DBUS_NAME)
                    self._matches.append(rule)
        self._run(go())

    def unsubscribe(self) -> None:
        """Stop receiving events; drop the ones not taken yet."""
        self._queue = None
        if not self._matches or self._bus is None or not self._bus.connected:
            self._matches = []
            return

        async def go() -> None:
            for rule in list(self._matches):
                self._matches.remove(rule)
                await self._call("RemoveMatch", "s", [rule], destination=DBUS_NAME,
                                 path=DBUS_PATH, interface=DBUS_NAME)
        try:
            self._run(go())
        except Unreachable:
            pass

    @contextmanager
    def subscription(self) -> Iterator[Client]:
        self.subscribe()
        try:
            yield self
        finally:
            self.unsubscribe()

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event (None after `timeout` seconds). Raises Unreachable if
        the bus connection drops."""
        import asyncio

        if self._queue is None:
            raise RuntimeError("next_event() without subscribe()")
        queue = self._queue

        bus = self._bus

        async def go() -> object:
            if not queue.empty():
                return queue.get_nowait()
            if bus is None or not bus.connected:
                return _DISCONNECTED
            get = asyncio.ensure_future(queue.get())
            # dbus-next's own future, waited on but never cancelled (a task
            # awaiting wait_for_disconnect() would cancel it when cancelled).
            gone = bus._disconnect_future
            try:
                done, _ = await asyncio.wait({get, gone}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not get.done():
                    get.cancel()
            if get in done:
                return get.result()
            return _DISCONNECTED if gone in done else None
        item = self._run(go())
        if item is _DISCONNECTED:
            self._queue = None
            self._matches = []
            raise _unreachable(self._where(), "connection lost", Unreachable.LOST)
        assert item is None or isinstance(item, StateChange | Reloaded | OwnerChanged)
        return item

    def events(self) -> Iterator[Event]:
        """Every event, forever (until interrupted or the connection drops)."""
        while True:
            event = self.next_event()
            if event is not None:
                yield event

    # -- misc -----------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Wait, interruptibly (SIGINT in the main thread, or `cancel()`)."""
        import asyncio

        self._run(asyncio.sleep(seconds))

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine function on the client's loop (interruptible like a request)."""
        return self._run(fn())

    def close(self) -> None:
        if self._closed:
            return
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._run(self._drop())
            except BaseException:
                pass
            self._loop.close()
        self._closed = True

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_fds(fds: Sequence[int] | None) -> None:
    for fd in fds or ():
        try:
            os.close(fd)
        except OSError:
            pass


async def _has_owner(bus: Any) -> bool:
    from dbus_next import Message

    reply = await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="NameHasOwner",
                                   signature="s", body=[BUS_NAME]))
    return bool(reply is not None and reply.body and reply.body[0])


async def _close_bus(bus: Any, timeout: float = 2.0) -> None:
    """Disconnect and close the socket (dbus-next 0.2.3 leaves it to the GC)."""
    import asyncio
    import contextlib

    with contextlib.suppress(Exception):
        if not bus._disconnected:
            bus.disconnect()
            async with asyncio.timeout(timeout):
                await bus.wait_for_disconnect()
    with contextlib.suppress(Exception):
        if not bus._disconnected:
            bus._finalize(None)
    with contextlib.suppress(Exception):
        bus._disconnect_future.exception()
    for closeable in (getattr(bus, "_stream", None), getattr(bus, "_sock", None)):
        if closeable is not None:
            with contextlib.suppress(OSError):
                closeable.close()


def connect(choice: BusChoice | None = None, *, timeout: float = CALL_TIMEOUT) -> Client:
    """A connected Client (raises Unreachable)."""
    client = Client(choice, timeout=timeout)
    try:
        client.connect()
    except BaseException:
        client.close()
        raise
    return client


__all__ = ["Candidate", "Client", "candidates", "connect"]
