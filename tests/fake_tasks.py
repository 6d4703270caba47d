"""A stand-in for taskmasterd.tasks.manager.TaskManager (the design's API of
issue 14), to test the D-Bus layer without the queue and the runner: tasks
are recorded, never run; a test moves them on with `change()` and removes
them with `remove()`. Events are published as the real manager's are (kind,
`task=TaskChange`, process=id, program=name) on the EventBus it is given.

`FakeController` is the rest of what bus.service.BusService needs of the
daemon (objects.Controller): no programs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from taskmasterd.errors import BadName, NoSuchTask, NotRunning, TaskInvalid
from taskmasterd.events import Event, EventBus, Kind, TaskChange
from taskmasterd.tasks.records import ActivityState, ActivityStatus, TaskState, TaskStatus, new_id
from taskmasterd.tasks.spec import TaskSpec

TASK_KINDS = {TaskState.QUEUED: Kind.TASK_QUEUED, TaskState.RUNNING: Kind.TASK_STARTED,
              TaskState.SUCCEEDED: Kind.TASK_SUCCEEDED, TaskState.FAILED: Kind.TASK_FAILED,
              TaskState.CANCELLED: Kind.TASK_CANCELLED, TaskState.LOST: Kind.TASK_LOST}
ACTIVITY_KINDS = {ActivityState.RUNNING: Kind.ACTIVITY_STARTED,
                  ActivityState.SUCCEEDED: Kind.ACTIVITY_SUCCEEDED,
                  ActivityState.FAILED: Kind.ACTIVITY_FAILED,
                  ActivityState.CANCELLED: Kind.ACTIVITY_CANCELLED}


class FakeTasks:
    def __init__(self, events: EventBus, statedir: Path) -> None:
        self.events = events
        self.statedir = statedir
        self._tasks: dict[str, TaskStatus] = {}
        self._activities: dict[str, ActivityStatus] = {}
        self.removed_listeners: list[Callable[[list[str], list[str]], None]] = []
        self.cancelled: list[tuple[str, str]] = []  # (id, reason) of each cancel asked
        self.quiet = False  # True: submissions publish no event (objects come from the reply)
        self._seq = 0

    def _taken(self, id: str) -> bool:
        return id in self._tasks or id in self._activities

    def _new(self, spec: TaskSpec, activity: str = "", position: int = 0) -> TaskStatus:
        self._seq += 1
        status = TaskStatus(id=new_id(self._taken), spec=spec, state=TaskState.QUEUED,
                            seq=self._seq, submitted=time.time(), timeout=spec.timeout or 0.0,
                            activity=activity, position=position)
        self._tasks[status.id] = status
        return status

    def _publish_task(self, old: str, s: TaskStatus) -> None:
        if self.quiet and not old:
            return
        self.events.publish(Event(
            kind=TASK_KINDS[s.state], message=f"task {s.id} is {s.state.value}", process=s.id,
            program=s.name, task=TaskChange(s.id, s.name, old, s.state.value, s.activity,
                                            s.exit_code, s.signal, s.reason)))

    # ---- the design's API -----------------------------------------------------

    async def submit(self, spec: TaskSpec) -> TaskStatus:
        if spec.activity:
            activity = self.activity(spec.activity)
            if activity.state.final:
                raise TaskInvalid(f"activity {activity.id} has ended ({activity.state.value})")
            status = self._new(spec, spec.activity, len(activity.tasks))
            self._activities[activity.id] = activity.replace(tasks=(*activity.tasks, status.id))
        else:
            status = self._new(spec)
        self._publish_task("", status)
        return status

    async def submit_activity(self, name: str, specs: list[TaskSpec]) -> ActivityStatus:
        self._seq += 1
        activity = ActivityStatus(id=new_id(self._taken), name=name, state=ActivityState.QUEUED,
                                  tasks=(), seq=self._seq, submitted=time.time())
        self._activities[activity.id] = activity
        tasks = [self._new(spec, activity.id, i) for i, spec in enumerate(specs)]
        activity = self._activities[activity.id] = activity.replace(
            tasks=tuple(t.id for t in tasks))
        for task in tasks:
            self._publish_task("", task)
        return activity

    def cancel(self, id: str, reason: str) -> None:
        status = self.task(id)
        if status.state.final:
            raise NotRunning(f"task {id} has already ended ({status.state.value})")
        self.cancelled.append((id, reason))
        self.change(id, state=TaskState.CANCELLED, reason=reason, ended=time.time())

    def cancel_activity(self, id: str, reason: str) -> None:
        activity = self.activity(id)
        if activity.state.final:
            raise NotRunning(f"activity {id} has already ended ({activity.state.value})")
        self.cancelled.append((id, reason))
        self.change_activity(id, state=ActivityState.CANCELLED, reason=reason, ended=time.time())

    def tasks(self) -> list[TaskStatus]:
        return sorted(self._tasks.values(), key=lambda s: s.seq)

    def task(self, id: str) -> TaskStatus:
        try:
            return self._tasks[id]
        except KeyError:
            raise NoSuchTask(f"no task {id}") from None

    def activities(self) -> list[ActivityStatus]:
        return sorted(self._activities.values(), key=lambda a: a.seq)

    def activity(self, id: str) -> ActivityStatus:
        try:
            return self._activities[id]
        except KeyError:
            raise NoSuchTask(f"no activity {id}") from None

    def output_file(self, id: str, stream: str) -> str:
        self.task(id)
        if stream not in ("stdout", "stderr"):
            raise BadName(f"no stream {stream!r}: stdout or stderr")
        return str(self.statedir / "tasks" / id / stream)

    # ---- what the tests do ----------------------------------------------------

    def add_silently(self, spec: TaskSpec) -> TaskStatus:
        """A task the manager knows without having published it (a recovery's)."""
        return self._new(spec)

    def change(self, id: str, **changes: Any) -> TaskStatus:
        """Record a task's new status and publish its event."""
        old = self.task(id)
        new = self._tasks[id] = old.replace(**changes)
        self._publish_task(old.state.value, new)
        return new

    def change_activity(self, id: str, **changes: Any) -> ActivityStatus:
        old = self.activity(id)
        new = self._activities[id] = old.replace(**changes)
        self.events.publish(Event(
            kind=ACTIVITY_KINDS[new.state], message=f"activity {id} is {new.state.value}",
            process=id, program=new.name,
            task=TaskChange(id, new.name, old.state.value, new.state.value, reason=new.reason,
                            is_activity=True)))
        return new

    def remove(self, task_ids: list[str], activity_ids: list[str]) -> None:
        """What the clean-up after `tasks.keep` does."""
        for id in task_ids:
            del self._tasks[id]
        for id in activity_ids:
            del self._activities[id]
        for listener in list(self.removed_listeners):
            listener(task_ids, activity_ids)


class FakeController:
    """objects.Controller with no programs and `tasks` (None: a daemon without tasks)."""

    def __init__(self, tasks: FakeTasks | None) -> None:
        self.tasks = tasks
        self.supervisor: Any = SimpleNamespace(config=SimpleNamespace(programs=[]),
                                                 detail_listeners=[])
        self.config_path = "/nonexistent/taskmaster.yaml"
        self.state = "running"
