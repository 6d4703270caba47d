"""sd_notify: READY/RELOADING/STOPPING/STATUS/WATCHDOG for Type=notify.

One datagram per message to NOTIFY_SOCKET (a path, or @name for an abstract
socket), as sd_notify(3) sends it, but never waiting. sd_notify's send
blocks while the reader's queue is full (net.unix.max_dgram_qlen
datagrams: 10 without systemd's sysctl.d setting of 512), and this daemon
sends from its event loop: a notify socket nobody reads froze the whole
daemon at its 11th STATUS=. Here a full queue keeps the messages, in order,
and sends them once there is room (retried after 0.05 s, doubling to 1 s);
meanwhile a newer STATUS= or WATCHDOG=1 replaces the waiting one, and no
more than MAX_WAITING wait (the oldest are dropped, said once in the log).
Not being under systemd (no NOTIFY_SOCKET) is normal; a missing or dead
socket (FileNotFoundError, ConnectionRefusedError) is reported once and
never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from taskmasterd.states import State

log = logging.getLogger("taskmasterd")


def status_line(counts: Mapping[State, int]) -> str:
    """'12 running, 1 fatal, 0 backoff' (+ other states when present)."""
    parts = [f"{counts.get(s, 0)} {s.value.lower()}" for s in (State.RUNNING, State.FATAL, State.BACKOFF)]
    parts += [f"{n} {s.value.lower()}" for s, n in counts.items()
              if n and s not in (State.RUNNING, State.FATAL, State.BACKOFF)]
    return ", ".join(parts)


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Half of WATCHDOG_USEC in seconds, when the watchdog is meant for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    target = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if target and target != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2_000_000


MAX_WAITING = 32  # messages kept while the reader's queue is full
RETRY_FIRST, RETRY_MAX = 0.05, 1.0  # seconds between two tries to send them


class DatagramSender:
    """Sends one notify message as one datagram to `address` (NOTIFY_SOCKET),
    without waiting: BlockingIOError when the reader's queue is full."""

    def __init__(self, address: str) -> None:
        if address.startswith("@"):  # abstract namespace
            self.address: str | bytes = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self.address = address
        else:
            raise FileNotFoundError(f"NOTIFY_SOCKET={address!r} is not a path or @name")
        self.sock = socket.socket(socket.AF_UNIX,
                                  socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    def __call__(self, text: str) -> None:
        self.sock.sendto(text.encode(), self.address)


def _kind(text: str) -> str | None:
    """What a newer message of the same kind replaces while it waits: a lone
    STATUS= or WATCHDOG=1 (None: every other message is sent as it is)."""
    if "\n" in text:
        return None
    if text.startswith("STATUS="):
        return "status"
    return "watchdog" if text == "WATCHDOG=1" else None


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ,
                 send: Callable[[str], object] | None = None) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        self._address = environ.get("NOTIFY_SOCKET", "")
        self._send = send
        self._broken = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._interval = watchdog_interval(environ)
        self.waiting: list[str] = []  # messages the reader had no room for yet, in order
        self._retry: asyncio.TimerHandle | None = None
        self._delay = RETRY_FIRST
        self._dropped = False  # the oldest waiting were dropped once (logged once)

    def notify(self, text: str) -> None:
        if not self.enabled or self._broken:
            return
        if self.waiting:  # after those, in order
            self._wait(text)
            return
        try:
            if self._send is None:
                self._send = DatagramSender(self._address)
            self._send(text)
        except BlockingIOError:
            log.warning("sd_notify: the notify socket's queue is full (its reader is behind); "
                        "the messages wait, in order, and are sent once there is room")
            self._wait(text)
        except OSError as exc:  # the socket went away: carry on without it
            self._give_up(exc)

    def _wait(self, text: str) -> None:
        kind = _kind(text)
        if kind is not None:
            self.waiting = [t for t in self.waiting if _kind(t) != kind]
        self.waiting.append(text)
        if len(self.waiting) > MAX_WAITING:
            del self.waiting[:-MAX_WAITING]
            if not self._dropped:
                self._dropped = True
                log.warning("sd_notify: more than %d messages waiting for the notify socket; "
                            "the oldest are dropped", MAX_WAITING)
        if self._retry is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a test, the very start): the next message tries
                return
            self._retry = loop.call_later(self._delay, self._send_waiting)

    def _send_waiting(self) -> None:
        self._retry = None
        if self._broken or not self.waiting:
            return  # given up meanwhile: nothing to send, nothing to say
        assert self._send is not None  # something was tried before anything waited
        while self.waiting and not self._broken:
            try:
                self._send(self.waiting[0])
            except BlockingIOError:
                self._delay = min(self._delay * 2, RETRY_MAX)
                self._retry = asyncio.get_running_loop().call_later(self._delay, self._send_waiting)
                return
            except OSError as exc:
                self._give_up(exc)
                return
            del self.waiting[0]
        self._delay = RETRY_FIRST
        log.info("sd_notify: the notify socket has room again; the waiting messages were sent")

    def _give_up(self, exc: OSError) -> None:
        self._broken = True
        self.waiting.clear()
        log.warning("sd_notify: cannot reach systemd's notify socket (%s); not notifying "
                    "any more", exc)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def reloading(self) -> None:
        self.notify("RELOADING=1\nSTATUS=reloading the configuration")

    def stopping(self, longest_stop: float = 0.0, after: float = 0.0) -> None:
        """STOPPING=1; with EXTEND_TIMEOUT_USEC so that systemd's stop
        timeout covers the slowest program (stoptime, SIGKILL, a margin)
        and what the daemon still does once every program is down (`after`
        seconds at most: the log writer's drain, the last alerts), whatever
        TimeoutStopSec says."""
        extend = (f"\nEXTEND_TIMEOUT_USEC={int((longest_stop + after + 5) * 1_000_000)}"
                  if longest_stop else "")
        self.notify(f"STOPPING=1\nSTATUS=stopping every program{extend}")
        self.stop_watchdog()

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def start_watchdog(self) -> None:
        """WATCHDOG=1 every half period, from the event loop itself: a stuck
        loop stops the pings and systemd notices."""
        if self._interval is None or not self.enabled:
            return
        loop = asyncio.get_running_loop()

        def ping() -> None:
            self.notify("WATCHDOG=1")
            self._watchdog = loop.call_later(self._interval or 1.0, ping)
        ping()

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
