"""Variables `%{name}` in a program's cmd, env values, workingdir, stdout
and stderr (issue 19; docs/config.md, *Variables*). Pure: no I/O.

    %{env.NAME}    the daemon's environment variable NAME (read at load)
    %{program}     the program's name
    %{process}     the process's name: web, or web:2 when numprocs > 1
    %{process_num} the process's number, 0 .. numprocs-1
    %{process_num:0N} the same, zero-padded to N digits (N 1..9): 00, 01 ...
    %{numprocs}    numprocs
    %{here}        the directory of the config file that defines the program
    %{host}        the host name

`%%{` is a literal `%{`; any other `%` is literal (`date +%Y` is untouched).

Two steps. At load, `expand` replaces the names that are the same for every
process of a program and checks every reference: an unknown name or an
unset environment variable is a problem for the reader to locate, never an
empty string at spawn. The per-process names (process_num, and process when
there are several processes) are left in as *markers*; at spawn,
`for_process` replaces them for one process.

A marker is NUL, the name, NUL: no value the reader accepts holds a NUL (nor
can an environment variable, a path or a host name), so a marker is never
confused with text and a marked value stays one plain string — compared
(reload), hashed (the state store's launch fingerprint) and split into words
(shlex) like any other, and the same for every process of the program.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

MARK = "\0"
LOAD_NAMES = ("program", "numprocs", "here", "host")  # and env.NAME
PROCESS_NAMES = ("process", "process_num")
NAMES = ("env.NAME", "program", "process", "process_num", "process_num:0N", "numprocs", "here",
         "host")
_ALL = ", ".join(f"%{{{n}}}" for n in NAMES)
_REF = re.compile(r"%%\{|%\{([^}]*)\}|%\{")  # an escape, a reference, an unclosed reference
# supervisord's %(process_num)02d: zero-padded to a width of 1..9 digits.
_WIDTH = r":0([1-9])"
_PADDED = re.compile(f"process_num{_WIDTH}")
_MARKER = re.compile(f"{MARK}([a-z_]+)(?:{_WIDTH})?{MARK}")


@dataclass(frozen=True)
class Facts:
    """What the load-time names stand for, for one program."""

    program: str
    numprocs: int
    here: str
    host: str
    environ: Mapping[str, str]


def expand(text: str, facts: Facts) -> tuple[str, list[str]]:
    """`text` with its load-time names replaced and its per-process names
    marked, and the problems found (one message per bad reference; the
    value is meaningless when there are any)."""
    problems: list[str] = []
    out: list[str] = []
    pos = 0
    for m in _REF.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        ref = m.group(0)
        if ref == "%%{":
            out.append("%{")
        elif ref == "%{":
            problems.append("'%{' is not closed by '}'; write %%{ for a literal %{")
        else:
            value, problem = _value(m.group(1), facts)
            if problem is not None:
                problems.append(problem)
            out.append(value)
    out.append(text[pos:])
    return "".join(out), problems


def _value(name: str, facts: Facts) -> tuple[str, str | None]:
    if ":" in name and len(name) <= 100:
        if _PADDED.fullmatch(name):
            return f"{MARK}{name}{MARK}", None
        base = name.partition(":")[0]
        if base == "process_num":
            return "", (f"%{{{name}}}: the width is written :0N, N from 1 to 9 "
                        "(%{process_num:02} gives 00, 01 ...)")
        if base in NAMES or base.startswith("env."):
            return "", f"%{{{name}}}: only %{{process_num}} takes a width (%{{process_num:02}})"
    if name.startswith("env."):
        var = name[4:]
        if not var:
            return "", "%{env.} names no variable; write %{env.NAME}, e.g. %{env.HOME}"
        if var in facts.environ:
            value = facts.environ[var]
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # os.environ keeps undecodable bytes as surrogates
                return "", (f"%{{{name}}}: the value of {var} in taskmasterd's environment is not "
                            "UTF-8 text; write the value itself")
            return value, None
        close = difflib.get_close_matches(var, list(facts.environ), n=1, cutoff=0.7) \
            if len(var) <= 100 else []
        hint = f" (did you mean %{{env.{close[0]}}}?)" if close else ""
        return "", (f"%{{{name}}}: {var} is not set in taskmasterd's environment{hint}; set it "
                    "where the daemon starts (its systemd unit's Environment=, the shell) or "
                    "write the value itself")
    if name == "program":
        return facts.program, None
    if name == "numprocs":
        return str(facts.numprocs), None
    if name == "here":
        return facts.here, None
    if name == "host":
        return facts.host, None
    if name == "process" and facts.numprocs == 1:
        # Its one process is named like the program. Written out, not marked:
        # a resize past 1 renames it (web -> web:0), and the value changes with it.
        return facts.program, None
    if name in PROCESS_NAMES:
        return f"{MARK}{name}{MARK}", None
    close = difflib.get_close_matches(name, NAMES, n=1, cutoff=0.6) if len(name) <= 100 else []
    if not close and name.upper() == name and name:
        close = [f"env.{name}"]  # %{HOME}: an environment variable, most likely
    hint = f" (did you mean %{{{close[0]}}}?)" if close else ""
    shown = name if len(name) <= 40 else name[:37] + "..."
    return "", f"unknown variable %{{{shown}}}{hint}; the variables are {_ALL}"


def has_markers(value: str) -> bool:
    """Whether a loaded value differs between the processes of its program."""
    return MARK in value


def for_process(value: str, process: str, process_num: int) -> str:
    """A loaded value for one process: its markers replaced."""
    if MARK not in value:
        return value
    def fill(m: re.Match[str]) -> str:
        if m.group(1) == "process":
            return process
        return str(process_num).zfill(int(m.group(2) or 0))
    return _MARKER.sub(fill, value)


def display(value: str) -> str:
    """A loaded value as the file would write it (for people: the command
    shown on D-Bus): markers as %{name}, a literal %{ as %%{ where the value
    has markers (elsewhere it is shown as it runs)."""
    if MARK not in value:
        return value
    parts = value.split(MARK)
    # parts alternate: text, marker name, text, ...
    return "".join(p.replace("%{", "%%{") if i % 2 == 0 else f"%{{{p}}}"
                   for i, p in enumerate(parts))
