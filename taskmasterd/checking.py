"""Readiness and health (issue 15, docs/readiness.md), the supervisor's
side: what taskmasterd.probing finds (READY=1, a probe that succeeded,
WATCHDOG=1, STATUS=, an UNHEALTHY verdict, a check's result) turned into
events of the process's state machine, and shown in ProcessInfo. A mixin
of Supervisor (taskmasterd/supervisor.py), as taskmasterd.takeover is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskmasterd.events import Kind
from taskmasterd.lifecycle import Action
from taskmasterd.probing import Probing
from taskmasterd.process import Process
from taskmasterd.states import State
from taskmasterd.takeover import Slot


class Checking:
    # Owned by Supervisor (declared here for the type checker).
    slots: dict[str, Slot]
    _retired: list[Slot]
    _loop: asyncio.AbstractEventLoop
    probing: Probing

    def _apply(self, slot: Slot, actions: list[Action]) -> None: ...
    def _successor_slot(self, name: str) -> Slot | None: ...

    if TYPE_CHECKING:  # Ordering's (a stub here could hide it)
        def _tell(self, slot: Slot) -> None: ...
    def _publish_process(self, slot: Slot, kind: Kind, message: str, *, pid: int = 0) -> None: ...


    def _slot_of(self, name: str) -> Slot | None:
        slot = self.slots.get(name) or self._successor_slot(name)
        if slot is None:
            slot = next((s for s in self._retired if s.process.name == name), None)
        return slot if slot is not None and slot.child is not None else None

    def _probed(self, name: str, event: Callable[..., list[Action]], *args: object) -> None:
        slot = self._slot_of(name)
        if slot is not None:
            self._apply(slot, event(slot.process, *args, self._loop.time()))

    def _unhealthy(self, name: str, detail: str) -> None:
        slot = self._slot_of(name)
        if slot is None or slot.process.state is not State.RUNNING:
            return
        health = slot.process.config.health
        count = health.failures if health is not None else 1
        self._publish_process(slot, Kind.UNHEALTHY,
                              f"unhealthy: the health check failed {count} time(s) in a row "
                              f"({detail}); restarting", pid=slot.process.pid)
        self._apply(slot, slot.process.on_unhealthy(detail, self._loop.time()))

    def _status_text(self, name: str, text: str) -> None:
        slot = self._slot_of(name)
        if slot is not None and slot.process.status_text != text:
            slot.process.status_text = text
            self._details(name)

    def _details(self, name: str) -> None:
        slot = self._slot_of(name)
        if slot is not None:
            self._tell(slot)

    def _checks(self, p: Process) -> dict[str, Any]:
        """ProcessInfo's readiness and health fields."""
        cfg = p.config
        out: dict[str, Any] = {"ready_check": cfg.ready.describe() if cfg.ready else "",
                                  "status_text": p.status_text}
        if cfg.health is not None:
            health = self.probing.health(p.name)
            if health is None or health.ok is None:
                out["health"] = "unknown" if p.state is State.RUNNING else ""
            else:
                out.update(health="healthy" if health.ok else "unhealthy",
                           health_detail=health.detail, health_failures=health.failures)
        return out

    def _health_text(self, p: Process) -> str:
        health = self.probing.health(p.name)
        if health is None or health.ok is None or p.config.health is None:
            return ""
        if health.ok:
            return "; healthy"
        return f"; unhealthy ({health.failures}/{p.config.health.failures}: {health.detail})"
