"""Reload, the supervisor's side (the pure diff is taskmasterd.reload's
plan_reload): a new configuration applied to the slots (added, renamed,
resized, retired), announced (the RELOAD event), then the starts and stops
it causes. A mixin of Supervisor (taskmasterd/supervisor.py), as
taskmasterd.takeover is; split out of supervisor.py to keep it one concern
(carrying out the processes' actions) under the ~500-line limit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskmasterd.config import Config, ProgramConfig
from taskmasterd.deadline import cancel as cancel_timer
from taskmasterd.describe import reload_message
from taskmasterd.errors import ShuttingDown
from taskmasterd.events import Event, EventBus, Kind, Reloaded
from taskmasterd.lifecycle import Refused
from taskmasterd.logpipes import LogPipes
from taskmasterd.probing import Probing
from taskmasterd.process import Process
from taskmasterd.reload import ReloadPlan, plan_reload
from taskmasterd.settingsdiff import SettingChange
from taskmasterd.takeover import Request, Slot


class Reloading:
    # Owned by Supervisor (declared here for the type checker).
    config: Config
    bus: EventBus
    slots: dict[str, Slot]
    _retired: list[Slot]
    _shutting_down: bool
    logpipes: LogPipes
    probing: Probing

    if TYPE_CHECKING:  # Supervisor's and Ordering's (a stub here could hide them)
        def _add_slots(self, program: ProgramConfig, indexes: range) -> None: ...
        def _batch(self, todo: list[tuple[Slot, Request]]) -> list[Refused | None]: ...

    def reload(self, new: Config, settings: tuple[SettingChange, ...] = ()) -> ReloadPlan:
        """Apply `new`: first the structure (slots added, renamed, retired),
        then the RELOAD event, then the starts/stops it causes — so that a
        subscriber knows every process before it hears of its state.
        `settings`: what the reload changed outside the programs, for the
        RELOAD event's sentence (settingsdiff.py)."""
        if self._shutting_down:
            raise ShuttingDown("taskmasterd is shutting down: no reload")
        plan = plan_reload(self.config, new)
        old_programs = {p.name: p for p in self.config.programs}
        self.config = new
        todo: list[tuple[Slot, Request]] = []
        for name in plan.removed:
            todo += self._retire(old_programs[name].process_names())
        for program in plan.added:
            self._add_slots(program, range(program.numprocs))
            if program.autostart:
                todo += [(self.slots[n], Process.start) for n in program.process_names()]
        for program in plan.restarted:
            kept = program.process_names()[:old_programs[program.name].numprocs]
            todo += self._resize(program, old_programs[program.name])
            todo += [(self.slots[n], Process.relaunch) for n in kept]
        for r in plan.resized:
            todo += self._resize(r.program, old_programs[r.program.name])
        for program in plan.updated:
            for name in program.process_names():
                self.slots[name].process.config = program
                self.probing.reconfigured(name, program, self.slots[name].process.state)
        self.slots = {n: self.slots[n] for p in new.programs for n in p.process_names()}
        self._publish_reload(plan, old_programs, settings)
        if self._shutting_down:
            todo = [(slot, request) for slot, request in todo if request is Process.stop]
        self._batch(todo)  # refusals: already down (or up), as asked
        return plan

    def _retire(self, names: list[str]) -> list[tuple[Slot, Request]]:
        """Take processes out of the config; those alive are stopped, then dropped."""
        todo: list[tuple[Slot, Request]] = []
        for name in names:
            slot = self.slots.pop(name)
            if slot.child is None:
                cancel_timer(slot)
                continue
            slot.retiring = True
            self._retired.append(slot)
            todo.append((slot, Process.stop))
        return todo

    def _resize(self, new: ProgramConfig, old: ProgramConfig) -> list[tuple[Slot, Request]]:
        """Keep processes 0..min-1 (renamed if needed), add or retire the rest."""
        keep = min(old.numprocs, new.numprocs)
        old_names, new_names = old.process_names(), new.process_names()
        kept = [self.slots.pop(old_names[i]) for i in range(keep)]
        for i, slot in enumerate(kept):
            if slot.process.name != new_names[i]:
                self.logpipes.rename(slot.process.name, new_names[i])  # its output keeps its key
                self.probing.rename(slot.process.name, new_names[i])
            slot.process.name = new_names[i]  # prog <-> prog:0 when crossing 1
            slot.process.config = new
            self.slots[new_names[i]] = slot
        todo = self._retire(old_names[keep:])
        self._add_slots(new, range(keep, new.numprocs))
        if new.autostart:
            todo += [(self.slots[n], Process.start) for n in new_names[keep:]]
        return todo

    def _publish_reload(self, plan: ReloadPlan, old: dict[str, ProgramConfig],
                        settings: tuple[SettingChange, ...]) -> None:
        summary = Reloaded(tuple(p.name for p in plan.added), tuple(plan.changed),
                           tuple(plan.removed))
        self.bus.publish(Event(kind=Kind.RELOAD, reload=summary,
                               message=reload_message(plan, old, settings)))
