"""Start ordering (`after:`) seen from inside the supervisor (real processes,
real event loop): held starts, their description and release, a stop that
cancels a hold, a restart that holds, reloads that change `after`, a
program of several processes, and automatic restarts that are not held."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from taskmasterd.config import AutoRestart, Config, ProgramConfig
from taskmasterd.errors import NotRunning
from taskmasterd.events import Event, EventBus, Kind
from taskmasterd.probeschema import Check
from taskmasterd.states import State
from taskmasterd.supervisor import Supervisor
from tests.integration.test_supervisor import Until


def prog(name: str, **kw: object) -> ProgramConfig:
    base = ProgramConfig(name=name, cmd="sleep 100000", argv=("sleep", "100000"), starttime=0.05,
                         stoptime=2)
    return replace(base, **kw)  # type: ignore[arg-type]


def running(bus: EventBus, process: str) -> Until:
    return Until(bus, lambda e: e.process == process and e.new_state is State.RUNNING)


def run(tmp_path: object, programs: tuple[ProgramConfig, ...],
        body: Callable[[Supervisor, EventBus, list[Event]], Awaitable[None]]) -> None:
    async def main() -> None:
        bus = EventBus()
        events: list[Event] = []
        bus.subscribe(events.append)
        sup = Supervisor(Config(path="/x.yaml", programs=programs), bus, logdir=str(tmp_path))
        try:
            await body(sup, bus, events)
        finally:
            await sup.shutdown()
        assert sup.live_children() == 0
    asyncio.run(main())


def kinds(events: list[Event], process: str) -> list[str]:
    return [str(e.kind) for e in events if e.process == process]


def test_a_held_start_is_described_released_and_cancelled(tmp_path: object) -> None:
    async def body(sup: Supervisor, bus: EventBus, events: list[Event]) -> None:
        told: list[str] = []
        sup.detail_listeners.append(told.append)
        assert sup.launch_autostart() == ["web"]
        web = sup.process("web")
        assert web.state is State.STOPPED and web.description == "waiting for db (STOPPED)"
        assert told == ["web"]
        [held] = [e for e in events if e.kind is Kind.WAITING]
        assert held.process == "web" and "start held: waiting for db (STOPPED)" in held.message
        # a stop cancels the hold: done, not NotRunning; a second stop has nothing to do
        assert sup.stop("web") == ["web"]
        assert sup.process("web").description == "not started"
        assert "start cancelled by a stop" in events[-1].message
        with pytest.raises(NotRunning):
            sup.stop("web")
        # held again; db's start releases it once db is RUNNING
        assert sup.start("web") == ["web"]
        web_up = running(bus, "web")
        sup.start("db")
        assert sup.process("web").description == "waiting for db (STARTING)"
        await web_up.wait()
        order = [(e.process, e.new_state) for e in events if e.new_state is not None]
        assert order.index(("db", State.RUNNING)) < order.index(("web", State.STARTING))
    run(tmp_path, (prog("web", after=("db",)), prog("db", autostart=False)), body)


def test_a_restart_with_after_not_running_stops_and_holds(tmp_path: object) -> None:
    async def body(sup: Supervisor, bus: EventBus, events: list[Event]) -> None:
        web_up = running(bus, "web")
        sup.launch_autostart()
        await web_up.wait()
        db_down = Until(bus, lambda e: e.process == "db" and e.new_state is State.STOPPED)
        assert sup.stop("db") == ["db"]  # alone: web keeps running
        await db_down.wait()
        assert sup.process("web").state is State.RUNNING
        web_down = Until(bus, lambda e: e.process == "web" and e.new_state is State.STOPPED)
        assert sup.restart("web") == ["web"]
        await web_down.wait()
        await asyncio.sleep(0.2)  # sleep-ok: nothing may start it; give it the chance to
        assert sup.process("web").state is State.STOPPED
        assert sup.process("web").description == "waiting for db (STOPPED)"
        web_up = running(bus, "web")
        sup.start("db")
        await web_up.wait()
    run(tmp_path, (prog("db"), prog("web", after=("db",))), body)


def test_every_process_of_the_after_program_must_be_running(tmp_path: object) -> None:
    async def body(sup: Supervisor, bus: EventBus, events: list[Event]) -> None:
        web_up = running(bus, "web")
        sup.launch_autostart()
        await web_up.wait()
        states = [(e.process, e.new_state) for e in events if e.new_state is not None]
        web_start = states.index(("web", State.STARTING))
        assert states.index(("db:0", State.RUNNING)) < web_start
        assert states.index(("db:1", State.RUNNING)) < web_start
    # db:1 is ready 0.1 s after db:0: web waits for both
    ready = "sleep 0.${TASKMASTER_PROCESS_NUM}5; systemd-notify --ready; exec sleep 100000"
    run(tmp_path, (prog("web", after=("db",)),
                   prog("db", numprocs=2, cmd=f"sh -c '{ready}'", argv=("sh", "-c", ready),
                        ready=Check("notify"), starttime=0)), body)


def test_a_reload_drops_or_releases_holds(tmp_path: object) -> None:
    async def body(sup: Supervisor, bus: EventBus, events: list[Event]) -> None:
        sup.launch_autostart()
        assert sup.process("web").description == "waiting for db (STOPPED)"
        assert sup.process("api").description == "waiting for db (STOPPED)"
        # web's after changes in place: its start is made at once; api is removed
        web_up = running(bus, "web")
        plan = sup.reload(Config(path="/x.yaml", programs=(prog("web"),
                                                           prog("db", autostart=False))))
        assert [p.name for p in plan.updated] == ["web"] and plan.removed == ("api",)
        await web_up.wait()
        assert not sup._held  # api's hold went with it
        # a reload adding both, the dependent first: it waits for the other
        mark = len(events)
        front_up = running(bus, "front")
        sup.reload(Config(path="/x.yaml", programs=(
            prog("web"), prog("db", autostart=False), prog("front", after=("cache",)),
            prog("cache", starttime=0.3))))
        await front_up.wait()
        new = [(e.process, e.new_state or e.kind) for e in events[mark:]]
        assert new.index(("front", Kind.WAITING)) < new.index(("cache", State.RUNNING)) \
            < new.index(("front", State.STARTING))
    run(tmp_path, (prog("web", after=("db",)), prog("db", autostart=False),
                   prog("api", after=("db",))), body)


def test_automatic_restarts_are_not_held(tmp_path: object) -> None:
    async def body(sup: Supervisor, bus: EventBus, events: list[Event]) -> None:
        web_up = running(bus, "web")
        sup.launch_autostart()
        await web_up.wait()
        db_down = Until(bus, lambda e: e.process == "db" and e.new_state is State.STOPPED)
        sup.stop("db")
        await db_down.wait()
        mark = len(events)
        again = Until(bus, lambda e: e.process == "web" and e.new_state is State.STARTING)
        exits = Until(bus, lambda e: e.process == "web" and e.new_state is State.EXITED)
        await exits.wait()
        await again.wait()  # autorestart: no WAITING, db STOPPED all the same
        assert Kind.WAITING not in [e.kind for e in events[mark:]]
        assert sup.process("db").state is State.STOPPED
    run(tmp_path, (prog("db"), prog("web", after=("db",), autorestart=AutoRestart.ALWAYS,
                                    cmd="sleep 0.5", argv=("sleep", "0.5"))), body)


SLOW_STOP = ("sh", "-c", "trap 'sleep 0.3; exit 0' TERM; sleep 100000 & wait")


def test_a_reload_removing_both_stops_the_dependent_first(tmp_path: object) -> None:
    """The stops of a reload are ordered too: db (removed) is stopped once
    web (removed, slow to stop) is down; the removed programs' own `after`
    tells it."""
    async def body(sup: Supervisor, bus: EventBus, events: list[Event]) -> None:
        web_up = running(bus, "web")
        sup.launch_autostart()
        await web_up.wait()
        mark = len(events)
        db_down = Until(bus, lambda e: e.process == "db" and e.new_state is State.STOPPED)
        plan = sup.reload(Config(path="/x.yaml", programs=(prog("other"),)))
        assert plan.removed == ("db", "web")
        await db_down.wait()
        order = [(e.process, e.new_state or e.kind) for e in events[mark:]]
        assert order.index(("web", State.STOPPED)) < order.index(("db", State.STOPPING))
        assert ("db", Kind.WAITING) in order
    run(tmp_path, (prog("db"), prog("web", after=("db",), cmd=" ".join(SLOW_STOP),
                                    argv=SLOW_STOP)), body)
