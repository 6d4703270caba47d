"""`TaskmasterBus`: the daemon's dbus-next MessageBus, with the fixes it needs.

Every fix is an override in this subclass (or in the writer and reader it
makes, writer.py and reader.py): the library's classes are left as they are,
so any other MessageBus in the process (a test's client) is the library's
own. It overrides private methods of dbus-next 0.2.3 (the version Debian 12
ships): pinned.py refuses any other version before a bus is made.

What each override replaces, and why:

- `__init__`: `_writer` is a `writer.Writer` (a full socket no longer drops
  the connection; faster marshalling; fds closed once sent).
- `_create_unmarshaller`: a `reader.Reader` (faster reading; bodies nothing
  on this bus would read are dropped unread, fds nobody takes closed).
- `_emit_interface_added` / `_emit_interface_removed`: the library sends
  InterfacesAdded/InterfacesRemoved from the exported object's own path;
  the D-Bus specification (and GDBusObjectManagerClient, busctl) expect them
  from the ObjectManager's path. For objects strictly below `manager_path`
  they now come from there (same interface, member and body); other objects
  keep the library behaviour; an interface with an `interfaces_added_body(path)`
  method (signals.TrustedInterface: what GetAll answers, encoded by the
  object, unchecked: the daemon's own values) gives its properties
  directly. Both are written to bytes here (`send_signal_body`: no
  Message, no second check of a body the library's Variants or our code made).
  `GetManagedObjects` needs no change: 0.2.3
  answers it on a path P with the objects strictly below P. Exports inside
  `unannounced_exports()` send nothing.
- `export` / `unexport` / `_interface_signal_notify` / `_has_interface`:
  every signal an exported interface emits goes through
  `_interface_signal_notify`, which finds the interface's path by scanning
  every export (1000 programs: as much time as fork+exec when they all
  start), and `unexport` scans every export for each interface leaving
  (`_has_interface`: removing or disconnecting N task objects cost O(N^2)).
  An exact index interface -> its paths is kept instead, updated by each
  export and unexport. The signal is written to bytes without a `Message`
  (whose validators cost as much as the writing): its path is one
  `export` checked, its interface and member names are checked once per
  pair, its body as `marshall` checks it; a signal with fds still goes
  through a Message. `send_interface_signal` (not an override) is the same
  with the body already encoded: signals.py's signals (the daemon's own
  bodies, encoded unchecked once for every bus).
- `_find_message_handler`: the library compares a call with every method
  of every interface on its path (the Manager's thirty for each
  SubmitTask); a call to one of our interfaces finds its method in an
  index (interface class -> (member, signature) -> the first enabled
  method, in the library's order): the same handler. Calls to the
  org.freedesktop.DBus.* interfaces, or without an interface, are left to it.
- `_make_method_handler`: handlers get only their arguments; the caller's
  unique name is put in the context variable `CALLER` (with this bus) for
  the call (a coroutine handler's task copies the context when made), so
  `caller_uid()` can ask the bus who called (a cancel's reason says who;
  a submission's runs as the caller). The bus is asked once per sender
  (`caller_uids`: unique names are never reused on a bus): it was a round
  trip to the bus daemon, and two messages, per submitted task.
- `_send_reply`: 0.2.3's `SendReply.__exit__` does not return what `_exit`
  decided, so a `DBusError` raised by a handler, although answered, also
  propagates and is logged at ERROR with a traceback. Here `DBusError`s are
  suppressed; any other exception is answered as before
  (`com.dubstepdish.dbus.next.ServiceError` with the traceback in its text)
  and still logged. The library also made a new SendReply class for each
  call: replies.SendReply is the library's, fixed, made once.

`close(bus)` (any aio MessageBus): 0.2.3 never closes a bus's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus
from dbus_next.constants import ErrorType
from dbus_next.errors import DBusError
from dbus_next.service import ServiceInterface
from dbus_next.validators import (
    assert_interface_name_valid,
    assert_member_name_valid,
    assert_object_path_valid,
)

from taskmasterd.bus import pinned, wire
from taskmasterd.bus.marshall import signal_message
from taskmasterd.bus.reader import Reader
from taskmasterd.bus.replies import SendReply
from taskmasterd.bus.writer import Writer

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

log = logging.getLogger(__name__)

# (bus, sender) of the method call being handled; None outside a call.
CALLER: contextvars.ContextVar[tuple[MessageBus, str] | None] = contextvars.ContextVar(
    "taskmaster_dbus_caller", default=None)


# The library's own interfaces (Introspectable, Properties, Peer,
# ObjectManager): _find_message_handler leaves their calls to the library.
_FREEDESKTOP = "org.freedesktop.DBus."
# class of an exported interface -> (member, in-signature) -> its first enabled method
_METHODS: dict[type, dict[tuple[str, str], Any]] = {}


def _methods_of(interface: Any) -> dict[tuple[str, str], Any]:
    """The interface's enabled methods by (name, in-signature), the first of
    each in the library's order; once per class (the library's method list
    is the class's: ServiceInterface.__init__ scans `type(self)`)."""
    methods = _METHODS.get(type(interface))
    if methods is None:
        methods = {}
        for method in ServiceInterface._get_methods(interface):
            if not method.disabled:
                methods.setdefault((method.name, method.in_signature), method)
        _METHODS[type(interface)] = methods
    return methods


