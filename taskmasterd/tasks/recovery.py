"""Start-up: take back the tasks and activities a previous daemon left
(TaskManager.open). Nothing is silently dropped:

- the task runner that outlived it is attached again; it tells which tasks
  it holds: a running one is ours again (TASK_ADOPTED);
- a task that ended while no daemon listened (its file is final, without
  the `noticed` mark a daemon leaves once it published an end) gets its end
  event now, once -- its alerts too;
- a task recorded `running` that no runner holds: if its process lives
  (same pid and start time), it is watched and marked `lost` at its exit
  (its status cannot be collected); else `lost` now, with its last heartbeat;
- `queued` ones are queued again in their submission order;
- activities continue where they were: an end drawn while the daemon was
  down (a task failed, the last one succeeded) is recorded and published;
- a status.json that cannot be trusted is refused with its reason, its
  directory kept as `<id>.bad` (TaskFiles.scan_tasks), never a crash.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from taskmasterd import spawn
from taskmasterd.tasks import notices
from taskmasterd.tasks.records import ActivityState, TaskState, TaskStatus, _iso

if TYPE_CHECKING:
    from taskmasterd.tasks.manager import TaskManager

log = logging.getLogger("taskmasterd")


async def recover(m: TaskManager) -> None:
    loop = asyncio.get_running_loop()
    # Blocking (a few round trips, each with a timeout), on the loop's
    # thread: the client registers its socket with the loop. At start-up,
    # before the daemon serves anything.
    held_list = m.runner.attach_surviving()
    held = {s.id: s for s in held_list or ()}
    tasks, _bad = await loop.run_in_executor(m._pool, m.files.scan_tasks)
    acts, _bad_acts = await loop.run_in_executor(m._pool, m.files.scan_activities)
    by_act = {a.id for a in acts}
    m._seq = max([s.seq for s in tasks] + [a.seq for a in acts] + [0]) + 1
    on_disk = {s.id for s in tasks}
    for id in sorted(set(held) - on_disk):
        log.warning("tasks: the task runner holds task %s, which has no status file here: "
                    "it is cancelled", id)
        m.runner.cancel(id, "its status file is gone")
    for disk in tasks:
        # Whether a daemon published its end already (its `noticed` mark):
        # every other end is published by _resolve, once, so an activity
        # drawn below needs no event of its tasks again.
        seen = disk.state.final and m.files.noticed(disk.id)
        s = _resolve(m, disk, held.get(disk.id), seen)
        activity = s.activity if s.activity in by_act else ""
        m._queue.add_task(s.id, s.seq, s.state, activity)
    for a in acts:
        for id in a.tasks:
            if m._queue.state(id) is None:  # refused or removed: the activity cannot go on
                m._queue.add_task(id, a.seq, TaskState.LOST, a.id)
        m._activities[a.id] = a
        end = m._queue.add_activity(a.id, list(a.tasks), ended=a.state.final)
        if a.state == ActivityState.QUEUED and m._queue.activity_started(a.id):
            m._set_activity(a.replace(state=ActivityState.RUNNING,
                                      started=min(_started(m, a.tasks) or [m.clock()])))
        if end is not None:
            m._end_activity(end)
    log.info("tasks: %d task(s) and %d activit%s on disk; %d running, %d queued", len(m._tasks),
             len(m._activities), "y" if len(m._activities) == 1 else "ies",
             len(m._queue.running), sum(s.state == TaskState.QUEUED for s in m._tasks.values()))


def _started(m: TaskManager, ids: tuple[str, ...]) -> list[float]:
    return [s.started for i in ids if (s := m._tasks.get(i)) is not None and s.started]


def _resolve(m: TaskManager, disk: TaskStatus, held: TaskStatus | None,
             seen: bool) -> TaskStatus:
    """The task's state now, recorded in `m`, its change published once."""
    if held is not None and held.state.final:
        # It ended while no daemon listened (the runner keeps such ends for
        # the next daemon, and wrote them to the file): its event, now --
        # unless a daemon published it before it died (its mark).
        m._tasks[disk.id] = held
        if not (seen and disk.state == held.state):
            old = TaskState.RUNNING if disk.state.final else disk.state
            m.events.publish(notices.task_event(old, held))
            m._write(m.files.mark_noticed, held.id)
        return held
    if held is not None and not disk.state.final:
        running = held if held.state == TaskState.RUNNING else disk.replace(state=TaskState.RUNNING)
        m._tasks[disk.id] = running
        m._sent.add(disk.id)
        m.events.publish(notices.task_event(disk.state, running, adopted=True))
        return running
    if disk.state != TaskState.RUNNING:
        m._tasks[disk.id] = disk  # queued: queued again; final: kept as it is
        if disk.state.final and not seen:
            # It ended while no daemon ran, and its runner is gone too (it
            # would have held it): its end, now, once.
            m.events.publish(notices.task_event(
                TaskState.RUNNING if disk.started else TaskState.QUEUED, disk))
            m._write(m.files.mark_noticed, disk.id)
        return disk
    child = spawn.adopt(disk.pid, disk.start_ticks) if disk.pid else "no pid recorded"
    if isinstance(child, spawn.Child):
        log.warning("tasks: task %s (pid %d) runs with no task runner: watched until it exits, "
                    "then lost (its exit status cannot be collected)", disk.id, disk.pid)
        m._tasks[disk.id] = disk
        m.orphans.watch(disk.id, child)
        return disk
    beat = _iso(disk.heartbeat or disk.started) or "never"
    lost = disk.replace(state=TaskState.LOST, ended=m.clock(),
                        reason=f"its task runner died while it ran (last heartbeat {beat})")
    m._set_task(lost, write=True)
    return lost
