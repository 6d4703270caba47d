"""Start ordering (`after:`, issue 15; the pure rules in taskmasterd.deps),
the supervisor's side, without a state of its own: a start waits (is held)
until the programs of its `after` are RUNNING; the stops of one request
(a target, a reload, the shutdown) wait until the dependents stopped with
them are down. Both are looked at again (`_settle`) after each turn of
actions that changed a state. A mixin of Supervisor (taskmasterd/supervisor.py),
as taskmasterd.takeover is."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from taskmasterd import deps
from taskmasterd.config import Config
from taskmasterd.events import Kind
from taskmasterd.lifecycle import STARTED_STATES, Action, Refused
from taskmasterd.process import Process
from taskmasterd.states import State
from taskmasterd.takeover import Request, Slot

DOWN = frozenset({State.STOPPED, State.EXITED, State.FATAL, State.BACKOFF, State.UNKNOWN})
STARTABLE = frozenset({State.STOPPED, State.EXITED, State.FATAL, State.UNKNOWN})


class Ordering:
    # Owned by Supervisor (declared here for the type checker).
    config: Config
    slots: dict[str, Slot]
    _retired: list[Slot]
    _shutting_down: bool
    detail_listeners: list[Callable[[str], None]]
    _held: dict[Slot, str]
    _deferred: dict[Slot, tuple[set[Slot], Request]]
    _dirty: bool
    _settling: bool

    def _request(self, slot: Slot, request: Request) -> None: ...
    def _apply(self, slot: Slot, actions: list[Action]) -> None: ...
    def _publish_process(self, slot: Slot, kind: Kind, message: str, *, pid: int = 0) -> None: ...


    def _batch(self, todo: list[tuple[Slot, Request]]) -> list[Refused | None]:
        """Make requests made together (one target, autostart, a reload, the
        shutdown): the stop of a process (or the stop of its restart) waits
        until its dependents among them are down; a start waits for its
        `after` (held). Each request's refusal, or None."""
        waits = self._stop_waits([slot for slot, request in todo if request is not Process.start])
        out: list[Refused | None] = []
        was_settling, self._settling = self._settling, True  # nothing released before all are made
        try:
            for slot, request in todo:
                if slot in waits:
                    self._held.pop(slot, None)
                    self._deferred[slot] = (waits[slot], request)
                    names = ", ".join(sorted(s.process.name for s in waits[slot]))
                    self._publish_process(slot, Kind.WAITING,
                                          f"stop waits until its dependents are down: {names}",
                                          pid=slot.process.pid)
                    self._tell(slot)
            for slot, request in todo:
                if slot in waits:
                    out.append(None)
                    continue
                try:
                    self._one(slot, request)
                    out.append(None)
                except Refused as r:
                    out.append(r)
        finally:
            self._settling = was_settling
        self._dirty = True
        self._settle()
        return out

    def _stop_waits(self, slots: list[Slot]) -> dict[Slot, set[Slot]]:
        """The processes of `slots` to stop only once some others of `slots`
        (their dependents, not down) are down."""
        graph = self._graph()
        if len(slots) < 2 or not any(graph.values()):
            return {}
        every = deps.dependents(graph)
        out: dict[Slot, set[Slot]] = {}
        for slot in slots:
            if slot.process.state not in (State.STARTING, State.RUNNING):
                continue  # down or going down already: nothing to wait for
            mine = every.get(slot.process.program, set())
            waited = {o for o in slots if o.process.program in mine and o.process.state not in DOWN}
            if waited:
                out[slot] = waited
        return out

    def _graph(self) -> dict[str, tuple[str, ...]]:
        """program -> its after, for the programs of the config and those a
        reload removed that are still going down (their own, old, after)."""
        graph: dict[str, tuple[str, ...]] = {p.name: p.after for p in self.config.programs}
        for slot in self._retired:
            graph.setdefault(slot.process.program, slot.process.config.after)
        return graph

    def _one(self, slot: Slot, request: Request) -> None:
        if request is Process.stop:
            self._stop_one(slot)
        else:
            self._ask(slot, request)

    def _stop_one(self, slot: Slot) -> None:
        """A stop: cancels a held start, and stops what runs."""
        self._deferred.pop(slot, None)
        waiting = self._held.pop(slot, None)
        if waiting is not None:
            self._publish_process(slot, Kind.WAITING,
                                  f"start cancelled by a stop (it was {waiting})")
            self._tell(slot)
        try:
            self._request(slot, Process.stop)
        except Refused:
            if waiting is None:
                raise  # nothing to stop and no start to cancel

    def _ask(self, slot: Slot, request: Request) -> None:
        """A start, restart or relaunch: made at once if the programs of its
        `after` are RUNNING; else what runs is stopped and the start held."""
        self._deferred.pop(slot, None)
        p = slot.process
        if request is Process.relaunch and p.state in STARTABLE \
                and not (p.want_up or p.config.autostart):
            return  # a relaunch leaves a process stopped on purpose down
        blocked = self._blockers(slot)
        if not blocked or (request is Process.start and p.state in STARTED_STATES):
            if slot in self._held:
                del self._held[slot]
                self._tell(slot)
            self._request(slot, request)  # a start of a started process: refused
            return
        if p.state in STARTED_STATES or p.state is State.STOPPING:
            # A restart: down now, up once they are RUNNING. A stop of a
            # STOPPING process cancels the start it had pending.
            self._request(slot, Process.stop)
        text = deps.waiting_text(blocked)
        if slot not in self._held:
            self._publish_process(slot, Kind.WAITING,
                                  f"start held: {text} (after: {', '.join(p.config.after)})")
        self._held[slot] = text
        self._tell(slot)

    def _blockers(self, slot: Slot) -> list[tuple[str, str]]:
        program = slot.process.config
        states: dict[str, list[State]] = {}
        for name in program.after:
            config = self.config.program(name)
            if config is None:
                continue
            states[name] = [State.STOPPING if s in self._deferred else s.process.state
                            for s in (self.slots.get(n) for n in config.process_names())
                            if s is not None]
        return deps.blockers(program, states)

    def _settle(self) -> None:
        """Make the deferred stops whose dependents are down and the held
        starts whose `after` programs are RUNNING; again while that changes
        states."""
        if self._settling:
            return
        if not self._held and not self._deferred:
            self._dirty = False  # nothing waits: the common case, no ordering in the file
            return
        self._settling = True
        try:
            while self._dirty:
                self._dirty = False
                self._settle_stops()
                self._settle_starts()
        finally:
            self._settling = False

    def _settle_stops(self) -> None:
        for slot, (waited, request) in list(self._deferred.items()):
            for other in list(waited):
                q = other.process
                # Down, or started again (no stop of it is coming): no more waiting.
                if q.state in DOWN or (other not in self._deferred and q.state in STARTED_STATES):
                    waited.discard(other)
            if waited or self._deferred.get(slot) is None:
                continue
            del self._deferred[slot]
            with contextlib.suppress(Refused):
                self._one(slot, request)

    def _settle_starts(self) -> None:
        live = set(self.slots.values())
        for slot in list(self._held):
            if slot not in self._held:
                continue
            p = slot.process
            if slot not in live or self._shutting_down or p.state in STARTED_STATES:
                del self._held[slot]  # removed, shutting down, or restarted by itself
                self._tell(slot)
                continue
            if p.state is State.STOPPING:
                continue  # the stop of its restart: not down yet
            blocked = self._blockers(slot)
            if blocked:
                text = deps.waiting_text(blocked)
                if text != self._held[slot]:
                    self._held[slot] = text
                    self._tell(slot)
                continue
            del self._held[slot]
            with contextlib.suppress(Refused):
                self._request(slot, Process.start)

    def _tell(self, slot: Slot) -> None:
        """Its description changed without a transition (held, released)."""
        for listener in self.detail_listeners:
            listener(slot.process.program)
