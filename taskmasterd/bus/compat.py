"""Work-arounds for traps of dbus-next 0.2.3 (the version Debian 12 ships).

1. `install()` — `dbus_next.aio.message_bus._MessageWriter.write_callback`
   treats `BlockingIOError` from `sock.send`/`sendmsg` (the kernel buffer is
   full) as a fatal error and finalizes the connection: a burst of a few
   hundred signals drops the bus. The replacement treats it (and
   `InterruptedError`) as "nothing was written": the message stays at the head
   of the queue, with its unix fds (they are cleared only once `sendmsg`
   succeeded), and the loop's writer callback stays registered, so writing
   resumes when the socket is writable again. Any other error still
   finalizes the bus, as before. Everything else is the library's code.
   `install()` patches the class (all buses) and is idempotent; call it
   before connecting.

2. `set_object_manager(bus, manager_path)` — `BaseMessageBus.
   _emit_interface_added/_removed` send `InterfacesAdded`/`InterfacesRemoved`
   from the exported object's own path; the D-Bus specification (and
   GDBusObjectManagerClient, busctl) expect them from the ObjectManager's
   path. For objects strictly below `manager_path`, this bus now emits them
   from `manager_path` (same interface, member and body). Other objects — and
   other buses — keep the library behaviour.

   `GetManagedObjects` needs no change: 0.2.3 answers it on a path P with the
   objects strictly below P (all objects when P is "/"), so on
   `manager_path` it returns exactly the managed objects. (It also answers on
   any other path; harmless.)

3. `install_error_reply_fix()` (separate, opt-in) — a handler raising a
   `DBusError` gets the right error reply sent, but 0.2.3's `SendReply.__exit__`
   does not return what `_exit` decided, so the exception propagates anyway and
   is logged at ERROR with a traceback ("got unexpected error processing a
   message" on the root logger for plain handlers, "Exception in callback ...
   done()" on the asyncio logger for coroutine handlers). The fix suppresses
   `DBusError`s (already answered) only; any other exception is answered as
   before (`com.dubstepdish.dbus.next.ServiceError` with the traceback in its
   text — not org.freedesktop.DBus.Error.ServiceError) and still propagates
   to the log.

4. `close(bus)` — 0.2.3 never closes a bus's socket (`disconnect()` only shuts
   it down): the fd lives until the MessageBus is garbage-collected (then a
   ResourceWarning). `await close(bus)` disconnects, waits for the library to
   finalize the bus, and closes the socket.

5. `index_signal_paths(bus)` — every signal an exported interface emits
   (its own, and PropertiesChanged) goes through `BaseMessageBus.
   _interface_signal_notify`, which finds the interface's path by scanning
   every exported interface: with 1000 programs exported, starting them all
   spent nearly as much time in that scan as in fork+exec (py-spy). This bus now keeps a map
   interface -> path, dropped by `export`/`unexport` and rebuilt on the next
   signal; the signal sent is the library's (same path — the last one the
   interface was exported on —, interface, member, body).

6. `unannounced_exports(bus)` — not a library bug: a context manager that
   exports without InterfacesAdded, for objects exported before the bus name
   is owned (see its docstring).

7. `install_fast_marshall()` / `install_fast_unmarshall()` (opt-in, global)
   — dbus-next's codec is slow: a small signal's header alone costs ~30 µs
   (a generic `yyyyuua(yv)` structure, a Variant per field), a reply of 1000
   process rows ~8 ms to write and ~14 ms to read. The replacements write the
   header directly and bodies with `wire` (signatures compiled once), and
   read header and body with `wire`: the same bytes and values, the same
   type checks (the tests compare both with the library's on generated
   messages).

8. `skip_unwanted_bodies(bus)` (per bus, with 7.) — dbus-next decodes a
   method call's whole body before it looks for a method with that
   signature: a caller allowed to call anything could make the daemon decode
   30 MB of strings to be told UnknownMethod (memory never given back).
   Bodies nothing would read are now read off the socket in 64 KB pieces and
   dropped; the header alone gets the library's UnknownMethod reply. Fds
   received with such a message, or one that takes none, are closed (each
   call could leak up to the bus's per-message limit).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import importlib
import logging
import os
import socket
import struct
import types
from collections.abc import Iterator
from typing import Any

from taskmasterd.bus import wire

_OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
_MARK = "_taskmaster_compat_patched"

log = logging.getLogger(__name__)


def _module(name: str) -> Any:
    """A dbus-next module, typed Any: the library is typed only in some distributions."""
    return importlib.import_module(name)


def install() -> None:
    """Replace dbus-next's aio message writer callback by one that survives a full socket.

    Idempotent; affects every `dbus_next.aio.MessageBus` (a connected one from its
    next send on: `schedule_write` registers `self.write_callback` each time).
    """
    writer_cls = _module("dbus_next.aio.message_bus")._MessageWriter
    if getattr(writer_cls.write_callback, _MARK, False):
        return
    setattr(_write_callback, _MARK, True)
    writer_cls.write_callback = _write_callback


# Header fields in the order dbus-next writes them: (attribute, code, type).
_HEADER_FIELDS = (("path", 1, "o"), ("interface", 2, "s"), ("member", 3, "s"),
                  ("error_name", 4, "s"), ("reply_serial", 5, "u"), ("destination", 6, "s"),
                  ("signature", 8, "g"))
_UNIX_FDS = 9
# What the replacements replaced, by "Class.method" (for the tests' comparisons).
LIBRARY: dict[str, Any] = {}


def _replace(cls: Any, attribute: str, replacement: Any) -> None:
    """`cls.attribute = replacement`, once; the library's kept in LIBRARY."""
    if getattr(getattr(cls, attribute), _MARK, False):
        return
    setattr(replacement, _MARK, True)
    LIBRARY[f"{cls.__name__}.{attribute}"] = getattr(cls, attribute)
    setattr(cls, attribute, replacement)


