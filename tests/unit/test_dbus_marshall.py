"""TaskmasterBus's D-Bus codec (taskmasterd.bus.wire, marshall and reader)
against dbus-next 0.2.3's own Marshaller/Unmarshaller: same bytes written,
same values read, on generated signatures, values and messages.

No bus needed: both implementations run on the same inputs.
"""

import io
import struct
from typing import Any

from dbus_next import Message, MessageFlag, MessageType, Variant
from dbus_next._private.marshaller import Marshaller
from dbus_next._private.unmarshaller import Unmarshaller
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from taskmasterd.bus import wire
from taskmasterd.bus.marshall import marshall
from taskmasterd.bus.reader import Reader

# The library's function (never replaced: TaskmasterBus's writer calls ours).
LIBRARY = Message._marshall

element = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
paths = st.one_of(st.just("/"), st.lists(st.from_regex(r"[A-Za-z0-9_]{1,10}", fullmatch=True),
                                         min_size=1, max_size=5).map(lambda p: "/" + "/".join(p)))
interfaces = st.lists(element, min_size=2, max_size=5).map(".".join)
unique_names = st.integers(1, 10**6).map(lambda n: f":1.{n}")
destinations = st.one_of(unique_names, interfaces)
text = st.text(max_size=40)  # any unicode: lengths are of the UTF-8 bytes
BODIES: list[st.SearchStrategy[tuple[str, list[Any]]]] = [
    st.just(("", [])),
    st.tuples(text).map(lambda b: ("s", list(b))),
    st.tuples(text, text, text, text, st.integers(0, 2**32 - 1), st.integers(-2**31, 2**31 - 1),
              st.booleans()).map(lambda b: ("ssssuib", list(b))),  # ProcessStateChanged
    st.lists(st.tuples(text, text, st.integers(-2**31, 2**31 - 1)).map(list), max_size=5)
    .map(lambda rows: ("a(ssi)", [rows])),
    st.dictionaries(text, text.map(lambda v: Variant("s", v)), max_size=4)
    .map(lambda d: ("sa{sv}as", ["org.x.Y", d, []])),
]


@st.composite
def messages(draw: st.DrawFn) -> tuple[Message, bool]:
    kind = draw(st.sampled_from(list(MessageType)))
    flags = MessageFlag(draw(st.sampled_from([0, 1, 2, 4, 3, 7])))
    signature, body = draw(st.one_of(*BODIES))
    fds = draw(st.lists(st.integers(0, 100), max_size=3))
    maybe = st.booleans()
    try:
        msg = Message(
            message_type=kind, flags=flags, serial=draw(st.integers(1, 2**32 - 1)),
            path=draw(paths) if kind in (MessageType.METHOD_CALL, MessageType.SIGNAL) or draw(maybe)
            else None,
            interface=draw(interfaces) if kind is MessageType.SIGNAL or draw(maybe) else None,
            member=draw(element) if kind in (MessageType.METHOD_CALL, MessageType.SIGNAL) else None,
            error_name=draw(interfaces) if kind is MessageType.ERROR else None,
            reply_serial=draw(st.integers(1, 2**32 - 1))
            if kind in (MessageType.METHOD_RETURN, MessageType.ERROR) else None,
            destination=draw(destinations) if draw(maybe) else None,
            signature=signature, body=body, unix_fds=fds)
    except Exception:  # a combination the library refuses to build
        assume(False)
        raise
    return msg, draw(st.booleans())


@settings(max_examples=400, deadline=None)
@given(messages())
def test_fast_marshall_gives_the_library_bytes(case: tuple[Message, bool]) -> None:
    msg, negotiate_unix_fd = case
    assert marshall(msg, negotiate_unix_fd) == LIBRARY(msg, negotiate_unix_fd)


def test_a_bad_body_is_still_refused_by_the_library_marshaller() -> None:
    import pytest
    from dbus_next.errors import SignatureBodyMismatchError

    msg = Message(path="/a", member="M", signature="s", body=[42])
    with pytest.raises(SignatureBodyMismatchError):
        marshall(msg)


# ---- any signature, any value ----------------------------------------------------

BASIC = "ybnqiuxtdsogh"
INTS = {"y": (0, 255), "n": (-2**15, 2**15 - 1), "q": (0, 2**16 - 1), "i": (-2**31, 2**31 - 1),
        "u": (0, 2**32 - 1), "h": (0, 2**32 - 1), "x": (-2**63, 2**63 - 1), "t": (0, 2**64 - 1)}

types = st.recursive(
    st.sampled_from([*BASIC, "v"]),
    lambda inner: st.one_of(
        inner.map(lambda t: "a" + t),
        st.lists(inner, min_size=1, max_size=4).map(lambda ts: "(" + "".join(ts) + ")"),
        st.tuples(st.sampled_from(list(BASIC)), inner).map(lambda kv: "a{" + kv[0] + kv[1] + "}")),
    max_leaves=6)


def split(signature: str) -> list[str]:
    """A signature's complete types, in order."""
    from dbus_next.signature import SignatureTree

    return [t.signature for t in SignatureTree._get(signature).types]


