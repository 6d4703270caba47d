"""The task runner's spawner threads: tasks started off the event loop, in
batches (taskmasterd/fastspawn.py says why a thread: the child's exec is
waited for without the GIL, and the loop goes on meanwhile).

A hand-over to a thread and its answer back cost two thread switches and a
wake-up of the loop; 16 lanes of short tasks made that one per task, most of
the runner's system time. So the starts asked for in one loop turn go
together: at the end of the turn they are split among the threads, each
starts its share one after another and answers once for all of them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable

Start = Callable[[], int]  # starts a process: its pid (raises OSError, ValueError)
Done = Callable[[int | BaseException], None]  # (on the loop) the pid, or what the start raised


def _start_all(starts: list[Start]) -> list[int | BaseException]:
    """(worker thread) Each start in order; its pid or its exception."""
    out: list[int | BaseException] = []
    for start in starts:
        try:
            out.append(start())
        except Exception as exc:  # told to its task, never lost in the thread
            out.append(exc)
    return out


class Spawner:
    def __init__(self, threads: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads = threads
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="spawn")
        self._waiting: list[tuple[Start, Done]] = []

    def submit(self, start: Start, done: Done) -> None:
        """Run `start` in a spawner thread; `done` gets its result on the loop."""
        self._waiting.append((start, done))
        if len(self._waiting) == 1:
            self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        jobs, self._waiting = self._waiting, []
        shares = [jobs[i::self._threads] for i in range(min(self._threads, len(jobs)))]
        for share in shares:
            future = self._loop.run_in_executor(self._pool, _start_all, [s for s, _ in share])
            future.add_done_callback(functools.partial(self._answer, share))

    @staticmethod
    def _answer(share: list[tuple[Start, Done]],
                future: asyncio.Future[list[int | BaseException]]) -> None:
        exc = future.exception()
        results = future.result() if exc is None else [exc] * len(share)
        for (_start, done), result in zip(share, results, strict=True):
            done(result)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