def install_fast_marshall() -> None:
    """Replace `Message._marshall` by `_fast_marshall` (idempotent)."""
    _replace(_module("dbus_next.message").Message, "_marshall", _fast_marshall)


def _fast_marshall(self: Any, negotiate_unix_fd: bool = False) -> bytes:
    """`Message._marshall` of dbus-next 0.2.3, with the header written directly."""
    body = wire.encode_body(self.signature, self.body)
    out = bytearray(16)  # 12 fixed bytes, the fields array's length, then 8-aligned structs
    fields = [(code, kind, getattr(self, attribute)) for attribute, code, kind in _HEADER_FIELDS]
    if self.unix_fds and negotiate_unix_fd:
        fields.append((_UNIX_FDS, "u", len(self.unix_fds)))
    for code, kind, value in fields:
        if not value:
            continue
        out += bytes(-len(out) % 8)  # each (yv) struct is 8-aligned
        out += bytes((code, 1, ord(kind), 0))  # the code, then the variant's signature
        if kind == "u":
            out += struct.pack("<I", value)  # already 4-aligned
        elif kind == "g":
            data = value.encode()
            out += bytes((len(data),)) + data + b"\0"
        else:  # "o" / "s": already 4-aligned
            data = value.encode()
            out += struct.pack("<I", len(data)) + data + b"\0"
    struct.pack_into("<BBBBIII", out, 0, ord("l"), self.message_type.value, self.flags.value, 1,
                     len(body), self.serial, len(out) - 16)
    out += bytes(-len(out) % 8)
    out += body
    return bytes(out)


def install_fast_unmarshall() -> None:
    """Replace `Unmarshaller._unmarshall` by `_fast_unmarshall` (idempotent)."""
    _replace(_module("dbus_next._private.unmarshaller").Unmarshaller, "_unmarshall",
             _fast_unmarshall)