def values(t: str, depth: int = 0) -> st.SearchStrategy[Any]:
    if t in INTS:
        return st.integers(*INTS[t])
    if t == "b":
        return st.booleans()
    if t == "d":
        return st.floats(allow_nan=False)
    if t == "s":
        return text
    if t == "o":
        return paths
    if t == "g":
        return st.sampled_from(["", "s", "a{sv}", "(ii)as", "aay"])
    if t == "v":
        inner = st.sampled_from(["s", "i", "as", "(si)", "a{sv}", "ay"]) if depth > 2 else types
        return inner.flatmap(lambda sig: values(sig, depth + 1).map(lambda v: Variant(sig, v)))
    if t.startswith("a{"):
        key, value = split(t[2:-1])
        return st.dictionaries(values(key, depth + 1), values(value, depth + 1), max_size=3)
    if t == "ay":
        return st.binary(max_size=20)
    if t.startswith("a"):
        return st.lists(values(t[1:], depth + 1), max_size=3)
    if t.startswith("("):
        return st.tuples(*(values(c, depth + 1) for c in split(t[1:-1]))).map(list)
    raise AssertionError(t)


bodies = st.lists(types, min_size=1, max_size=3).flatmap(
    lambda ts: st.tuples(st.just("".join(ts)), st.tuples(*(values(t) for t in ts)).map(list)))


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_encode_body_writes_the_library_bytes(case: tuple[str, list[Any]]) -> None:
    signature, body = case
    library = Marshaller(signature, body)
    library.marshall()
    assert wire.encode_body(signature, body) == library.buffer


def library_read(data: bytes) -> Any:
    return Unmarshaller(io.BytesIO(data)).unmarshall()


def fast_read(data: bytes, chunk: int = 0) -> Any:
    """Read with the fast path; with `chunk`, the bytes arrive `chunk` at a time
    (the reader is called again after each short read, as the bus does)."""
    stream = io.BytesIO(data)
    if chunk:
        class Trickle:
            def read(self, n: int) -> bytes:
                return stream.read(min(n, chunk))
        unmarshaller = Reader(Trickle())
    else:
        unmarshaller = Reader(stream)
    for _ in range(len(data) + 2):
        try:
            unmarshaller._unmarshall()
            return unmarshaller.message
        except Exception as exc:  # MarshallerStreamEndError: more bytes to come
            if type(exc).__name__ != "MarshallerStreamEndError":
                raise
    raise AssertionError("never complete")


def same_message(a: Any, b: Any) -> None:
    for attr in ("message_type", "flags", "serial", "path", "interface", "member", "error_name",
                 "reply_serial", "destination", "sender", "signature", "body"):
        assert getattr(a, attr) == getattr(b, attr), attr


@settings(max_examples=300, deadline=None)
@given(bodies, st.sampled_from([0, 0, 1, 7, 13]))
def test_fast_unmarshall_reads_what_the_library_reads(case: tuple[str, list[Any]], chunk: int) -> None:
    signature, body = case
    msg = Message(message_type=MessageType.METHOD_RETURN, reply_serial=3, destination=":1.4",
                  signature=signature, body=body, serial=9)
    data = LIBRARY(msg)
    same_message(fast_read(data, chunk), library_read(data))


@settings(max_examples=100, deadline=None)
@given(messages())
def test_fast_unmarshall_reads_every_header_field(case: tuple[Message, bool]) -> None:
    msg, _ = case
    data = LIBRARY(msg)
    same_message(fast_read(data), library_read(data))


def test_a_big_endian_message_is_read_by_the_library() -> None:
    # A METHOD_RETURN (reply to serial 7) with body "hé" written big-endian by hand.
    fields = bytes((5, 1, ord("u"), 0)) + struct.pack(">I", 7) + bytes((8, 1, ord("g"), 0, 1)) + b"s\0"
    body = struct.pack(">I", 3) + "hé".encode() + b"\0"
    head = struct.pack(">BBBBIII", ord("B"), 2, 0, 1, len(body), 11, len(fields)) + fields
    data = head + bytes(-len(head) % 8) + body
    msg = fast_read(data)
    assert (msg.reply_serial, msg.serial, msg.body) == (7, 11, ["hé"])
    same_message(msg, library_read(data))


@settings(max_examples=200, deadline=None)
@given(messages())
def test_header_fields_are_the_variants_values(case: tuple[Message, bool]) -> None:
    msg, negotiate_unix_fd = case
    data = LIBRARY(msg, negotiate_unix_fd)
    [variants] = wire.decode_body("a(yv)", data, 12)
    assert wire.decode_header_fields(data) == [(code, v.value) for code, v in variants]


def test_a_header_path_that_is_no_path_is_refused_as_before() -> None:
    import pytest
    from dbus_next.errors import SignatureBodyMismatchError

    good = LIBRARY(Message(path="/abc", member="M", serial=1))
    bad = good.replace(b"/abc", b"abc/")
    with pytest.raises(SignatureBodyMismatchError):
        wire.decode_body("a(yv)", bad, 12)
    with pytest.raises(SignatureBodyMismatchError):
        wire.decode_header_fields(bad)
