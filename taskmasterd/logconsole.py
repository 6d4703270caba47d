"""The log writer's consoles (issue 18): a terminal's master read into its
file, its ring and its viewers (taskmasterd/consolefan.py), and the
viewers' sockets in the writer's poll. A mixin of logwriter.Writer, whose
loop calls `_pump_console` for a console stream and `_viewer_event` for a
viewer's socket.

Unlike a pipe, a terminal cannot be spliced: its output is read into user
space once and written to the file, the ring and each viewer from there.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from typing import TYPE_CHECKING

from taskmasterd.consolefan import MAX_VIEWERS, READ_CHUNK, Console, Viewer, turned_away
from taskmasterd.logfiles import Sink, next_move
from taskmasterd.logproto import encode

if TYPE_CHECKING:
    from taskmasterd.logwriter import Stream


class ConsoleStreams:
    # Owned by logwriter.Writer (declared here for the type checker).
    poll: select.epoll
    streams: dict[int, Stream]
    viewers: dict[int, tuple[Viewer, Stream]]

    def _send(self, data: bytes, fds: tuple[int, ...] = ()) -> None: ...
    def _wrote(self, sink: Sink, n: int) -> None: ...
    def _fail(self, sink: Sink, exc: OSError, what: str) -> None: ...
    def _eof(self, stream: Stream, registered: bool = True) -> None: ...

    def _pump_console(self, stream: Stream) -> None:
        """Read what the terminal holds: into the file, the ring and the
        viewers. EIO is the end (no process holds the terminal's slave side
        any more).

        One read per wake-up, on purpose: the master's O_NONBLOCK is shared
        with every copy handed out by OpenConsole (one open file), so a
        client that clears it must not be able to make this read wait. The
        poll said there is something to read (or the end): one read never
        blocks. A terminal gives at most a few KB per read anyway."""
        console = stream.console
        assert console is not None
        try:
            data = os.read(stream.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the slave side is gone
            data = b""
        if not data:
            self._eof(stream)
            return
        self._record(stream.sink, data)
        for viewer in console.output(data):
            self._forget_viewer(viewer)
        self._want_out(console)

    def _record(self, sink: Sink, data: bytes) -> None:
        """Write `data` to the console's file, rotated as a pipe's would be
        (read, then written: a terminal cannot be spliced)."""
        view = memoryview(data)
        while view:
            if sink.error and time.monotonic() < sink.retry_at:
                sink.dropped += len(view)
                return
            rotate = False
            try:
                if sink.fd < 0:
                    sink.open()
                rotate, count = next_move(sink.size, sink.maxbytes)
                if rotate:
                    sink.rotate()
                    count = next_move(sink.size, sink.maxbytes)[1]
                n = os.write(sink.fd, view[:count])
            except OSError as exc:
                self._fail(sink, exc, "rotate" if rotate else "write")
                sink.dropped += len(view)
                return
            self._wrote(sink, n)
            view = view[n:]

    def _watch(self, id: int, fd: int) -> None:
        stream = next((s for s in self.streams.values() if s.id == id and s.console), None)
        if stream is None or stream.console is None:
            os.close(fd)  # its console just ended: the client sees the end at once
            return
        if stream.console.full():
            # Said to the viewer itself, in its output (what `taskctl attach`
            # prints), then the end: an EOF alone read as a console closed.
            with contextlib.suppress(OSError):  # an empty buffer: it fits; EPIPE: gone already
                os.write(fd, turned_away(stream.process))
            os.close(fd)
            self._send(encode("error", path=stream.sink.path,
                              message=f"log writer: {stream.process} has {MAX_VIEWERS} viewers "
                                      "already: one more was turned away"))
            return
        try:
            viewer = Viewer.open(fd)
        except OSError as exc:
            self._send(encode("error", path=stream.sink.path,
                              message=f"log writer: watch {id}: not a viewer ({exc}); closed"))
            return
        stream.console.add(viewer)
        self.viewers[viewer.fileno()] = (viewer, stream)
        self.poll.register(viewer.fileno(), 0)  # HUP and ERR come unasked: its client left
        if viewer.gone:
            self._forget_viewer(viewer)
        self._want_out(stream.console)

    def _viewer_event(self, fd: int, ev: int) -> None:
        viewer, stream = self.viewers[fd]
        if ev & (select.EPOLLHUP | select.EPOLLERR):
            viewer.gone = True
        else:
            viewer.flush()
        if viewer.gone:
            self._forget_viewer(viewer)
        elif stream.console is not None:
            self._want_out(stream.console)

    def _want_out(self, console: Console) -> None:
        """Ask for room (EPOLLOUT) on the viewers with output waiting, only them."""
        for viewer in console.viewers:
            mask = select.EPOLLOUT if viewer.pending else 0
            with contextlib.suppress(OSError):
                self.poll.modify(viewer.fileno(), mask)

    def _forget_viewer(self, viewer: Viewer) -> None:
        entry = self.viewers.pop(viewer.fileno(), None)
        if entry is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.poll.unregister(viewer.fileno())
        if entry[1].console is not None:
            entry[1].console.remove(viewer)
