"""The task queue as decisions (pure: no asyncio, no I/O, no clock).

`TaskQueue` knows, for each task the daemon holds, whether it waits, runs
or has ended, and for each activity which tasks it has, in order. It decides:

- which tasks start now (`to_start`): FIFO by `seq` (submission order, kept
  across restarts), at most `max_parallel` running; a task of an activity is
  runnable only once the task before it in that activity succeeded;
- what a task's end means for its activity (`ended` → `ActivityEnd`): the
  next becomes runnable, or the activity succeeded, or it failed (cancelled
  when `cancel_activity` asked) and its other tasks are to be cancelled;
- what cancelling an activity takes (`cancel_activity` → `Cancelling`).

The manager (taskmasterd/tasks/manager.py) does what is decided: it writes
the files, tells the runner, publishes the events. A lower `max_parallel`
(a reload) stops nothing: running tasks finish, fewer start afterwards.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from taskmasterd.tasks.records import ActivityState, TaskState


@dataclass(frozen=True)
class ActivityEnd:
    """An activity ends: its final state, the task that failed it ("" when
    it succeeded), the reason, and its other unfinished tasks: `cancel_queued`
    never started (the daemon marks them cancelled), `cancel_running` run
    under the runner (the runner is asked to cancel them)."""

    activity: str
    state: ActivityState
    failed_task: str = ""
    reason: str = ""
    cancel_queued: tuple[str, ...] = ()
    cancel_running: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cancelling:
    """What `cancel_activity` takes: queued tasks marked cancelled now, the
    running one asked to stop (its end ends the activity, as cancelled), and
    the end now when nothing of it runs."""

    cancel_queued: tuple[str, ...]
    cancel_running: tuple[str, ...]
    end: ActivityEnd | None


@dataclass
class _Task:
    seq: int
    state: TaskState
    activity: str = ""


@dataclass
class _Activity:
    tasks: list[str]
    ended: bool = False
    cancel_reason: str = ""  # set by cancel_activity: its end is a cancellation
    next: int = 0  # index of its first task that has not succeeded
    started: bool = False  # one of its tasks has started


class TaskQueue:
    def __init__(self, max_parallel: int) -> None:
        self.max_parallel = max_parallel
        self._tasks: dict[str, _Task] = {}
        self._activities: dict[str, _Activity] = {}
        self._runnable: list[tuple[int, str]] = []  # heap by seq (stale entries skipped)
        self._running: set[str] = set()
        self._unended = 0  # tasks queued or running (tasks.max_queued bounds it)

    # ---- what is known ------------------------------------------------------

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._running)

    @property
    def unended(self) -> int:
        """How many tasks are queued or running."""
        return self._unended

    def state(self, id: str) -> TaskState | None:
        t = self._tasks.get(id)
        return None if t is None else t.state

    def activity_ended(self, id: str) -> bool:
        return self._activities[id].ended

    def activity_started(self, id: str) -> bool:
        return self._activities[id].started

    def has_activity(self, id: str) -> bool:
        return id in self._activities

    # ---- filling it -----------------------------------------------------------

    def add_task(self, id: str, seq: int, state: TaskState = TaskState.QUEUED,
                 activity: str = "") -> None:
        """A task: a new one (queued), or one read back at start-up in the
        state its file holds (running: adopted, counts against the limit).
        A task of an activity is added before `add_activity` or `append`."""
        old = self._tasks.get(id)
        if old is not None and not old.state.final:
            self._unended -= 1
        self._tasks[id] = _Task(seq, state, activity)
        if not state.final:
            self._unended += 1
        if state == TaskState.RUNNING:
            self._running.add(id)
        elif state == TaskState.QUEUED and not activity:
            heapq.heappush(self._runnable, (seq, id))

    def add_activity(self, id: str, tasks: list[str], *, ended: bool = False) -> ActivityEnd | None:
        """An activity whose tasks were added. Read back at start-up, its
        tasks' states say where it is: an end that was not yet drawn (its
        failing task ended while no daemon ran) is returned, as `ended` would."""
        act = _Activity(list(tasks), ended=ended)
        self._activities[id] = act
        act.started = any(self._tasks[t].state != TaskState.QUEUED for t in tasks)
        if ended:
            return None
        return self._advance(id, act)

    def append(self, activity: str, id: str, seq: int) -> None:
        """One more task at the end of a queued or running activity."""
        act = self._activities[activity]
        if act.ended:
            raise ValueError(f"activity {activity} has ended")
        self.add_task(id, seq, TaskState.QUEUED, activity)
        act.tasks.append(id)
        if act.next == len(act.tasks) - 1:  # every task before it succeeded
            heapq.heappush(self._runnable, (seq, id))

    def forget(self, ids: list[str], activities: list[str]) -> None:
        """Drop ended tasks and activities (removed after `keep`)."""
        for id in ids:
            t = self._tasks.get(id)
            if t is not None and t.state.final:
                del self._tasks[id]
        for a in activities:
            act = self._activities.get(a)
            if act is not None and act.ended:
                del self._activities[a]

    # ---- deciding -----------------------------------------------------------

    def to_start(self) -> list[str]:
        """The tasks to start now, in order (they count as running from now)."""
        out: list[str] = []
        while self._runnable and len(self._running) < self.max_parallel:
            _seq, id = heapq.heappop(self._runnable)
            t = self._tasks.get(id)
            if t is None or t.state != TaskState.QUEUED:
                continue  # cancelled (or forgotten) while it waited
            t.state = TaskState.RUNNING
            self._running.add(id)
            if t.activity:
                self._activities[t.activity].started = True
            out.append(id)
        return out

    def ended(self, id: str, state: TaskState, reason: str = "") -> ActivityEnd | None:
        """Task `id` reached final `state` (its end, or cancelled while
        queued): what that means for its activity, if it ends it."""
        if not state.final:
            raise ValueError(f"{state} is not an end")
        t = self._tasks[id]
        if t.state.final:
            return None  # told twice: decided the first time
        self._end(t, state)
        self._running.discard(id)
        if not t.activity:
            return None
        act = self._activities.get(t.activity)
        if act is None or act.ended:
            return None
        return self._advance(t.activity, act)

    def cancel_activity(self, id: str, reason: str) -> Cancelling:
        """Cancel activity `id` (not ended): its queued tasks now; its running
        task through the runner, whose end then ends it as cancelled."""
        act = self._activities[id]
        if act.ended:
            raise ValueError(f"activity {id} has ended")
        act.cancel_reason = reason
        queued = tuple(t for t in act.tasks if self._tasks[t].state == TaskState.QUEUED)
        running = tuple(t for t in act.tasks if self._tasks[t].state == TaskState.RUNNING)
        for t in queued:
            self._end(self._tasks[t], TaskState.CANCELLED)
        end = None
        if not running:
            act.ended = True
            end = ActivityEnd(id, ActivityState.CANCELLED, reason=reason)
        return Cancelling(queued, running, end)

    def _advance(self, id: str, act: _Activity) -> ActivityEnd | None:
        """Move past the tasks that succeeded; decide the end, or make the
        next task runnable."""
        while act.next < len(act.tasks) and \
                self._tasks[act.tasks[act.next]].state == TaskState.SUCCEEDED:
            act.next += 1
        if act.cancel_reason:
            if any(self._tasks[t].state == TaskState.RUNNING for t in act.tasks):
                return None
            act.ended = True
            return ActivityEnd(id, ActivityState.CANCELLED, reason=act.cancel_reason,
                               cancel_queued=self._cancel_rest(act, ""))
        if act.next == len(act.tasks):
            if not act.tasks:
                return None  # an activity with no task yet (not made by submit)
            act.ended = True
            return ActivityEnd(id, ActivityState.SUCCEEDED)
        current = act.tasks[act.next]
        t = self._tasks[current]
        # Failed, cancelled or lost (a later one may have been cancelled by
        # itself while this one runs): the activity failed there.
        failed = next((x for x in act.tasks[act.next:] if self._tasks[x].state.final), None)
        if failed is not None:
            current = failed
            act.ended = True
            reason = f"activity {id} failed at task {current}"
            running = tuple(x for x in act.tasks if self._tasks[x].state == TaskState.RUNNING)
            return ActivityEnd(id, ActivityState.FAILED, failed_task=current, reason=reason,
                               cancel_queued=self._cancel_rest(act, current),
                               cancel_running=running)
        if t.state == TaskState.QUEUED:
            heapq.heappush(self._runnable, (t.seq, current))  # stale duplicates are skipped
        return None

    def _cancel_rest(self, act: _Activity, failed: str) -> tuple[str, ...]:
        out = tuple(x for x in act.tasks if x != failed and self._tasks[x].state == TaskState.QUEUED)
        for x in out:
            self._end(self._tasks[x], TaskState.CANCELLED)
        return out

    def _end(self, t: _Task, state: TaskState) -> None:
        if not t.state.final:
            self._unended -= 1
        t.state = state
