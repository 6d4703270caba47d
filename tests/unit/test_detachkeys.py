"""`taskctl attach`'s detach keys: docker's syntax, and the filter that
finds them in the keystrokes across reads (taskctl.detachkeys)."""

from __future__ import annotations

import pytest

from taskctl.detachkeys import DEFAULT, DetachFilter, describe, parse


@pytest.mark.parametrize(("text", "keys"), [
    (DEFAULT, b"\x1d" b"d"),
    ("ctrl-],d", b"\x1dd"),
    ("ctrl-a,ctrl-d", b"\x01\x04"),
    ("ctrl-p,ctrl-q", b"\x10\x11"),
    ("ctrl-@", b"\x00"),
    ("ctrl-[,ctrl-\\,ctrl-^,ctrl-_", b"\x1b\x1c\x1e\x1f"),
    ("CTRL-A,Q", b"\x01Q"),       # ctrl- and its letter in either case; a character as typed
    ("ctrl-z,,", None),
    ("q", b"q"),
    (" ,ctrl-b", b" \x02"),        # a space is a printable character
    ("ctrl-a,ctrl-a", b"\x01\x01"),
])
def test_parse(text: str, keys: bytes | None) -> None:
    if keys is None:
        with pytest.raises(ValueError):
            parse(text)
    else:
        assert parse(text) == keys


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty detach keys"),
    ("ctrl-a,,d", "key 2 of 'ctrl-a,,d' is empty"),
    ("ctrl-a,", "key 2 of 'ctrl-a,' is empty"),
    ("ctrl-1", "'ctrl-1', is neither ctrl-X"),
    ("ctrl-", "'ctrl-', is neither"),
    ("ctrl-ab", "'ctrl-ab', is neither"),
    ("alt-x", "'alt-x', is neither"),
    ("ctrl-],dd", "key 2 of 'ctrl-],dd', 'dd'"),
    ("\t", "not a printable ASCII character"),
    ("é", "not a printable ASCII character"),
])
def test_bad_keys_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        parse(text)
    assert says in str(err.value)


def test_describe() -> None:
    assert describe(parse(DEFAULT)) == "Ctrl-] d"
    assert describe(parse("ctrl-p,ctrl-q")) == "Ctrl-P Ctrl-Q"
    assert describe(parse("ctrl-a, ,ctrl-@")) == "Ctrl-A Space Ctrl-@"


def feed_all(f: DetachFilter, *reads: bytes) -> tuple[bytes, bool]:
    sent = b""
    for data in reads:
        out, detached = f.feed(data)
        sent += out
        if detached:
            return sent, True
    return sent, False


def test_plain_keys_go_through() -> None:
    f = DetachFilter(parse(DEFAULT))
    assert f.feed(b"ls -l\r") == (b"ls -l\r", False)
    assert f.feed(b"d\x03") == (b"d\x03", False)  # d alone is no sequence; Ctrl-C goes through


def test_detach_in_one_read_drops_what_follows() -> None:
    f = DetachFilter(parse(DEFAULT))
    assert f.feed(b"abc\x1ddxyz") == (b"abc", True)


def test_detach_split_across_reads() -> None:
    f = DetachFilter(parse(DEFAULT))
    assert f.feed(b"abc\x1d") == (b"abc", False)  # the prefix is held...
    assert f.pending() == b"\x1d"
    assert f.feed(b"d") == (b"", True)  # ... and was the sequence


def test_prefix_twice_sends_one_prefix() -> None:
    f = DetachFilter(parse(DEFAULT))
    assert feed_all(f, b"\x1d", b"\x1d") == (b"\x1d", False)
    assert f.pending() == b""
    assert f.feed(b"\x1d\x1d\x1d") == (b"\x1d", False)  # the third begins a sequence again
    assert f.feed(b"d") == (b"", True)


def test_prefix_then_another_key_sends_both() -> None:
    f = DetachFilter(parse(DEFAULT))
    assert f.feed(b"\x1dx") == (b"\x1dx", False)
    assert feed_all(f, b"\x1d", b"q") == (b"\x1dq", False)
    assert f.pending() == b""


def test_a_longer_sequence() -> None:
    keys = parse("ctrl-a,ctrl-b,c")
    f = DetachFilter(keys)
    assert f.feed(b"\x01\x02x") == (b"\x01\x02x", False)  # broken after two: all three through
    assert f.feed(b"\x01\x02\x01") == (b"\x01\x02", False)  # the prefix again: held anew
    assert f.feed(b"\x02") == (b"", False)
    assert f.feed(b"c") == (b"", True)
    # byte by byte
    f = DetachFilter(keys)
    assert feed_all(f, b"\x01", b"\x02", b"c") == (b"", True)


def test_ctrl_p_ctrl_q() -> None:
    f = DetachFilter(parse("ctrl-p,ctrl-q"))
    assert f.feed(b"\x10\x10") == (b"\x10", False)  # Ctrl-P twice: one Ctrl-P (shell history)
    assert f.feed(b"\x10\x11rest") == (b"", True)


def test_one_key_detaches_at_once() -> None:
    f = DetachFilter(parse("ctrl-q"))
    assert f.feed(b"ab\x11cd") == (b"ab", True)


def test_every_split_of_a_stream() -> None:
    """However the stream is cut into reads, the same bytes go through and
    the detach is found at the same place."""
    keys = parse(DEFAULT)
    stream = b"a\x1d\x1db\x1dxc\x1d" + b"d" + b"tail"
    expected = b"a\x1db\x1dxc"
    for cut in range(len(stream) + 1):
        f = DetachFilter(keys)
        assert feed_all(f, stream[:cut], stream[cut:]) == (expected, True), cut
    f = DetachFilter(keys)
    assert feed_all(f, *(bytes([b]) for b in stream)) == (expected, True)


def test_no_keys_is_refused() -> None:
    with pytest.raises(ValueError):
        DetachFilter(b"")
