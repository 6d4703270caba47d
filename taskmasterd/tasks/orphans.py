"""Tasks whose runner died while their process lives on (TaskManager's):
watched through a pidfd until they exit, then `lost` -- they were not the
daemon's children, so their exit status cannot be collected. A cancel stops
one as the runner would have: stopsignal to its process group, SIGKILL
after stoptime. `runner_gone` decides, for each task a runner held when it
died, between its recorded end, watching it, and `lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from taskmasterd import spawn
from taskmasterd.tasks.records import TaskState, TaskStatus, _iso

if TYPE_CHECKING:
    from taskmasterd.tasks.manager import TaskManager

UNWATCHED = "ended while no task runner watched it: exit status unknown"


class Orphans:
    def __init__(self, exited: Callable[[str], None]) -> None:
        self._exited = exited  # called with the task id once its process is gone
        self.watched: dict[str, spawn.Child] = {}
        self.killing: dict[str, asyncio.TimerHandle] = {}  # stopped: SIGKILL due

    def __contains__(self, id: str) -> bool:
        return id in self.watched

    def watch(self, id: str, child: spawn.Child) -> None:
        loop = asyncio.get_running_loop()
        self.watched[id] = child

        def exited() -> None:
            loop.remove_reader(child.pidfd)
            self.watched.pop(id, None)
            timer = self.killing.pop(id, None)
            if timer is not None:
                timer.cancel()
            spawn.reap_adopted(child)
            self._exited(id)
        loop.add_reader(child.pidfd, exited)

    def stop(self, id: str, stopsignal: int, stoptime: float) -> None:
        child = self.watched.get(id)
        if child is None or id in self.killing:
            return
        _signal(child, stopsignal)
        self.killing[id] = asyncio.get_running_loop().call_later(stoptime, self._kill, id, child)

    def _kill(self, id: str, child: spawn.Child) -> None:
        self.killing.pop(id, None)
        if self.watched.get(id) is child:  # still there: its exit closes the pidfd
            _signal(child, signal.SIGKILL)

    def close(self) -> None:
        """Stop watching (the daemon's shutdown). A pending SIGKILL is dropped:
        the process goes on; the next daemon watches it again (a cancel asked
        of it again stops it)."""
        loop = asyncio.get_running_loop()
        for timer in self.killing.values():
            timer.cancel()
        self.killing.clear()
        for child in self.watched.values():
            loop.remove_reader(child.pidfd)
            os.close(child.pidfd)
        self.watched.clear()


def _signal(child: spawn.Child, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


async def runner_gone(m: TaskManager, ids: list[str]) -> None:
    """What the files of a dead runner's tasks say decides: an end it
    wrote; a process still alive is watched; else lost."""
    for id in ids:
        on_disk = await asyncio.get_running_loop().run_in_executor(
            m._pool, m.files.read_task, id)
        known = m._tasks.get(id)
        if known is None or known.state.final:
            continue
        if isinstance(on_disk, TaskStatus) and on_disk.state.final:
            m._end(on_disk, write=False)  # it wrote the end before it went
            continue
        s = on_disk if isinstance(on_disk, TaskStatus) else known
        take_unheld(m, s)
    m._schedule()


def take_unheld(m: TaskManager, s: TaskStatus) -> bool:
    """A task recorded running that no runner holds: watched if its
    process lives (lost at its exit), else lost now. True if watched."""
    if s.state == TaskState.RUNNING and s.pid:
        child = spawn.adopt(s.pid, s.start_ticks)
        if isinstance(child, spawn.Child):
            m._tasks[s.id] = s
            m.orphans.watch(s.id, child)
            return True
    if s.state == TaskState.RUNNING:
        beat = _iso(s.heartbeat or s.started) or "never"
        why = f"its task runner died while it ran (last heartbeat {beat})"
    else:
        why = "its task runner died before it started it"
    m._end(s.replace(state=TaskState.LOST, ended=m.clock(), reason=why), write=True)
    return False
