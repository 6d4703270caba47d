"""TaskManager's clean-up (taskmasterd/tasks/manager.py): finished tasks
and ended activities older than `tasks.keep` days are forgotten and their
directories removed (taskmasterd/tasks/keep.py decides which). It runs at
start, when `keep` changes, and after a task's end at most every
CLEANUP_EVERY seconds: no timer, so an idle daemon never wakes for it.

A mixin: TaskManager sets the attributes below in its __init__.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from taskmasterd.tasks.keep import expired
from taskmasterd.tasks.queue import TaskQueue
from taskmasterd.tasks.records import ActivityStatus, TaskStatus
from taskmasterd.tasks.settings import TaskSettings
from taskmasterd.tasks.taskfiles import TaskFiles

log = logging.getLogger("taskmasterd")

CLEANUP_EVERY = 60.0  # seconds between two clean-ups after task ends (no timer)

# Told the ids of the tasks and activities removed (the D-Bus objects go).
RemovedListener = Callable[[list[str], list[str]], None]


class Cleanup:
    files: TaskFiles
    settings: TaskSettings
    clock: Callable[[], float]
    removed_listeners: list[RemovedListener]
    _tasks: dict[str, TaskStatus]
    _activities: dict[str, ActivityStatus]
    _queue: TaskQueue
    _last_cleanup: float | None

    def _write(self, fn: Callable[..., None], *args: object) -> None:
        raise NotImplementedError  # the writer thread's (writerthread.WriterThread)

    def _maybe_cleanup(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._last_cleanup is None or now - self._last_cleanup >= CLEANUP_EVERY:
            self._cleanup()

    def _cleanup(self) -> None:
        """Remove finished tasks (and ended activities whose tasks are all
        gone) that ended more than `keep` days ago."""
        self._last_cleanup = asyncio.get_running_loop().time()
        tasks, acts = expired(self._tasks.values(), self._activities.values(), self.clock(),
                              self.settings.keep)
        for id in tasks:
            del self._tasks[id]
        for id in acts:
            del self._activities[id]
        if not tasks and not acts:
            return
        self._queue.forget(tasks, acts)
        for id in tasks:
            self._write(self.files.remove_task, id)
        for id in acts:
            self._write(self.files.remove_activity, id)
        log.info("tasks: removed %d task(s) and %d activit%s ended more than %g day(s) ago",
                 len(tasks), len(acts), "y" if len(acts) == 1 else "ies", self.settings.keep)
        for listener in list(self.removed_listeners):
            try:
                listener(tasks, acts)
            except Exception:
                log.exception("tasks: a removed-listener failed")
