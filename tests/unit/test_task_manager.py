"""TaskManager (taskmasterd/tasks/manager.py, recovery.py) on the virtual
clock, with a fake task runner that does what the real one does with the
files (writes `running` and the end, then tells the manager) but spawns
nothing. The files are real (a tmp statedir); the processes of the recovery
tests are real too (a live one to watch, a dead one)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from taskmasterd import spawn
from taskmasterd.errors import BadName, NoSuchTask, NotRunning, TaskInvalid, TaskmasterError
from taskmasterd.events import Event, EventBus
from taskmasterd.tasks.manager import CREATE_BATCH, FIRST_BATCH, TaskManager
from taskmasterd.tasks.orphans import UNWATCHED
from taskmasterd.tasks.records import ActivityState, ActivityStatus, TaskState, TaskStatus
from taskmasterd.tasks.settings import TaskSettings
from taskmasterd.tasks.spec import TaskSpec
from taskmasterd.tasks.taskfiles import TaskFiles
from tests.virtual_clock import run

NOW = 1_800_000_000.0
DAY = 86400.0
DEFAULTS = TaskSettings()


class FakeRunner:
    """The runner's side of the contract, minus processes."""

    def __init__(self, files: TaskFiles, held: list[TaskStatus] | None = None) -> None:
        self.files = files
        self.held = held
        self.runs: list[str] = []
        self.given: dict[str, TaskStatus] = {}
        self.cancels: list[tuple[str, str]] = []
        self.closed = False
        self.manager: TaskManager | None = None
        self.pid = 4242
        self.warmed = False
        self.flushes = 0
        self.log: list[str] = []  # "run ID", "flush": what went to the runner, in order

    def attach_surviving(self) -> list[TaskStatus] | None:
        return self.held

    def warm(self) -> None:
        self.warmed = True

    def run(self, status: TaskStatus, stopsignal: int, stoptime: float) -> None:
        self.runs.append(status.id)
        self.given[status.id] = status
        self.log.append(f"run {status.id}")

    def flush(self) -> None:
        self.flushes += 1
        self.log.append("flush")

    def cancel(self, id: str, reason: str) -> None:
        self.cancels.append((id, reason))

    async def close(self) -> None:
        self.closed = True

    # What the real runner does, in the test's hands.
    def start(self, id: str) -> TaskStatus:
        s = self.given[id].replace(state=TaskState.RUNNING, pid=1000 + len(self.runs),
                                   started=NOW, runner_pid=self.pid, heartbeat=NOW)
        self.given[id] = s
        self.files.write_task(s)
        assert self.manager is not None
        self.manager.on_status(s)
        return s

    def finish(self, id: str, code: int = 0, state: TaskState | None = None,
               reason: str = "") -> TaskStatus:
        s = self.given[id]
        if s.state != TaskState.RUNNING:
            s = self.start(id)
        if state is None:
            state = TaskState.SUCCEEDED if code == 0 else TaskState.FAILED
            reason = reason or ("" if code == 0 else f"exited with status {code}")
        end = s.replace(state=state, exit_code=code if state != TaskState.CANCELLED else None,
                        ended=NOW + 1, reason=reason)
        self.given[id] = end
        self.files.write_task(end)
        assert self.manager is not None
        self.manager.on_status(end)
        return end


class Rig:
    def __init__(self, statedir: Path, settings: TaskSettings = DEFAULTS,
                 held: list[TaskStatus] | None = None) -> None:
        self.files = TaskFiles(str(statedir))
        self.runner = FakeRunner(self.files, held)
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.now = NOW
        self.m = TaskManager(str(statedir), settings, self.bus, self.runner,
                             clock=lambda: self.now)
        self.runner.manager = self.m
        self.removed: list[tuple[list[str], list[str]]] = []
        self.m.removed_listeners.append(lambda t, a: self.removed.append((t, a)))

    def kinds(self, id: str | None = None) -> list[str]:
        return [str(e.kind) for e in self.events if id is None or e.process == id]

    async def disk(self, id: str) -> TaskStatus:
        await self.m.flush()
        s = self.files.read_task(id)
        assert isinstance(s, TaskStatus), s
        return s

    async def disk_activity(self, id: str) -> ActivityStatus:
        await self.m.flush()
        a = self.files.read_activity(id)
        assert isinstance(a, ActivityStatus), a
        return a


