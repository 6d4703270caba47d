"""The task queue's decisions (taskmasterd/tasks/queue.py): order, the
parallel limit, activities' progression and ends. Pure: no clock involved."""

from __future__ import annotations

import random

import pytest

from taskmasterd.tasks.queue import TaskQueue
from taskmasterd.tasks.records import ActivityState, TaskState

S, F, C, L = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.LOST


def fill(q: TaskQueue, n: int, start: int = 0) -> list[str]:
    ids = [f"t{i}" for i in range(start, start + n)]
    for i, id in enumerate(ids):
        q.add_task(id, start + i)
    return ids


def test_fifo_by_seq_and_the_limit() -> None:
    q = TaskQueue(2)
    q.add_task("b", 2)
    q.add_task("a", 1)
    q.add_task("c", 3)
    assert q.to_start() == ["a", "b"]
    assert q.to_start() == []  # both lanes taken
    q.ended("a", S)
    assert q.to_start() == ["c"]
    assert q.running == {"b", "c"}


def test_a_raised_limit_starts_more_a_lowered_one_stops_nothing() -> None:
    q = TaskQueue(1)
    fill(q, 5)
    assert q.to_start() == ["t0"]
    q.max_parallel = 3
    assert q.to_start() == ["t1", "t2"]
    q.max_parallel = 1
    assert q.to_start() == []
    assert q.running == {"t0", "t1", "t2"}  # they finish
    q.ended("t0", S)
    q.ended("t1", F)
    assert q.to_start() == []  # still one over the limit
    q.ended("t2", S)
    assert q.to_start() == ["t3"]


def test_activity_runs_its_tasks_one_after_the_other() -> None:
    q = TaskQueue(4)
    for i, id in enumerate(["a1", "a2", "a3"]):
        q.add_task(id, i, activity="A")
    q.add_task("x", 3)
    assert q.add_activity("A", ["a1", "a2", "a3"]) is None
    assert not q.activity_started("A")
    assert q.to_start() == ["a1", "x"]  # a2 waits for a1, x does not
    assert q.activity_started("A")
    assert q.ended("a1", S) is None
    assert q.to_start() == ["a2"]
    assert q.ended("a2", S) is None
    assert q.to_start() == ["a3"]
    end = q.ended("a3", S)
    assert end is not None and end.state == ActivityState.SUCCEEDED and end.failed_task == ""
    assert q.activity_ended("A")


@pytest.mark.parametrize("how", [F, C, L])
def test_a_task_that_does_not_succeed_fails_its_activity_and_cancels_the_rest(how: TaskState) -> None:
    q = TaskQueue(4)
    for i, id in enumerate(["a1", "a2", "a3"]):
        q.add_task(id, i, activity="A")
    q.add_activity("A", ["a1", "a2", "a3"])
    q.to_start()
    q.ended("a1", S)
    q.to_start()
    end = q.ended("a2", how)
    assert end is not None
    assert end.state == ActivityState.FAILED
    assert end.failed_task == "a2"
    assert end.reason == "activity A failed at task a2"
    assert end.cancel_queued == ("a3",) and end.cancel_running == ()
    assert q.state("a3") == TaskState.CANCELLED
    assert q.to_start() == []  # a3 never starts
    assert q.ended("a3", C) is None  # told of the cancellation: no second end


def test_a_queued_task_cancelled_alone_fails_its_activity_and_stops_the_running_one() -> None:
    q = TaskQueue(4)
    for i, id in enumerate(["a1", "a2", "a3"]):
        q.add_task(id, i, activity="A")
    q.add_activity("A", ["a1", "a2", "a3"])
    assert q.to_start() == ["a1"]
    end = q.ended("a2", C)  # `taskctl cancel a2` while a1 runs
    assert end is not None and end.state == ActivityState.FAILED and end.failed_task == "a2"
    assert end.cancel_queued == ("a3",)
    assert end.cancel_running == ("a1",)
    assert q.ended("a1", C) is None  # the activity ended once


def test_cancel_activity_while_a_task_runs_ends_it_when_that_task_ends() -> None:
    q = TaskQueue(4)
    for i, id in enumerate(["a1", "a2"]):
        q.add_task(id, i, activity="A")
    q.add_activity("A", ["a1", "a2"])
    q.to_start()
    c = q.cancel_activity("A", "cancelled by test")
    assert c.cancel_queued == ("a2",) and c.cancel_running == ("a1",) and c.end is None
    assert not q.activity_ended("A")
    end = q.ended("a1", S)  # it succeeded before the stop reached it: cancelled all the same
    assert end is not None and end.state == ActivityState.CANCELLED
    assert end.reason == "cancelled by test"
    with pytest.raises(ValueError):
        q.cancel_activity("A", "again")


def test_cancel_activity_with_nothing_running_ends_it_now() -> None:
    q = TaskQueue(1)
    q.add_task("x", 0)
    for i, id in enumerate(["a1", "a2"]):
        q.add_task(id, i + 1, activity="A")
    q.add_activity("A", ["a1", "a2"])
    assert q.to_start() == ["x"]
    c = q.cancel_activity("A", "why")
    assert c.cancel_queued == ("a1", "a2") and c.cancel_running == ()
    assert c.end is not None and c.end.state == ActivityState.CANCELLED
    q.ended("x", S)
    assert q.to_start() == []


