"""keep.expired: which finished tasks and activities `tasks.keep` removes."""

from __future__ import annotations

from taskmasterd.tasks.keep import DAY, expired
from taskmasterd.tasks.records import ActivityState, ActivityStatus, TaskState, TaskStatus
from taskmasterd.tasks.spec import TaskSpec

NOW = 1_800_000_000.0


def task(id: str, state: TaskState, ended_days: float, activity: str = "") -> TaskStatus:
    return TaskStatus(id=id, spec=TaskSpec(command="true"), state=state, seq=0,
                      submitted=NOW - 30 * DAY, ended=NOW - ended_days * DAY if state.final else 0.0,
                      activity=activity)


def act(id: str, state: ActivityState, ended_days: float) -> ActivityStatus:
    return ActivityStatus(id=id, name="a", state=state, tasks=(), seq=0, submitted=NOW - 30 * DAY,
                          ended=NOW - ended_days * DAY if state.final else 0.0)


def test_old_ends_go_running_and_recent_ones_stay() -> None:
    tasks = [task("old", TaskState.FAILED, 8), task("new", TaskState.SUCCEEDED, 6),
             task("run", TaskState.RUNNING, 0), task("queued", TaskState.QUEUED, 0)]
    assert expired(tasks, [], NOW, 7) == (["old"], [])
    assert expired(tasks, [], NOW, 0.25) == (["old", "new"], [])


def test_an_activity_goes_with_its_last_task_and_keeps_its_tasks_while_it_runs() -> None:
    tasks = [task("a1", TaskState.SUCCEEDED, 9, "A"), task("b1", TaskState.SUCCEEDED, 9, "B"),
             task("b2", TaskState.SUCCEEDED, 1, "B"), task("c1", TaskState.SUCCEEDED, 9, "C")]
    acts = [act("A", ActivityState.SUCCEEDED, 9), act("B", ActivityState.SUCCEEDED, 9),
            act("C", ActivityState.RUNNING, 0)]
    assert expired(tasks, acts, NOW, 7) == (["a1", "b1"], ["A"])