def go(statedir: Path, body: Callable[[Rig], Coroutine[Any, Any, None]], **kw: Any) -> Rig:
    async def main() -> Rig:
        rig = Rig(statedir, **kw)
        await rig.m.open()
        try:
            await body(rig)
        finally:
            await rig.m.close()
        return rig
    return run(main())


def spec(n: int | str = 0, **kw: Any) -> TaskSpec:
    return TaskSpec(command="/bin/true", args=(str(n),), **kw)


# ---- submitting and the queue ------------------------------------------------------


def test_ends_told_together_start_the_next_tasks_before_they_are_published(tmp_path: Path) -> None:
    """A datagram of ends: every freed lane is filled and the runs sent
    (flush) before the first end is published; then the ends, in order."""
    async def body(r: Rig) -> None:
        ids = [(await r.m.submit(spec(i))).id for i in range(4)]
        assert r.runner.runs == ids[:2]
        ends = []
        for id in ids[:2]:
            running = r.runner.start(id)
            ends.append(running.replace(state=TaskState.SUCCEEDED, exit_code=0, ended=NOW + 1))
        r.runner.log.clear()
        r.bus.subscribe(lambda e: r.runner.log.append(f"{e.kind} {e.process}")
                        if str(e.kind) == "TASK_SUCCEEDED" else None)
        r.m.on_statuses(ends)
        assert r.runner.log == [f"run {ids[2]}", f"run {ids[3]}", "flush",
                                f"TASK_SUCCEEDED {ids[0]}", f"TASK_SUCCEEDED {ids[1]}"]
        assert [s.state for s in r.m.tasks()][:2] == [TaskState.SUCCEEDED] * 2
    go(tmp_path, body, settings=TaskSettings(max_parallel=2))


