"""TaskManager's writer thread (taskmasterd/tasks/manager.py): every file
job of the daemon's side of tasks goes to one thread, in order, so the
event loop never waits on the disk.

Submissions wait for their own write (a task is durable when its id is
returned); those of one loop turn are written together, CREATE_BATCH at
most, as one group commit (statestore/groupcommit.py: two flushes of the
disk for the batch; each task's own fsyncs, one after another, bounded how
fast a client could submit). Other writes do not wait: those of one loop
turn go to the thread in one hand-over, their failures logged.

A mixin: TaskManager sets the attributes below in its __init__.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from taskmasterd.errors import TaskmasterError
from taskmasterd.tasks.records import TaskStatus, new_id
from taskmasterd.tasks.taskfiles import TaskFiles

log = logging.getLogger("taskmasterd")
T = TypeVar("T")

# Submissions written per group commit at most. A burst of 1000 as one batch
# made every task wait for all of them (and for the loop turn publishing
# them all) before the first could start; batches of this size let the
# first ones run while the next are written. Paired bench runs (1000 tasks,
# 16 lanes): 32 took 5-9 % less wall time than 64; 16 no less than 32, for
# 6 % more CPU.
CREATE_BATCH = 32
# ...except the first batch while none is being written: a burst's first
# tasks start after a group commit of this many (a few ms).
FIRST_BATCH = 16


class WriterThread:
    files: TaskFiles
    _pool: concurrent.futures.ThreadPoolExecutor
    _closed: bool
    # Submissions of this loop turn, written together (_create_batch):
    # (their statuses, the activity they join, the future of their result).
    _creating: list[tuple[list[TaskStatus], str, asyncio.Future[list[TaskStatus]]]]
    _writes: list[Callable[[], None]]  # _write jobs not handed to the thread yet
    _creates_writing = 0  # batches of submissions with the writer thread

    def _write_error(self, exc: OSError) -> TaskmasterError:
        """What a caller whose write failed is told (nothing was queued)."""
        return TaskmasterError(f"cannot write under {self.files.statedir}: {exc.strerror or exc}")

    async def _create_soon(self, statuses: list[TaskStatus], activity: str = "") -> list[TaskStatus]:
        """`statuses` written as new tasks (of `activity`) with the other
        submissions of this loop turn: their ids once durable."""
        future: asyncio.Future[list[TaskStatus]] = asyncio.get_running_loop().create_future()
        self._creating.append((statuses, activity, future))
        if len(self._creating) == 1:
            asyncio.get_running_loop().call_soon(self._create_pending)
        try:
            return await future
        except OSError as exc:
            raise self._write_error(exc) from None

    def _create_pending(self) -> None:
        size = CREATE_BATCH if self._creates_writing else FIRST_BATCH
        batch, self._creating = self._creating[:size], self._creating[size:]
        if self._creating:  # the rest after: their tasks start while those are written
            asyncio.get_running_loop().call_soon(self._create_pending)
        self._hand_writes()  # what was asked before goes first
        try:
            job = asyncio.get_running_loop().run_in_executor(
                self._pool, self._create_batch, [(statuses, activity) for statuses, activity, _ in batch])
        except RuntimeError:  # the writer thread is shut down: close() has run
            for _s, _a, future in batch:
                if not future.done():
                    future.set_exception(TaskmasterError("tasks cannot be submitted: taskmasterd is "
                                                         "shutting down"))
            return

        self._creates_writing += 1

        def done(f: asyncio.Future[list[list[TaskStatus] | OSError]]) -> None:
            self._creates_writing -= 1
            exc = f.exception()
            results = [exc] * len(batch) if exc is not None else f.result()
            for (_s, _a, future), result in zip(batch, results, strict=True):
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        job.add_done_callback(done)

    # (writer thread) ids are picked where the directories are made: one
    # thread, so two submissions cannot pick the same id.
    def _create_batch(self, requests: list[tuple[list[TaskStatus], str]]
                      ) -> list[list[TaskStatus] | OSError]:
        """Each request's tasks, made and written durably all at once; per
        request its statuses with their ids, or the error that stopped it
        (none of its tasks is left on disk then)."""
        made: list[list[TaskStatus] | OSError] = []
        for statuses, activity in requests:
            if activity:
                statuses = [s.replace(activity=activity) for s in statuses]
            try:
                made.append(self.files.make_task_dirs(statuses, new_id))
            except OSError as exc:
                made.append(exc)
        flat = [s for got in made if not isinstance(got, OSError) for s in got]
        errors = dict(zip((s.id for s in flat), self.files.write_new_tasks(flat), strict=True))
        out: list[list[TaskStatus] | OSError] = []
        for got in made:
            if isinstance(got, OSError):
                out.append(got)
                continue
            failed = next((e for e in (errors[s.id] for s in got) if e is not None), None)
            if failed is not None:
                for s in got:
                    self.files.remove_task(s.id)
                out.append(failed)
                continue
            out.append(got)
        return out

    def _create(self, statuses: list[TaskStatus], activity: str = "") -> list[TaskStatus]:
        """(writer thread) One request of _create_batch, alone; raises its error."""
        (got,) = self._create_batch([(statuses, activity)])
        if isinstance(got, OSError):
            raise got
        return got

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking file job in the writer thread and wait for it;
        OSError becomes the caller's error (nothing was queued)."""
        loop = asyncio.get_running_loop()
        self._hand_writes()  # what was asked before goes first
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except OSError as exc:
            raise self._write_error(exc) from None

    def _write(self, fn: Callable[..., None], *args: Any) -> None:
        """A status write in the writer thread, after those before it; its
        failure is logged (the state in memory and the events stand). Those
        of one loop turn go to the thread together (one hand-over)."""
        if self._closed:
            return
        self._writes.append(lambda: fn(*args))
        if len(self._writes) == 1:
            asyncio.get_running_loop().call_soon(self._hand_writes)

    def _hand_writes(self) -> None:
        """The writes asked for so far, to the writer thread (in order)."""
        jobs, self._writes = self._writes, []
        if not jobs:
            return

        def run() -> None:
            for job in jobs:
                try:
                    job()
                except OSError as exc:
                    log.warning("tasks: cannot write under %s: %s", self.files.statedir,
                                exc.strerror or exc)
        asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def flush(self) -> None:
        """Wait until every status write asked for so far has landed."""
        self._hand_writes()
        await asyncio.get_running_loop().run_in_executor(self._pool, lambda: None)

