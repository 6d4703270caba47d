"""compat's header writer gives the bytes dbus-next 0.2.3's own _marshall gives.

No bus needed: both functions are run on the same generated messages.
"""

from typing import Any

from dbus_next import Message, MessageFlag, MessageType, Variant
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from taskmasterd.bus import compat

# The library's function, even when another test already installed ours.
LIBRARY = compat.LIBRARY.get("Message._marshall", Message._marshall)

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
    st.tuples(text, text, text, text, st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1),
              st.booleans()).map(lambda b: ("ssssiib", list(b))),
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
    assert compat._fast_marshall(msg, negotiate_unix_fd) == LIBRARY(msg, negotiate_unix_fd)


def test_install_fast_marshall_is_idempotent_and_keeps_the_library_function() -> None:
    compat.install_fast_marshall()
    compat.install_fast_marshall()
    assert Message._marshall is compat._fast_marshall
    assert compat.LIBRARY["Message._marshall"] is LIBRARY


def test_a_bad_body_is_still_refused_by_the_library_marshaller() -> None:
    import pytest
    from dbus_next.errors import SignatureBodyMismatchError

    msg = Message(path="/a", member="M", signature="s", body=[42])
    with pytest.raises(SignatureBodyMismatchError):
        compat._fast_marshall(msg)
