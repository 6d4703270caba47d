"""supervisord's `priority` -> Taskmaster's `after:`.

supervisord starts its groups in increasing priority (default 999) and
stops them in the reverse order, without waiting for one to be RUNNING
before the next. `after:` is the nearest we have, and stronger: it waits.
Our rule: the programs are sorted into levels by priority (a program of a
[group:x] takes the group's priority, as supervisord orders groups); each
program of a level gets `after:` the programs of the nearest lower level
that start by themselves (autostart): waiting on a program nobody starts
would hold the start for ever. One level (every program at 999, the usual
case): no `after:` at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from taskmasterd.importer.programs import Program


def derive_after(programs: Sequence[Program], level_of: dict[str, int]) -> dict[str, list[str]]:
    """program name -> the names it starts after (only the programs that get any)."""
    levels = sorted({level_of[p.name] for p in programs})
    if len(levels) < 2:
        return {}
    starters: dict[int, list[str]] = {lv: [] for lv in levels}
    for p in programs:
        if p.autostart:
            starters[level_of[p.name]].append(p.name)
    out: dict[str, list[str]] = {}
    for p in programs:
        lower = [lv for lv in levels if lv < level_of[p.name] and starters[lv]]
        if lower:
            out[p.name] = sorted(starters[lower[-1]])
    return out
