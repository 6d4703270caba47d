"""An asyncio event loop on a virtual clock, for tests of timing logic (as
trio's `MockClock(autojump_threshold=0)`).

`loop.time()` is virtual: it starts at 0 and moves only when the loop has
nothing to do, straight to the next timer. So an hour's asyncio sleep
returns at once with `loop.time()` exactly 3600 later, and a test asserts
exact delays (a retry 2 s after the failure, a summary at the rate's end)
whatever the machine's load.

The loop has "nothing to do" when no callback is ready, no file descriptor
is ready now, and no job given to `run_in_executor` (`asyncio.to_thread`
too) is still running: time stands still while a thread works, so a fast
thread is never overtaken by a timer far ahead. A job that never ends
therefore stops the clock (never await a hung thread with a timeout here).
Without any timer, the loop blocks on real I/O as usual. Work done outside
the process (a child dying, a server answering) is not waited for: the
clock may jump over timers meanwhile, so assert the time a timer was armed
for, not what happened around slow outside work.

Usage: `run(main())`, or `asyncio.Runner(loop_factory=VirtualClockLoop)`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The loop's selector: when the loop would wait `timeout` seconds for
    I/O and none is ready, the virtual clock jumps by `timeout` instead."""

    def __init__(self) -> None:
        super().__init__()
        self.clock: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        clock = self.clock
        if ready or timeout == 0 or clock is None:
            return ready
        if clock.threads_running:
            return super().select(None)  # a thread's result comes through the self-pipe
        if timeout is None:
            return super().select(None)  # no timer: wait for real I/O
        clock.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        self._virtual = 0.0
        self.threads_running = 0
        selector.clock = self

    def time(self) -> float:
        return self._virtual

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does it itself when idle)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._virtual += seconds

    def run_in_executor(self, executor: concurrent.futures.Executor | None,
                        func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.threads_running += 1

        def finished(_: asyncio.Future[T]) -> None:
            self.threads_running -= 1
        future.add_done_callback(finished)
        return future


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on a VirtualClockLoop."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main)
