"""Status writes off the event loop, so tasks never wait behind fsyncs.

Every status.json write is durable (TaskDir.write: temp file, fsync,
rename, fsync of the directory): a few milliseconds on a disk. The runner
starts and ends many short tasks at once (16 lanes of `true` in the bench),
so the writes go to a worker thread: per task one write at a time, in
order, and only the newest waiting status of a task is written next (a
`running` not yet written when the task already ended is skipped: the end
replaces it). The bookkeeping and the JSON encoding run on the loop's
thread; a worker only does the system calls (which release the GIL: a
worker busy with Python code would make the loop wait for the GIL after
each of its own system calls).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

from taskmasterd.statestore.store import StateStore
from taskmasterd.tasks.records import TaskStatus, encode_task
from taskmasterd.tasks.taskfiles import STATUS, TaskDir

# One worker: measured best (1,000 `true` tasks in 16 lanes): more threads
# fight the loop for the GIL, and a backlog coalesces more `running` writes
# away. The pool size stays a parameter.
THREADS = 1

Done = Callable[[TaskStatus, OSError | None], None]


class StatusWriter:
    def __init__(self, on_done: Done, threads: int = THREADS) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="status")
        self._on_done = on_done
        self._waiting: dict[str, tuple[TaskDir, TaskStatus, bytes | None]] = {}  # by directory: the newest
        self._busy: set[str] = set()  # directories with a write under way
        self._idle = asyncio.Event()
        self._idle.set()

    def write(self, taskdir: TaskDir, status: TaskStatus, data: bytes | None = None) -> None:
        """Write `status` (`data`: its encode_task bytes, when the caller has
        them already) to `taskdir`."""
        self._waiting[taskdir.path] = (taskdir, status, data)
        if taskdir.path not in self._busy:
            self._next(taskdir.path)

    def busy(self) -> bool:
        return bool(self._busy)

    async def drain(self) -> None:
        """Until every status given is written (or failed)."""
        await self._idle.wait()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _next(self, key: str) -> None:
        item = self._waiting.pop(key, None)
        if item is None:
            self._busy.discard(key)
            if not self._busy:
                self._idle.set()
            return
        self._busy.add(key)
        self._idle.clear()
        taskdir, status, data = item
        store = StateStore(taskdir.path, name=STATUS)  # TaskDir.write, its encoding done here
        future = self._loop.run_in_executor(self._pool, store.save_bytes,
                                            encode_task(status) if data is None else data)
        future.add_done_callback(lambda f: self._written(key, status, f))

    def _written(self, key: str, status: TaskStatus, future: asyncio.Future[None]) -> None:
        exc = future.exception()
        error = exc if isinstance(exc, OSError) else None
        if exc is not None and error is None:
            error = OSError(str(exc))
        self._next(key)  # first: on_done sees busy() as it is now
        self._on_done(status, error)
