"""Overlapping restart (`restart: overlap`, issue 15; docs/readiness.md).

An administrative restart of a RUNNING process whose program says
`restart: overlap` starts a *successor* first, waits until it is RUNNING
(ready, with `ready:`; up for starttime without), then stops the old
process with its stopsignal (SIGKILL after stoptime), and once the old one
is down the successor takes the slot: ONE transition RUNNING -> RUNNING
with the new pid. For servers that share their port (SO_REUSEPORT) that is
a restart without a refused connection.

The process stays RUNNING all along: the successor is a `Successor` slot
outside `Supervisor.slots`, with its own state machine (process.py), its
own pidfd, timer and probes (probing key `<name>~next`), and its
transitions are never published as the process's. What happens is told
by OVERLAP lines; a failure (spawn error, exit, not ready within
readytimeout) abandons the overlap: an OVERLAP_FAILED line, which is a
RUNNING -> RUNNING transition with the unchanged pid and expected=False
(so that `taskctl restart` and D-Bus clients hear of it), the old process
untouched.

A mixin of Supervisor (as takeover.Takeover), which calls it from a few
hooks: `_overlap_request` (restart/relaunch/stop requests), `_overlap_exited`
(an exit of a successor, or of a process being overlapped), `_successor_slot`
(probing findings by key), `_overlap_text` (the process's description) and
`live_children` (shutdown waits for successors too); the daemon calls
`abort_overlaps` before it re-executes itself.

The state store records one process per name, so an overlap is recorded
as what the next daemon should do if this one dies in the middle of it
(`_overlap_records`): until the handover the old process is the process and
the successor a leftover to stop (`web~next`, a program no configuration
has: the next daemon takes it back and stops it, as one a reload removed);
from the handover on the successor is the process and the old one the
leftover (`web~old`, being stopped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import select
import signal as signals
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from taskmasterd import spawn
from taskmasterd.deadline import cancel as cancel_timer
from taskmasterd.deadline import follow as follow_deadline
from taskmasterd.events import Event, EventBus, Kind
from taskmasterd.lifecycle import Action, Changed, Kill, LastExit, Refused, Spawn, SpawnError, describe_exit
from taskmasterd.logpipes import LogPipes
from taskmasterd.probing import Probing
from taskmasterd.process import Process
from taskmasterd.programschema import RestartMode
from taskmasterd.states import State
from taskmasterd.statestore.records import ProcessRecord
from taskmasterd.takeover import Request, Slot

SUCCESSOR_SUFFIX = "~next"  # a successor's probing key: `web~next` (never a process name)


def overlaps(process: Process, request: Request) -> bool:
    """Whether `request` on `process` is an overlap restart: a restart (or a
    reload's relaunch) of a RUNNING process whose program says
    `restart: overlap`. Anything else (not RUNNING, automatic restarts,
    the watchdog, a health restart) restarts as always."""
    return (request in (Process.restart, Process.relaunch)
            and process.config.restart is RestartMode.OVERLAP
            and process.state is State.RUNNING and process.pid > 0
            and not process.start_pending)


def successor_reason(ch: Changed, failure: str) -> str:
    """Why a successor's transition `ch` ends the overlap ("" : it does not)."""
    if ch.new in (State.STARTING, State.RUNNING):
        return ""
    if ch.spawn_error is not None:
        return f"the successor could not be spawned: {ch.spawn_error}"
    if failure:
        return f"the successor was {failure}"
    if ch.new is State.STOPPING:
        return ""  # a stop we asked for (abandon): its reason is already told
    if ch.status_unknown or ch.exit_status is not None:
        return f"the successor exited before it was ready ({describe_exit(ch.exit_status)})"
    return f"the successor went {ch.new.value}"


@dataclass(eq=False)
class Successor(Slot):
    """The new process of an overlap restart, until it takes `owner`'s place."""

    owner: Slot | None = None
    key: str = ""  # its probing key (and log pipes' until it takes over)
    old_pid: int = 0
    handover: bool = False  # it is RUNNING: the old one is being stopped
    abandoned: str = ""  # why the overlap was given up: it is only waited for now
    kill_timer: asyncio.TimerHandle | None = field(default=None, repr=False)  # the old one's SIGKILL


@dataclass
class OverlapBook:
    """The overlaps of one supervisor."""

    # Owner slot -> its successor: an overlap under way, or abandoned and
    # its successor still going down.
    successors: dict[Slot, Successor] = field(default_factory=dict)
    # Owner slot -> (the pid that kept running, why the last overlap failed):
    # shown in its description while that pid runs (taskctl reads the reason).
    failures: dict[Slot, tuple[int, str]] = field(default_factory=dict)


class Overlaps:
    # Owned by Supervisor (declared here for the type checker).
    overlaps: OverlapBook
    bus: EventBus
    logdir: str
    journal: bool
    _loop: asyncio.AbstractEventLoop
    _alive: set[Slot]
    _all_down: asyncio.Event
    _child_env: Mapping[str, str]
    logpipes: LogPipes
    probing: Probing

    def _on_pidfd(self, slot: Slot) -> None: ...  # Supervisor's
    def _launch(self, slot: Slot, key: str) -> None:  # Supervisor's
        raise NotImplementedError
    def _apply(self, slot: Slot, actions: list[Action]) -> None: ...  # Supervisor's
    def _sync_timer(self, slot: Slot) -> None: ...  # Supervisor's
    def _check_all_down(self) -> None: ...  # Supervisor's
    def _publish_process(self, slot: Slot, kind: Kind, message: str, *, pid: int = 0,
                         spawn_error: SpawnError | None = None) -> None: ...  # Supervisor's

    @property
    def _successors(self) -> dict[Slot, Successor]:
        return self.overlaps.successors

    # ---- the supervisor's hooks -------------------------------------------------

    def _overlap_request(self, slot: Slot, request: Request) -> bool:
        """Before `request` is applied to `slot`: True if it was taken care
        of here (an overlap restart began). A second restart during an
        overlap is refused; a stop (or a reload's relaunch) abandons it."""
        succ = self._successors.get(slot)
        if succ is not None and not succ.abandoned:
            if request is Process.restart:
                raise Refused("AlreadyStarted",
                              f"{slot.process.name}: an overlap restart is under way (successor pid "
                              f"{succ.process.pid or '(spawning)'}); try again once it is done")
            if request in (Process.stop, Process.relaunch):
                why = "stop requested" if request is Process.stop else "a reload restarts it"
                self._abandon(succ, why, failed=False)
            return False
        if succ is not None:  # abandoned, its successor still going down: not a second one yet
            if request is Process.restart and overlaps(slot.process, request):
                raise Refused("AlreadyStarted",
                              f"{slot.process.name}: the successor pid {succ.process.pid} of an "
                              "abandoned overlap restart is still going down; try again in a moment")
            return False  # a relaunch then restarts it stop-start
        if not overlaps(slot.process, request):
            return False
        self._begin(slot)
        return True

    def _overlap_exited(self, slot: Slot, status: int | None) -> bool:
        """An exit is being published: True if it was handled here (a
        successor's exit, or the old process's once a successor can take
        its place)."""
        if isinstance(slot, Successor):
            self._successor_exited(slot, status)
            return True
        succ = self._successors.get(slot)
        if succ is None or succ.abandoned:
            return False
        if succ.process.state not in (State.STARTING, State.RUNNING):
            return False
        self._take_over(slot, succ, status)
        return True

    def _successor_slot(self, key: str) -> Slot | None:
        """The successor a probing key names (readiness, READY=1, STATUS=)."""
        return next((s for s in self._successors.values() if s.key == key and s.child is not None),
                    None)

    def _overlap_text(self, slot: Slot) -> str:
        """Appended to the process's description while an overlap runs."""
        succ = self._successors.get(slot)
        if succ is None or succ.abandoned:
            pid, why = self.overlaps.failures.get(slot, (0, ""))
            alive = pid == slot.process.pid and slot.process.state is State.RUNNING
            return f"; overlap restart failed: {why}" if why and alive else ""
        if succ.handover:
            return f"; overlap restart: successor pid {succ.process.pid} ready, stopping this one"
        return f"; overlap restart: successor pid {succ.process.pid} {succ.process.state.value}"

    def overlap_children(self) -> int:
        """Successors alive (shutdown waits for them as for the processes)."""
        return sum(1 for s in self._successors.values() if s.child is not None)

    # ---- the overlap ------------------------------------------------------------

    def _begin(self, slot: Slot) -> None:
        p = slot.process
        succ = Successor(Process(name=p.name, config=p.config, index=p.index), owner=slot,
                         key=p.name + SUCCESSOR_SUFFIX, old_pid=p.pid)
        self._successors[slot] = succ
        self.overlaps.failures.pop(slot, None)
        self._successor_apply(succ, succ.process.start(self._loop.time()))

    def _successor_apply(self, succ: Successor, actions: list[Action]) -> None:
        """The successor's machine's actions: carried out, its transitions
        told as OVERLAP lines, never as the process's."""
        for action in actions:
            if isinstance(action, Spawn):
                if succ.abandoned:  # its machine's autorestart: never for a successor
                    continue
                self._successor_apply(succ, self._spawn_successor(succ))
            elif isinstance(action, Kill):
                if succ.child is not None:
                    spawn.kill_group(succ.child, action.sig)
            elif isinstance(action, Changed):
                self._successor_changed(succ, action)
        if succ.abandoned and succ.child is None:
            self._drop(succ)
        else:
            follow_deadline(self._loop, succ, succ.process.deadline,
                            lambda now: self._successor_apply(succ, succ.process.on_timer(now)))

    def _spawn_successor(self, succ: Successor) -> list[Action]:
        proc = succ.process
        now = self._loop.time()
        try:
            self._launch(succ, succ.key)  # not in _alive: overlap_children() counts it
        except spawn.SpawnFailed as exc:
            return proc.on_spawn_failed(exc.error, now)
        assert succ.child is not None
        return proc.on_spawned(succ.child.pid, now)

    def _successor_changed(self, succ: Successor, ch: Changed) -> None:
        p, owner = succ.process, succ.owner
        assert owner is not None
        self.probing.changed(succ.key, p.config, ch.old, ch.new, health=False)
        if succ.abandoned:
            return
        if ch.new is State.STARTING and ch.pid:
            self._overlap_log(owner, f"overlap restart: successor pid {ch.pid} spawned; pid {succ.old_pid} "
                              "keeps running until it is ready", ch.pid)
        elif ch.new is State.RUNNING:
            self._hand_over(owner, succ)
        else:
            why = successor_reason(ch, p.failure)
            if why:
                self._abandon(succ, why, failed=True)

    def _hand_over(self, owner: Slot, succ: Successor) -> None:
        """The successor is RUNNING: stop the old one (not published as its
        STOPPING: the process stays RUNNING)."""
        succ.handover = True
        old = owner.process
        sig = old.config.stopsignal
        self._overlap_log(owner, f"successor pid {succ.process.pid} ready; stopping pid {succ.old_pid} "
                          f"(SIG{sig.name.removeprefix('SIG')})", succ.process.pid)
        # The old one is on its way out: no watchdog (its WATCHDOG=1 no longer
        # heard: its notify socket closes), no health check.
        old.deadline = None
        cancel_timer(owner)
        self.probing.gone(old.name)
        if owner.child is not None:
            spawn.kill_group(owner.child, sig)
        self._arm_kill(succ, old.config.stoptime)

    def _arm_kill(self, succ: Successor, after: float) -> None:
        if succ.kill_timer is not None:
            succ.kill_timer.cancel()
        succ.kill_timer = self._loop.call_later(after, self._kill_overdue, succ)

    def _kill_overdue(self, succ: Successor) -> None:
        owner = succ.owner
        succ.kill_timer = None
        if owner is None or owner.child is None or self._successors.get(owner) is not succ:
            return
        stoptime = owner.process.config.stoptime
        spawn.kill_group(owner.child, signals.SIGKILL)
        self._publish_process(owner, Kind.KILLED,
                              f"overlap restart: pid {owner.child.pid} still alive {stoptime:g}s "
                              f"after its stop signal: sent SIGKILL to process group {owner.child.pid}",
                              pid=owner.child.pid)
        self._arm_kill(succ, max(stoptime, 1.0))

    def _abandon(self, succ: Successor, why: str, *, failed: bool, restart: bool = True) -> None:
        """Give the overlap up: the successor is stopped (if alive) and only
        waited for; the old process is left as it is, unless it was already
        told to stop (the successor died after it was ready): then it is
        restarted stop-start (`restart`), visibly (STOPPING, STOPPED,
        STARTING), so that the restart asked for still happens."""
        owner = succ.owner
        assert owner is not None
        again = failed and restart and succ.handover and owner.process.state is State.RUNNING
        succ.abandoned = why
        if succ.kill_timer is not None:
            succ.kill_timer.cancel()
            succ.kill_timer = None
        pid = succ.process.pid
        if failed:
            old = owner.process
            if succ.handover:  # the old one was told to stop: it goes down
                text = (f"overlap restart of {old.name} failed: {why}; pid {succ.old_pid} was "
                        "already told to stop" + (": restarting it stop-start" if again else ""))
            else:
                text = f"overlap restart of {old.name} failed: {why}; pid {old.pid} keeps running"
            self.bus.publish(Event(kind=Kind.OVERLAP_FAILED, message=text, process=old.name,
                                   program=old.program, old_state=old.state, new_state=old.state,
                                   pid=old.pid, expected=False))
            # Only those of processes still running with that pid: bounded.
            self.overlaps.failures = {s: f for s, f in self.overlaps.failures.items()
                                      if s.process.pid == f[0]}
            self.overlaps.failures[owner] = (old.pid, why)
        else:
            self._overlap_log(owner, f"overlap restart of {owner.process.name} cancelled ({why})"
                              + (f"; stopping successor pid {pid}" if succ.child is not None else ""),
                       pid)
        if succ.child is not None and succ.process.state in (State.STARTING, State.RUNNING):
            self._successor_apply(succ, succ.process.stop(self._loop.time()))
        elif succ.child is None:
            self._drop(succ)
        if again:  # its stop signal was sent: a second one is harmless; its deadline is the machine's
            self._apply(owner, owner.process.restart(self._loop.time()))

    def _successor_exited(self, succ: Successor, status: int | None) -> None:
        self.probing.gone(succ.key)
        self.logpipes.release(succ.key)
        if succ.process.state is State.RUNNING and not succ.abandoned:
            # Ready, then dead while the old one was being stopped.
            self._abandon(succ, f"the successor exited after it was ready ({describe_exit(status)})",
                          failed=True)
        self._successor_apply(succ, succ.process.on_exit(status, self._loop.time()))
        if not succ.abandoned:  # an exit nothing above explained (cannot happen)
            self._abandon(succ, f"the successor exited ({describe_exit(status)})", failed=True)

    def _drop(self, succ: Successor) -> None:
        cancel_timer(succ)
        succ.process.deadline = None
        if succ.kill_timer is not None:
            succ.kill_timer.cancel()
            succ.kill_timer = None
        if succ.owner is not None and self._successors.get(succ.owner) is succ:
            del self._successors[succ.owner]
        self._check_all_down()

    def _take_over(self, owner: Slot, succ: Successor, status: int | None) -> None:
        """The old process is down (stopped by us, or gone by itself): the
        successor takes its slot, its probes, its output keys."""
        old, new = owner.process, succ.process
        child = succ.child
        assert child is not None
        name, old_pid = old.name, succ.old_pid
        self._alive.discard(owner)
        self.probing.gone(name)
        self.probing.rename(succ.key, name)
        self.logpipes.rename(succ.key, name)
        self._loop.remove_reader(child.pidfd)
        cancel_timer(owner)
        cancel_timer(succ)
        if succ.kill_timer is not None:
            succ.kill_timer.cancel()
        del self._successors[owner]
        now = self._loop.time()
        new.name = name  # a reload may have renamed the slot meanwhile
        new.restarts = 0  # an administrative restart: a fresh count, as Process._start
        new.last_exit = LastExit(status, now, succ.handover)
        owner.process = new
        owner.child, owner.pipes = child, succ.pipes
        owner.fingerprint, owner.started_wall = succ.fingerprint, succ.started_wall
        owner.exited_wall = time.time()
        self._alive.add(owner)
        self._loop.add_reader(child.pidfd, self._on_pidfd, owner)
        if new.state is State.RUNNING:
            message = f"took over from pid {old_pid} (overlap restart)"
        else:
            message = (f"pid {old_pid} exited ({describe_exit(status)}) during an overlap restart; "
                       f"its successor pid {new.pid} takes over, not ready yet")
        self.probing.changed(name, new.config, old.state, new.state)
        self.bus.publish(Event(kind=new.state, message=message, process=name, program=new.program,
                               old_state=old.state, new_state=new.state, pid=new.pid))
        self._sync_timer(owner)

    def _overlap_log(self, owner: Slot, message: str, pid: int) -> None:
        self._publish_process(owner, Kind.OVERLAP, message, pid=pid)

    # ---- the state store ---------------------------------------------------------

    def _overlap_records(self, records: list[ProcessRecord]) -> list[ProcessRecord]:
        """`records` (the slots') with the overlaps under way: see the module
        docstring. `~` is in no program's name: these never clash."""
        for owner, succ in self._successors.items():
            name = owner.process.name
            if succ.handover and not succ.abandoned:
                # The successor is the process now; the old one goes down.
                record = self._record(succ)
                if record is None:
                    continue
                record = dataclasses.replace(record, program=owner.process.program, process=name,
                                             index=owner.process.index)
                old = self._record(owner, f"{name}~old")
                records = [r for r in records if r.process != name] + [record]
                if old is not None:
                    records.append(old)
            else:
                leftover = self._record(succ, name + SUCCESSOR_SUFFIX)  # its log pipes' key too
                if leftover is not None:
                    records.append(leftover)
        return records

    if TYPE_CHECKING:  # Takeover's (a stub here would hide it: Overlaps comes first)
        def _record(self, slot: Slot, as_name: str = "") -> ProcessRecord | None: ...

    # ---- a re-exec ---------------------------------------------------------------

    def abort_overlaps(self) -> None:
        """Before our own re-exec: the state handed over has one record per
        process name, so no successor can cross it. An overlap still
        waiting for its successor is given up (the successor killed with
        SIGKILL and reaped: OVERLAP_FAILED, the old process kept); one whose
        old process was already told to stop is completed (the old one
        killed with SIGKILL and reaped, the successor takes over). Waits at
        most a second for each."""
        for owner, succ in list(self._successors.items()):
            if succ.handover and not succ.abandoned and succ.child is not None:
                status = None  # the old one may be reaped already, its exit not yet published
                if owner.child is not None:
                    status = self._kill_now(owner.child)
                    owner.child, owner.pipes = None, []
                self._take_over(owner, succ, status)
                continue
            if not succ.abandoned:
                self._abandon(succ, "taskmasterd re-executes itself", failed=True, restart=False)
            if succ.child is not None:
                self._kill_now(succ.child)
                succ.child = None
                self.probing.gone(succ.key)
                self.logpipes.release(succ.key)
            self._drop(succ)

    def _kill_now(self, child: spawn.Child) -> int | None:
        """SIGKILL `child`'s group, wait (a second at most) and reap it: its
        status, None if unknown (adopted, or still not gone)."""
        spawn.kill_group(child, signals.SIGKILL)
        self._loop.remove_reader(child.pidfd)
        select.select([child.pidfd], [], [], 1.0)  # a pidfd is readable once the process exited
        if child.adopted:
            spawn.reap_adopted(child)
            return None
        status = spawn.collect(child)
        if status is None:
            os.close(child.pidfd)  # not gone within a second: unsupervised from now on
        return status
