"""supervisord's `%(name)s` expansions -> Taskmaster's `%{name}` (issue 19).

supervisord expands a value with Python's `value % names`: `%%` is a
literal `%`, `%(name)FMT` a name formatted by FMT. Values that are the same
for every process of a program (program_name, group_name, numprocs, here,
and process_num when there is one process) are written out as supervisord
would expand them: the output reads as what runs, and stays right wherever
the YAML file is put (`%(here)s` is the directory of the *supervisord*
file, not of the YAML file). What varies per process or per host becomes a
variable: `%{process_num}`, `%{host}`, `%{env.NAME}`.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field

_TOKEN_RE = re.compile(r"%%|%\((?P<name>[^)]*)\)(?P<fmt>[#0\- +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa])|%")


@dataclass
class Names:
    """What supervisord would expand in one program's values."""

    program: str
    group: str
    numprocs: int = 1
    numprocs_start: int = 0
    env: dict[str, str] = field(default_factory=dict)  # the program's own environment= (translated)


@dataclass
class Expanded:
    text: str
    problems: list[str]  # what could not be carried over exactly
    variables: bool  # uses %{...}


def _literal(text: str) -> str:
    return text.replace("%{", "%%{")


def translate(value: str, names: Names, allow_vars: bool = True) -> Expanded:
    """`value` as supervisord writes it -> our text. `allow_vars`: the key
    takes %{...} (cmd, env values, workingdir, stdout, stderr)."""
    out: list[str] = []  # our text, escaped
    lit: list[str] = []  # literal text not yet escaped: `%%` + `{` must escape as one
    problems: list[str] = []
    uses = False
    pos = 0

    def flush() -> None:
        out.append(_literal("".join(lit)))
        lit.clear()

    for m in _TOKEN_RE.finditer(value):
        lit.append(value[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok == "%%":
            lit.append("%")
            continue
        if tok == "%":
            problems.append("a lone '%' (supervisord refuses the value: write %%); kept as is")
            lit.append("%")
            continue
        name, fmt = m.group("name"), m.group("fmt")
        fixed = _fixed(name, names)
        if fixed is not None:
            try:
                lit.append(("%" + fmt) % fixed)
            except (TypeError, ValueError):
                lit.append(str(fixed))
            continue
        var, problem = _variable(name, fmt, names)
        if problem:
            problems.append(problem)
        if var is None or not allow_vars:
            if var is not None:
                problems.append(f"{tok} varies per process or host, which this key cannot; kept as is")
            flush()
            out.append(tok)
            continue
        flush()
        if out[-1].endswith("%"):
            problems.append(f"a '%' right before {tok} would read as an escape; check the value")
        out.append(var)
        uses = True
    lit.append(value[pos:])
    flush()
    return Expanded("".join(out), problems, uses)


# %(process_num)02d and the like: zero-padded to 1..9 digits (%{process_num:0N}).
_ZERO_PADDED = re.compile(r"0([1-9])[di]")


def _fixed(name: str, names: Names) -> str | int | None:
    if name == "program_name":
        return names.program
    if name == "group_name":
        return names.group
    if name == "numprocs":
        return names.numprocs
    if name == "process_num" and names.numprocs == 1:
        return names.numprocs_start
    if name.startswith("ENV_") and name[4:] in names.env:
        # supervisord adds the program's own environment= to the names
        return names.env[name[4:]]
    return None


def _variable(name: str, fmt: str, names: Names) -> tuple[str | None, str | None]:
    if name == "process_num":
        problem = None
        var = "%{process_num}"
        padded = _ZERO_PADDED.fullmatch(fmt)
        if padded:  # %(process_num)02d: the same file names, 00, 01 ...
            var = f"%{{process_num:0{padded.group(1)}}}"
        elif fmt[-1] not in "dis" or fmt[:-1]:
            problem = (f"%(process_num){fmt}: the format is not carried over: "
                       f"%{{process_num}} gives 0, 1, ... (only a zero padding is, "
                       "as %{process_num:02})")
        if names.numprocs_start:
            problem = (f"numprocs_start={names.numprocs_start}: %{{process_num}} counts from 0, "
                       f"not {names.numprocs_start}")
        return var, problem
    if name == "host_node_name":
        return "%{host}", None
    if name.startswith("ENV_") and name[4:]:
        return "%{env." + name[4:] + "}", None
    return None, f"%({name}){fmt}: supervisord has no such name here; kept as is"


class _Lookup(dict[str, object]):
    """supervisord's names, with ENV_X looked up in this process's environment."""

    def __init__(self, table: dict[str, object]) -> None:
        super().__init__(table)
        self.used: list[str] = []

    def __missing__(self, key: str) -> object:
        if key.startswith("ENV_") and key[4:] in os.environ:
            self.used.append(key[4:])
            return os.environ[key[4:]]
        raise KeyError(key)


def expand_now(value: str, names: Names) -> tuple[str, list[str]]:
    """A value of a key that takes no %{...} (numprocs, startsecs, user...),
    expanded now as supervisord would at its start: `%(ENV_X)s` from the
    environment the importer runs in (said in the report)."""
    if "%" not in value:
        return value, []
    table: dict[str, object] = {"program_name": names.program, "group_name": names.group,
                                "host_node_name": platform.node(), "numprocs": names.numprocs,
                                "process_num": names.numprocs_start,
                                **{f"ENV_{k}": v for k, v in names.env.items()}}
    lookup = _Lookup(table)
    try:
        out = value % lookup
    except KeyError as exc:
        return value, [f"cannot expand {value!r}: {exc} is not set here; left out"]
    except (ValueError, TypeError) as exc:
        return value, [f"cannot expand {value!r}: {exc}; left out"]
    if not lookup.used:
        return out, []
    used = ", ".join(f"{k}={os.environ[k]}" for k in lookup.used)
    return out, [f"{value!r} is expanded now, with this environment ({used}): "
                 f"written as {out!r}"]
