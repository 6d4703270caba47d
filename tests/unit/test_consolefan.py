"""The scrollback ring and the viewers of a console (taskmasterd.consolefan),
on real socket pairs: a viewer that does not read never grows the writer
past its bound, a viewer that left is noticed, a new one gets the
scrollback first."""

from __future__ import annotations

import socket

from taskmasterd import consolefan
from taskmasterd.consolefan import REPLAY_SEARCH, VIEWER_BACKLOG, Console, Ring, Viewer


def pair() -> tuple[Viewer, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Viewer.open(ours.detach()), theirs


def drain(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    got = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        got += chunk


def test_ring_keeps_the_last_bytes() -> None:
    ring = Ring(10)
    ring.add(b"hello ")
    ring.add(b"world!")
    assert bytes(ring.data) == b"llo world!"
    ring.add(b"0123456789abcdef")  # a chunk larger than the ring
    assert bytes(ring.data) == b"6789abcdef"
    none = Ring(0)
    none.add(b"x")
    assert none.replay() == b""


def test_a_whole_scrollback_is_replayed_as_it_is() -> None:
    ring = Ring(64)
    ring.add(b"\xa9 partial? no: ")  # nothing was dropped: the bytes are the output's start
    ring.add(b"line\n\x1b[1mbold")
    assert ring.replay() == b"\xa9 partial? no: line\n\x1b[1mbold"
    exact = Ring(4)
    exact.add(b"abcd")  # fits exactly: nothing dropped
    assert exact.replay() == b"abcd"


def test_a_cut_scrollback_is_replayed_from_a_line_start() -> None:
    """The oldest bytes dropped mid-escape-sequence: the replay starts after
    the first line break, not inside the sequence."""
    tail = b"\r\n>>> print(1)\r\n1\r\n>>> "
    ring = Ring(len(b";196mred\x1b[0m") + len(tail))
    ring.add(b">>> x\r\n\x1b[38;5;196mred\x1b[0m" + tail)
    assert bytes(ring.data).startswith(b";196mred")  # cut inside the sequence
    assert ring.replay() == b">>> print(1)\r\n1\r\n>>> "
    # the same, the bytes coming in several chunks
    chunks = Ring(len(ring.data))
    for chunk in (b">>> x\r\n\x1b[38;5;", b"196mred\x1b[0m", tail):
        chunks.add(chunk)
    assert chunks.replay() == ring.replay()


def test_a_cut_scrollback_without_a_line_break_starts_at_a_character() -> None:
    ring = Ring(5)
    ring.add("é€x".encode())  # c3 a9 e2 82 ac 78: the ring keeps a9 e2 82 ac 78
    assert ring.replay() == "€x".encode()
    long_line = Ring(REPLAY_SEARCH * 2)
    long_line.add(b"a" * REPLAY_SEARCH * 3 + b"\n>>> ")  # the line break is past the search
    assert long_line.replay() == bytes(long_line.data)


def test_a_new_viewer_gets_the_scrollback_then_the_output() -> None:
    console = Console(8)
    console.output(b"before-attach")
    viewer, client = pair()
    console.add(viewer)
    console.output(b"+live")
    assert drain(client) == b"e-attach+live"


def test_a_viewer_that_does_not_read_is_bounded_and_misses_the_oldest() -> None:
    console = Console(0)
    viewer, client = pair()
    console.add(viewer)
    chunk = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while sent < 8 * VIEWER_BACKLOG:
        assert console.output(chunk) == []  # still there: slow is not gone
        sent += len(chunk)
    assert len(viewer.pending) <= VIEWER_BACKLOG
    assert viewer.dropped > 0
    got = drain(client)
    viewer.flush()
    got += drain(client)
    viewer.flush()
    got += drain(client)
    assert sent - viewer.dropped - len(viewer.pending) == len(got)
    assert got.endswith(chunk[-1000:])  # the newest output is what it keeps


def test_a_viewer_that_left_is_reported_and_others_go_on() -> None:
    console = Console(100)
    stays, stays_client = pair()
    leaves, leaves_client = pair()
    console.add(stays)
    console.add(leaves)
    leaves_client.close()
    assert console.output(b"x" * 10) == [leaves]
    console.remove(leaves)
    assert console.output(b"y") == []
    assert drain(stays_client) == b"x" * 10 + b"y"


def test_only_stream_sockets_are_viewers() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        Viewer.open(a.detach())
    except OSError as exc:
        assert "stream socket" in str(exc)
    else:
        raise AssertionError("a datagram socket was taken as a viewer")
    b.close()
    assert consolefan.READ_CHUNK >= 4096
