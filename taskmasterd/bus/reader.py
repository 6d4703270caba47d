"""`Reader`: dbus-next's Unmarshaller, faster, and deaf to bodies nothing reads.

`TaskmasterBus._create_unmarshaller` makes one per incoming message; other
buses keep the library's.

1. Speed: the library decodes a reply of 1000 process rows in ~14 ms. The
   header and body are read with `wire` (signatures compiled once; the
   header's fields without a Variant each): the same values and type checks
   (tests/unit/test_dbus_marshall.py compares both).
   A big-endian message (nobody sends one on Linux) is left to the library.

2. Bodies nothing would read: dbus-next decodes a method call's whole body
   before it looks for a method with that signature. A caller allowed one
   method (ListProcesses) could send it 30 MB with the signature `as`: the
   daemon decoded every string to answer UnknownMethod, and kept the memory
   (8 such calls: 1.6 GB). Given its bus, the Reader reads such a body off the
   socket in 64 KB pieces and drops it; the message goes on with an empty
   body and the library answers UnknownMethod from the header alone. Unix fds
   received with a message whose signature has no 'h', or whose body is
   dropped, are closed: nothing would ever close them.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
from typing import Any

from dbus_next import Message
from dbus_next._private.constants import HeaderField
from dbus_next._private.unmarshaller import MarshallerStreamEndError, Unmarshaller
from dbus_next.constants import MessageFlag, MessageType
from dbus_next.errors import InvalidMessageError
from dbus_next.service import ServiceInterface
from dbus_next.signature import SignatureTree

from taskmasterd.bus import wire

_DROP_CHUNK = 65536
_MAX_FDS_PER_READ = 16  # dbus-next's own MAX_UNIX_FDS

_FIELD_NAMES = {field.value: field.name for field in HeaderField}

# (type, flags, serial, header fields by HeaderField name, signature)
Header = tuple[Any, Any, int, dict[str, Any], str]


class Reader(Unmarshaller):  # type: ignore[misc]
    """`Unmarshaller(stream, sock)`; with `bus`, bodies no handler on it would read are dropped."""

    # the library's attributes used here (set by its __init__)
    buf: bytearray
    unix_fds: list[int]
    offset: int

    def __init__(self, stream: Any, sock: Any = None, bus: Any = None) -> None:
        super().__init__(stream, sock)
        self._bus = bus
        self._skipping: Header | None = None  # the header of the message whose body is dropped
        self._left = 0  # bytes of that body still on the socket

    def _unmarshall(self) -> None:
        """Replaces dbus-next 0.2.3's `Unmarshaller._unmarshall`, same protocol:
        it raises MarshallerStreamEndError (from `read`) until the whole message
        is in `self.buf`, and is called again."""
        if self._skipping is not None:
            self._drop_body()
            return
        self.offset = 0
        self.read(16, prefetch=True)
        if self.buf[0] != ord("l"):
            super()._unmarshall()
            return
        _endian, kind, flags, version, body_len, serial, header_len = struct.unpack_from(
            "<BBBBIII", self.buf, 0)
        message_type = MessageType(kind)
        message_flags = MessageFlag(flags)
        if version != 1:
            raise InvalidMessageError(f"got unknown protocol version: {version}")
        body_start = 16 + header_len + (-header_len & 7)  # the header is padded to 8
        self.offset = 16
        self.read(body_start - 16, prefetch=True)
        fields = {_FIELD_NAMES.get(code) or HeaderField(code).name: value
                  for code, value in wire.decode_header_fields(self.buf)}
        signature = fields.get("SIGNATURE", "")
        header = (message_type, message_flags, serial, fields, signature)
        if body_len and self._bus is not None and not body_wanted(self._bus, message_type, fields,
                                                                  signature):
            self._skipping = header
            self._left = body_len - (len(self.buf) - body_start)
            del self.buf[body_start:]
            self._drop_body()
            return
        self.read(body_start - 16 + body_len, prefetch=True)
        body = wire.decode_body(signature, self.buf, body_start) if body_len else []
        self.offset = body_start + body_len
        self._set_message(header, body)

    def _set_message(self, header: Header, body: list[Any], *, dropped: bool = False) -> None:
        message_type, message_flags, serial, fields, signature = header
        if self.unix_fds and (dropped or "h" not in signature):
            for fd in self.unix_fds:  # nothing will ever read them: they would leak
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.unix_fds = []
        self.message = Message(
            destination=fields.get("DESTINATION"), path=fields.get("PATH"),
            interface=fields.get("INTERFACE"), member=fields.get("MEMBER"),
            message_type=message_type, flags=message_flags, error_name=fields.get("ERROR_NAME"),
            reply_serial=fields.get("REPLY_SERIAL"), sender=fields.get("SENDER"),
            unix_fds=self.unix_fds, signature=SignatureTree._get(signature), body=body, serial=serial)

    def _drop_body(self) -> None:
        """Read the rest of an unwanted body off the socket and forget it; then
        the message (header only). MarshallerStreamEndError when the socket has
        no more for now (called again when it is readable)."""
        while self._left > 0:
            want = min(self._left, _DROP_CHUNK)
            if self.sock is not None:
                try:
                    data, ancdata, _flags, _addr = self.sock.recvmsg(
                        want, socket.CMSG_LEN(_MAX_FDS_PER_READ * 4))
                except BlockingIOError:
                    raise MarshallerStreamEndError() from None
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
                    raise MarshallerStreamEndError()
            if not data:
                raise EOFError()
            self._left -= len(data)
        header, self._skipping = self._skipping, None
        assert header is not None
        self.offset = len(self.buf)
        self._set_message(header, [], dropped=True)


_OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
_PROPERTIES = "org.freedesktop.DBus.Properties"
_PROPERTIES_METHODS = frozenset({("Get", "ss"), ("Set", "ssv"), ("GetAll", "s")})
_NO_ARGUMENT_INTERFACES = frozenset({  # Introspect, Ping, GetMachineId, GetManagedObjects
    "org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer", _OBJECT_MANAGER})
_BUS_DRIVER = "org.freedesktop.DBus"


def body_wanted(bus: Any, message_type: Any, fields: dict[str, Any], signature: str) -> bool:
    """Whether anything on `bus` would read this message's body.

    A method call: only when a handler takes exactly this signature — the
    same match as dbus-next 0.2.3's `BaseMessageBus._find_message_handler`
    (exported methods by path, interface, member and in-signature; the
    standard interfaces by their own signatures); any other call is answered
    UnknownMethod without looking at the body. A signal: only from the bus
    itself (NameOwnerChanged, NameAcquired...): the daemon subscribes to
    nothing else, yet anyone may send it a unicast signal. Replies come only
    to our own calls. (So a bus with message handlers of its own,
    `add_message_handler`, would see such messages with an empty body.)"""
    if message_type is MessageType.SIGNAL:
        return bool(fields.get("SENDER") == _BUS_DRIVER)
    if message_type is not MessageType.METHOD_CALL:
        return True
    interface, member = fields.get("INTERFACE"), fields.get("MEMBER")
    if interface == _PROPERTIES:
        return (member, signature) in _PROPERTIES_METHODS
    if interface in _NO_ARGUMENT_INTERFACES:
        return signature == ""
    for exported in bus._path_exports.get(fields.get("PATH"), ()):
        if exported.name != interface:
            continue
        for m in ServiceInterface._get_methods(exported):
            if not m.disabled and m.name == member and m.in_signature == signature:
                return True
    return False
