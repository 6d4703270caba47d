"""Taking processes back: what the state store records of the supervisor
(`snapshot`), and `adopt`, which takes back at start what a previous daemon
left running (after a crash: not our children; after our own re-exec: still
our children, with the pidfds handed over). A mixin of Supervisor, which
owns the slots; here only what concerns a process started by another daemon
than this one (see taskmasterd/statestore for the file)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as signals
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from taskmasterd import spawn
from taskmasterd.config import AutoRestart, Config, ProgramConfig
from taskmasterd.describe import adopted_message
from taskmasterd.events import Event, EventBus, Kind
from taskmasterd.lifecycle import Action, Changed, Refused
from taskmasterd.logpipes import LogPipes
from taskmasterd.probing import Probing
from taskmasterd.process import Process
from taskmasterd.states import State
from taskmasterd.statestore.handover import Down
from taskmasterd.statestore.records import ProcessRecord, Snapshot, launch_fingerprint

log = logging.getLogger("taskmasterd")

Request = Callable[[Process, float], list[Action]]


@dataclass(eq=False)
class Slot:
    """One process: its state machine and its runtime handles."""

    process: Process
    child: spawn.Child | None = None
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    started_wall: float = 0.0  # time.time() of the last spawn
    exited_wall: float = 0.0  # time.time() of the last exit (the core's last_exit)
    retiring: bool = False  # removed by a reload: drop once it is down
    pipes: list[int] = field(default_factory=list)  # the log writer's ids of its bounded outputs
    fingerprint: str = ""  # launch fingerprint of the config its child was started with


class Takeover:
    # Owned by Supervisor (declared here for the type checker).
    config: Config
    bus: EventBus
    logdir: str
    journal: bool
    slots: dict[str, Slot]
    _retired: list[Slot]
    _alive: set[Slot]
    _all_down: asyncio.Event
    _loop: asyncio.AbstractEventLoop
    logpipes: LogPipes
    probing: Probing

    def _request(self, slot: Slot, request: Request) -> None: ...  # Supervisor's
    def _on_pidfd(self, slot: Slot) -> None: ...  # Supervisor's
    def _sync_timer(self, slot: Slot) -> None: ...  # Supervisor's

    def snapshot(self) -> Snapshot:
        """Every process with a live child, for the state store (and the
        successors of overlap restarts: `_overlap_records`)."""
        records: list[ProcessRecord] = []
        for slot in [*self.slots.values(), *self._retired]:
            record = self._record(slot)
            if record is not None:
                records.append(record)
        return Snapshot(tuple(self._overlap_records(records)), daemon_pid=os.getpid())

    def _record(self, slot: Slot, as_name: str = "") -> ProcessRecord | None:
        """`slot`'s record, if it has a live child; `as_name`: recorded as a
        process of that name (a program of its own, index 0)."""
        child, p = slot.child, slot.process
        if child is None or p.state not in (State.STARTING, State.RUNNING, State.STOPPING):
            return None
        return ProcessRecord(
            program=as_name or p.program, process=as_name or p.name, index=0 if as_name else p.index,
            pid=child.pid, start_ticks=child.start_ticks, fingerprint=slot.fingerprint, state=p.state,
            started_at=slot.started_wall, restarts=p.restarts,
            stopsignal=int(p.config.stopsignal), stoptime=p.config.stoptime)

    def _overlap_records(self, records: list[ProcessRecord]) -> list[ProcessRecord]:
        return records  # Overlaps' (taskmasterd/overlap.py)

    def adopt(self, snapshot: Snapshot, pidfds: Mapping[str, int] | None = None) -> list[str]:
        """Take back every recorded process still alive (same pid, same start
        time), then treat those whose program left the configuration or
        whose launch settings changed as a reload would: stop the former,
        restart the latter. Before launch_autostart, which then skips them.

        `pidfds` (process name -> pidfd): handed over by our own re-exec; those
        processes are still our children, taken back without an ADOPTED event."""
        todo: list[tuple[Slot, Request]] = []
        adopted: list[str] = []
        for rec in snapshot.processes:
            child = spawn.adopt(rec.pid, rec.start_ticks, (pidfds or {}).get(rec.process))
            if isinstance(child, str):
                log.info("%s: pid %d not re-adopted: %s", rec.process, rec.pid, child)
                self.logpipes.release(rec.process)
                continue
            slot, leaving = self._adoption_slot(rec)
            if slot is None:
                log.warning("%s: pid %d not re-adopted: its place is taken", rec.process, rec.pid)
                os.close(child.pidfd)
                continue
            self._take_back(slot, child, rec)
            adopted.append(slot.process.name)
            if leaving or rec.state is State.STOPPING:  # a stop under way goes on
                todo.append((slot, Process.stop))
            elif rec.fingerprint != self._fingerprint(slot.process.config):
                todo.append((slot, Process.relaunch))
        if adopted:
            log.info("took back %d process(es); %d to stop (left the configuration or were "
                     "stopping), %d to restart (launch settings changed)", len(adopted),
                     sum(r is Process.stop for _, r in todo),
                     sum(r is Process.relaunch for _, r in todo))
        for slot, request in todo:
            with contextlib.suppress(Refused):
                self._request(slot, request)
        return adopted

    def _adoption_slot(self, rec: ProcessRecord) -> tuple[Slot | None, bool]:
        """The slot a record goes back to, and whether it is leaving (its
        program left the configuration, or no longer has that many processes)."""
        program = self.config.program(rec.program)
        if program is not None and rec.index < program.numprocs:
            slot = self.slots[program.process_names()[rec.index]]
            fresh = slot.child is None and slot.process.state is State.STOPPED
            return (slot if fresh else None), False
        if any(s.process.name == rec.process for s in self._retired):
            return None, True
        # Gone from the file: what a reload's retire does needs only how to stop it.
        config = program or ProgramConfig(
            name=rec.program, cmd="", argv=(), autostart=False, autorestart=AutoRestart.NEVER,
            stopsignal=signals.Signals(rec.stopsignal), stoptime=rec.stoptime)
        slot = Slot(Process(name=rec.process, config=config, index=rec.index), retiring=True)
        self._retired.append(slot)
        return slot, True

    def _take_back(self, slot: Slot, child: spawn.Child, rec: ProcessRecord) -> None:
        age = spawn.process_age(child.start_ticks)
        slot.child = child
        slot.fingerprint = rec.fingerprint
        slot.started_wall = time.time() - age
        slot.process.restarts = rec.restarts
        self._alive.add(slot)
        self._all_down.clear()
        self._loop.add_reader(child.pidfd, self._on_pidfd, slot)
        self._reattach_outputs(slot)
        (changed,) = slot.process.adopt(child.pid, age, self._loop.time())
        assert isinstance(changed, Changed)
        p = slot.process
        self.probing.adopted(p.name, p.config, child.pid, p.state)
        if child.adopted:  # across our own exec nothing changed for the outside
            self.bus.publish(Event(kind=Kind.ADOPTED, process=p.name, program=p.program,
                                   message=adopted_message(changed, age, p.config.starttime),
                                   old_state=changed.old, new_state=changed.new, pid=child.pid))
        self._sync_timer(slot)

    def down_states(self) -> list[Down]:
        """The processes without a child, for a re-exec: their state survives it."""
        return [Down(process=s.process.name, state=s.process.state,
                     exit_status=s.process.exit_status, exit_unknown=s.process.exit_unknown,
                     restarts=s.process.restarts,
                     restart_pending=s.process.deadline is not None or s.process.start_pending,
                     retries=s.process.retries)
                for s in self.slots.values() if s.child is None]

    def restore(self, downs: list[Down]) -> list[str]:
        """Put back the states `down_states` saved (before our exec); a
        pending retry (BACKOFF) or autorestart (EXITED) is due now, through
        the core's own timer path, so retries and restarts go on counting
        (a re-exec never grants a failing program extra retries); a start
        requested while it was stopping is started now. Returns their names."""
        names = []
        for down in downs:
            slot = self.slots.get(down.process)
            if slot is None or slot.child is not None or slot.process.state is not State.STOPPED:
                continue
            names.append(slot.process.name)
            p = slot.process
            if down.restart_pending and down.state not in (State.BACKOFF, State.EXITED):
                with contextlib.suppress(Refused):  # a restart's start, still to come
                    self._request(slot, Process.start)
                continue
            p.state, p.exit_status, p.exit_unknown = down.state, down.exit_status, down.exit_unknown
            p.restarts, p.retries = down.restarts, down.retries
            if down.restart_pending:
                p.want_up = True
                p.deadline = self._loop.time()  # due now: the core's timer path spawns it
                self._sync_timer(slot)
        return names

    def _reattach_outputs(self, slot: Slot) -> None:
        """An adopted process's bounded outputs: the pipes the surviving log
        writer kept for it (re-attached at start, by process name and
        stream), so its drain is awaited at its exit as a spawned one's.
        Outputs with maxbytes 0, null or journal are written by the child;
        a console's terminal is always the writer's."""
        for stream in ("stdout", "stderr", "console"):
            pipe = self.logpipes.adopt(slot.process.name, stream)
            if pipe is not None:
                slot.pipes.append(pipe)

    def _fingerprint(self, program: ProgramConfig) -> str:
        return launch_fingerprint(program, self.logdir, self.journal)