def _fast_unmarshall(self: Any) -> None:
    """`Unmarshaller._unmarshall` of dbus-next 0.2.3 with the header and body
    read by `wire.decode_body` (the library's for a big-endian message).

    Same protocol with the reader: it raises MarshallerStreamEndError (from
    `read`) until the whole message is in `self.buf`, and is called again.

    On a bus given to `skip_unwanted_bodies`, a message whose body nothing
    would read (see `_body_wanted`) is not kept: its body is read off the
    socket in small pieces and dropped, and the message goes on with an empty
    body (dbus-next then answers UnknownMethod from the header alone). Unix
    fds received with a message whose signature has no 'h', or whose body
    is dropped, are closed: nothing would ever close them."""
    if getattr(self, "_taskmaster_skipping", None) is not None:
        _drop_body(self)
        return
    constants = _module("dbus_next.constants")
    self.offset = 0
    self.read(16, prefetch=True)
    if self.buf[0] != ord("l"):
        # (the class's own method, unless install_fast_unmarshall() replaced it)
        LIBRARY.get("Unmarshaller._unmarshall", type(self)._unmarshall)(self)
        return
    _endian, kind, flags, version, body_len, serial, header_len = struct.unpack_from(
        "<BBBBIII", self.buf, 0)
    message_type = constants.MessageType(kind)
    message_flags = constants.MessageFlag(flags)
    if version != 1:
        raise _module("dbus_next.errors").InvalidMessageError(
            f"got unknown protocol version: {version}")
    body_start = 16 + header_len + (-header_len & 7)  # the header is padded to 8
    self.offset = 16
    self.read(body_start - 16, prefetch=True)
    [raw_fields] = wire.decode_body("a(yv)", self.buf, 12)
    header_field = _module("dbus_next._private.constants").HeaderField
    fields = {header_field(code).name: variant.value for code, variant in raw_fields}
    signature = fields.get("SIGNATURE", "")
    bus = getattr(self, "_taskmaster_bus", None)
    header = (message_type, message_flags, serial, fields, signature)
    if body_len and bus is not None and not _body_wanted(bus, message_type, fields, signature):
        self._taskmaster_skipping = header
        self._taskmaster_left = body_len - (len(self.buf) - body_start)
        del self.buf[body_start:]
        _drop_body(self)
        return
    self.read(body_start - 16 + body_len, prefetch=True)
    body = wire.decode_body(signature, self.buf, body_start) if body_len else []
    self.offset = body_start + body_len
    _set_message(self, header, body)


def _set_message(self: Any, header: tuple[Any, Any, int, dict[str, Any], str],
                 body: list[Any], *, dropped: bool = False) -> None:
    message_type, message_flags, serial, fields, signature = header
    if self.unix_fds and (dropped or "h" not in signature):
        for fd in self.unix_fds:  # nothing will ever read them: they would leak
            with contextlib.suppress(OSError):
                os.close(fd)
        self.unix_fds = []
    self.message = _module("dbus_next.message").Message(
        destination=fields.get("DESTINATION"), path=fields.get("PATH"),
        interface=fields.get("INTERFACE"), member=fields.get("MEMBER"),
        message_type=message_type, flags=message_flags, error_name=fields.get("ERROR_NAME"),
        reply_serial=fields.get("REPLY_SERIAL"), sender=fields.get("SENDER"),
        unix_fds=self.unix_fds, signature=_module("dbus_next.signature").SignatureTree._get(signature),
        body=body, serial=serial)


_DROP_CHUNK = 65536
_MAX_FDS_PER_READ = 16  # dbus-next's own MAX_UNIX_FDS


def _drop_body(self: Any) -> None:
    """Read the rest of an unwanted body off the socket and forget it; then
    the message (header only). MarshallerStreamEndError when the socket has
    no more for now (called again when it is readable)."""
    unmarshaller = _module("dbus_next._private.unmarshaller")
    while self._taskmaster_left > 0:
        want = min(self._taskmaster_left, _DROP_CHUNK)
        if self.sock is not None:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    want, socket.CMSG_LEN(_MAX_FDS_PER_READ * 4))
            except BlockingIOError:
                raise unmarshaller.MarshallerStreamEndError() from None
            for level, kind, payload in ancdata:  # fds come with the first byte: not here
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[:len(payload) - len(payload) % 4])
                    for fd in fds:
                        with contextlib.suppress(OSError):
                            os.close(fd)
        else:
            data = self.stream.read(want)
            if data is None:
                raise unmarshaller.MarshallerStreamEndError()
        if not data:
            raise EOFError()
        self._taskmaster_left -= len(data)
    header = self._taskmaster_skipping
    self._taskmaster_skipping = None
    self.offset = len(self.buf)
    _set_message(self, header, [], dropped=True)


