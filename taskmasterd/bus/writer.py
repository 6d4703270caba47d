"""`Writer`: dbus-next's aio message writer, surviving a full socket.

`TaskmasterBus` replaces its `_writer` by one; other buses keep the library's.

dbus-next 0.2.3's `_MessageWriter.write_callback` treats `BlockingIOError`
from `sock.send`/`sendmsg` (the kernel buffer is full) as a fatal error and
finalizes the connection: a burst of a few hundred signals dropped the bus.
Here it (and `InterruptedError`) means "nothing was written": the message
stays at the head of the queue, with its unix fds, and the loop's writer
callback stays registered, so writing resumes when the socket is writable
again. Any other error still finalizes the bus. Also: messages are written
with `marshall.marshall` (the library's bytes, faster), a send nobody awaits
failing does not print "Future exception was never retrieved", and fds a
handler returned through `close_after_send` are closed once sent (the
library never closes the fds of a message it sends). `queue_bytes` queues a
message TaskmasterBus wrote itself (its signals), in order with the rest.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
from copy import copy
from typing import Any

from dbus_next.aio.message_bus import _future_set_exception, _future_set_result, _MessageWriter

from taskmasterd.bus.marshall import marshall

# fds handed to a reply (OpenLog) that are ours to close once the kernel has
# a copy.
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


class Writer(_MessageWriter):  # type: ignore[misc]
    """`_MessageWriter(bus)`, see the module docstring."""

    # the library's attributes used here (set by its __init__)
    buf: memoryview | None
    unix_fds: list[int] | None
    offset: int
    fut: Any

    def buffer_message(self, msg: Any, future: Any = None) -> None:
        """Replaces dbus-next 0.2.3's `_MessageWriter.buffer_message`: `marshall` for `msg._marshall`."""
        self.messages.put_nowait((marshall(msg, self.negotiate_unix_fd), copy(msg.unix_fds), future))

    # Messages written in one send at most (bytes): a burst of signals is
    # one system call and one wake-up of the bus daemon per loop turn, not
    # one per message (a send wakes the daemon's reader each time).
    BATCH = 64 * 1024
    _next: Any = None  # a message taken from the queue, to be sent alone (it has fds)
    _futs: tuple[Any, ...] = ()  # the futures of the messages in `buf`
    _soon = False  # a write is scheduled for the end of this loop turn

    def queue_bytes(self, data: bytes) -> None:
        """Queue a message already written (no fds, no future: nobody awaits
        a signal's sending), behind every message queued before it."""
        self.messages.put_nowait((data, [], None))
        self.schedule_write()

    def schedule_write(self, msg: Any = None, future: Any = None) -> None:
        """Replaces the library's: the write happens once, at the end of the
        loop turn that queued messages (call_soon), not through an epoll
        registration per message; the fd is watched for writability only
        while the kernel's buffer is full."""
        if msg is not None:
            self.buffer_message(msg, future)
        if self.bus.unique_name and not self._soon:
            self._soon = True
            self.loop.call_soon(self._write_soon)

    def _write_soon(self) -> None:
        self._soon = False
        self.write_callback()

    def _take(self) -> None:
        """The next send: a message with fds alone (its fds must travel with
        its first byte), otherwise every queued message without fds, up to
        BATCH bytes, joined."""
        if self._next is not None:
            (buf, unix_fds, fut), self._next = self._next, None
        else:
            buf, unix_fds, fut = self.messages.get_nowait()
        futs = [fut]
        if not (unix_fds and self.negotiate_unix_fd):
            pieces, size = [buf], len(buf)
            while size < self.BATCH and self.messages.qsize():
                item = self.messages.get_nowait()
                if item[1] and self.negotiate_unix_fd:
                    self._next = item
                    break
                pieces.append(item[0])
                futs.append(item[2])
                size += len(item[0])
            if len(pieces) > 1:
                buf = b"".join(pieces)
        self.unix_fds = unix_fds
        self.buf = memoryview(buf)
        self.offset = 0
        self.fut = fut
        self._futs = tuple(futs)

    def write_callback(self) -> None:
        """dbus-next 0.2.3's `_MessageWriter.write_callback`, except: several
        messages per send (`_take`), the `BlockingIOError` case, the fds
        closed once sent, and the failed futures marked retrieved."""
        try:
            while True:
                if self.buf is None:
                    if self._next is None and self.messages.qsize() == 0:
                        # nothing more to write
                        self.loop.remove_writer(self.fd)
                        return
                    self._take()
                assert self.buf is not None

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
                    futs, self._futs = self._futs, ()
                    for fut in futs:
                        _future_set_result(fut, None)
                else:
                    # wait for writable
                    self.loop.add_writer(self.fd, self.write_callback)
                    return
        except Exception as e:
            futs, self._futs = self._futs or (self.fut,), ()
            for fut in futs:
                _future_set_exception(fut, e)
                if fut is not None and fut.done() and not fut.cancelled():
                    # Most sends are fire-and-forget (signals, replies): nobody awaits
                    # their future, and asyncio would print "Future exception was never
                    # retrieved" with a traceback when it is collected. The error is the
                    # connection's, reported once by _finalize (the disconnect future);
                    # a caller that does await the future still gets it.
                    fut.exception()
            self.bus._finalize(e)
