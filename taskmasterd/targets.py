"""Resolve a request target (`prog`, `prog:N`, a glob, `all`) to process
names (pure). Errors carry the codes the D-Bus layer turns into error names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from taskmasterd.config import ProgramConfig
from taskmasterd.errors import BadName, NoSuchProgram

MAX_TARGET = 256
_GLOB_CHARS = frozenset("*?[")


def resolve(target: str, programs: Sequence[ProgramConfig]) -> list[str]:
    if not target or len(target) > MAX_TARGET:
        raise BadName(f"target must be 1 to {MAX_TARGET} characters, got {len(target)}")
    if not target.isprintable() or any(c.isspace() for c in target):
        raise BadName(f"target {target!r} contains spaces or control characters")
    if target == "all":
        return [n for p in programs for n in p.process_names()]
    by_name = {p.name: p for p in programs}
    if _GLOB_CHARS & set(target):
        hits = [n for p in programs for n in p.process_names()
                if fnmatch.fnmatchcase(p.name, target) or fnmatch.fnmatchcase(n, target)]
        if not hits:
            raise NoSuchProgram(f"no program matches {target!r}")
        return hits
    name, sep, num = target.partition(":")
    program = by_name.get(name)
    if program is None:
        raise NoSuchProgram(f"no such program: {name!r}")
    if not sep:
        return program.process_names()
    if not num.isdecimal() or not num.isascii():
        raise BadName(f"{target!r}: expected {name}:N with N a process number")
    index = int(num)
    if index >= program.numprocs:
        raise NoSuchProgram(
            f"{target!r}: {name} has {program.numprocs} process(es), numbered 0 to {program.numprocs - 1}")
    return [program.process_names()[index]]
