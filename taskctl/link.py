"""taskctl's connection to taskmasterd (jeepney, blocking I/O): `Link`
connects (to the buses taskctl.buses lists, or over ssh), makes requests
that an interrupt can stop, and raises errors typed. The Manager's calls on
top of it are `taskctl.client`, the events `taskctl.subscriber`; with
taskctl.connection (the jeepney level) they are the modules that talk D-Bus.

Why jeepney here when the daemon uses dbus-next: a command line pays its
imports on every run, and dbus-next cannot be imported without asyncio
(its package imports its asyncio backend): ~50 ms of every `taskctl`
command on a 2-vCPU VM, against ~12 ms for jeepney's blocking client.
jeepney is imported only when the first request is made: `taskctl --help`
and usage errors never pay for it.

Method calls are raw messages (no introspection round trip). Errors come
back typed (`taskctl.model`): `CallError` for a D-Bus error reply (short name
such as "NoSuchProgram" and the daemon's message), `Unreachable` when there
is no bus, nobody owns org.taskmaster.Taskmaster1, or the connection drops.

Interrupts: in the main thread, Ctrl-C raises `KeyboardInterrupt` out of a
request (the connection is then dropped and made again by the next one);
waiting for events, a SIGINT is never missed (`taskctl.connection.wait_readable`). From
another thread, `cancel()` does the same for the request under way.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from taskctl.buses import Candidate, candidates
from taskctl.connection import DBUS_NAME, close_fds, has_owner, open_bus
from taskctl.hosts import Host
from taskctl.model import CallError, TaskctlError, Unreachable
from taskmasterd.bus.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH
from taskmasterd.busaddr import BusChoice

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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _unreachable(choice: BusChoice, reason: str, cause: str = Unreachable.NO_BUS,
                 host: Host | None = None) -> Unreachable:
    where = choice.describe() if host is None else f"{choice.describe()} of {host} over ssh"
    return Unreachable(where, reason, kind=choice.kind, address=choice.address, cause=cause,
                       host=None if host is None else str(host),
                       ssh=None if host is None else host.ssh_command())


# ---- the link -----------------------------------------------------------------


class Link:
    """A connection to taskmasterd, made at the first request (or `connect()`).

    `choice`: a `busaddr.BusChoice` (system/user/address/private) or None for
    taskctl's default resolution (see `candidates`). `host`: taskmasterd on
    another host, through ssh (`taskctl.hosts`); `choice` then names a bus
    there (None: its system bus). After a connection drops, the next request
    connects again.
    """

    def __init__(self, choice: BusChoice | None = None, *, timeout: float = CALL_TIMEOUT,
                 host: Host | None = None) -> None:
        self.requested = choice
        self.host = host
        self.timeout = timeout
        self.choice: BusChoice | None = None  # the bus connected to (None: not connected)
        self._conn: Any = None  # jeepney.io.blocking.DBusConnection
        self._signals: deque[Any] | None = None  # signals received, while subscribed (Subscriber)
        self._filter: Any = None
        self._matches: list[str] = []
        self._cancelled = threading.Event()
        self._closed = False

    # -- plumbing ------------------------------------------------------------

    def cancel(self) -> None:
        """Interrupt the request under way (from any thread): it raises KeyboardInterrupt."""
        self._cancelled.set()  # wakes sleep()
        conn = self._conn
        if conn is None:
            return
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # the blocked receive returns at once
        except OSError:
            pass

    @contextmanager
    def _request(self) -> Iterator[None]:
        """Around any use of the connection: an interrupt drops it (a reply may
        be half read), a cancel() from another thread becomes KeyboardInterrupt."""
        if self._closed:
            raise RuntimeError("the client is closed")
        self._cancelled.clear()
        try:
            yield
        except KeyboardInterrupt:
            self._drop()
            raise
        except TaskctlError:  # already typed (raised by our own code inside)
            raise
        except Exception as exc:  # the socket, or jeepney on what it read from it
            if self._cancelled.is_set():
                self._drop()
                raise KeyboardInterrupt from None
            if isinstance(exc, TimeoutError):
                raise
            self._drop()
            raise self._unreachable(f"connection lost: {_reason(exc)}",
                               Unreachable.LOST) from None

    def _ensure(self) -> Any:
        if self._conn is not None:
            return self._conn
        if self._closed:
            raise RuntimeError("the client is closed")
        if self.host is not None:
            return self._ensure_remote(self.host)
        last: Unreachable | None = None
        cands = candidates(self.requested)
        fallback: tuple[Any, Candidate] | None = None  # connected, but no daemon there
        for i, cand in enumerate(cands):
            if cand.address is None:
                last = _unreachable(cand.choice, cand.why)
                continue
            try:
                conn = open_bus(cand.address, CONNECT_TIMEOUT)
            except Exception as exc:
                why = "timed out" if isinstance(exc, TimeoutError) else _reason(exc)
                last = _unreachable(cand.choice, f"cannot connect to it: {why}")
                continue
            # With other buses left to try, take this one only if taskmasterd is on it.
            try:
                if i < len(cands) - 1 and not has_owner(conn, BUS_NAME, self.timeout):
                    if fallback is None:
                        fallback, conn = (conn, cand), None
                    else:
                        conn.close()
                    continue
            except Exception as exc:
                conn.close()
                last = _unreachable(cand.choice, f"cannot connect to it: {_reason(exc)}")
                continue
            if fallback is not None:
                fallback[0].close()
            return self._adopt(conn, cand)
        if fallback is not None:  # no daemon anywhere: report it on the first bus
            return self._adopt(*fallback)
        assert last is not None
        raise last

    def _ensure_remote(self, host: Host) -> Any:
        from taskctl.sshlink import SshFailed, connect_timeout, open_remote

        choice = self.requested or BusChoice("system")
        try:
            conn = open_remote(host, self.requested, connect_timeout(CONNECT_TIMEOUT))
        except SshFailed as exc:
            raise _unreachable(choice, exc.reason, host=host) from None
        return self._adopt(conn, Candidate(choice, choice.address))

    def _adopt(self, conn: Any, cand: Candidate) -> Any:
        from jeepney import MatchRule

        self._conn = conn
        self.choice = cand.choice
        self._matches = []
        # Every signal the bus routes to us is kept while subscribed (our match
        # rules decide which come); event_of() picks the ones that mean something.
        self._filter = conn.filter(MatchRule(type="signal"), queue=deque())
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._matches = []
        self._filter = None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _unreachable(self, reason: str, cause: str = Unreachable.NO_BUS) -> Unreachable:
        return _unreachable(self._where(), reason, cause, self.host)

    def _where(self) -> BusChoice:
        if self.choice is not None:
            return self.choice
        if self.host is not None:
            return self.requested or BusChoice("system")
        return self.requested or BusChoice("system" if os.geteuid() == 0 else "user")

    def _call(self, member: str, signature: str = "", body: Sequence[Any] = (), *,
              destination: str = BUS_NAME, path: str = MANAGER_PATH,
              interface: str = MANAGER_IFACE, timeout: float | None = None) -> Any:
        """The reply (a jeepney Message, METHOD_RETURN); errors raised typed.
        `timeout`: seconds to wait for the reply (default: the client's)."""
        from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call

        limit = self.timeout if timeout is None else timeout
        with self._request():
            conn = self._ensure()
            msg = new_method_call(DBusAddress(path, bus_name=destination, interface=interface),
                                  member, signature or None, tuple(body))
            try:
                reply = conn.send_and_get_reply(msg, timeout=limit)
            except TimeoutError:
                raise self._unreachable(f"no reply to {member} within {limit:g} s",
                                   Unreachable.NO_REPLY) from None
            self._keep_signals()
        if reply.header.message_type is MessageType.error:
            close_fds(reply.body)
            name = reply.header.fields.get(HeaderFields.error_name) or \
                "org.freedesktop.DBus.Error.Failed"
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            if (name in GONE_ERRORS and destination == BUS_NAME) or (
                    name == "org.freedesktop.DBus.Error.NameHasNoOwner" and destination == DBUS_NAME):
                raise self._unreachable(f"{BUS_NAME} has no owner", Unreachable.NO_OWNER)
            if name in SILENT_ERRORS:
                raise self._unreachable(f"taskmasterd did not reply: {text or name}",
                                   Unreachable.NO_REPLY)
            raise CallError(name, text)
        return reply

    def _keep_signals(self) -> None:
        """Move the signals received so far to our queue (or drop them when
        not subscribed): the filter's deque must not grow without a reader."""
        if self._filter is None:
            return
        received = self._filter.queue
        if self._signals is None:
            received.clear()
            return
        while received:
            self._signals.append(received.popleft())

    # -- generic API ---------------------------------------------------------------

    def connect(self) -> BusChoice:
        """Connect now (else the first request does); returns the bus chosen."""
        with self._request():
            self._ensure()
        assert self.choice is not None
        return self.choice

    def call(self, member: str, signature: str = "", body: Sequence[Any] = (), *,
             destination: str = BUS_NAME, path: str = MANAGER_PATH,
             interface: str = MANAGER_IFACE) -> list[Any]:
        """Any method call; returns the reply body (unix fds in it are closed).
        Variants come back as (signature, value) pairs."""
        reply = self._call(member, signature, body, destination=destination, path=path,
                           interface=interface)
        close_fds(reply.body)
        return list(reply.body)

    def get_property(self, name: str, *, interface: str = MANAGER_IFACE,
                     path: str = MANAGER_PATH) -> Any:
        [(_signature, value)] = self.call("Get", "ss", [interface, name], path=path,
                                          interface=PROPERTIES_IFACE)
        return value

    def call_fd(self, member: str, signature: str, body: Sequence[Any], *,
                path: str = MANAGER_PATH, interface: str = MANAGER_IFACE) -> int:
        """A method returning a file descriptor (h): the fd (the caller closes it)."""
        from jeepney import FileDescriptor

        if self.host is not None:
            # Not even asked: systemd-stdio-bridge there would drop the whole
            # link on a reply carrying one. `tail` runs taskctl there instead.
            raise CallError("org.freedesktop.DBus.Error.NotSupported",
                            f"{member} passes a file descriptor, and descriptors do not cross "
                            f"ssh (taskctl -H {self.host}: see docs/remote.md)")
        reply = self._call(member, signature, body, path=path, interface=interface)
        fd = reply.body[0] if reply.body else None
        if not isinstance(fd, FileDescriptor):
            close_fds(reply.body)
            raise CallError("org.taskmaster.Taskmaster1.Error.Failed",
                            f"{member} returned no file descriptor (is fd passing "
                            "supported by this bus?)")
        return int(fd.to_raw_fd())

    # -- misc -----------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Wait, interruptibly (SIGINT in the main thread, or `cancel()`)."""
        self._cancelled.clear()
        if self._cancelled.wait(seconds):
            raise KeyboardInterrupt

    def close(self) -> None:
        if self._closed:
            return
        self._drop()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
