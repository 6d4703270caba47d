"""The daemon side of tasks: `TaskManager` holds every task and activity on
disk, queues them (taskmasterd/tasks/queue.py decides), hands them to the
task runner (taskmasterd/tasks/runnerclient.py), and publishes every change
of state on the EventBus, once.

Who writes a status.json (docs/tasks.md): the daemon writes `queued`,
`cancelled` of a task the runner never got, `lost`, and the activity files;
the runner writes everything else of a task it was given (running, the
heartbeat, the end) and tells us through `on_status`. So a task handed to the
runner is never written here while the runner holds it; `lost` is written
only once the runner is gone. Writes go to one executor thread, in order,
so the event loop never waits on the disk; `submit` waits for its own write
(the task is durable when its id is returned). Those of one loop turn go
together: the submissions as one group commit (statestore/groupcommit.py:
two flushes of the disk for the whole batch, where each task's own fsyncs,
one after another, bounded how fast a client could submit), the other
writes as one hand-over to the thread (taskmasterd/tasks/writerthread.py).

Start-up (`open`) takes back what a previous daemon left (see `_recover`).
Clean shutdown (`close`) detaches from the runner: running tasks go on under
it and the next daemon takes them back; queued ones stay queued on disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from taskmasterd.errors import (
    BadName,
    NoSuchTask,
    NotRunning,
    QueueFull,
    TaskInvalid,
    TaskmasterError,
)
from taskmasterd.events import EventBus
from taskmasterd.tasks import notices
from taskmasterd.tasks.cleanup import Cleanup, RemovedListener
from taskmasterd.tasks.orphans import UNWATCHED, Orphans, runner_gone
from taskmasterd.tasks.queue import ActivityEnd, TaskQueue
from taskmasterd.tasks.records import (
    ActivityState,
    ActivityStatus,
    TaskState,
    TaskStatus,
    new_id,
)
from taskmasterd.tasks.settings import TaskSettings
from taskmasterd.tasks.spec import TaskSpec
from taskmasterd.tasks.taskfiles import STREAMS, TaskFiles
from taskmasterd.tasks.writerthread import CREATE_BATCH as CREATE_BATCH
from taskmasterd.tasks.writerthread import FIRST_BATCH as FIRST_BATCH
from taskmasterd.tasks.writerthread import WriterThread

log = logging.getLogger("taskmasterd")



class RunnerClient(Protocol):
    """What the manager uses of taskmasterd.tasks.runnerclient.RunnerClient
    (the daemon side of the task runner; tests give a fake)."""

    def attach_surviving(self) -> list[TaskStatus] | None: ...
    def warm(self) -> None: ...
    def run(self, status: TaskStatus, stopsignal: int, stoptime: float) -> None: ...
    def cancel(self, id: str, reason: str) -> None: ...
    def flush(self) -> None: ...
    @property
    def pid(self) -> int: ...
    async def close(self) -> None: ...


class TaskManager(WriterThread, Cleanup):
    def __init__(self, statedir: str, settings: TaskSettings, events: EventBus,
                 runner: RunnerClient, *, clock: Callable[[], float] = time.time) -> None:
        self.files = TaskFiles(statedir)
        self.settings = settings
        self.events = events
        self.runner = runner
        self.clock = clock  # wall time: what the files record
        self.removed_listeners: list[RemovedListener] = []
        self._tasks: dict[str, TaskStatus] = {}
        self._activities: dict[str, ActivityStatus] = {}
        self._queue = TaskQueue(settings.max_parallel)
        self._seq = 1
        self._sent: set[str] = set()  # handed to the runner: it writes their status now
        self.orphans = Orphans(self._orphan_exited)  # alive, no runner: lost at exit
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="taskfiles")
        self._append_lock = asyncio.Lock()
        self._last_cleanup: float | None = None
        self._closed = False
        self._scheduling = False
        # Why submissions are refused (None: they are taken): until open(),
        # or when another daemon owns this statedir.
        self.unavailable: str | None = "taskmasterd is starting"
        # Set once open() took back what was on disk (or refuse() said why
        # not): a submission that comes before waits for it (the bus name is
        # ours a moment before the state store is).
        self._settled = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self._reserved = 0  # tasks of submissions being written (not in the queue yet)
        # Submissions of this loop turn, written together (_create_batch):
        # (their statuses, the activity they join, the future of their result).
        self._creating: list[tuple[list[TaskStatus], str, asyncio.Future[list[TaskStatus]]]] = []
        self._writes: list[Callable[[], None]] = []  # _write jobs not handed to the thread yet

    # ---- reading -----------------------------------------------------------

    def tasks(self) -> list[TaskStatus]:
        return sorted(self._tasks.values(), key=lambda s: s.seq)

    def task(self, id: str) -> TaskStatus:
        s = self._tasks.get(id)
        if s is None:
            raise NoSuchTask(f"no task {id!r}")
        return s

    def activities(self) -> list[ActivityStatus]:
        return sorted(self._activities.values(), key=lambda a: a.seq)

    def activity(self, id: str) -> ActivityStatus:
        a = self._activities.get(id)
        if a is None:
            raise NoSuchTask(f"no activity {id!r}")
        return a

    def output_file(self, id: str, stream: str) -> str:
        if stream not in STREAMS:
            raise BadName(f"{stream!r} is not an output stream; expected stdout or stderr")
        self.task(id)
        return self.files.task_dir(id).output(stream)

    def knows(self, id: str) -> bool:
        return id in self._tasks or id in self._activities

    def stderr_file(self, id: str) -> str:
        """The stderr an alert about task or activity `id` shows the tail of:
        the task's own; for an activity, its failing task's (its last
        task's when it succeeded). NoSuchTask otherwise."""
        a = self._activities.get(id)
        if a is not None:
            id = a.failed_task or (a.tasks[-1] if a.tasks else "")
        return self.output_file(id, "stderr")

    # ---- submitting ---------------------------------------------------------------

    async def submit(self, spec: TaskSpec) -> TaskStatus:
        """Queue one task (appended to `spec.activity` when set); its queued
        status is on disk, fsynced, when this returns."""
        await self._available()
        with self._room(1):
            if spec.activity:
                async with self._append_lock:  # positions in an activity follow the order of calls
                    return await self._append(spec)
            return await self._submit_alone(spec)

    async def _submit_alone(self, spec: TaskSpec) -> TaskStatus:
        (status,) = await self._create_soon([self._new_status(spec, "", 0)])
        self._queued(status)
        self._queue.add_task(status.id, status.seq)
        self._schedule()
        return status

    async def _append(self, spec: TaskSpec) -> TaskStatus:
        act = self._open_activity(spec.activity)
        (status,) = await self._create_soon([self._new_status(spec, act.id, len(act.tasks))],
                                            act.id)
        act = self._activities.get(act.id, act)
        if act.state.final:  # it ended while the file was written: nothing queued
            await self._io(self.files.remove_task, status.id)
            raise TaskInvalid(f"activity {act.id} has ended ({act.state})")
        self._queued(status)
        self._queue.append(act.id, status.id, status.seq)
        self._set_activity(act.replace(tasks=(*act.tasks, status.id)))
        self._schedule()
        return status

    def _open_activity(self, id: str) -> ActivityStatus:
        act = self._activities.get(id)
        if act is None:
            raise TaskInvalid(f"activity: no activity {id!r} to append the task to")
        if act.state.final:
            raise TaskInvalid(f"activity {id} has ended ({act.state})")
        return act

    async def submit_activity(self, name: str, specs: list[TaskSpec]) -> ActivityStatus:
        """Queue an activity and all its tasks at once (durable on return)."""
        await self._available()
        if not specs:
            raise TaskInvalid("activity.tasks: expected at least one task")
        for i, spec in enumerate(specs):
            if spec.activity:
                raise TaskInvalid(f"activity.tasks[{i}].activity: a task of a new activity "
                                  "cannot name another activity")
        with self._room(len(specs)):
            seq = self._take_seq()
            statuses = [self._new_status(spec, "", i) for i, spec in enumerate(specs)]
            act = ActivityStatus(id="", name=name, state=ActivityState.QUEUED, tasks=(), seq=seq,
                                 submitted=self.clock())
            act, statuses = await self._io(self._create_activity, act, statuses)
        self._activities[act.id] = act
        for s in statuses:
            self._queued(s)
            self._queue.add_task(s.id, s.seq, activity=act.id)
        self._queue.add_activity(act.id, list(act.tasks))
        self._schedule()
        return act

    @contextlib.contextmanager
    def _room(self, n: int) -> Iterator[None]:
        """Room for `n` more tasks under `tasks.max_queued` (QueueFull if
        none), held while they are written; they are in the queue after."""
        limit = self.settings.max_queued
        unended = self._queue.unended + self._reserved
        if unended + n > limit:
            what = "a task" if n == 1 else f"an activity of {n} tasks"
            raise QueueFull(f"{what} would take the tasks not yet ended past tasks.max_queued "
                            f"({limit}; {unended} queued or running): nothing queued")
        self._reserved += n
        try:
            yield
        finally:
            self._reserved -= n

    def refuse(self, why: str) -> None:
        """No task is taken, now or later in this daemon's life (`why`)."""
        self.unavailable = why
        self._settled.set()

    async def _available(self) -> None:
        await self._settled.wait()
        if self.unavailable is not None:
            raise TaskmasterError(f"tasks cannot be submitted: {self.unavailable}")

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _new_status(self, spec: TaskSpec, activity: str, position: int) -> TaskStatus:
        """Its id is chosen with its directory (in the writer thread)."""
        timeout = self.settings.timeout if spec.timeout is None else spec.timeout
        # As the file reads back: the limit in force, the activity in the status only.
        spec = dataclasses.replace(spec, timeout=timeout, activity="")
        return TaskStatus(id="", spec=spec, state=TaskState.QUEUED, seq=self._take_seq(),
                          submitted=self.clock(), timeout=timeout, activity=activity,
                          position=position)

    def _create_activity(self, act: ActivityStatus,
                         statuses: list[TaskStatus]) -> tuple[ActivityStatus, list[TaskStatus]]:
        act = act.replace(id=new_id(self.files.taken))
        os.makedirs(self.files.activity_path(act.id), mode=0o700)  # reserves the id
        try:
            made = self._create(statuses, act.id)
            act = act.replace(tasks=tuple(s.id for s in made))
            self.files.write_activity(act)
        except OSError:
            self.files.remove_activity(act.id)
            raise
        return act, made

    def _queued(self, status: TaskStatus) -> None:
        self._tasks[status.id] = status
        self.events.publish(notices.task_event(None, status))

    def _set_task(self, status: TaskStatus, *, write: bool, adopted: bool = False) -> None:
        old = self._tasks.get(status.id)
        self._tasks[status.id] = status
        self._announce(old, status, write=write, adopted=adopted)

    def _announce(self, old: TaskStatus | None, status: TaskStatus, *, write: bool,
                  adopted: bool = False) -> None:
        """A task's new status (in memory already): written if `write`, published."""
        if write:
            self._write(self.files.write_task, status)
        self.events.publish(notices.task_event(old.state if old else None, status,
                                               adopted=adopted))
        if status.state.final:
            self._write(self.files.mark_noticed, status.id)

    def _set_activity(self, act: ActivityStatus) -> None:
        old = self._activities.get(act.id)
        self._activities[act.id] = act
        self._write(self.files.write_activity, act)
        if old is None or old.state != act.state:
            self.events.publish(notices.activity_event(old.state if old else None, act))

    # ---- running ------------------------------------------------------------------

    def _schedule(self) -> None:
        """Start what the queue allows now (same loop turn as the end that
        freed a lane)."""
        if self._closed or self._scheduling:
            return  # the loop below goes on with the lanes an end freed
        self._scheduling = True
        try:
            while batch := self._queue.to_start():
                for id in batch:
                    self._hand_over(self._tasks[id])
        finally:
            self._scheduling = False

    def _hand_over(self, status: TaskStatus) -> None:
        if status.activity:
            act = self._activities.get(status.activity)
            if act is not None and act.state == ActivityState.QUEUED:
                self._set_activity(act.replace(state=ActivityState.RUNNING, started=self.clock()))
        try:
            self.runner.run(status, int(self.settings.stopsignal), self.settings.stoptime)
        except (OSError, TaskmasterError) as exc:
            # Never handed over: ours to write, and nobody else's.
            self._end(status.replace(state=TaskState.FAILED, ended=self.clock(),
                                     reason=f"the task runner could not be started: {exc}"),
                      write=True)
            return
        self._sent.add(status.id)

    def on_status(self, status: TaskStatus) -> None:
        """The runner wrote `status` (running, a heartbeat, the end)."""
        self.on_statuses([status])

    def on_statuses(self, statuses: list[TaskStatus]) -> None:
        """Statuses the runner sent together, in order. The lanes their ends
        free are filled and the runs sent before any end is published: the
        publishing (signals, log lines, alerts) is most of an end's cost,
        and 16 lanes ending together had the next 16 tasks wait for all of it."""
        ended = []
        for status in statuses:
            known = self._tasks.get(status.id)
            if known is None or known.state.final:
                continue  # unknown, or decided already (lost while its runner was gone)
            if status.state.final:
                self._sent.discard(status.id)
                ended.append(self._settle(status))
            elif status.state == TaskState.RUNNING:
                self._tasks[status.id] = status
                if known.state != TaskState.RUNNING:
                    self.events.publish(notices.task_event(known.state, status))
        if ended:
            self.runner.flush()
        for old, status, end in ended:
            self._publish_end(old, status, end, write=False)

    def _end(self, status: TaskStatus, *, write: bool) -> None:
        """A task ended (told by the runner, or decided here): record it,
        draw its activity's consequences, fill the freed lane."""
        self._publish_end(*self._settle(status), write=write)

    def _settle(self, status: TaskStatus) -> tuple[TaskStatus | None, TaskStatus, ActivityEnd | None]:
        """An end recorded in memory and its lane filled (the next task of an
        activity only if this one succeeded); (the status before, the end,
        what it ends of its activity) for _publish_end."""
        old = self._tasks.get(status.id)
        self._tasks[status.id] = status
        end = self._queue.ended(status.id, status.state, status.reason)
        self._schedule()
        return old, status, end

    def _publish_end(self, old: TaskStatus | None, status: TaskStatus, end: ActivityEnd | None, *,
                     write: bool) -> None:
        self._announce(old, status, write=write)
        if end is not None:
            self._end_activity(end)
        self._maybe_cleanup()
        self._schedule()

    def _end_activity(self, end: ActivityEnd) -> None:
        act = self._activities.get(end.activity)
        if act is None:
            return
        now = self.clock()
        for id in end.cancel_queued:
            s = self._tasks.get(id)
            if s is not None and not s.state.final:
                self._set_task(s.replace(state=TaskState.CANCELLED, ended=now, reason=end.reason),
                               write=True)
        for id in end.cancel_running:
            self._stop(id, end.reason)
        reason = end.reason
        if end.failed_task:
            failed = self._tasks.get(end.failed_task)
            reason = f"its task {end.failed_task} " + (
                f"{failed.state}" + (f": {failed.reason}" if failed.reason else "")
                if failed is not None else "is missing (its status file was refused)")
        self._set_activity(act.replace(state=end.state, ended=now, failed_task=end.failed_task,
                                       reason=reason))

    def _stop(self, id: str, reason: str) -> None:
        """Ask whoever runs task `id` to stop it."""
        if id in self._sent:
            self.runner.cancel(id, reason)
            return
        # No runner: ours to stop as a runner would; its exit marks it lost.
        self.orphans.stop(id, self.settings.stopsignal, self.settings.stoptime)

    # ---- cancelling -------------------------------------------------------------------

    def cancel(self, id: str, reason: str) -> None:
        s = self.task(id)
        if s.state.final:
            raise NotRunning(f"task {id} has already ended ({s.state})")
        if id in self._sent or id in self.orphans:
            self._stop(id, reason)  # its end comes later, from whoever runs it
            return
        self._end(s.replace(state=TaskState.CANCELLED, ended=self.clock(), reason=reason),
                  write=True)

    def cancel_activity(self, id: str, reason: str) -> None:
        act = self.activity(id)
        if act.state.final:
            raise NotRunning(f"activity {id} has already ended ({act.state})")
        c = self._queue.cancel_activity(id, reason)
        now = self.clock()
        for t in c.cancel_queued:
            s = self._tasks.get(t)
            if s is not None:
                self._set_task(s.replace(state=TaskState.CANCELLED, ended=now, reason=reason),
                               write=True)
        for t in c.cancel_running:
            self._stop(t, reason)
        if c.end is not None:
            self._end_activity(c.end)
        self._schedule()

    # ---- the runner went away ---------------------------------------------------------

    def on_gone(self, runner_pid: int, reason: str) -> None:
        """The runner died while it held tasks (orphans.runner_gone)."""
        gone = sorted(self._sent, key=lambda i: self._tasks[i].seq)
        self._sent.difference_update(gone)
        if not gone:
            return
        log.warning("tasks: the task runner (pid %d) went away (%s) holding %d task(s)",
                    runner_pid, reason, len(gone))
        job = asyncio.get_running_loop().create_task(runner_gone(self, gone))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _orphan_exited(self, id: str) -> None:
        s = self._tasks.get(id)
        if s is not None and not s.state.final:
            self._end(s.replace(state=TaskState.LOST, ended=self.clock(), reason=UNWATCHED),
                      write=True)

    # ---- settings, clean-up, the end ------------------------------------------------------

    def configure(self, settings: TaskSettings) -> None:
        """A reload: a raised max_parallel starts more now, a lowered one lets
        running tasks finish; timeout applies to tasks submitted from now on."""
        keep_changed = settings.keep != self.settings.keep
        self.settings = settings
        self._queue.max_parallel = settings.max_parallel
        if keep_changed:
            self._cleanup()
        self._schedule()

    async def open(self) -> None:
        """Take back what a previous daemon left, then serve."""
        from taskmasterd.tasks.recovery import recover

        await recover(self)
        self.runner.warm()  # the first task must not wait for the runner's start-up
        self.unavailable = None
        self._settled.set()
        self._cleanup()
        self._schedule()

    async def close(self) -> None:
        """Detach from the runner (its tasks go on); wait for our writes."""
        if self._closed:
            return
        self._closed = True
        self.refuse("taskmasterd is shutting down")
        for job in list(self._jobs):
            job.cancel()
        self.orphans.close()
        await self.runner.close()
        await self.flush()
        self._pool.shutdown(wait=False)
