"""D-Bus message bodies to and from bytes, fast, for dbus-next 0.2.3.

dbus-next's Marshaller and Unmarshaller walk the signature tree for every
value through a dict of bound methods and keep an offset in an attribute:
a ListProcesses reply of 1000 rows costs ~14 ms to write and ~22 ms to read.
Here each signature is compiled once into nested closures that work on a
buffer and an offset (struct.Struct for the fixed-size types), which does
the same work several times faster. The values are exactly dbus-next's
(lists for arrays and structs, dicts, `Variant`s, bytes for `ay`), and so
are the bytes: the tests compare both on generated messages.

Little-endian only (what dbus-next writes, and every sender on the
machines we run on); `decode_body` returns None for a big-endian body and
the caller falls back to the library. `encode_body` keeps the library's type
check (`SignatureTree.verify`), so a bad body raises the same
SignatureBodyMismatchError as before; `encode_trusted` (the signals whose
bodies the daemon's own code builds: signals.py) skips it.

Used by TaskmasterBus's writer (marshall.py) and reader (reader.py).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping
from typing import Any

from dbus_next.signature import SignatureTree, SignatureType, Variant

Encoder = Callable[[bytearray, Any], None]
# What a message is read from: the reader's buffer is a bytearray.
Buffer = bytes | bytearray
Decoder = Callable[[Buffer, int], tuple[Any, int]]

_FIXED = {"y": ("B", 1), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4), "u": ("I", 4),
          "h": ("I", 4), "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8)}
_U32 = struct.Struct("<I")
_ALIGN_8_FIRST = "xtd{("  # array elements whose first alignment is not in the length


_ZEROS = [bytes(n) for n in range(8)]


def _pad(out: bytearray, n: int) -> None:
    pad = -len(out) & (n - 1)
    if pad:
        out += _ZEROS[pad]


# ---- writing ----------------------------------------------------------------


@functools.cache
def _encoder_for(signature: str) -> list[Encoder]:
    return [_encoder(t) for t in SignatureTree._get(signature).types]


def encode_body(signature: str, body: list[Any]) -> bytearray:
    """The body's bytes, as dbus-next's Marshaller writes them (same checks)."""
    SignatureTree._get(signature).verify(body)
    return encode_trusted(signature, body)


def encode_trusted(signature: str, body: list[Any]) -> bytearray:
    """`encode_body` without the type check: for bodies the daemon's own code
    builds with known types (signals.py). A value of
    a wrong type is not refused the library's way: it may raise another
    error, or (an int for a 'b') be written anyway."""
    out = bytearray()
    for enc, value in zip(_encoder_for(signature), body, strict=True):
        enc(out, value)
    return out


def _encoder(t: SignatureType) -> Encoder:
    token = t.token
    if token == "y":
        return lambda out, v: out.append(v)
    if token in _FIXED:
        fmt, size = _FIXED[token]
        pack = struct.Struct("<" + fmt).pack

        def fixed(out: bytearray, v: Any) -> None:
            pad = -len(out) & (size - 1)
            if pad:
                out += _ZEROS[pad]
            out += pack(v)
        return fixed
    if token == "b":
        def boolean(out: bytearray, v: Any) -> None:
            _pad(out, 4)
            out += _U32.pack(1 if v else 0)
        return boolean
    if token in "so":
        def string(out: bytearray, v: str) -> None:
            try:
                data = v.encode()
            except UnicodeEncodeError:
                # A lone surrogate (a path of non-UTF-8 bytes read with
                # surrogateescape): sent as its \udXXX escape, not a crash.
                data = v.encode("utf-8", "backslashreplace")
            pad = -len(out) & 3
            if pad:
                out += _ZEROS[pad]
            out += _U32.pack(len(data)) + data + b"\0"
        return string
    if token == "g":
        return _write_signature
    if token == "v":
        def variant(out: bytearray, v: Variant) -> None:
            _write_signature(out, v.signature)
            _encoder_for(v.signature)[0](out, v.value)
        return variant
    if token == "(":
        children = [_encoder(c) for c in t.children]

        def struct_(out: bytearray, v: Any) -> None:
            pad = -len(out) & 7
            if pad:
                out += _ZEROS[pad]
            for enc, item in zip(children, v, strict=True):
                enc(out, item)
        return struct_
    if token == "{":
        key, value = (_encoder(c) for c in t.children)

        def entry(out: bytearray, kv: Any) -> None:
            _pad(out, 8)
            key(out, kv[0])
            value(out, kv[1])
        return entry
    if token == "a":
        child = t.children[0]
        element = _encoder(child)
        first_align = child.token in _ALIGN_8_FIRST

        def array(out: bytearray, v: Any) -> None:
            _pad(out, 4)
            at = len(out)
            out += b"\0\0\0\0"
            if first_align:
                _pad(out, 8)
            start = len(out)
            if child.token == "y":
                out += v
            elif child.token == "{":
                for kv in v.items():
                    element(out, kv)
            else:
                for item in v:
                    element(out, item)
            _U32.pack_into(out, at, len(out) - start)
        return array
    raise NotImplementedError(f'type isnt implemented yet: "{token}"')


def _write_signature(out: bytearray, v: str) -> None:
    data = v.encode()
    out.append(len(data))
    out += data
    out.append(0)


PropertiesEncoder = Callable[[bytearray, Mapping[str, Any]], None]


def properties_encoder(signatures: list[tuple[str, str]]) -> PropertiesEncoder:
    """An encoder of an `a{sv}` from a mapping name -> value, for properties
    of these (name, signature): the entries of the names in the mapping, in
    the order of `signatures`; the bytes `{name: Variant(signature, value)}`
    gives (each entry's name and signature written once, here). Unchecked,
    as encode_trusted."""
    entries = []
    for name, signature in signatures:
        prefix = bytearray()  # an entry starts 8-aligned: the same bytes wherever it is
        _encoder_for("s")[0](prefix, name)
        _write_signature(prefix, signature)
        entries.append((name, bytes(prefix), _encoder_for(signature)[0]))

    def properties(out: bytearray, values: Mapping[str, Any]) -> None:
        _pad(out, 4)
        at = len(out)
        out += b"\0\0\0\0"
        _pad(out, 8)
        start = len(out)
        for name, prefix, value in entries:
            if name in values:
                _pad(out, 8)
                out += prefix
                value(out, values[name])
        _U32.pack_into(out, at, len(out) - start)
    return properties


def encode_value(out: bytearray, signature: str, value: Any) -> None:
    """Append `value`, of the single complete type `signature`, to `out`
    (whose length is its offset in the body: alignment). Unchecked."""
    _encoder_for(signature)[0](out, value)


def encode_properties_changed(interface: str, properties: PropertiesEncoder,
                              values: Mapping[str, Any], invalidated: list[str]) -> bytearray:
    """PropertiesChanged's body (sa{sv}as): `interface`, `values` by `properties`, `invalidated`."""
    out = bytearray()
    encode_value(out, "s", interface)
    properties(out, values)
    encode_value(out, "as", invalidated)
    return out


def encode_interfaces_added(path: str, interface: str, properties: PropertiesEncoder,
                            values: Mapping[str, Any]) -> bytearray:
    """InterfacesAdded's body (oa{sa{sv}}) for one interface: `path`,
    {`interface`: `values` by `properties`}."""
    out = bytearray()
    encode_value(out, "o", path)
    _pad(out, 4)
    at = len(out)  # the array's length, then its one entry (8-aligned)
    out += b"\0\0\0\0"
    _pad(out, 8)
    start = len(out)
    encode_value(out, "s", interface)
    properties(out, values)
    _U32.pack_into(out, at, len(out) - start)
    return out


# ---- reading ----------------------------------------------------------------


@functools.cache
def _decoder_for(signature: str) -> list[Decoder]:
    return [_decoder(t) for t in SignatureTree._get(signature).types]


def decode_body(signature: str, buf: Buffer, offset: int) -> list[Any]:
    """The values of a little-endian body starting at `offset` of `buf`
    (offsets are relative to the message start: alignment depends on them)."""
    body = []
    for dec in _decoder_for(signature):
        value, offset = dec(buf, offset)
        body.append(value)
    return body


def decode_header_fields(buf: Buffer) -> list[tuple[int, Any]]:
    """A little-endian message's header fields (its `a(yv)` at offset 12) as
    (code, value): what `decode_body("a(yv)", buf, 12)` gives, each variant's
    value without its Variant (a header has a few, every message)."""
    end = 16 + _U32.unpack_from(buf, 12)[0]
    off = 16
    fields = []
    while off < end:
        off += -off & 7
        code = buf[off]
        signature, off = _read_signature(buf, off + 1)
        decoders = _decoder_for(signature)
        if len(decoders) != 1:  # what Variant() refuses
            raise ValueError("variants must have a signature for a single complete type")
        value, off = decoders[0](buf, off)
        if "o" in signature:  # what Variant() would check: a path's syntax (the rest is as decoded)
            SignatureTree._get(signature).types[0].verify(value)
        fields.append((code, value))
    return fields


def _decoder(t: SignatureType) -> Decoder:
    token = t.token
    if token in _FIXED:
        fmt, size = _FIXED[token]
        unpack = struct.Struct("<" + fmt).unpack_from

        def fixed(buf: Buffer, off: int) -> tuple[Any, int]:
            off += -off & (size - 1)
            return unpack(buf, off)[0], off + size
        return fixed
    if token == "b":
        def boolean(buf: Buffer, off: int) -> tuple[Any, int]:
            off += -off & 3
            return bool(_U32.unpack_from(buf, off)[0]), off + 4
        return boolean
    if token in "so":
        def string(buf: Buffer, off: int) -> tuple[Any, int]:
            off += -off & 3
            n = _U32.unpack_from(buf, off)[0]
            off += 4
            return buf[off:off + n].decode(), off + n + 1
        return string
    if token == "g":
        return _read_signature
    if token == "v":
        def variant(buf: Buffer, off: int) -> tuple[Any, int]:
            signature, off = _read_signature(buf, off)
            value, off = _decoder_for(signature)[0](buf, off)
            return Variant(SignatureTree._get(signature), value), off
        return variant
    if token == "(":
        children = [_decoder(c) for c in t.children]

        def struct_(buf: Buffer, off: int) -> tuple[Any, int]:
            off += -off & 7
            result = []
            for dec in children:
                value, off = dec(buf, off)
                result.append(value)
            return result, off
        return struct_
    if token == "{":
        key_dec, value_dec = (_decoder(c) for c in t.children)

        def entry(buf: Buffer, off: int) -> tuple[Any, int]:
            off += -off & 7
            key, off = key_dec(buf, off)
            value, off = value_dec(buf, off)
            return (key, value), off
        return entry
    if token == "a":
        child = t.children[0]
        element = _decoder(child)
        first_align = child.token in _ALIGN_8_FIRST

        def array(buf: Buffer, off: int) -> tuple[Any, int]:
            off += -off & 3
            length = _U32.unpack_from(buf, off)[0]
            off += 4
            if first_align:
                off += -off & 7
            end = off + length
            if child.token == "y":
                return bytes(buf[off:end]), end
            if child.token == "{":
                result: Any = {}
                while off < end:
                    (key, value), off = element(buf, off)
                    result[key] = value
                return result, off
            items = []
            while off < end:
                value, off = element(buf, off)
                items.append(value)
            return items, off
        return array
    raise NotImplementedError(f'dont know how to read yet: "{token}"')


def _read_signature(buf: Buffer, off: int) -> tuple[str, int]:
    n = buf[off]
    return buf[off + 1:off + 1 + n].decode(), off + n + 2