_PROPERTIES = "org.freedesktop.DBus.Properties"
_PROPERTIES_METHODS = frozenset({("Get", "ss"), ("Set", "ssv"), ("GetAll", "s")})
_NO_ARGUMENT_INTERFACES = frozenset({  # Introspect, Ping, GetMachineId, GetManagedObjects
    "org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer", _OBJECT_MANAGER})
_BUS_DRIVER = "org.freedesktop.DBus"


def _body_wanted(bus: Any, message_type: Any, fields: dict[str, Any], signature: str) -> bool:
    """Whether anything on `bus` would read this message's body.

    A method call: only when a handler takes exactly this signature — the
    same match as dbus-next's `_find_message_handler` (exported methods by
    path, interface, member and in-signature; the standard interfaces by
    their own signatures); any other call is answered UnknownMethod without
    looking at the body. A signal: only from the bus itself (NameOwnerChanged,
    NameAcquired...): the daemon subscribes to nothing else, yet anyone may
    send it a unicast signal. Replies come only to our own calls."""
    constants = _module("dbus_next.constants")
    if message_type is constants.MessageType.SIGNAL:
        return bool(fields.get("SENDER") == _BUS_DRIVER)
    if message_type is not constants.MessageType.METHOD_CALL:
        return True
    interface, member = fields.get("INTERFACE"), fields.get("MEMBER")
    if interface == _PROPERTIES:
        return (member, signature) in _PROPERTIES_METHODS
    if interface in _NO_ARGUMENT_INTERFACES:
        return signature == ""
    service = _module("dbus_next.service").ServiceInterface
    for exported in bus._path_exports.get(fields.get("PATH"), ()):
        if exported.name != interface:
            continue
        for m in service._get_methods(exported):
            if not m.disabled and m.name == member and m.in_signature == signature:
                return True
    return False


def skip_unwanted_bodies(bus: Any) -> None:
    """Make `bus` drop the body of a message nothing would read, unread and
    undecoded (see `_fast_unmarshall`; needs `install_fast_unmarshall()`).

    A caller allowed one method (ListProcesses) could send it 30 MB with the
    signature `as`: dbus-next decoded every string before answering
    UnknownMethod, and the daemon kept the memory (8 such calls: 1.6 GB).
    Per bus; for a bus with no message handlers of its own
    (`add_message_handler`): they would see such messages with an empty body.
    """
    library_create = types.MethodType(type(bus)._create_unmarshaller, bus)

    def create_unmarshaller() -> Any:
        unmarshaller = library_create()
        unmarshaller._taskmaster_bus = bus
        return unmarshaller

    bus._create_unmarshaller = create_unmarshaller
    bus._unmarshaller._taskmaster_bus = bus  # the current one: its next message on


# fds handed to a reply (OpenLog) that are ours to close once the kernel has
# a copy: dbus-next never closes the fds of a message it sends.
_CLOSE_AFTER_SEND: set[int] = set()


def close_after_send(fd: int) -> int:
    """Mark `fd` (returned by a handler as 'h') to be closed once sent."""
    _CLOSE_AFTER_SEND.add(fd)
    return fd


def _close_sent(fds: list[int]) -> None:
    for fd in fds:
        if fd in _CLOSE_AFTER_SEND:
            _CLOSE_AFTER_SEND.discard(fd)
            with contextlib.suppress(OSError):
                os.close(fd)


