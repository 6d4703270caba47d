"""The daemon's events on a `Link`: subscribing (AddMatch before acting,
so that nothing is missed), then waiting for them or taking those received
so far, as taskctl.model's typed events (taskctl.connection.event_of). The
link itself queues the signals while subscribed; `taskctl.client.Client` is
a Subscriber.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from taskctl.connection import DBUS_NAME, DBUS_PATH, event_of, received, wait_readable
from taskctl.link import Link
from taskctl.model import Event, Unreachable
from taskmasterd.bus.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH


class Subscriber(Link):
    """A link that receives the daemon's events (ProcessStateChanged,
    Reloaded, the daemon leaving/joining the bus) once subscribed."""

    # -- signals -----------------------------------------------------------------------

    def bus_fd(self) -> int | None:
        """The bus socket's fd, to poll beside others before `next_event(0)`
        (None when not connected)."""
        conn = self._conn
        return None if conn is None else int(conn.sock.fileno())

    def subscribe(self) -> None:
        """Start receiving events (ProcessStateChanged, Reloaded, the daemon
        leaving/joining the bus) for `next_event`. Subscribe BEFORE acting."""
        with self._request():
            self._ensure()
        if self._signals is None:
            self._signals = deque()
        rules = [f"type='signal',sender='{BUS_NAME}',path='{MANAGER_PATH}',"
                 f"interface='{MANAGER_IFACE}'",
                 f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
                 f"member='NameOwnerChanged',arg0='{BUS_NAME}'"]
        for rule in rules:
            if rule not in self._matches:
                self._call("AddMatch", "s", [rule], destination=DBUS_NAME, path=DBUS_PATH,
                           interface=DBUS_NAME)
                self._matches.append(rule)

    def unsubscribe(self) -> None:
        """Stop receiving events; drop the ones not taken yet."""
        self._signals = None
        if not self._matches or self._conn is None:
            self._matches = []
            return
        try:
            for rule in list(self._matches):
                self._matches.remove(rule)
                self._call("RemoveMatch", "s", [rule], destination=DBUS_NAME,
                           path=DBUS_PATH, interface=DBUS_NAME)
        except Unreachable:
            pass

    @contextmanager
    def subscription(self) -> Iterator[Self]:
        self.subscribe()
        try:
            yield self
        finally:
            self.unsubscribe()

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event (None after `timeout` seconds). Raises Unreachable if
        the bus connection drops."""
        if self._signals is None:
            raise RuntimeError("next_event() without subscribe()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._signals:
                event = event_of(self._signals.popleft(), time.time())
                if event is not None:
                    return event
            conn = self._conn
            if conn is None:
                self._signals = None
                raise self._unreachable("connection lost", Unreachable.LOST)
            try:
                with self._request():  # one request: a cancel() meanwhile is not forgotten
                    # What is already buffered or readable, without blocking; else
                    # wait for the socket, a signal, or the deadline, and look again.
                    if not received(conn):
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            return None
                        wait_readable(conn.sock, left)
                        if not received(conn):
                            continue  # a signal that raised nothing, or a slice of the wait
            except Unreachable:
                self._signals = None
                raise
            self._keep_signals()

    def take_events(self) -> list[Event]:
        """The events received so far and not taken yet, without waiting:
        after a request, every signal the daemon sent before its reply."""
        if self._signals is None:
            raise RuntimeError("take_events() without subscribe()")
        now = time.time()
        events = [event_of(m, now) for m in self._signals]
        self._signals.clear()
        return [e for e in events if e is not None]

    def gone(self, reason: str) -> Unreachable:
        """The error for a daemon that went away (left the bus) meanwhile."""
        return self._unreachable(reason, Unreachable.LOST)

    def events(self) -> Iterator[Event]:
        """Every event, forever (until interrupted or the connection drops)."""
        while True:
            event = self.next_event()
            if event is not None:
                yield event