READ_BURST = 64  # messages read per loop turn (_message_reader)


class TaskmasterBus(MessageBus):  # type: ignore[misc]
    """`MessageBus(bus_address, bus_type, auth, negotiate_unix_fd)`, plus `manager_path`:
    the ObjectManager's path (None: the library's signals). Raises pinned.WrongDbusNext
    when the installed dbus-next is not the one these overrides were written for."""

    _unmarshaller: Reader  # the library's attribute (set by _create_unmarshaller)

    def __init__(self, bus_address: str | None = None, bus_type: BusType = BusType.SESSION,
                 auth: Any = None, negotiate_unix_fd: bool = False,
                 manager_path: str | None = None) -> None:
        pinned.check_installed()
        if manager_path is not None:
            assert_object_path_valid(manager_path)
        self.manager_path = manager_path
        self._announce = True
        # id(interface) -> the paths it is exported on, in export order; ids
        # are safe keys: _path_exports keeps the interfaces alive, and an
        # interface leaves this map when it leaves the last of its paths.
        self._paths_of: dict[int, list[str]] = {}
        # sender -> its uid (being asked, or known): caller_uid()
        self.caller_uids: OrderedDict[str, asyncio.Future[int | None]] = OrderedDict()
        # (interface, member) of signals whose names were found valid
        self._signal_names: set[tuple[str, str]] = set()
        self._reading_soon = False  # _message_reader goes on next turn
        super().__init__(bus_address, bus_type, auth, negotiate_unix_fd)
        self._writer = Writer(self)

    def _create_unmarshaller(self) -> Reader:
        """Replaces dbus-next 0.2.3's aio `MessageBus._create_unmarshaller` (its body, with Reader)."""
        return Reader(self._stream, self._sock if self._negotiate_unix_fd else None, bus=self)

    def _message_reader(self) -> None:
        """Replaces dbus-next 0.2.3's aio `MessageBus._message_reader`: the
        same, READ_BURST messages at a time. The library reads until the
        socket is empty before any handler runs (a method's handler is a task,
        it runs on a later loop turn): a client sending 1000 SubmitTask calls
        had the first one wait for all 1000 to be read, ~70 ms here. The rest
        is read on the next turn, after the handlers of this burst (the
        stream may hold them already read: epoll would not say so)."""
        self._reading_soon = False
        try:
            for _ in range(READ_BURST):
                if not self._unmarshaller.unmarshall():
                    return
                self._on_message(self._unmarshaller.message)
                self._unmarshaller = self._create_unmarshaller()
        except Exception as e:  # the library's own handling: the connection is finished
            self._finalize(e)
            return
        if not self._disconnected:
            self._reading_soon = True
            self._loop.call_soon(self._read_on)

    def _read_on(self) -> None:
        if self._reading_soon and not self._disconnected:
            self._message_reader()

    # ---- ObjectManager ----------------------------------------------------
    # Where the ObjectManager lives is decided here: `object_manager_of` for
    # the signals; `_introspect_export_path` and
    # `_default_get_managed_objects_handler` keep the interface itself on
    # `manager_path` only (0.2.3 lists it on every exported node, via
    # intr.Node.default, and answers GetManagedObjects on any path).

    def _introspect_export_path(self, path: str) -> Any:
        """Replaces dbus-next 0.2.3's `BaseMessageBus._introspect_export_path`
        (calls it, then drops the ObjectManager from nodes other than ours)."""
        node = super()._introspect_export_path(path)
        if self.manager_path is not None and path != self.manager_path:
            node.interfaces = [i for i in node.interfaces if i.name != OBJECT_MANAGER]
        return node

    def _default_get_managed_objects_handler(self, msg: Any, send_reply: Any) -> None:
        """Replaces dbus-next 0.2.3's `BaseMessageBus._default_get_managed_objects_handler`:
        GetManagedObjects anywhere but `manager_path` is UnknownMethod."""
        manager = self.manager_path
        if manager is not None and msg.path != manager:
            raise DBusError(ErrorType.UNKNOWN_METHOD,
                            f"no {OBJECT_MANAGER} at {msg.path}: it is at {manager}")
        super()._default_get_managed_objects_handler(msg, send_reply)

    def object_manager_of(self, path: str) -> str | None:
        """The path InterfacesAdded/Removed for an object at `path` come from
        when it is not `path` itself: `manager_path` for objects strictly below it."""
        manager = self.manager_path
        if manager is None or path == manager:
            return None
        return manager if path.startswith("/" if manager == "/" else manager + "/") else None

    @contextlib.contextmanager
    def unannounced_exports(self) -> Iterator[None]:
        """Objects exported inside this block get no InterfacesAdded signal.

        For objects exported before the bus name is requested: such a signal
        would come from a connection no client can know yet (a match on our
        well-known name does not match it), and costs a GetAll of the object's
        properties plus a message (1000 programs: 0.2 s of start-up). Clients
        learn of these objects with GetManagedObjects once the name is ours.
        """
        self._announce = False
        try:
            yield
        finally:
            self._announce = True

    def _emit_interface_added(self, path: str, interface: Any) -> None:
        """Replaces dbus-next 0.2.3's `BaseMessageBus._emit_interface_added` (module docstring)."""
        if not self._announce:
            return
        manager = self.object_manager_of(path)
        if manager is None:
            super()._emit_interface_added(path, interface)
            return
        if self._disconnected:
            return
        announced = getattr(interface, "interfaces_added_body", None)
        body = announced(path) if announced is not None else None
        if body is not None:
            # The object gives its properties at once (one task per
            # submission: the library's GetAll calls each getter through
            # its machinery, most of an export's cost), already encoded
            # (signals.TrustedInterface: the daemon's own values).
            self.send_signal_body(manager, OBJECT_MANAGER, "InterfacesAdded", "oa{sa{sv}}", body)
            return

        def on_properties(interface: Any, result: dict[str, Any], _user_data: Any,
                          e: Exception | None) -> None:
            if e is not None:
                log.error("could not read every property of %s at %s for InterfacesAdded: "
                          "some are left out", interface.name, path, exc_info=e)
            # (Variants: checked when made)
            self.send_signal_body(manager, OBJECT_MANAGER, "InterfacesAdded", "oa{sa{sv}}",
                                  wire.encode_trusted("oa{sa{sv}}", [path, {interface.name: result}]))

        ServiceInterface._get_all_property_values(interface, on_properties)

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        """Replaces dbus-next 0.2.3's `BaseMessageBus._emit_interface_removed` (module docstring)."""
        manager = self.object_manager_of(path)
        if manager is None:
            super()._emit_interface_removed(path, removed_interfaces)
            return
        if self._disconnected:
            return
        self.send_signal_body(manager, OBJECT_MANAGER, "InterfacesRemoved", "oas",
                              wire.encode_trusted("oas", [path, removed_interfaces]))

    # ---- signals, written here --------------------------------------------

    def send_signal_body(self, path: str, interface_name: str, member: str, signature: str,
                         body: bytes | bytearray) -> None:
        """Send the signal `Message.new_signal(path, interface_name, member,
        signature, <values>)` whose values `body` is the encoding of: the same
        bytes, the same serial and place in the queue as `send` gives it, no
        Message made. The names are not checked: `path` must be one export()
        checked (or `manager_path`), the names the daemon's own or checked by
        `_interface_signal_notify`."""
        self._writer.queue_bytes(signal_message(self.next_serial(), path, interface_name, member,
                                                signature, body))

    def send_interface_signal(self, interface: Any, interface_name: str, member: str,
                              signature: str, body: bytes | bytearray) -> None:
        """`_interface_signal_notify` with the values already encoded (signals.py):
        from the path the interface was last exported on."""
        paths = self._paths_of.get(id(interface))
        if not paths:
            raise Exception("Could not find interface on bus (this is a bug in dbus-next)")
        self.send_signal_body(paths[-1], interface_name, member, signature, body)

    # ---- signal paths -----------------------------------------------------

    def export(self, path: str, interface: Any) -> None:
        super().export(path, interface)
        self._paths_of.setdefault(id(interface), []).append(path)

    def unexport(self, path: str, interface: Any = None) -> None:
        exports = self._path_exports.get(path, [])
        if interface is None:
            leaving = list(exports)
        else:  # the library's rule: the first one of that name, or that one
            leaving = [next((i for i in exports if (i.name == interface if isinstance(interface, str)
                                                    else i is interface)), None)]
        for iface in leaving:
            paths = self._paths_of.get(id(iface)) if iface is not None else None
            if paths is not None and path in paths:
                paths.remove(path)
                if not paths:
                    del self._paths_of[id(iface)]
        super().unexport(path, interface)

    def _has_interface(self, interface: Any) -> bool:
        """Replaces dbus-next 0.2.3's `BaseMessageBus._has_interface` (a scan
        of every export, called by unexport for each interface leaving: a
        clean-up of N tasks cost O(N^2), as did disconnecting)."""
        return id(interface) in self._paths_of

    def _interface_signal_notify(self, interface: Any, interface_name: str, member: str,
                                 signature: str, body: list[Any],
                                 unix_fds: list[int] | None = None) -> None:
        """Replaces dbus-next 0.2.3's `BaseMessageBus._interface_signal_notify`: the same
        signal (path: the last one the interface was exported on), found in O(1),
        written without a Message (its names checked once, its body as `marshall` does)."""
        paths = self._paths_of.get(id(interface))
        if not paths:
            raise Exception("Could not find interface on bus (this is a bug in dbus-next)")
        if unix_fds:
            self.send(Message.new_signal(path=paths[-1], interface=interface_name, member=member,
                                         signature=signature, body=body, unix_fds=unix_fds))
            return
        if (interface_name, member) not in self._signal_names:
            # what Message() would refuse (the path: export() checked it)
            assert_interface_name_valid(interface_name)
            assert_member_name_valid(member)
            self._signal_names.add((interface_name, member))
        self.send_signal_body(paths[-1], interface_name, member, signature,
                              wire.encode_body(signature, body))

    # ---- method calls -----------------------------------------------------

    def _find_message_handler(self, msg: Any) -> Any:
        """Replaces dbus-next 0.2.3's `BaseMessageBus._find_message_handler`
        (module docstring): the same handler, the method found in an index."""
        interface_name = msg.interface
        if interface_name is None or interface_name.startswith(_FREEDESKTOP):
            return super()._find_message_handler(msg)
        for interface in self._path_exports.get(msg.path, ()):
            if interface.name == interface_name:
                method = _methods_of(interface).get((msg.member, msg.signature))
                return None if method is None else self._make_method_handler(interface, method)
        return None

    # ---- the caller -------------------------------------------------------

    def _make_method_handler(self, interface: Any, method: Any) -> Any:
        """dbus-next 0.2.3's `_make_method_handler`, with `CALLER` set during the call."""
        handler = super()._make_method_handler(interface, method)

        def with_caller(msg: Any, send_reply: Any) -> None:
            token = CALLER.set((self, msg.sender or ""))
            try:
                handler(msg, send_reply)
            finally:
                CALLER.reset(token)
        return with_caller

    # ---- replies ----------------------------------------------------------

    def _send_reply(self, msg: Any) -> SendReply:
        """Replaces dbus-next 0.2.3's `BaseMessageBus._send_reply`: its `SendReply`,
        a class made once, whose `__exit__` also suppresses the DBusError it
        has answered (module docstring, replies.py)."""
        return SendReply(self, msg)


