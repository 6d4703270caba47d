"""The state store fed by the event loop: at most one write per loop turn.

`changed()` is called on every event (subscribe it to the EventBus); the
first call of a turn schedules one `flush` with `loop.call_soon`, and the
flush writes the snapshot of that moment only if it differs from the last
one written. Starting 1,000 programs is one write, an idle daemon none (no
timer: nothing wakes it). A write that fails (a full disk, a read-only
statedir) is logged once; the next change tries again and its success is
logged once too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from taskmasterd.statestore.records import Snapshot, encode
from taskmasterd.statestore.store import StateStore

log = logging.getLogger("taskmasterd")


class StoreWriter:
    def __init__(self, store: StateStore, snapshot: Callable[[], Snapshot],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.store = store
        self._snapshot = snapshot
        self._loop = loop or asyncio.get_running_loop()
        self._pending = False
        self._last: bytes | None = None  # what the file holds (None: unknown)
        self._failure = ""  # why writing fails ("": it works)
        self.writes = 0  # files written (for tests and the curious)
        self._closed = False

    def changed(self, *_: object) -> None:
        if self._pending or self._closed:
            return
        self._pending = True
        self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._pending = False
        if self._closed:
            return
        data = encode(self._snapshot())
        if data == self._last:
            return
        try:
            self.store.save_bytes(data)
        except OSError as exc:
            self._last = None
            if not self._failure:
                self._failure = exc.strerror or str(exc)
                log.warning("state store: cannot write %s (%s); processes are supervised as "
                            "usual but a new daemon could not re-adopt them; retried at the next "
                            "change", self.store.path, self._failure)
            return
        self._last = data
        self.writes += 1
        if self._failure:
            log.warning("state store: %s is written again (it failed: %s)", self.store.path,
                        self._failure)
            self._failure = ""

    def close(self, *, clean: bool) -> None:
        """Stop writing. `clean` (every program stopped): remove the file, so
        that the next daemon finds nothing to adopt."""
        self._closed = True
        if clean:
            try:
                self.store.remove()
            except OSError as exc:
                log.warning("state store: cannot remove %s: %s", self.store.path, exc.strerror)
