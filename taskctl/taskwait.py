"""`run --wait` and `activity --wait`: wait for a task's or an activity's
end, driven by `taskctl.waiting.wait` (the machinery of start/stop: progress
line on a terminal after 1 s, --timeout, Ctrl-C).

`TaskWatch` is pure. TaskStateChanged / ActivityStateChanged say when the
state changes; a final one asks for a re-check, and ListTasks (and
ListActivities), answered after every signal sent before it, decides: it
has what the signal lacks (the signal that killed it, the spawn error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from taskctl import taskapi
from taskctl.model import ActivityChanged, ActivityRow, Event, TaskChanged, TaskRow
from taskctl.taskformat import FINAL_ACTIVITY_STATES, FINAL_TASK_STATES, task_exit_code

if TYPE_CHECKING:
    from taskctl.client import Client

Rows = tuple[list[TaskRow], list[ActivityRow]]


class Ended(NamedTuple):
    """How the task or activity ended: `code` is taskctl's exit status,
    `task` the row of the task that decided it (the failing one of an
    activity; None if there is none), `activity` the activity's row."""

    id: str
    state: str
    code: int
    task: TaskRow | None
    activity: ActivityRow | None = None
    gone: bool = False  # it disappeared (removed) before taskctl saw its end


class TaskWatch:
    def __init__(self, kind: str, id: str) -> None:
        assert kind in ("task", "activity")
        self.kind, self.id = kind, id
        self.state = ""
        self.current = ""  # an activity's task running now (its name)
        self.recheck = False
        self.ended: Ended | None = None

    def pending(self) -> list[str]:
        return [] if self.ended is not None else [self.id]

    def on_event(self, event: Event) -> list[Ended]:
        if self.ended is not None:
            return []
        if isinstance(event, TaskChanged):
            if self.kind == "task" and event.id == self.id:
                self.state = event.new
                self.recheck = self.recheck or event.new in FINAL_TASK_STATES
            elif self.kind == "activity" and event.activity == self.id and event.new == "running":
                self.current = event.name
        elif isinstance(event, ActivityChanged) and self.kind == "activity" and event.id == self.id:
            self.state = event.new
            self.recheck = self.recheck or event.new in FINAL_ACTIVITY_STATES
        return []

    def fetch(self, client: Client) -> Rows:
        # The activities last: their reply comes after every signal taken
        # with the rows, so a final ActivityStateChanged is never older
        # than what the rows say (`wait` takes the events, then on_rows).
        tasks = taskapi.list_tasks(client)
        return tasks, taskapi.list_activities(client) if self.kind == "activity" else []

    def on_rows(self, rows: Rows) -> list[Ended]:
        self.recheck = False
        if self.ended is not None:
            return []
        tasks, activities = rows
        by_id = {t.id: t for t in tasks}
        if self.kind == "task":
            row = by_id.get(self.id)
            if row is None:
                return self._end(Ended(self.id, self.state, 1, None, gone=True))
            self.state = row.state
            if row.state in FINAL_TASK_STATES:
                return self._end(Ended(self.id, row.state, task_exit_code(row), row))
            return []
        act = next((a for a in activities if a.id == self.id), None)
        if act is None:
            return self._end(Ended(self.id, self.state, 1, None, gone=True))
        self.state = act.state
        running = [by_id[t] for t in act.tasks if t in by_id and by_id[t].state == "running"]
        if running:
            self.current = running[0].name
        if act.state not in FINAL_ACTIVITY_STATES:
            return []
        if act.state == "succeeded":
            return self._end(Ended(self.id, act.state, 0, None, act))
        failed = by_id.get(act.failed_task)
        if failed is not None and failed.state not in FINAL_TASK_STATES:
            # The tasks were listed just before the activity ended: once more.
            self.recheck = True
            return []
        code = task_exit_code(failed) if failed is not None else 1
        return self._end(Ended(self.id, act.state, code or 1, failed, act))

    def _end(self, ended: Ended) -> list[Ended]:
        self.ended = ended
        return [ended]

    def progress(self, waited: float, left: float | None) -> str:
        """`waiting for task 3df2bb24 (running); 3 s, gives up in 27 s`."""
        state = self.state or "?"
        if self.kind == "activity" and self.current and state == "running":
            state += f", task {self.current}"
        text = f"waiting for {self.kind} {self.id} ({state}); {int(waited)} s"
        if left is not None:
            text += f", gives up in {max(0, int(left + 0.999))} s"
        return text
