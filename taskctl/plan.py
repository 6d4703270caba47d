"""The reload preview as taskctl shows it (`reload --dry-run`, `reread`,
`avail`): plain values and pure rendering, tested without a daemon.

The daemon's Manager.PlanReload gives the lists, PlanReloadReasons a line
per program ("restarted: cmd, env changed"); the lists decide where a
program is shown, the reason only adds why. PlanReloadSettings (API 1.7)
adds the settings outside `programs:` (log file, statedir, `tasks:`,
`alerts:`), shown after the programs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from taskctl.model import UP_STATES, ProcessRow
from taskmasterd.settingsdiff import effect_note

NOTHING = "nothing would change"


class Setting(NamedTuple):
    """A setting outside `programs:` a reload would change (API 1.7)."""

    setting: str  # "tasks.max_parallel", "taskmasterd.statedir", "alerts"
    old: str
    new: str
    effect: str  # "applied"; "restart": not before taskmasterd restarts

    @classmethod
    def from_reply(cls, values: Sequence[Any]) -> Setting:
        setting, old, new, effect = (str(v) for v in values)
        return cls(setting, old, new, effect)

    def line(self) -> str:
        """`tasks.max_parallel: 4 -> 16`, and why not applied when it is not."""
        return f"{self.setting}: {self.old} -> {self.new}{effect_note(self.effect, self.old)}"


class Plan(NamedTuple):
    """What a reload would do now (D-Bus API 1.6; `settings` 1.7)."""

    added: tuple[str, ...]
    changed: tuple[str, ...]  # applied in place, the processes kept (resizes too)
    removed: tuple[str, ...]
    restarted: tuple[str, ...]
    reasons: Mapping[str, str]  # program -> "restarted: cmd changed", ...
    settings: tuple[Setting, ...] = ()  # outside programs: (none from a 1.6 daemon)

    @classmethod
    def from_replies(cls, lists: Sequence[Iterable[Any]], reasons: Mapping[Any, Any],
                     settings: Iterable[Sequence[Any]] = ()) -> Plan:
        added, changed, removed, restarted = (tuple(str(n) for n in names) for names in lists)
        return cls(added, changed, removed, restarted,
                   {str(k): str(v) for k, v in reasons.items()},
                   tuple(Setting.from_reply(v) for v in settings))

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.restarted
                    or self.settings)


# The order lines are printed in, and each list's words.
KINDS = (("added", "added"), ("restarted", "restarted"), ("changed", "changed in place"),
         ("removed", "removed"))


def detail(reason: str) -> str:
    """The part of a reason after its list's word: "cmd, env changed"."""
    return reason.partition(": ")[2].strip()


def plan_lines(plan: Plan) -> list[str]:
    """One line per program: `web: restarted (cmd, env changed)`, `cache: added`."""
    lines = []
    for field, words in KINDS:
        for name in getattr(plan, field):
            why = detail(plan.reasons.get(name, ""))
            lines.append(f"{name}: {words}" + (f" ({why})" if why else ""))
    lines += [s.line() for s in plan.settings]
    return lines or [NOTHING]


def plan_json(plan: Plan) -> dict[str, Any]:
    """Reload's keys (added, changed, removed), plus restarted, reasons and
    settings. Unlike Reload's, `changed` holds the in-place changes only."""
    return {"added": list(plan.added), "changed": list(plan.changed),
            "removed": list(plan.removed), "restarted": list(plan.restarted),
            "reasons": dict(plan.reasons), "settings": [s._asdict() for s in plan.settings]}


# ---- avail (supervisorctl's) ----------------------------------------------------------


class Avail(NamedTuple):
    """One program for `avail`: loaded ("in use") or only in the file ("avail")."""

    program: str
    in_use: bool
    processes: int  # 0 for a program not loaded
    up: int  # of them STARTING, RUNNING or STOPPING
    pending: str  # what the next reload does to it ("" nothing), from the plan


def avail_rows(rows: Sequence[ProcessRow], plan: Plan | None) -> list[Avail]:
    """The loaded programs in the daemon's order, then those a reload would
    add. `plan` None: not known (no access, an invalid file)."""
    counts: dict[str, list[int]] = {}
    for r in rows:
        c = counts.setdefault(r.program, [0, 0])
        c[0] += 1
        c[1] += r.state in UP_STATES
    pending: dict[str, str] = {}
    if plan is not None:
        for field, words in KINDS:
            for name in getattr(plan, field):
                why = detail(plan.reasons.get(name, ""))
                pending[name] = words + (f" ({why})" if why else "")
    out = [Avail(p, True, n, up, pending.get(p, "")) for p, (n, up) in counts.items()]
    out += [Avail(p, False, 0, 0, pending[p]) for p in (plan.added if plan else ()) if p not in counts]
    return out


def avail_lines(items: Sequence[Avail]) -> list[str]:
    """`web  in use  2/2 up`, `cache  avail  -  (at the next reload: added)`."""
    if not items:
        return ["no programs"]
    table = [(a.program, "in use" if a.in_use else "avail",
              f"{a.up}/{a.processes} up" if a.in_use else "-",
              f"at the next reload: {a.pending}" if a.pending else "") for a in items]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    cells = [[c.ljust(w) for c, w in zip(r[:3], widths, strict=True)] + ([f"({r[3]})"] if r[3] else [])
             for r in table]
    return ["  ".join(c).rstrip() for c in cells]


def avail_json(items: Sequence[Avail]) -> list[dict[str, Any]]:
    return [{"program": a.program, "in_use": a.in_use, "processes": a.processes, "up": a.up,
             "next_reload": a.pending or None} for a in items]
