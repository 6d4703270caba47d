"""A console's output in the log writer (issue 18, docs/console.md): the
scrollback ring and the viewers it is copied to.

A pseudo-terminal has one output stream and a read takes the bytes from
it, so exactly one reader may exist: the log writer. It records the output
(the file, this ring) and copies it to every viewer, a stream socket whose
other end is held by `taskctl attach` (Manager.WatchConsole). Keystrokes
do not come this way: the client writes them into the terminal's master
itself (Manager.OpenConsole).

Neither a slow nor a stuck viewer may stall the program or grow the
writer: a viewer's socket is non-blocking, what it cannot take waits in
its own buffer, and past VIEWER_BACKLOG the oldest waiting bytes are
dropped (the viewer misses output, as a terminal that cannot keep up
does; the program never notices). A console has at most MAX_VIEWERS: one
more gets `turned_away()`'s line and is closed at once (its client prints
the line, then sees the end).
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field

VIEWER_BACKLOG = 1 << 20  # bytes a viewer may fall behind before its oldest are dropped
MAX_VIEWERS = 16  # per console: with the backlog, what viewers may cost is bounded
VIEWER_SNDBUF = 256 * 1024  # asked of the kernel: most output leaves at once
READ_CHUNK = 65536  # bytes read from a terminal per call


def turned_away(process: str) -> bytes:
    """What a viewer beyond MAX_VIEWERS reads before its end: the terminal
    output it would have had, this line instead (CR LF: a raw terminal)."""
    return (f"\r\ntaskmaster: {process} has {MAX_VIEWERS} viewers already; "
            "try again once one leaves\r\n").encode()


# How far into a scrollback that lost its beginning a line break is looked
# for: the replay starts after it (a line's start, not the middle of a
# character or of an escape sequence, which would garble the viewer's
# terminal); a first line longer than this starts at a character instead.
REPLAY_SEARCH = 4096


class Ring:
    """The last `size` bytes of output (0: none kept)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()
        self.cut = False  # older bytes were dropped: data starts anywhere

    def add(self, chunk: bytes) -> None:
        if self.size <= 0:
            return
        if len(chunk) >= self.size:
            self.cut = self.cut or len(chunk) > self.size or bool(self.data)
            self.data = bytearray(chunk[-self.size:])
            return
        self.data += chunk
        excess = len(self.data) - self.size
        if excess > 0:
            del self.data[:excess]
            self.cut = True

    def replay(self) -> bytes:
        """What a new viewer is shown first: the bytes kept, from the start of
        a line when the oldest were dropped (within REPLAY_SEARCH bytes), or
        else from the start of a UTF-8 character."""
        if not self.cut:
            return bytes(self.data)
        newline = self.data.find(b"\n", 0, REPLAY_SEARCH)
        if newline >= 0:
            return bytes(self.data[newline + 1:])
        start = 0
        while start < min(3, len(self.data)) and 0x80 <= self.data[start] <= 0xBF:
            start += 1  # a continuation byte: the character began in what was dropped
        return bytes(self.data[start:])


@dataclass(eq=False)
class Viewer:
    """One attached client's output socket and what it has not taken yet."""

    sock: socket.socket
    pending: bytearray = field(default_factory=bytearray)
    dropped: int = 0  # bytes it missed (fell VIEWER_BACKLOG behind)
    gone: bool = False

    @classmethod
    def open(cls, fd: int) -> Viewer:
        """The viewer on a received fd; OSError (ENOTSOCK...) when it is not
        a stream socket (the fd is then closed)."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            with contextlib.suppress(OSError):
                socket.close(fd)
            raise
        if sock.type != socket.SOCK_STREAM:
            sock.close()
            raise OSError(f"a viewer must be a stream socket, not {sock.type!r}")
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, VIEWER_SNDBUF)
        return cls(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def offer(self, data: bytes) -> None:
        """Send `data` now as far as the socket takes it; keep the rest
        (bounded). Sets `gone` when the client has closed its end."""
        if self.gone or not data:
            return
        if not self.pending:
            sent = self._send(data)
            data = data[sent:]
        if data:
            self.pending += data
            excess = len(self.pending) - VIEWER_BACKLOG
            if excess > 0:
                del self.pending[:excess]
                self.dropped += excess

    def flush(self) -> None:
        """Send what waits (the socket said it has room)."""
        if self.pending and not self.gone:
            sent = self._send(self.pending)
            del self.pending[:sent]

    def _send(self, data: bytes | bytearray) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError:  # EPIPE, ECONNRESET: the client left
            self.gone = True
            return 0

    def close(self) -> None:
        self.gone = True
        self.pending.clear()
        self.sock.close()


class Console:
    """A console stream's ring and viewers."""

    def __init__(self, scrollback: int) -> None:
        self.ring = Ring(scrollback)
        self.viewers: list[Viewer] = []

    def output(self, data: bytes) -> list[Viewer]:
        """Record `data` and copy it to every viewer; the viewers that left
        (the caller forgets and closes them)."""
        self.ring.add(data)
        for viewer in self.viewers:
            viewer.offer(data)
        return [v for v in self.viewers if v.gone]

    def full(self) -> bool:
        return len(self.viewers) >= MAX_VIEWERS

    def add(self, viewer: Viewer) -> None:
        """A new viewer: the scrollback first, so its screen means something."""
        self.viewers.append(viewer)
        viewer.offer(self.ring.replay())

    def remove(self, viewer: Viewer) -> None:
        with contextlib.suppress(ValueError):
            self.viewers.remove(viewer)
        viewer.close()