def test_submit_is_durable_before_it_returns_and_starts_it(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        s = await r.m.submit(spec(1, name="one"))
        on_disk = r.files.read_task(s.id)  # no flush: it is already there
        assert isinstance(on_disk, TaskStatus) and on_disk.state == TaskState.QUEUED
        assert on_disk.seq == s.seq and on_disk.spec == s.spec
        assert r.runner.runs == [s.id]  # a free lane: handed over in the same turn
        assert r.kinds(s.id) == ["TASK_QUEUED"]
        e = r.events[-1]
        assert e.program == "one" and e.task is not None and e.task.new == "queued"
        r.runner.start(s.id)
        assert r.kinds(s.id) == ["TASK_QUEUED", "TASK_STARTED"]
        r.runner.finish(s.id, 3)
        assert r.kinds(s.id)[-1] == "TASK_FAILED"
        assert r.events[-1].exit_status == 3
        assert r.m.task(s.id).state == TaskState.FAILED
        with pytest.raises(NotRunning, match="already ended"):
            r.m.cancel(s.id, "x")
        with pytest.raises(BadName):
            r.m.output_file(s.id, "stdin")
        assert r.m.output_file(s.id, "stderr") == os.path.join(str(tmp_path), "tasks", s.id, "stderr")
    go(tmp_path, body)


def test_the_default_timeout_is_fixed_at_submission(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        a = await r.m.submit(spec(1))
        b = await r.m.submit(spec(2, timeout=5.0))
        assert (a.timeout, a.spec.timeout) == (30.0, 30.0)
        assert b.timeout == 5.0
    go(tmp_path, body, settings=TaskSettings(timeout=30.0))


def test_parallel_limit_fifo_and_a_freed_lane_filled_at_once(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        ids = [(await r.m.submit(spec(i))).id for i in range(5)]
        assert r.runner.runs == ids[:2]
        r.runner.finish(ids[1])
        assert r.runner.runs == ids[:3]  # no await in between: the same turn
        r.m.configure(TaskSettings(max_parallel=4))
        assert r.runner.runs == ids
        assert [s.id for s in r.m.tasks()] == ids
    go(tmp_path, body, settings=TaskSettings(max_parallel=2))


def test_a_burst_of_submissions_is_written_in_group_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Submissions of one loop turn share a group commit (two flushes for the
    batch), CREATE_BATCH at most each, so the first can start while the next
    are written -- FIRST_BATCH for the first while none is being written;
    each is still durable before it returns, in order."""
    batches: list[int] = []
    write = TaskFiles.write_new_tasks

    def spy(self: TaskFiles, statuses: list[TaskStatus]) -> list[OSError | None]:
        batches.append(len(statuses))
        return write(self, statuses)
    monkeypatch.setattr(TaskFiles, "write_new_tasks", spy)

    async def body(r: Rig) -> None:
        got = await asyncio.gather(*(r.m.submit(spec(i)) for i in range(100)))
        # The first while none is written; then CREATE_BATCH at most (a
        # FIRST_BATCH again if the writer thread caught up meanwhile).
        assert batches[0] == FIRST_BATCH and sum(batches) == 100
        assert all(0 < b <= CREATE_BATCH for b in batches) and CREATE_BATCH in batches
        assert len({s.id for s in got}) == 100
        assert [s.seq for s in got] == sorted(s.seq for s in got)
        assert [s.spec.args for s in got] == [(str(i),) for i in range(100)]
        for s in got:
            on_disk = r.files.read_task(s.id)
            assert isinstance(on_disk, TaskStatus) and on_disk.state == TaskState.QUEUED
        assert r.runner.runs == [s.id for s in got[:2]]
    go(tmp_path, body, settings=TaskSettings(max_parallel=2))


def test_a_submission_whose_file_fails_is_refused_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write = TaskFiles.write_new_tasks

    def second_fails(self: TaskFiles, statuses: list[TaskStatus]) -> list[OSError | None]:
        errors = write(self, statuses)
        errors[1] = OSError(errno.ENOSPC, "No space left on device")
        return errors
    monkeypatch.setattr(TaskFiles, "write_new_tasks", second_fails)

    async def body(r: Rig) -> None:
        got = await asyncio.gather(*(r.m.submit(spec(i)) for i in range(3)), return_exceptions=True)
        assert isinstance(got[1], TaskmasterError)
        assert "cannot write under" in str(got[1]) and "No space left on device" in str(got[1])
        ok = [got[0], got[2]]
        assert all(isinstance(s, TaskStatus) for s in ok)
        assert sorted(os.listdir(tmp_path / "tasks")) == sorted(s.id for s in ok)  # type: ignore[union-attr]
        assert [s.id for s in r.m.tasks()] == [s.id for s in ok]  # type: ignore[union-attr]
        assert r.kinds() == ["TASK_QUEUED", "TASK_QUEUED"]
    go(tmp_path, body)


def test_the_runner_is_started_with_the_daemon(tmp_path: Path) -> None:
    """Not at the first task: a burst would wait for its start-up."""
    async def body(r: Rig) -> None:
        assert r.runner.warmed and r.runner.runs == []
    go(tmp_path, body)


def test_lowered_limit_lets_running_ones_finish(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        ids = [(await r.m.submit(spec(i))).id for i in range(4)]
        assert r.runner.runs == ids[:3]
        r.m.configure(TaskSettings(max_parallel=1))
        assert r.runner.cancels == []
        r.runner.finish(ids[0])
        r.runner.finish(ids[1])
        assert r.runner.runs == ids[:3]
        r.runner.finish(ids[2])
        assert r.runner.runs == ids
    go(tmp_path, body, settings=TaskSettings(max_parallel=3))


def test_cancel_a_queued_task_and_unknown_ids(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        a = await r.m.submit(spec(1))
        b = await r.m.submit(spec(2))
        r.m.cancel(b.id, "cancelled by test")
        s = await r.disk(b.id)
        assert s.state == TaskState.CANCELLED and s.reason == "cancelled by test"
        r.m.cancel(a.id, "stop it")  # handed over: the runner's job
        assert r.runner.cancels == [(a.id, "stop it")]
        assert r.m.task(a.id).state == TaskState.QUEUED
        r.runner.finish(a.id, state=TaskState.CANCELLED, reason="stop it")
        assert r.runner.runs == [a.id]  # b never ran
        with pytest.raises(NoSuchTask):
            r.m.cancel("deadbeef", "x")
        with pytest.raises(NoSuchTask):
            r.m.activity("deadbeef")
    go(tmp_path, body, settings=TaskSettings(max_parallel=1))


# ---- activities -----------------------------------------------------------------


def test_activity_runs_in_order_and_succeeds(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        act = await r.m.submit_activity("deploy", [spec(1), spec(2), spec(3)])
        t1, t2, t3 = act.tasks
        assert (await r.disk(t2)).activity == act.id and (await r.disk(t2)).position == 1
        assert (await r.disk_activity(act.id)).state == ActivityState.RUNNING  # t1 handed over
        assert r.runner.runs == [t1]
        assert r.kinds(act.id) == ["ACTIVITY_STARTED"]
        r.runner.finish(t1)
        assert r.runner.runs == [t1, t2]
        r.runner.finish(t2)
        r.runner.finish(t3)
        a = await r.disk_activity(act.id)
        assert a.state == ActivityState.SUCCEEDED and a.ended
        assert r.kinds(act.id) == ["ACTIVITY_STARTED", "ACTIVITY_SUCCEEDED"]
        with pytest.raises(TaskInvalid, match="has ended"):
            await r.m.submit(spec(4, activity=act.id))
        with pytest.raises(NotRunning):
            r.m.cancel_activity(act.id, "x")
    go(tmp_path, body)


def test_a_failed_task_fails_its_activity_and_cancels_the_rest(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        act = await r.m.submit_activity("deploy", [spec(1), spec(2), spec(3)])
        t1, t2, t3 = act.tasks
        r.runner.finish(t1)
        r.runner.finish(t2, 3)
        s3 = await r.disk(t3)
        assert s3.state == TaskState.CANCELLED
        assert s3.reason == f"activity {act.id} failed at task {t2}"
        a = await r.disk_activity(act.id)
        assert a.state == ActivityState.FAILED and a.failed_task == t2
        assert a.reason == f"its task {t2} failed: exited with status 3"
        assert r.runner.runs == [t1, t2]
        kinds = r.kinds()
        assert kinds.index("TASK_FAILED") < kinds.index("ACTIVITY_FAILED")
        assert r.kinds(act.id).count("ACTIVITY_FAILED") == 1
        # the alert's stderr tail: the failing task's
        assert r.m.stderr_file(act.id) == r.m.output_file(t2, "stderr")
        assert r.m.stderr_file(t3) == os.path.join(str(tmp_path), "tasks", t3, "stderr")

        class Sup:
            def output_file(self, process: str, stream: str) -> str:
                return f"/log/{process}.{stream}"
        from taskmasterd.taskwiring import stderr_file
        assert stderr_file(r.m, Sup(), act.id) == r.m.output_file(t2, "stderr")  # type: ignore[arg-type]
        assert stderr_file(r.m, Sup(), "web:0") == "/log/web:0.stderr"  # type: ignore[arg-type]
    go(tmp_path, body)


def test_cancel_activity_and_append(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        act = await r.m.submit_activity("a", [spec(1)])
        (t1,) = act.tasks
        t2 = await r.m.submit(spec(2, activity=act.id))
        assert t2.activity == act.id and t2.position == 1
        assert r.m.activity(act.id).tasks == (t1, t2.id)
        assert (await r.disk_activity(act.id)).tasks == (t1, t2.id)
        assert r.runner.runs == [t1]
        r.m.cancel_activity(act.id, "cancelled by test")
        assert r.runner.cancels == [(t1, "cancelled by test")]
        assert (await r.disk(t2.id)).state == TaskState.CANCELLED
        assert r.m.activity(act.id).state == ActivityState.RUNNING  # until t1 stops
        r.runner.finish(t1, state=TaskState.CANCELLED, reason="cancelled by test")
        a = await r.disk_activity(act.id)
        assert a.state == ActivityState.CANCELLED and a.reason == "cancelled by test"
        with pytest.raises(TaskInvalid, match="no activity"):
            await r.m.submit(spec(3, activity="0123abcd"))
        with pytest.raises(TaskInvalid, match="at least one"):
            await r.m.submit_activity("empty", [])
    go(tmp_path, body)


# ---- recovery ---------------------------------------------------------------------


def _status(files: TaskFiles, id: str, seq: int, state: TaskState, **kw: Any) -> TaskStatus:
    s = TaskStatus(id=id, spec=TaskSpec(command="/bin/true", timeout=0.0), state=state, seq=seq,
                   submitted=NOW - 100, **kw)
    files.create_task(s)
    return s


def test_recovery_from_the_files(tmp_path: Path) -> None:
    files = TaskFiles(str(tmp_path))
    held_run = _status(files, "aaaa0001", 1, TaskState.RUNNING, pid=11, started=NOW - 50)
    dead = subprocess.Popen(["true"])
    dead.wait()
    _status(files, "aaaa0002", 2, TaskState.RUNNING, pid=dead.pid, start_ticks=1,
            started=NOW - 50, heartbeat=NOW - 40)
    live = subprocess.Popen(["sleep", "60"], start_new_session=True)
    ticks = spawn.proc_stat(live.pid)
    assert ticks is not None
    _status(files, "aaaa0003", 3, TaskState.RUNNING, pid=live.pid, start_ticks=ticks.start_ticks,
            started=NOW - 50)
    _status(files, "aaaa0004", 4, TaskState.QUEUED)
    _status(files, "aaaa0005", 5, TaskState.SUCCEEDED, ended=NOW - 10)
    files.mark_noticed("aaaa0005")  # a daemon published its end
    _status(files, "aaaa0007", 7, TaskState.FAILED, started=NOW - 30, ended=NOW - 20, exit_code=3)
    os.makedirs(tmp_path / "tasks" / "aaaa0006")
    (tmp_path / "tasks" / "aaaa0006" / "status.json").write_text("{not json")
    held = [held_run.replace(heartbeat=NOW - 1, runner_pid=77)]

    async def body(r: Rig) -> None:
        assert r.kinds("aaaa0001") == ["TASK_ADOPTED"]
        r.m.cancel("aaaa0001", "stop")  # it is the runner's again
        assert r.runner.cancels == [("aaaa0001", "stop")]
        lost = await r.disk("aaaa0002")
        assert lost.state == TaskState.LOST
        assert lost.reason.startswith("its task runner died while it ran (last heartbeat 2027-")
        assert r.kinds("aaaa0002") == ["TASK_LOST"]
        assert r.m.task("aaaa0003").state == TaskState.RUNNING  # watched
        assert r.runner.runs == ["aaaa0004"]  # queued again; 1 and 3 hold two lanes
        assert r.kinds("aaaa0005") == []  # ended before: no event again
        # ended while no daemon (and no runner) ran: its end now, once, and marked
        assert r.kinds("aaaa0007") == ["TASK_FAILED"]
        await r.m.flush()
        assert files.noticed("aaaa0007")
        assert (tmp_path / "tasks" / "aaaa0006.bad").is_dir()
        with pytest.raises(NoSuchTask):
            r.m.task("aaaa0006")
        ended = asyncio.Event()
        r.bus.subscribe(lambda e: ended.set() if e.process == "aaaa0003" else None)
        os.kill(live.pid, signal.SIGTERM)
        # No timeout: on the virtual clock it would expire at once (no timer
        # runs meanwhile, so the loop waits on the pidfd for real).
        await ended.wait()
        s3 = await r.disk("aaaa0003")
        assert s3.state == TaskState.LOST and s3.reason == UNWATCHED
        assert r.runner.runs == ["aaaa0004"]  # max_parallel 3: 1 and 4 run, nothing left
        assert r.m._seq == 8

    try:
        go(tmp_path, body, settings=TaskSettings(max_parallel=3), held=held)
    finally:
        live.kill()
        live.wait()


def test_recovery_an_end_while_down_advances_the_activity(tmp_path: Path) -> None:
    files = TaskFiles(str(tmp_path))
    t1 = _status(files, "bbbb0001", 1, TaskState.SUCCEEDED, activity="cccc0001", ended=NOW - 20)
    t2 = _status(files, "bbbb0002", 2, TaskState.FAILED, activity="cccc0001", position=1,
                 exit_code=3, ended=NOW - 5, reason="exited with status 3")
    _status(files, "bbbb0003", 3, TaskState.QUEUED, activity="cccc0001", position=2)
    files.write_activity(ActivityStatus("cccc0001", "deploy", ActivityState.RUNNING,
                                        (t1.id, t2.id, "bbbb0003"), seq=0, submitted=NOW - 100))

    async def body(r: Rig) -> None:
        assert r.kinds("bbbb0002") == ["TASK_FAILED"]  # the runner kept its end for us: once
        assert r.kinds("cccc0001") == ["ACTIVITY_FAILED"]
        assert (await r.disk("bbbb0003")).state == TaskState.CANCELLED
        assert (await r.disk_activity("cccc0001")).failed_task == "bbbb0002"
        assert r.runner.runs == []

    go(tmp_path, body, held=[t2])


def test_recovery_continues_an_activity(tmp_path: Path) -> None:
    files = TaskFiles(str(tmp_path))
    _status(files, "bbbb0001", 1, TaskState.SUCCEEDED, activity="cccc0001", ended=NOW - 20)
    _status(files, "bbbb0002", 2, TaskState.QUEUED, activity="cccc0001", position=1)
    files.write_activity(ActivityStatus("cccc0001", "deploy", ActivityState.RUNNING,
                                        ("bbbb0001", "bbbb0002"), seq=0, submitted=NOW - 100))

    async def body(r: Rig) -> None:
        assert r.runner.runs == ["bbbb0002"]
        # bbbb0001 ended while no daemon ran (bbbb0002 never started): its end is told now
        assert r.kinds("bbbb0001") == ["TASK_SUCCEEDED"]
        r.runner.finish("bbbb0002")
        assert (await r.disk_activity("cccc0001")).state == ActivityState.SUCCEEDED
        assert r.kinds("cccc0001") == ["ACTIVITY_SUCCEEDED"]

    go(tmp_path, body)


def test_runner_gone(tmp_path: Path) -> None:
    async def body(r: Rig) -> None:
        a = await r.m.submit(spec(1))
        b = await r.m.submit(spec(2))
        c = await r.m.submit(spec(3))
        r.runner.start(a.id)
        r.runner.start(b.id)
        # The runner wrote a's end but died before telling us; b's pid is dead.
        end = r.runner.given[a.id].replace(state=TaskState.SUCCEEDED, exit_code=0, ended=NOW)
        r.files.write_task(end)
        dead = subprocess.Popen(["true"])
        dead.wait()
        r.files.write_task(r.runner.given[b.id].replace(pid=dead.pid, start_ticks=5))
        done = asyncio.Event()
        r.bus.subscribe(lambda e: done.set() if e.process == b.id else None)
        r.m.on_gone(4242, "killed by SIGKILL")
        await asyncio.wait_for(done.wait(), 30)
        assert r.m.task(a.id).state == TaskState.SUCCEEDED
        assert r.kinds(a.id)[-1] == "TASK_SUCCEEDED"
        s = await r.disk(b.id)
        assert s.state == TaskState.LOST and "its task runner died while it ran" in s.reason
        assert r.runner.runs == [a.id, b.id, c.id]  # the next one goes to a new runner
    go(tmp_path, body, settings=TaskSettings(max_parallel=2))


# ---- keep ---------------------------------------------------------------------------


def test_keep_removes_old_ends_at_start_and_after_ends_once_a_minute(tmp_path: Path) -> None:
    files = TaskFiles(str(tmp_path))
    _status(files, "dddd0001", 1, TaskState.SUCCEEDED, ended=NOW - 8 * DAY)
    _status(files, "dddd0002", 2, TaskState.FAILED, ended=NOW - 6 * DAY)
    _status(files, "dddd0003", 3, TaskState.SUCCEEDED, activity="eeee0001", ended=NOW - 9 * DAY)
    files.write_activity(ActivityStatus("eeee0001", "old", ActivityState.SUCCEEDED, ("dddd0003",),
                                        seq=0, submitted=NOW - 10 * DAY, ended=NOW - 9 * DAY))

    async def body(r: Rig) -> None:
        await r.m.flush()
        assert r.removed == [(["dddd0001", "dddd0003"], ["eeee0001"])]
        assert not (tmp_path / "tasks" / "dddd0001").exists()
        assert not (tmp_path / "activities" / "eeee0001").exists()
        assert [s.id for s in r.m.tasks()] == ["dddd0002"]
        r.now += 2 * DAY  # dddd0002 is now 8 days old
        a = await r.m.submit(spec(1))
        r.runner.finish(a.id)
        assert len(r.removed) == 1  # the last clean-up was less than a minute ago
        await asyncio.sleep(61)  # sleep-ok: the virtual clock
        b = await r.m.submit(spec(2))
        r.runner.finish(b.id)
        assert r.removed[1] == (["dddd0002"], [])

    go(tmp_path, body)


def test_a_submission_waits_for_open_and_nothing_is_taken_after_close(tmp_path: Path) -> None:
    from taskmasterd.errors import TaskmasterError

    async def main() -> None:
        r = Rig(tmp_path)
        # Before open(): a submission waits for the start-up takeover, then is taken.
        early = asyncio.ensure_future(r.m.submit(spec(1)))
        for _ in range(5):
            await asyncio.sleep(0)  # sleep-ok: one loop turn
        assert not early.done() and not (tmp_path / "tasks").exists()
        await r.m.open()
        assert (await early).state == TaskState.QUEUED
        await r.m.submit(spec(1))
        await r.m.close()
        assert r.runner.closed
        with pytest.raises(TaskmasterError, match="shutting down"):
            await r.m.submit_activity("a", [spec(2)])
        assert not (tmp_path / "activities").exists()
    run(main())


def test_a_refused_manager_answers_waiting_submissions(tmp_path: Path) -> None:
    """The daemon does not own the statedir: what waited is refused, with why."""
    from taskmasterd.errors import TaskmasterError

    async def main() -> None:
        r = Rig(tmp_path)
        early = asyncio.ensure_future(r.m.submit(spec(1)))
        await asyncio.sleep(0)  # sleep-ok: one loop turn
        r.m.refuse("another taskmasterd owns the statedir")
        with pytest.raises(TaskmasterError, match="cannot be submitted: another taskmasterd owns"):
            await early
        assert not (tmp_path / "tasks").exists()
    run(main())


def test_a_runner_that_cannot_start_fails_each_task_with_why(tmp_path: Path) -> None:
    """Queued tasks failing at hand-over one after the other: each failed
    with the reason, the freed lanes refilled in a loop (a recursion per
    task would overflow the stack: it is made short here, so that 100
    tasks, not thousands of slow durable submissions, prove it)."""
    from taskmasterd.errors import TaskmasterError

    async def body(r: Rig) -> None:
        ids = [(await r.m.submit(spec(i))).id for i in range(100)]
        assert r.runner.runs == ids[:1]

        def refuse(status: TaskStatus, stopsignal: int, stoptime: float) -> None:
            raise TaskmasterError("cannot execute the runner")
        r.runner.run = refuse  # type: ignore[method-assign]
        depth, frame = 0, sys._getframe()
        while frame is not None:
            depth, frame = depth + 1, frame.f_back
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(depth + 60)  # a recursion per task: 3 frames each, 300 in all
        try:
            r.runner.finish(ids[0])
        finally:
            sys.setrecursionlimit(limit)
        assert all(r.m.task(i).state == TaskState.FAILED for i in ids[1:])
        assert r.m.task(ids[-1]).reason == \
            "the task runner could not be started: cannot execute the runner"

    go(tmp_path, body, settings=TaskSettings(max_parallel=1))


# ---- bounds -------------------------------------------------------------------------


def test_max_queued_refuses_past_the_tasks_not_yet_ended(tmp_path: Path) -> None:
    from taskmasterd.errors import QueueFull

    async def body(r: Rig) -> None:
        a = await r.m.submit(spec(1))  # running (a lane)
        b = await r.m.submit(spec(2))  # queued
        act = await r.m.submit_activity("two", [spec(3), spec(4)])  # 4 not ended: full
        with pytest.raises(QueueFull, match=r"a task would take the tasks not yet ended past "
                           r"tasks.max_queued \(4; 4 queued or running\): nothing queued"):
            await r.m.submit(spec(5))
        with pytest.raises(QueueFull, match="an activity of 2 tasks"):
            await r.m.submit_activity("more", [spec(6), spec(7)])
        with pytest.raises(QueueFull):  # an append counts too
            await r.m.submit(spec(8, activity=act.id))
        assert len(r.m.tasks()) == 4 and len(r.m.activities()) == 1
        assert len(os.listdir(tmp_path / "tasks")) == 4  # nothing of them on disk
        r.m.cancel(b.id, "cancelled by test")  # an end frees room
        c = await r.m.submit(spec(9))
        r.runner.finish(a.id)
        # Concurrent submissions count those still being written.
        got = await asyncio.gather(*(r.m.submit(spec(10 + i)) for i in range(3)),
                                   return_exceptions=True)
        assert [type(g).__name__ for g in got] == ["TaskStatus", "QueueFull", "QueueFull"]
        assert r.m._queue.unended == 4
        r.m.configure(TaskSettings(max_parallel=1, max_queued=6))  # a reload raises it
        await r.m.submit(spec(20))
        assert c.id in r.runner.runs or c.state == TaskState.QUEUED
    go(tmp_path, body, settings=TaskSettings(max_parallel=1, max_queued=4))


# ---- recovery: the noticed marks -----------------------------------------------------


def test_recovery_publishes_no_end_a_daemon_published_before_it_died(tmp_path: Path) -> None:
    """A daemon published a task's end (its mark) and died before the next
    task of its activity was written `running`, or before the activity's
    end was written: the next daemon goes on without publishing it again."""
    files = TaskFiles(str(tmp_path))
    _status(files, "bbbb0001", 1, TaskState.SUCCEEDED, activity="cccc0001", ended=NOW - 20)
    files.mark_noticed("bbbb0001")
    _status(files, "bbbb0002", 2, TaskState.QUEUED, activity="cccc0001", position=1)
    files.write_activity(ActivityStatus("cccc0001", "deploy", ActivityState.RUNNING,
                                        ("bbbb0001", "bbbb0002"), seq=0, submitted=NOW - 100))
    _status(files, "bbbb0003", 3, TaskState.FAILED, activity="cccc0002", ended=NOW - 20,
            exit_code=3)
    files.mark_noticed("bbbb0003")
    _status(files, "bbbb0004", 4, TaskState.QUEUED, activity="cccc0002", position=1)
    files.write_activity(ActivityStatus("cccc0002", "build", ActivityState.RUNNING,
                                        ("bbbb0003", "bbbb0004"), seq=0, submitted=NOW - 100))

    async def body(r: Rig) -> None:
        assert r.runner.runs == ["bbbb0002"]
        assert r.kinds("bbbb0001") == []
        assert r.kinds("bbbb0003") == []  # its activity's end is drawn, not its own again
        assert r.kinds("cccc0002") == ["ACTIVITY_FAILED"]
        assert (await r.disk("bbbb0004")).state == TaskState.CANCELLED

    go(tmp_path, body)


def test_a_cancelled_watched_task_gets_sigkill_after_stoptime(tmp_path: Path) -> None:
    """A task whose runner died, its process alive and watched by the
    daemon: a cancel sends stopsignal, then SIGKILL after stoptime (here
    the process ignores SIGTERM)."""
    files = TaskFiles(str(tmp_path))
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "print('ready', flush=True)\ntime.sleep(600)"],  # sleep-ok: the stand-in task's own wait
        stdout=subprocess.PIPE, start_new_session=True)
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ready\n"  # SIGTERM is ignored from now on
    ticks = spawn.proc_stat(stubborn.pid)
    assert ticks is not None
    _status(files, "eeee0001", 1, TaskState.RUNNING, pid=stubborn.pid,
            start_ticks=ticks.start_ticks, started=NOW - 50)

    async def body(r: Rig) -> None:
        loop = asyncio.get_running_loop()
        assert r.m.task("eeee0001").state == TaskState.RUNNING  # watched
        ended = asyncio.Event()
        r.bus.subscribe(lambda e: ended.set() if e.process == "eeee0001" else None)
        t0 = loop.time()
        r.m.cancel("eeee0001", "cancelled by test")
        r.m.cancel("eeee0001", "cancelled by test again")  # one SIGKILL timer, not two
        assert len(r.m.orphans.killing) == 1
        await ended.wait()  # the virtual clock reaches stoptime once nothing else runs
        assert loop.time() - t0 >= 7.0
        s = await r.disk("eeee0001")
        assert s.state == TaskState.LOST and s.reason == UNWATCHED
        assert r.m.orphans.killing == {}

    try:
        go(tmp_path, body, settings=TaskSettings(stoptime=7.0))
        assert stubborn.wait(timeout=10) == -signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait()