def test_append_to_an_activity() -> None:
    q = TaskQueue(4)
    q.add_task("a1", 0, activity="A")
    q.add_activity("A", ["a1"])
    q.to_start()
    q.append("A", "a2", 1)
    assert q.to_start() == []  # after a1
    assert q.ended("a1", S) is None  # not the last any more
    assert q.to_start() == ["a2"]
    end = q.ended("a2", S)
    assert end is not None and end.state == ActivityState.SUCCEEDED
    with pytest.raises(ValueError):
        q.append("A", "a3", 2)


def test_recovery_draws_an_end_that_happened_while_no_daemon_ran() -> None:
    q = TaskQueue(4)
    q.add_task("a1", 0, S, "A")
    q.add_task("a2", 1, F, "A")
    q.add_task("a3", 2, TaskState.QUEUED, "A")
    end = q.add_activity("A", ["a1", "a2", "a3"])
    assert end is not None and end.failed_task == "a2" and end.cancel_queued == ("a3",)

    q.add_task("b1", 3, S, "B")
    q.add_task("b2", 4, TaskState.QUEUED, "B")
    assert q.add_activity("B", ["b1", "b2"]) is None
    assert q.activity_started("B")
    assert q.to_start() == ["b2"]  # it continues where it was

    q.add_task("c1", 5, TaskState.RUNNING, "C")
    q.add_task("c2", 6, TaskState.QUEUED, "C")
    assert q.add_activity("C", ["c1", "c2"]) is None
    assert q.running == {"b2", "c1"}
    assert q.to_start() == []

    q.add_task("d1", 7, S, "D")
    end = q.add_activity("D", ["d1"])
    assert end is not None and end.state == ActivityState.SUCCEEDED
    q.add_task("e1", 8, S, "E")
    assert q.add_activity("E", ["e1"], ended=True) is None  # recorded already


def test_forget_drops_only_ended_ones() -> None:
    q = TaskQueue(1)
    fill(q, 2)
    q.to_start()
    q.ended("t0", S)
    q.forget(["t0", "t1"], [])
    assert q.state("t0") is None and q.state("t1") == TaskState.QUEUED


@pytest.mark.parametrize("seed", range(40))
def test_random_sequences_keep_the_rules(seed: int) -> None:
    """Random submissions, ends, cancels and limit changes: never more than
    max_parallel start, standalone tasks start in seq order, a task of an
    activity starts only after its predecessor succeeded, every activity
    ends exactly once and every task ends."""
    rng = random.Random(seed)
    q = TaskQueue(rng.randint(1, 4))
    seq = 0
    act_tasks: dict[str, list[str]] = {}
    activity_of: dict[str, str] = {}
    ends: dict[str, int] = {}
    final: dict[str, TaskState] = {}
    started: list[str] = []
    queued_solo: list[str] = []

    def record(end: object) -> None:
        if end is None:
            return
        from taskmasterd.tasks.queue import ActivityEnd
        assert isinstance(end, ActivityEnd)
        ends[end.activity] = ends.get(end.activity, 0) + 1
        for t in end.cancel_queued:
            final[t] = C
        for t in end.cancel_running:
            record(q.ended(t, C))
            final[t] = C

    def start() -> None:
        limit = q.max_parallel
        before = len(q.running)
        new = q.to_start()
        assert before + len(new) <= max(limit, before)
        for id in new:
            assert id not in final
            a = activity_of.get(id)
            if a:
                tasks = act_tasks[a]
                i = tasks.index(id)
                assert all(final.get(t) == S for t in tasks[:i])
            else:
                assert queued_solo[0] == id  # FIFO among the standalone ones
                queued_solo.pop(0)
            started.append(id)

    for _ in range(300):
        r = rng.random()
        if r < 0.3:
            id = f"s{seq}"
            q.add_task(id, seq)
            queued_solo.append(id)
            seq += 1
        elif r < 0.4:
            a = f"A{seq}"
            tasks = [f"{a}.{i}" for i in range(rng.randint(1, 4))]
            for t in tasks:
                q.add_task(t, seq, activity=a)
                activity_of[t] = a
                seq += 1
            act_tasks[a] = tasks
            record(q.add_activity(a, list(tasks)))
        elif r < 0.45 and act_tasks:
            a = rng.choice(sorted(act_tasks))
            if not q.activity_ended(a):
                t = f"{a}.{len(act_tasks[a])}+{seq}"
                q.append(a, t, seq)
                activity_of[t] = a
                act_tasks[a].append(t)
                seq += 1
        elif r < 0.5 and act_tasks:
            a = rng.choice(sorted(act_tasks))
            if not q.activity_ended(a):
                c = q.cancel_activity(a, "cancelled")
                for t in c.cancel_queued:
                    final[t] = C
                record(c.end)
        elif r < 0.55:
            q.max_parallel = rng.randint(1, 4)
        elif q.running:
            id = rng.choice(sorted(q.running))
            how = rng.choice([S, S, S, F, L])
            final[id] = how
            record(q.ended(id, how))
        start()
        # what tasks.max_queued is checked against, kept as it goes
        assert q.unended == sum(not t.state.final for t in q._tasks.values())
    # Drain: everything runs to success.
    q.max_parallel = 4
    start()
    while q.running:
        for id in sorted(q.running):
            final[id] = S
            record(q.ended(id, S))
        start()
    assert all(n == 1 for n in ends.values())
    assert set(ends) == set(act_tasks)  # every activity ended
    every = set(queued_solo) | set(activity_of) | set(started)
    assert not queued_solo
    assert all(q.state(t) is not None and q.state(t).final for t in every)  # type: ignore[union-attr]
    assert q.unended == 0
