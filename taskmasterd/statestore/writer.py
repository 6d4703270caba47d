"""The state store fed by the event loop: at most one write per loop turn.

`changed()` is called on every event (subscribe it to the EventBus); the
first call of a turn schedules one `flush` with `loop.call_soon`, and the
flush takes the snapshot of that moment and writes it only if it differs
from the last one written. Starting 1,000 programs is a few dozen writes,
an idle daemon none (no timer: nothing wakes it).

The write itself runs in an executor thread, one at a time and in order:
the loop never waits on the disk. (The daemon's store is not durable, see
statestore/store.py: a write is a temporary file and a rename, visible to
a successor as soon as it returns.) A change that comes
while a write is under way is written right after it. A write that fails (a
full disk, a read-only statedir) is logged once; the next change tries
again and its success is logged once too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from taskmasterd.statestore.records import ProcessRecord, Snapshot, assemble, encode_record
from taskmasterd.statestore.store import StateStore

log = logging.getLogger("taskmasterd")


class StoreWriter:
    def __init__(self, store: StateStore, snapshot: Callable[[], Snapshot],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.store = store
        self._snapshot = snapshot
        self._loop = loop or asyncio.get_running_loop()
        self._pending = False  # a flush is scheduled for this turn
        self._again = False  # a change came while a write was under way
        self._inflight: asyncio.Future[None] | None = None
        self._last: bytes | None = None  # what the file holds (None: unknown)
        self._failure = ""  # why writing fails ("": it works)
        self.writes = 0  # files written (for tests and the curious)
        self._closed = False
        self._texts: dict[ProcessRecord, str] = {}  # the last flush's records, encoded

    def changed(self, *_: object) -> None:
        if self._pending or self._closed:
            return
        self._pending = True
        self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._pending = False
        if self._closed:
            return
        if self._inflight is not None:
            self._again = True
            return
        data = self._encode(self._snapshot())
        if data == self._last:
            return
        self._inflight = self._loop.run_in_executor(None, self.store.save_bytes, data)
        self._inflight.add_done_callback(lambda f: self._written(f, data))

    def _written(self, future: asyncio.Future[None], data: bytes) -> None:
        self._inflight = None
        exc = None if future.cancelled() else future.exception()
        if exc is None:
            self._last = data
            self.writes += 1
            if self._failure:
                log.warning("state store: %s is written again (it failed: %s)", self.store.path,
                            self._failure)
                self._failure = ""
        else:
            self._last = None
            if not self._failure:
                self._failure = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
                log.warning("state store: cannot write %s (%s); processes are supervised as "
                            "usual but a new daemon could not re-adopt them; retried at the next "
                            "change", self.store.path, self._failure)
        if self._again:
            self._again = False
            self.changed()

    def _encode(self, snapshot: Snapshot) -> bytes:
        """records.encode, re-encoding only the records that changed since
        the last flush (1,000 processes: ~5 ms in full, ~1 ms this way)."""
        old, new = self._texts, {}
        for r in snapshot.processes:
            text = old.get(r)
            new[r] = text if text is not None else encode_record(r)
        self._texts = new
        return assemble(snapshot.daemon_pid, [new[r] for r in snapshot.processes])

    async def drain(self) -> None:
        """Wait until no write is under way or due."""
        while self._inflight is not None or self._pending or self._again:
            if self._inflight is not None:
                await asyncio.wait([self._inflight])
            else:
                await asyncio.sleep(0)

    async def close(self, *, clean: bool) -> None:
        """Stop writing (after the write under way). `clean` (every program
        stopped): remove the file, so that the next daemon finds nothing to adopt."""
        self._closed = True
        if self._inflight is not None:
            await asyncio.wait([self._inflight])
        if clean:
            try:
                self.store.remove()
            except OSError as exc:
                log.warning("state store: cannot remove %s: %s", self.store.path, exc.strerror)
