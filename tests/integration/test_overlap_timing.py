"""Overlapping restart's timers, exactly: the real Supervisor with real
processes on the virtual clock (tests/virtual_clock.py), as
test_supervisor_timing.py. Without `ready:` the successor is RUNNING after
starttime, and only then is the old process told to stop; an old process
that ignores its stop signal gets SIGKILL exactly stoptime later."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from taskmasterd.events import Event, Kind
from taskmasterd.states import State
from tests.integration.test_supervisor_timing import launch_and_hear, supervisor, until
from tests.virtual_clock import run


def dead(pid: int) -> None:
    """Block (in a thread: the virtual clock stands still meanwhile) until
    `pid` has exited: a zombie our loop has still to reap, or gone."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except OSError:  # gone (ENOENT, or ESRCH while reading)
            return
        time.sleep(0.01)  # sleep-ok: polling /proc in a thread; the virtual clock stands still
    raise AssertionError(f"pid {pid} still alive after 10 s")


def test_without_ready_the_old_process_is_stopped_starttime_after_the_successor_spawned(
        tmp_path: Path) -> None:
    async def main() -> tuple[list[tuple[float, Event]], int, int, int]:
        sup, seen, queue = supervisor(tmp_path, {"web": {
            "cmd": "sleep 100000", "starttime": 5, "restart": "overlap", "stoptime": 60}})
        sup.launch_autostart()
        old = (await until(queue, "RUNNING", "web")).pid
        assert sup.restart("web") == ["web"]
        assert sup.process("web").state is State.RUNNING and sup.process("web").pid == old
        await until(queue, "OVERLAP", "web")  # the successor spawned
        handover = await until(queue, "OVERLAP", "web")
        assert "ready; stopping" in handover.message
        await asyncio.to_thread(dead, old)  # real work: the clock must not jump to its SIGKILL
        took = await until(queue, "RUNNING", "web")
        now = sup.process("web").pid
        await sup.shutdown()
        return seen, old, took.pid, now

    seen, old, new, now = run(main())
    assert new not in (0, old) and now == new
    overlap = [(t, e) for t, e in seen if e.kind == Kind.OVERLAP]
    (t_spawned, spawned), (t_ready, ready) = overlap[:2]
    assert spawned.pid == new and ready.message.startswith(f"successor pid {new} ready; stopping "
                                                           f"pid {old} (SIGTERM)")
    assert t_ready - t_spawned == 5.0  # starttime, exactly
    web = [e for _, e in seen if e.process == "web" and e.new_state is not None]
    # STARTING, RUNNING (the first start), then only the takeover until the shutdown's STOPPING.
    assert [(e.old_state, e.new_state, e.pid) for e in web[:3]] == [
        (State.STOPPED, State.STARTING, old), (State.STARTING, State.RUNNING, old),
        (State.RUNNING, State.RUNNING, new)]
    assert web[2].message == f"took over from pid {old} (overlap restart)"


def test_an_old_process_ignoring_its_stop_signal_is_killed_stoptime_after_the_handover(
        tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    os.mkfifo(ready)

    async def main() -> list[tuple[float, Event]]:
        sup, seen, queue = supervisor(tmp_path, {"web": {
            "cmd": f"sh -c 'trap \"\" TERM; echo ready > {ready}; exec sleep 100000'",
            "starttime": 1, "restart": "overlap", "stoptime": 7}})
        await launch_and_hear(sup, ready)  # TERM is ignored from now on
        await until(queue, "RUNNING", "web")
        old = sup.process("web").pid
        sup.restart("web")
        await until(queue, "KILLED", "web")
        await asyncio.to_thread(dead, old)
        await until(queue, "RUNNING", "web")
        await sup.shutdown()
        return seen

    seen = run(main())
    handover = [t for t, e in seen if e.kind == Kind.OVERLAP and "ready; stopping" in e.message]
    killed = [t for t, e in seen if e.kind == Kind.KILLED]
    assert killed[0] - handover[0] == 7.0  # stoptime, exactly
