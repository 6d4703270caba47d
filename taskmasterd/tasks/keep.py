"""Which finished tasks and activities `tasks.keep` removes (pure).

A task that ended more than `keep` days ago goes, unless its activity is
still going (an activity's history stays whole while it runs); an ended
activity goes once it is that old and none of its tasks is left."""

from __future__ import annotations

from collections.abc import Iterable

from taskmasterd.tasks.records import ActivityStatus, TaskStatus

DAY = 86400.0


def expired(tasks: Iterable[TaskStatus], activities: Iterable[ActivityStatus], now: float,
            keep_days: float) -> tuple[list[str], list[str]]:
    """(task ids, activity ids) to remove now, in the order given."""
    cutoff = now - keep_days * DAY
    acts = list(activities)
    going = {a.id for a in acts if not a.state.final}
    tasks = list(tasks)
    gone = [s.id for s in tasks
            if s.state.final and (s.ended or s.submitted) < cutoff and s.activity not in going]
    removed = set(gone)
    left = {s.activity for s in tasks if s.activity and s.id not in removed}
    old_acts = [a.id for a in acts
                if a.state.final and (a.ended or a.submitted) < cutoff and a.id not in left]
    return gone, old_acts
