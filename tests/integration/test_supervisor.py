"""The supervisor in-process (real processes, real event loop): properties
that are easier to see from inside than from the log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest

from taskmasterd.config import Config, ProgramConfig
from taskmasterd.errors import AlreadyStarted, NoSuchProgram, NotRunning
from taskmasterd.events import Event, EventBus
from taskmasterd.states import State
from taskmasterd.supervisor import Supervisor


def prog(name: str, **kw: object) -> ProgramConfig:
    base = ProgramConfig(name=name, cmd="sleep 100000", argv=("sleep", "100000"), starttime=0.05)
    return replace(base, **kw)  # type: ignore[arg-type]


class Until:
    """Subscribes at construction (before the test acts), awaited later."""

    def __init__(self, bus: EventBus, pred: Callable[[Event], bool]) -> None:
        self.seen: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        def check(ev: Event) -> None:
            if pred(ev) and not self.seen.done():
                self.seen.set_result(ev)
        self.unsubscribe = bus.subscribe(check)

    async def wait(self, timeout: float = 10) -> Event:
        try:
            async with asyncio.timeout(timeout):
                return await self.seen
        finally:
            self.unsubscribe()


def test_once_ready_nothing_probes_and_nothing_is_scheduled(tmp_path: object) -> None:
    """Issue 15: a program with a readiness probe is probed only while
    STARTING; once RUNNING the daemon is idle again (0 wakeups), as without
    one. Here the probe (`false`) never succeeds: READY comes as a notify
    would, and the prober still retrying must be cancelled by RUNNING."""
    from taskmasterd.probeschema import Check

    async def main() -> None:
        bus = EventBus()
        config = Config(path="/x.yaml", programs=(
            prog("a", ready=Check("cmd", "false"), starttime=0),
            prog("b", ready=Check("notify"), starttime=0)))
        sup = Supervisor(config, bus, logdir=str(tmp_path), notify_dir=str(tmp_path) + "/n")
        sup.launch_autostart()
        loop = asyncio.get_running_loop()
        for name in ("a", "b"):
            slot = sup.slots[name]
            assert slot.process.state is State.STARTING
            sup._apply(slot, slot.process.on_ready("READY=1", loop.time()))
            assert slot.process.state is State.RUNNING
        await asyncio.sleep(0)  # sleep-ok: one loop turn, for the cancelled prober to finish
        await asyncio.sleep(0)  # sleep-ok: and its cancellation to be delivered
        assert all(s.process.deadline is None and s.timer is None for s in sup.slots.values())
        assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == [], others
        await sup.shutdown()
    asyncio.run(main())


def test_steady_state_has_no_timer_armed(tmp_path: object) -> None:
    async def main() -> None:
        bus = EventBus()
        config = Config(path="/x.yaml", programs=(prog("a", numprocs=3), prog("b")))
        sup = Supervisor(config, bus, logdir=str(tmp_path))
        running = Until(bus, lambda e: sup.counts().get(State.RUNNING) == 4)
        sup.launch_autostart()
        await running.wait()
        loop = asyncio.get_running_loop()
        # Nothing is due: no process has a deadline and the loop has no
        # scheduled callbacks left, so the daemon sleeps in epoll until a
        # pidfd, a signal or a D-Bus message wakes it.
        assert all(s.process.deadline is None and s.timer is None for s in sup.slots.values())
        assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]
        await sup.shutdown()
        assert sup.live_children() == 0
    asyncio.run(main())


def test_requests_resolve_targets_and_refuse_cleanly(tmp_path: object) -> None:
    async def main() -> None:
        bus = EventBus()
        sup = Supervisor(Config(path="/x.yaml", programs=(prog("web", numprocs=2),
                                                          prog("db", autostart=False))),
                         bus, logdir=str(tmp_path))
        running = Until(bus, lambda e: sup.counts().get(State.RUNNING) == 2)
        sup.launch_autostart()
        await running.wait()
        with pytest.raises(AlreadyStarted):
            sup.start("web")
        with pytest.raises(NotRunning):
            sup.stop("db")
        with pytest.raises(NoSuchProgram):
            sup.restart("nope")
        db_running = Until(bus, lambda e: e.process == "db" and e.new_state == "RUNNING")
        assert sup.start("all") == ["db"]  # the started ones are skipped
        await db_running.wait()
        old = sup.process("web:1").pid
        restarted = Until(bus, lambda e: e.process == "web:1" and e.new_state == "RUNNING")
        assert sup.restart("web:1") == ["web:1"]
        ev = await restarted.wait()
        assert ev.pid != old and sup.process("web:0").pid != 0
        infos = {i.name: i for i in sup.processes()}
        assert infos["web:1"].pid == ev.pid and infos["web:1"].state is State.RUNNING
        assert infos["web:1"].description.startswith(f"pid {ev.pid}, uptime 0:00:0")
        await sup.shutdown()
    asyncio.run(main())