def installed() -> bool:
    """True when `install()` has patched the writer."""
    writer_cls = _module("dbus_next.aio.message_bus")._MessageWriter
    return bool(getattr(writer_cls.write_callback, _MARK, False))


def _write_callback(self: Any) -> None:
    """`_MessageWriter.write_callback` of dbus-next 0.2.3, except for the `BlockingIOError` case."""
    aio_message_bus = _module("dbus_next.aio.message_bus")
    _future_set_result = aio_message_bus._future_set_result
    _future_set_exception = aio_message_bus._future_set_exception

    try:
        while True:
            if self.buf is None:
                if self.messages.qsize() == 0:
                    # nothing more to write
                    self.loop.remove_writer(self.fd)
                    return
                buf, unix_fds, fut = self.messages.get_nowait()
                self.unix_fds = unix_fds
                self.buf = memoryview(buf)
                self.offset = 0
                self.fut = fut

            try:
                if self.unix_fds and self.negotiate_unix_fd:
                    ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                array.array("i", self.unix_fds))]
                    self.offset += self.sock.sendmsg([self.buf[self.offset:]], ancdata)
                    # the fds went with the first byte sent: never again
                    _close_sent(self.unix_fds)
                    self.unix_fds = None
                else:
                    self.offset += self.sock.send(self.buf[self.offset:])
            except (BlockingIOError, InterruptedError):
                # Kernel buffer full: nothing was written. Keep the message (and
                # its fds) at the head and wait for the socket to be writable.
                self.loop.add_writer(self.fd, self.write_callback)
                return

            if self.offset >= len(self.buf):
                # finished writing
                self.buf = None
                _future_set_result(self.fut, None)
            else:
                # wait for writable
                return
    except Exception as e:
        _future_set_exception(self.fut, e)
        if self.fut is not None and self.fut.done() and not self.fut.cancelled():
            # Most sends are fire-and-forget (signals, replies): nobody awaits
            # their future, and asyncio would print "Future exception was never
            # retrieved" with a traceback when it is collected. The error is the
            # connection's, reported once by _finalize (the disconnect future);
            # a caller that does await the future still gets it.
            self.fut.exception()
        self.bus._finalize(e)


def install_error_reply_fix() -> None:
    """Stop dbus-next from logging a traceback for every `DBusError` a handler raises.

    Idempotent; affects every bus. See the module docstring, item 3.
    """
    base = _module("dbus_next.message_bus").BaseMessageBus
    if getattr(base._send_reply, _MARK, False):
        return
    library_send_reply = base._send_reply
    dbus_error = _module("dbus_next.errors").DBusError

    def __exit__(send_reply: Any, exc_type: Any, exc_value: Any, tb: Any) -> bool:
        send_reply._exit(exc_type, exc_value, tb)
        return exc_type is not None and issubclass(exc_type, dbus_error)

    def _send_reply(self: Any, msg: Any) -> Any:
        send_reply = library_send_reply(self, msg)
        type(send_reply).__exit__ = __exit__  # a class of its own, made by each call
        return send_reply

    setattr(_send_reply, _MARK, True)
    base._send_reply = _send_reply


