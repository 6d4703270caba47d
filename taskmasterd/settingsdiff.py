"""What a reload changes beyond the programs (pure): the daemon's own
settings (`taskmasterd:`), `tasks:` and `alerts:`.

A reload applies them at once: the log file and its level, `logdir`
(the programs with automatic output files are restarted into it: they
are among the reload's programs), the task queue's limits, the alert
targets. All but `statedir`: the daemon keeps the state store it holds
(the records of its processes and tasks, its lock) until it is
restarted. The reload preview (Manager.PlanReloadSettings, `taskctl
reload --dry-run`) and the RELOAD event say so, rather than "nothing
changed".

Alert targets are counted, never shown: their URLs may hold passwords.

The configuration is imported for the type checker only: taskctl words
a preview's effects with `effect_note`, and its start-up must not load
the configuration's modules.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskmasterd.config import Config
    from taskmasterd.paths import Paths


class Effect(StrEnum):
    """When a reload's change of a setting takes effect."""

    APPLIED = "applied"  # by the reload itself
    RESTART = "restart"  # only once taskmasterd is restarted


@dataclass(frozen=True)
class SettingChange:
    setting: str  # "tasks.max_parallel", "taskmasterd.loglevel", "alerts"
    old: str  # the values as text
    new: str
    effect: Effect

    def describe(self) -> str:
        """`tasks.max_parallel 4 -> 16`, and why not applied when it is not."""
        return f"{self.setting} {self.old} -> {self.new}{effect_note(self.effect, self.old)}"


def effect_note(effect: str, old: str) -> str:
    """What follows a change's values: nothing when the reload applies it,
    why it does not otherwise (an effect this code does not know, from a
    newer daemon, as it is)."""
    if effect == Effect.APPLIED:
        return ""
    if effect == Effect.RESTART:
        return f" (not applied: {old} stays in use until taskmasterd is restarted)"
    return f" ({effect})"


def settings_changes(old: Config, new: Config, old_paths: Paths,
                     new_paths: Paths) -> tuple[SettingChange, ...]:
    """Every setting outside `programs:` that differs between `old` and
    `new`, in file order. The paths are the resolved ones (a default
    written out is no change)."""
    out: list[SettingChange] = []

    def compare(setting: str, a: object, b: object, effect: Effect = Effect.APPLIED) -> None:
        if a != b:
            out.append(SettingChange(setting, _text(a), _text(b), effect))

    compare("taskmasterd.logfile", old_paths.logfile, new_paths.logfile)
    compare("taskmasterd.loglevel", old.daemon.loglevel, new.daemon.loglevel)
    compare("taskmasterd.logdir", old_paths.logdir, new_paths.logdir)
    compare("taskmasterd.statedir", old_paths.statedir, new_paths.statedir, Effect.RESTART)
    for f in fields(old.tasks):
        compare(f"tasks.{f.name}", getattr(old.tasks, f.name), getattr(new.tasks, f.name))
    if old.alerts != new.alerts:
        before, after = _targets(len(old.alerts)), _targets(len(new.alerts))
        out.append(SettingChange("alerts", before, after if after != before else f"{after}, edited",
                                 Effect.APPLIED))
    return tuple(out)


def not_applied(changes: tuple[SettingChange, ...]) -> list[SettingChange]:
    """The changes a reload leaves for a restart."""
    return [c for c in changes if c.effect is Effect.RESTART]


def _targets(n: int) -> str:
    return f"{n} target" + ("" if n == 1 else "s")


def _text(value: object) -> str:
    if isinstance(value, signal.Signals):
        return value.name.removeprefix("SIG")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
