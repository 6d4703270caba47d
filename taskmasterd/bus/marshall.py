"""Write a dbus-next Message to bytes, fast (`TaskmasterBus`'s writer uses it).

dbus-next's codec is slow: a small signal's header alone costs ~30 µs (a
generic `yyyyuua(yv)` structure, a Variant per field), a reply of 1000
process rows ~8 ms. `marshall` writes the header directly and the body with
`wire` (signatures compiled once): the same bytes and the same type checks as
the library's (tests/unit/test_dbus_marshall.py compares both on generated
messages). `signal_message` writes a signal from its parts and a body
already encoded, with no `Message` at all (TaskmasterBus's own signals:
signals.py): the bytes `marshall` writes for `Message.new_signal(...)`.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

from dbus_next.constants import MessageFlag, MessageType

from taskmasterd.bus import wire

# Header fields in the order dbus-next writes them: (attribute, code, type).
_HEADER_FIELDS = (("path", 1, "o"), ("interface", 2, "s"), ("member", 3, "s"),
                  ("error_name", 4, "s"), ("reply_serial", 5, "u"), ("destination", 6, "s"),
                  ("signature", 8, "g"))
_UNIX_FDS = 9
_START = struct.Struct("<BBBBIII")
_U32 = struct.Struct("<I")
_SIGNAL = MessageType.SIGNAL.value
_NO_FLAGS = MessageFlag.NONE.value


def marshall(msg: Any, negotiate_unix_fd: bool = False) -> bytes:
    """What dbus-next 0.2.3's `Message._marshall(negotiate_unix_fd)` returns for `msg`."""
    body = wire.encode_body(msg.signature, msg.body)
    out = bytearray(16)  # 12 fixed bytes, the fields array's length, then 8-aligned structs
    fields = [(code, kind, getattr(msg, attribute)) for attribute, code, kind in _HEADER_FIELDS]
    if msg.unix_fds and negotiate_unix_fd:
        fields.append((_UNIX_FDS, "u", len(msg.unix_fds)))
    for code, kind, value in fields:
        if value:
            _field(out, code, kind, value)
    return _finish(out, msg.message_type.value, msg.flags.value, msg.serial, body)


def signal_message(serial: int, path: str, interface: str, member: str, signature: str,
                   body: bytes | bytearray) -> bytes:
    """What `marshall` writes for `Message.new_signal(path, interface, member,
    signature, body=<the values>)` with serial `serial`, `body` being the
    values' encoding. Nothing is checked: the names are the caller's own."""
    out = bytearray(16)
    _field(out, 1, "o", path)
    out += _ZEROS[-len(out) & 7]
    out += _signal_fields(interface, member, signature)
    return _finish(out, _SIGNAL, _NO_FLAGS, serial, body)


_ZEROS = [bytes(n) for n in range(8)]


@functools.lru_cache(maxsize=256)
def _signal_fields(interface: str, member: str, signature: str) -> bytes:
    """A signal's header fields after its path (written from an 8-aligned
    offset, as they are in a header: the same bytes wherever they go)."""
    out = bytearray()
    _field(out, 2, "s", interface)
    _field(out, 3, "s", member)
    if signature:
        _field(out, 8, "g", signature)
    return bytes(out)


def _field(out: bytearray, code: int, kind: str, value: Any) -> None:
    out += bytes(-len(out) % 8)  # each (yv) struct is 8-aligned
    out += bytes((code, 1, ord(kind), 0))  # the code, then the variant's signature
    if kind == "u":
        out += _U32.pack(value)  # already 4-aligned
    elif kind == "g":
        data = value.encode()
        out += bytes((len(data),)) + data + b"\0"
    else:  # "o" / "s": already 4-aligned
        data = value.encode()
        out += _U32.pack(len(data)) + data + b"\0"


def _finish(out: bytearray, message_type: int, flags: int, serial: int,
            body: bytes | bytearray) -> bytes:
    """The header's fixed part written into `out`'s first 16 bytes, its padding, the body."""
    _START.pack_into(out, 0, ord("l"), message_type, flags, 1, len(body), serial, len(out) - 16)
    out += bytes(-len(out) % 8)
    out += body
    return bytes(out)
