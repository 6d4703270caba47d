"""taskctl's bus connection at the jeepney level: opening it (with a limit
on every step), reading from it without missing a Ctrl-C, and turning the
signals received into taskctl's events. Used by `taskctl.link` and
`taskctl.subscriber` (its names DBUS_NAME and DBUS_PATH by others too)."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Sequence
from typing import Any

from taskctl.buses import address_problem
from taskctl.model import ActivityChanged, Event, OwnerChanged, Reloaded, StateChange, TaskChanged
from taskctl.wakeup import SignalWakeup
from taskmasterd.bus.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
NO_WAKEUP_SLICE = 0.5  # seconds: a wait that no signal can wake looks again this often


def received(conn: Any) -> bool:
    """Read one message if one is buffered or readable now (without blocking)."""
    try:
        conn.recv_messages(timeout=0)
    except TimeoutError:
        return False
    return True


def wait_readable(sock: socket.socket, timeout: float | None) -> None:
    """Block until `sock` is readable, `timeout` seconds pass, or a signal
    arrives: then its Python handler runs here (SIGINT: KeyboardInterrupt).

    A blocking wait alone would miss a SIGINT that lands just before it
    starts (CPython runs the handler between bytecodes, and nothing wakes a
    wait that begins after) or in another thread (`taskmasterd --shell`:
    the kernel may give it to the daemon's thread; only the main thread is
    woken by EINTR): `events` then hung until the next event. The signal
    wakeup fd catches both: whichever thread takes the signal writes a byte
    to it, and a byte written before the wait makes the wait return at once.
    """
    wake = SignalWakeup.install()
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if wake is not None:
            poller.register(wake.read, select.POLLIN)
        elif timeout is None or timeout > NO_WAKEUP_SLICE:
            timeout = NO_WAKEUP_SLICE  # cannot be woken: look again soon
        poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
    finally:
        if wake is not None:
            wake.uninstall()


def event_of(msg: Any, now: float) -> Event | None:
    """A signal as one of taskctl's events (None: not one we know)."""
    from jeepney import HeaderFields

    fields = msg.header.fields
    member, signature = fields.get(HeaderFields.member), fields.get(HeaderFields.signature, "")
    try:
        if (fields.get(HeaderFields.interface) == MANAGER_IFACE
                and fields.get(HeaderFields.path) == MANAGER_PATH):
            # pid: i up to API 1.0, u since (as everywhere else): both read
            if member == "ProcessStateChanged" and signature == "ssssuib":
                process, program, old, new, pid, status, expected = msg.body
                return StateChange(process, program, old, new, int(pid), int(status),
                                   bool(expected), now)
            if member == "Reloaded" and signature == "asasas":
                added, changed, removed = msg.body
                return Reloaded(tuple(added), tuple(changed), tuple(removed), now)
            if member == "TaskStateChanged" and signature == "sssssis":
                tid, name, activity, old, new, code, reason = msg.body
                return TaskChanged(tid, name, activity, old, new, int(code), reason, now)
            if member == "ActivityStateChanged" and signature == "ssssss":
                aid, name, old, new, failed, reason = msg.body
                return ActivityChanged(aid, name, old, new, failed, reason, now)
        elif (member == "NameOwnerChanged" and fields.get(HeaderFields.sender) == DBUS_NAME
              and msg.body and msg.body[0] == BUS_NAME):
            return OwnerChanged(str(msg.body[2]), now)
    except (ValueError, TypeError):
        return None
    return None


def close_fds(values: Sequence[Any] | None) -> None:
    """Close the file descriptors found among a reply's values (fds we did not ask for)."""
    from jeepney import FileDescriptor

    for value in values or ():
        if isinstance(value, FileDescriptor):
            value.close()


def open_bus(address: str, timeout: float) -> Any:
    """A jeepney connection to the bus at `address`, authenticated, with fd
    passing (OpenLog), Hello said."""
    from jeepney.bus import get_bus
    from jeepney.io.blocking import prep_socket

    problem = address_problem(address)
    if problem is not None:  # jeepney's own words would be "not enough values to unpack"
        raise ValueError(problem)
    sock = prep_socket(get_bus(address), enable_fds=True, timeout=timeout)
    return say_hello(sock, timeout, enable_fds=True)


def say_hello(sock: socket.socket, timeout: float, *, enable_fds: bool,
              connection_class: Any = None) -> Any:
    """The jeepney connection on an authenticated `sock` (closed on failure).

    jeepney says Hello in the constructor and waits for the answer without a
    limit: a bus that authenticates us and then never answers would hang
    taskctl. Past the limit, the socket is shut down and the wait ends."""
    if connection_class is None:
        from jeepney.io.blocking import DBusConnection

        connection_class = DBusConnection
    hung = threading.Event()

    def give_up() -> None:
        hung.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    watchdog = threading.Timer(timeout, give_up)
    watchdog.start()
    conn, error = None, None
    try:
        conn = connection_class(sock, enable_fds=enable_fds)
    except BaseException as exc:  # Ctrl-C included: re-raised below
        error = exc
    watchdog.cancel()
    watchdog.join()  # give_up() is not running any more: `hung` is final
    if hung.is_set():
        if conn is not None:
            conn.close()
        sock.close()
        raise TimeoutError(f"no answer to Hello within {timeout:g} s")
    if conn is None:
        sock.close()
        assert error is not None
        raise error
    return conn


def has_owner(conn: Any, name: str, timeout: float) -> bool:
    """Whether `name` has an owner on the bus of `conn`."""
    from jeepney import DBusAddress, MessageType, new_method_call

    bus = DBusAddress(DBUS_PATH, bus_name=DBUS_NAME, interface=DBUS_NAME)
    reply = conn.send_and_get_reply(new_method_call(bus, "NameHasOwner", "s", (name,)),
                                    timeout=timeout)
    return bool(reply.header.message_type is MessageType.method_return and reply.body
                and reply.body[0])