async def close(bus: Any, timeout: float = 5.0) -> None:
    """Disconnect `bus` (any dbus-next aio MessageBus), wait (at most `timeout` s) until
    dbus-next has finalized it, close its socket.

    0.2.3 never closes a bus's socket (`disconnect()` only shuts it down): the
    fd lives until the MessageBus is garbage-collected (then a ResourceWarning).
    Safe on a bus already disconnected or dropped by an error (the error is not raised again).
    """
    if not bus._disconnected:
        # Flush first: the writer is FIFO, so once a call to the bus daemon is
        # answered, every reply queued before it (Shutdown's own) has left.
        # GetId: the system bus's default policy lets anyone call the
        # org.freedesktop.DBus interface, not Peer.Ping (dbus-daemon would
        # log a "Rejected send message" at every stop and re-exec).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await bus.call(Message(destination="org.freedesktop.DBus",
                                       path="/org/freedesktop/DBus",
                                       interface="org.freedesktop.DBus", member="GetId"))
        bus.disconnect()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await bus.wait_for_disconnect()
    if not bus._disconnected:  # the reader never saw the end: finalize it ourselves
        bus._finalize(None)
    with contextlib.suppress(Exception):
        bus._disconnect_future.exception()  # retrieved: no "exception was never retrieved"
    for closeable in (bus._stream, bus._sock):
        with contextlib.suppress(OSError):
            closeable.close()


