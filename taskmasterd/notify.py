"""sd_notify: READY/RELOADING/STOPPING/STATUS/WATCHDOG for Type=notify.

Through systemd-python's `daemon.notify`. Not being under systemd (no
NOTIFY_SOCKET) is normal; a missing or dead socket (systemd-python raises
FileNotFoundError/ConnectionRefusedError) is reported once and never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

from taskmasterd.process import State

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


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ,
                 send: Callable[[str], object] | None = None) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        self._send = send
        self._broken = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._interval = watchdog_interval(environ)

    def notify(self, text: str) -> None:
        if not self.enabled or self._broken:
            return
        try:
            if self._send is None:
                from systemd import daemon

                self._send = daemon.notify
            self._send(text)
        except OSError as exc:  # the socket went away: carry on without it
            self._broken = True
            log.warning("sd_notify: cannot reach systemd's notify socket (%s); not notifying "
                        "any more", exc)
        except ImportError:
            self._broken = True
            log.warning("sd_notify: systemd-python is not installed; cannot notify systemd")

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