def set_object_manager(bus: Any, manager_path: str) -> None:
    """Make `bus` emit ObjectManager signals for objects below `manager_path` from `manager_path`.

    Per-bus: the bus instance's `_emit_interface_added`/`_emit_interface_removed`
    are overridden (instance attributes), the class is untouched. Calling it
    again replaces the previous manager path. Nothing needs exporting for the
    `org.freedesktop.DBus.ObjectManager` interface itself: dbus-next answers
    `GetManagedObjects` on every path.
    """
    Message = _module("dbus_next.message").Message
    ServiceInterface = _module("dbus_next.service").ServiceInterface
    _module("dbus_next.validators").assert_object_path_valid(manager_path)
    prefix = "/" if manager_path == "/" else manager_path + "/"
    cls = type(bus)
    library_added = types.MethodType(cls._emit_interface_added, bus)
    library_removed = types.MethodType(cls._emit_interface_removed, bus)

    def managed(path: str) -> bool:
        return path != manager_path and path.startswith(prefix)

    def emit_interface_added(path: str, interface: Any) -> None:
        if not managed(path):
            library_added(path, interface)
            return
        if bus._disconnected:
            return

        def on_properties(interface: Any, result: dict[str, Any], _user_data: Any,
                          e: Exception | None) -> None:
            if e is not None:
                log.error("could not read every property of %s at %s for InterfacesAdded: "
                          "some are left out", interface.name, path, exc_info=e)
            bus.send(Message.new_signal(path=manager_path, interface=_OBJECT_MANAGER,
                                        member="InterfacesAdded", signature="oa{sa{sv}}",
                                        body=[path, {interface.name: result}]))

        ServiceInterface._get_all_property_values(interface, on_properties)

    def emit_interface_removed(path: str, removed_interfaces: list[str]) -> None:
        if not managed(path):
            library_removed(path, removed_interfaces)
            return
        if bus._disconnected:
            return
        bus.send(Message.new_signal(path=manager_path, interface=_OBJECT_MANAGER,
                                    member="InterfacesRemoved", signature="oas",
                                    body=[path, removed_interfaces]))

    bus._emit_interface_added = emit_interface_added
    bus._emit_interface_removed = emit_interface_removed


@contextlib.contextmanager
def unannounced_exports(bus: Any) -> Iterator[None]:
    """Objects exported inside this block get no InterfacesAdded signal.

    For objects exported before the bus name is requested: such a signal
    would come from a connection no client can know yet (a match on our
    well-known name does not match it), and costs a GetAll of the object's
    properties plus a message (1000 programs: 0.2 s of start-up). Clients
    learn of these objects with GetManagedObjects once the name is ours.
    """
    announce = bus._emit_interface_added
    bus._emit_interface_added = lambda path, interface: None
    try:
        yield
    finally:
        bus._emit_interface_added = announce


def index_signal_paths(bus: Any) -> None:
    """Make `bus` find the path of a signal's interface in O(1) (per-bus, like 2.)."""
    Message = _module("dbus_next.message").Message
    cls = type(bus)
    library_export = types.MethodType(cls.export, bus)
    library_unexport = types.MethodType(cls.unexport, bus)
    # id(interface) -> path; ids are safe keys: _path_exports keeps the
    # interfaces alive, and the map is dropped whenever that changes.
    paths: dict[int, str] | None = None

    def export(path: str, interface: Any) -> None:
        nonlocal paths
        paths = None
        library_export(path, interface)

    def unexport(path: str, interface: Any = None) -> None:
        nonlocal paths
        paths = None
        library_unexport(path, interface)

    def interface_signal_notify(interface: Any, interface_name: str, member: str, signature: str,
                                body: list[Any], unix_fds: list[int] | None = None) -> None:
        nonlocal paths
        if paths is None:
            paths = {id(i): p for p, ifaces in bus._path_exports.items() for i in ifaces}
        path = paths.get(id(interface))
        if path is None:
            raise Exception("Could not find interface on bus (this is a bug in dbus-next)")
        bus.send(Message.new_signal(path=path, interface=interface_name, member=member,
                                    signature=signature, body=body, unix_fds=unix_fds or []))

    bus.export = export
    bus.unexport = unexport
    bus._interface_signal_notify = interface_signal_notify


async def close(bus: Any, timeout: float = 5.0) -> None:
    """Disconnect `bus`, wait (at most `timeout` s) until dbus-next has finalized it, close its socket.

    Safe on a bus already disconnected or dropped by an error (the error is not raised again).
    """
    if not bus._disconnected:
        # Flush first: the writer is FIFO, so once a Ping to the bus daemon is
        # answered, every reply queued before it (Shutdown's own) has left.
        message = _module("dbus_next.message").Message
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await bus.call(message(destination="org.freedesktop.DBus",
                                       path="/org/freedesktop/DBus",
                                       interface="org.freedesktop.DBus.Peer", member="Ping"))
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