# Senders whose uid a bus keeps (the most recently seen): unique names are
# never reused on a bus, so a sender's uid never changes and needs no
# invalidation; a new connection (a new bus, maybe a restarted daemon whose
# names start again at :1.1) starts with none.
CALLER_UIDS = 256


async def caller_uid(timeout: float = 5.0) -> tuple[str, int | None]:
    """(unique name, uid) of the caller of the method call being handled (its
    handler's context): the uid from the bus (GetConnectionUnixUser), None
    when the bus would not tell; ("", None) outside a call.

    A TaskmasterBus asks once per sender (`caller_uids`: the last CALLER_UIDS
    senders' answers, calls arriving while a question is out wait for it);
    a None is not kept: the next call asks again."""
    caller = CALLER.get()
    if caller is None:
        return "", None
    bus, sender = caller
    if not sender:
        return "", None
    uids: OrderedDict[str, asyncio.Future[int | None]] | None = getattr(bus, "caller_uids", None)
    if uids is None:  # (CALLER is set by TaskmasterBus only)
        return sender, await _ask_uid(bus, sender, timeout)
    lookup = uids.get(sender)
    if lookup is not None:
        uids.move_to_end(sender)
    else:
        lookup = uids[sender] = asyncio.ensure_future(_ask_uid(bus, sender, timeout))
        if len(uids) > CALLER_UIDS:
            uids.popitem(last=False)

        def forget_unknown(done: asyncio.Future[int | None], sender: str = sender) -> None:
            if (done.cancelled() or done.result() is None) and uids.get(sender) is done:
                del uids[sender]
        lookup.add_done_callback(forget_unknown)
    if lookup.done():
        return sender, None if lookup.cancelled() else lookup.result()
    # shielded: a call cancelled while waiting leaves the question to the others
    return sender, await asyncio.shield(lookup)


async def _ask_uid(bus: Any, sender: str, timeout: float) -> int | None:
    """The bus's GetConnectionUnixUser for `sender`, None when it would not tell."""
    try:
        async with asyncio.timeout(timeout):
            reply = await bus.call(Message(destination="org.freedesktop.DBus",
                                           path="/org/freedesktop/DBus",
                                           interface="org.freedesktop.DBus",
                                           member="GetConnectionUnixUser", signature="s",
                                           body=[sender]))
    except Exception:  # the bus went away, or is slow: the name will do
        return None
    if reply is None or reply.message_type is not MessageType.METHOD_RETURN or \
            reply.signature != "u":
        return None
    return int(reply.body[0])
