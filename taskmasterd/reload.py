"""Config diff -> reload plan (pure).

A program whose launch keys changed is restarted; one whose only change is
numprocs is resized (the surviving processes keep their PIDs); any other
change is applied in place without touching its processes.

The launch keys are those that shape the exec'd process (cmd, env, user,
outputs...): marked `launch=True` in programschema's key table, the one list
of program keys. Everything else (startretries, startlimit_burst/_interval,
...) is read by the state machine when it decides, so it applies in place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from taskmasterd.config import LAUNCH_KEYS as LAUNCH_KEYS
from taskmasterd.config import PROGRAM_KEYS, Config, OutputKind, ProgramConfig
from taskmasterd.programschema import PROGRAM_TABLE


@dataclass(frozen=True)
class Resize:
    program: ProgramConfig  # the new config
    old_numprocs: int


@dataclass(frozen=True)
class ReloadPlan:
    added: tuple[ProgramConfig, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[ProgramConfig, ...] = ()  # launch keys changed
    resized: tuple[Resize, ...] = ()  # numprocs changed (launch keys not)
    updated: tuple[ProgramConfig, ...] = ()  # only keys applied in place

    @property
    def changed(self) -> list[str]:
        """Every program present before and after whose config changed."""
        names = [p.name for p in self.restarted] + [r.program.name for r in self.resized]
        return names + [p.name for p in self.updated]

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    @property
    def in_place(self) -> list[str]:
        """Programs whose processes are kept (PlanReload's `changed`): the
        in-place updates, and the resized programs (their surviving
        processes keep their PIDs; the extra ones start or stop)."""
        return [r.program.name for r in self.resized] + [p.name for p in self.updated]


# Launch keys added after launch fingerprints were first stored (the state
# store, statestore/records.py): an upgrade re-adopts the running programs
# when their fingerprint is unchanged, so a new key must not change the
# fingerprint of a program that does not use it.
LATER_LAUNCH_KEYS = frozenset({"redirect_stderr", "console", "console_scrollback"})
_DEFAULTS = {k.name: k.default for k in PROGRAM_TABLE}


def launch_view(p: ProgramConfig, logdir: str | None) -> tuple[object, ...]:
    """What a reload compares to decide a restart (the state store's launch
    fingerprint hashes the same view: the two cannot disagree)."""
    values: list[object] = [getattr(p, k) for k in LAUNCH_KEYS if k not in LATER_LAUNCH_KEYS]
    # A later key counts only once it is set, and by name: a program that
    # uses none keeps the view (and the fingerprint) an older daemon had.
    values += [(k, getattr(p, k)) for k in sorted(LATER_LAUNCH_KEYS)
               if getattr(p, k) != _DEFAULTS[k]]
    values.append(_auto_dir(p, logdir))
    return tuple(values)


def _auto_dir(p: ProgramConfig, logdir: str | None) -> str | None:
    """Auto output lives under logdir: moving logdir moves those files."""
    return logdir if OutputKind.AUTO in (p.stdout.kind, p.stderr.kind) else None


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    old_by_name = {p.name: p for p in old.programs}
    new_names = {p.name for p in new.programs}
    added: list[ProgramConfig] = []
    restarted: list[ProgramConfig] = []
    resized: list[Resize] = []
    updated: list[ProgramConfig] = []
    for p in new.programs:
        before = old_by_name.get(p.name)
        if before is None:
            added.append(p)
        elif before == p and old.daemon.logdir == new.daemon.logdir:
            continue
        elif launch_view(before, old.daemon.logdir) != launch_view(p, new.daemon.logdir):
            restarted.append(p)
        elif before.numprocs != p.numprocs:
            resized.append(Resize(p, before.numprocs))
        elif before != p:
            updated.append(p)
    removed = tuple(p.name for p in old.programs if p.name not in new_names)
    return ReloadPlan(tuple(added), removed, tuple(restarted), tuple(resized), tuple(updated))


def in_place_fields(old: ProgramConfig, new: ProgramConfig) -> list[str]:
    """Names of the keys that differ, for the reload log line."""
    return [f.name for f in dataclasses.fields(ProgramConfig)
            if getattr(old, f.name) != getattr(new, f.name)]


def changed_keys(old: ProgramConfig, new: ProgramConfig) -> list[str]:
    """The program keys (as written in the file) whose values differ, in
    the key table's order (argv, derived from cmd, is not one)."""
    keys = [k for k in PROGRAM_KEYS if getattr(old, k) != getattr(new, k)]
    return keys or in_place_fields(old, new)  # a derived field alone: name it


def _key_text(key: str, old: ProgramConfig, new: ProgramConfig) -> str:
    return f"numprocs {old.numprocs} -> {new.numprocs}" if key == "numprocs" else key


def plan_reasons(plan: ReloadPlan, old: Config, new: Config) -> dict[str, str]:
    """Why each program of `plan` is in it (PlanReloadReasons): "added",
    "removed", "restarted: cmd, env changed[; also stoptime]", "changed in
    place: stoptime" or "changed in place: numprocs 2 -> 4". The word before
    the colon names the list; the rest is for people."""
    before = {p.name: p for p in old.programs}
    reasons = {p.name: "added" for p in plan.added}
    for p in plan.restarted:
        keys = changed_keys(before[p.name], p)
        launch = [k for k in keys if k in LAUNCH_KEYS]
        if _auto_dir(before[p.name], old.daemon.logdir) != _auto_dir(p, new.daemon.logdir):
            launch.append("logdir")  # its automatic output files move with it
        others = [_key_text(k, before[p.name], p) for k in keys if k not in LAUNCH_KEYS]
        reasons[p.name] = f"restarted: {', '.join(launch)} changed" + \
            (f"; also {', '.join(others)}" if others else "")
    for q in [*(r.program for r in plan.resized), *plan.updated]:
        keys = [_key_text(k, before[q.name], q) for k in changed_keys(before[q.name], q)]
        reasons[q.name] = f"changed in place: {', '.join(keys)}"
    reasons.update((name, "removed") for name in plan.removed)
    return reasons
