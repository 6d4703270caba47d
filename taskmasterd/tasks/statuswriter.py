"""Status writes off the event loop, so tasks never wait behind fsyncs.

Every status.json write is atomic and durable: a few milliseconds of
flushes on a disk. The runner
starts and ends many short tasks at once (16 lanes of `true` in the bench),
so the writes go to a worker thread, in batches: while one batch is being
written, new statuses wait, and the next batch is every status waiting
then -- per task only the newest (a `running` not yet written when the task
already ended is skipped: the end replaces it), so a task's statuses land
in order. A batch is one hand-over to the worker and one wake-up of the
loop, however many files it holds (a hand-over per file cost two thread
switches each, most of the runner's system time with 16 lanes), and its
files are made durable together (statestore/groupcommit.py: two flushes of
the disk per batch, not two per file: those flushes, one file after
another, bounded how fast short tasks ended), in its swap mode: each
status is written into the task's spare `.status.json.spare` and exchanged
with status.json, which frees no disk block (a rename over status.json
freed one, and on a file system mounted with `discard` that cost a
synchronous discard per write). The
bookkeeping and the JSON encoding run on the loop's thread; the worker only
does the system calls (which release the GIL: a worker busy with Python
code would make the loop wait for the GIL after each of its own system
calls).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable

from taskmasterd.statestore.groupcommit import save_all
from taskmasterd.tasks.records import TaskStatus, encode_task
from taskmasterd.tasks.taskfiles import STATUS, TaskDir

Done = Callable[[TaskStatus, OSError | None], None]


class StatusWriter:
    def __init__(self, on_done: Done, *, swap: bool = True) -> None:
        """`swap`: statuses written in save_all's swap mode (a spare beside
        each status.json; `--run-task` writes without, in the user's current
        directory)."""
        self._loop = asyncio.get_running_loop()
        self._swap = swap
        # One worker: more threads fight the loop for the GIL, and a backlog
        # coalesces more `running` writes away.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="status")
        self._on_done = on_done
        self._waiting: dict[str, tuple[TaskDir, TaskStatus, bytes | None]] = {}  # by directory: the newest
        self._writing = False  # a batch is with the worker
        self._idle = asyncio.Event()
        self._idle.set()

    def write(self, taskdir: TaskDir, status: TaskStatus, data: bytes | None = None) -> None:
        """Write `status` (`data`: its encode_task bytes, when the caller has
        them already) to `taskdir`."""
        self._waiting[taskdir.path] = (taskdir, status, data)
        if not self._writing:
            self._next()

    def busy(self) -> bool:
        return self._writing

    async def drain(self) -> None:
        """Until every status given is written (or failed)."""
        await self._idle.wait()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _next(self) -> None:
        batch = list(self._waiting.values())
        self._waiting.clear()
        if not batch:
            self._writing = False
            self._idle.set()
            return
        self._writing = True
        self._idle.clear()
        # TaskDir.write, its encoding done here
        jobs = [(taskdir.path, STATUS, encode_task(status) if data is None else data)
                for taskdir, status, data in batch]
        # Swap mode: a spare must have one writer at a time. The runner is
        # the only writer of a task's status.json while it holds the task
        # (the daemon writes it before a runner holds it and once none does:
        # docs/tasks.md, "Who writes the file"), and this one
        # worker writes a file once per batch, a batch after the other.
        future = self._loop.run_in_executor(self._pool, functools.partial(save_all, swap=self._swap), jobs)
        future.add_done_callback(lambda f: self._written([s for _, s, _ in batch], f))

    def _written(self, statuses: list[TaskStatus], future: asyncio.Future[list[OSError | None]]) -> None:
        exc = future.exception()
        if exc is None:
            errors = future.result()
        else:  # not an OSError of a file (those are in the result): every file of the batch
            errors = [exc if isinstance(exc, OSError) else OSError(str(exc))] * len(statuses)
        self._next()  # first: on_done sees busy() as it is now
        for status, error in zip(statuses, errors, strict=True):
            self._on_done(status, error)
