"""The supervisor's timers, exactly: the real Supervisor with real processes,
in-process on the virtual clock (tests/virtual_clock.py). The time of each
event is the loop's (virtual) time when it was emitted, so the delays are
the ones the supervisor armed, not what a loaded machine made of them.

Replaces the wall-clock windows test_daemon.py had on these delays (the
subprocess daemon there now checks order and outcome only)."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest
import yaml

from taskmasterd.config import parse_config
from taskmasterd.events import Event, EventBus
from taskmasterd.supervisor import Supervisor
from tests.virtual_clock import run


def supervisor(workdir: Path, programs: dict[str, dict[str, object]]
               ) -> tuple[Supervisor, list[tuple[float, Event]], asyncio.Queue[Event]]:
    loop = asyncio.get_running_loop()
    text = yaml.safe_dump({"taskmasterd": {"logdir": str(workdir / "logs")}, "programs": programs})
    config = parse_config(text, str(workdir / "taskmaster.yaml"))
    bus = EventBus()
    seen: list[tuple[float, Event]] = []
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def note(e: Event) -> None:
        seen.append((loop.time(), e))
        queue.put_nowait(e)
    bus.subscribe(note)
    return Supervisor(config, bus, logdir=str(workdir / "logs")), seen, queue


async def until(queue: asyncio.Queue[Event], kind: str, process: str) -> Event:
    async with asyncio.timeout(3600):  # virtual seconds
        while True:
            e = await queue.get()
            if e.kind == kind and e.process == process:
                return e


def at(seen: list[tuple[float, Event]], kind: str) -> list[float]:
    return [t for t, e in seen if e.kind == kind]


async def launch_and_hear(sup: Supervisor, fifo: Path) -> None:
    """launch_autostart, then wait until the program wrote to `fifo` (real
    I/O: no timer is pending, the virtual clock stands still meanwhile)."""
    loop = asyncio.get_running_loop()
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    said = asyncio.Event()
    loop.add_reader(fd, said.set)
    try:
        sup.launch_autostart()
        await said.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def test_spawn_retries_are_1_s_then_2_s_apart_then_fatal(tmp_path: Path) -> None:
    async def main() -> list[tuple[float, Event]]:
        sup, seen, queue = supervisor(tmp_path, {
            "ghost": {"cmd": "/nonexistent/ghost", "startretries": 2}})
        sup.launch_autostart()
        await until(queue, "FATAL", "ghost")
        await sup.shutdown()
        return seen

    seen = run(main())
    errors = at(seen, "SPAWN_ERROR")
    assert [b - a for a, b in itertools.pairwise(errors)] == pytest.approx(
        [1.0, 2.0], abs=1e-9)
    assert at(seen, "FATAL") == pytest.approx([errors[-1]], abs=1e-9)


def test_sigkill_comes_exactly_stoptime_after_the_stop_signal(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    os.mkfifo(ready)

    async def main() -> list[tuple[float, Event]]:
        sup, seen, queue = supervisor(tmp_path, {"stubborn": {
            "cmd": f"sh -c 'trap \"\" TERM; echo ready > {ready}; exec sleep 100000'",
            "starttime": 0, "stoptime": 1}})
        await launch_and_hear(sup, ready)  # TERM is ignored from now on
        sup.stop("stubborn")
        await until(queue, "STOPPED", "stubborn")
        await sup.shutdown()
        return seen

    seen = run(main())
    # The first KILL is the armed timer. (The virtual clock races the kernel:
    # while the killed child is being reaped, it may jump through the
    # supervisor's "KILL again each second" timer a few times.)
    [stopping], killed = at(seen, "STOPPING"), at(seen, "KILLED")
    assert killed[0] - stopping == pytest.approx(1.0, abs=1e-9)
    stopped = [e for _, e in seen if e.kind == "STOPPED"]
    assert stopped[-1].exit_status == -9
