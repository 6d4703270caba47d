"""The state store's records and their file format (pure: no asyncio, no I/O).

One `ProcessRecord` per supervised process that has a pid: enough for the
next daemon to know the process again (pid + its kernel start time, so a
reused pid is never mistaken for it), to tell whether it still runs what the
configuration says (the launch fingerprint), and to take it back in the
state it had. A `Snapshot` is all of them; `encode` writes it as small JSON
with a format name and a version, `decode` reads it back or refuses it with
a reason (`Refused`), never with an exception.

`/proc/PID/stat` is parsed here too, from its text: the kernel's start time
(field 22, clock ticks since boot) is the process's identity over time.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from taskmasterd.config import OutputKind, ProgramConfig
from taskmasterd.reload import launch_view
from taskmasterd.states import State

FORMAT = "taskmaster-state"
VERSION = 1
# States a recorded process can be in: those with a pid.
LIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.STOPPING})
_RECORD_KEYS = frozenset({"program", "process", "index", "pid", "start_ticks", "fingerprint",
                          "state", "started_at", "restarts", "stopsignal", "stoptime"})
_TOP_KEYS = frozenset({"format", "version", "daemon_pid", "processes"})


@dataclass(frozen=True)
class ProcessRecord:
    program: str
    process: str  # "prog" or "prog:N"
    index: int
    pid: int
    start_ticks: int  # /proc/PID/stat field 22: clock ticks after boot
    fingerprint: str  # launch_fingerprint() of the config it was started with
    state: State  # STARTING, RUNNING or STOPPING
    started_at: float  # wall clock (time.time()) of the spawn
    restarts: int  # automatic restarts since the last administrative start
    # How to stop it if its program left the configuration meanwhile.
    stopsignal: int
    stoptime: float


@dataclass(frozen=True)
class Snapshot:
    processes: tuple[ProcessRecord, ...] = ()
    daemon_pid: int = 0  # the daemon that wrote it (for the curious reader)


@dataclass(frozen=True)
class Refused:
    """A file that is not a state we can trust; `reason` says why."""

    reason: str


# ---- the launch fingerprint --------------------------------------------------


def _canonical(value: object) -> object:
    """A JSON-able form of a launch value that only its meaning shapes (an
    Output's line/column are not part of its value: compare=False)."""
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [_canonical(getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare]
    if isinstance(value, frozenset | set):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    return value


def launch_fingerprint(program: ProgramConfig, logdir: str | None, journal: bool) -> str:
    """A short hash of what shapes the exec'd process: reload's launch view
    (so that a reload and the store agree on what a launch change is), plus
    where AUTO output goes (journald or a file), which a reload never sees
    change but a daemon started differently may."""
    auto = OutputKind.AUTO in (program.stdout.kind, program.stderr.kind)
    view = [_canonical(launch_view(program, logdir)), journal if auto else None]
    text = json.dumps(view, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ---- /proc/PID/stat ----------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str  # R, S, D, Z, T, ...
    ppid: int
    pgrp: int
    start_ticks: int


def parse_proc_stat(text: str) -> ProcStat | None:
    """The fields we need from /proc/PID/stat, or None if the text is not one.

    comm (field 2) is in parentheses and may itself contain spaces and ')'
    (a program can name itself anything): it ends at the *last* ')'."""
    head, sep, tail = text.rpartition(")")
    pid_text, paren, comm = head.partition(" (")
    if not sep or not paren:
        return None
    fields = tail.split()
    # tail starts at field 3 (state): field 22 is fields[19]
    if len(fields) < 20 or not pid_text.isdigit() or len(fields[0]) != 1:
        return None
    try:
        ppid, pgrp, start = int(fields[1]), int(fields[2]), int(fields[19])
    except ValueError:
        return None
    return ProcStat(int(pid_text), comm, fields[0], ppid, pgrp, start)


# ---- encoding ----------------------------------------------------------------


def encode(snapshot: Snapshot) -> bytes:
    return assemble(snapshot.daemon_pid, [encode_record(r) for r in snapshot.processes])


def encode_record(r: ProcessRecord) -> str:
    """One record's JSON text (the writer caches it: most records do not
    change between two writes)."""
    return json.dumps({
        "program": r.program, "process": r.process, "index": r.index, "pid": r.pid,
        "start_ticks": r.start_ticks, "fingerprint": r.fingerprint, "state": r.state.value,
        "started_at": r.started_at, "restarts": r.restarts, "stopsignal": r.stopsignal,
        "stoptime": r.stoptime}, separators=(",", ":"), ensure_ascii=True)


def assemble(daemon_pid: int, records: list[str]) -> bytes:
    """The file's bytes from the records' texts (encode_record)."""
    head = json.dumps({"format": FORMAT, "version": VERSION, "daemon_pid": daemon_pid},
                      separators=(",", ":"))
    return f'{head[:-1]},"processes":[{",".join(records)}]}}\n'.encode()


class _Bad(Exception):
    pass


def _refuse_constant(name: str) -> object:
    raise _Bad(f"{name} is not a number")


def decode(data: bytes) -> Snapshot | Refused:
    """The snapshot in `data`, or why it cannot be trusted."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Refused(f"not UTF-8 text (byte {exc.start})")
    if not text.strip():
        return Refused("empty file")
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except _Bad as exc:
        return Refused(f"not valid JSON: {exc}")
    except (ValueError, RecursionError) as exc:  # torn, not JSON, absurdly nested
        return Refused(f"not valid JSON ({str(exc).splitlines()[0][:120]}): torn or foreign")
    try:
        return _snapshot(doc)
    except _Bad as exc:
        return Refused(str(exc))


def _snapshot(doc: object) -> Snapshot:
    if not isinstance(doc, dict):
        raise _Bad("not a taskmaster state file (not a JSON object)")
    if doc.get("format") != FORMAT:
        raise _Bad(f"not a taskmaster state file (format {_show(doc.get('format'))}, "
                   f"expected {FORMAT!r})")
    version = doc.get("version")
    if version != VERSION or isinstance(version, bool):
        raise _Bad(f"state file version {_show(version)}: this taskmasterd reads version {VERSION}")
    _keys(doc, _TOP_KEYS, "the file")
    daemon_pid = _int(doc, "daemon_pid", "the file", low=0)
    items = doc["processes"]
    if not isinstance(items, list):
        raise _Bad("processes: not a list")
    records = tuple(_record(item, i) for i, item in enumerate(items))
    for what in ("process", "pid"):
        seen: set[object] = set()
        for r in records:
            value = getattr(r, what)
            if value in seen:
                raise _Bad(f"inconsistent: {what} {value} recorded twice")
            seen.add(value)
    return Snapshot(records, daemon_pid)


def _record(item: object, i: int) -> ProcessRecord:
    where = f"processes[{i}]"
    if not isinstance(item, dict):
        raise _Bad(f"{where}: not an object")
    _keys(item, _RECORD_KEYS, where)
    program = _str(item, "program", where)
    process = _str(item, "process", where)
    index = _int(item, "index", where, low=0)
    if process != program and process != f"{program}:{index}":
        raise _Bad(f"inconsistent: {where}: process {process!r} is not program {program!r} "
                   f"index {index}")
    if process == program and index != 0:
        raise _Bad(f"inconsistent: {where}: process {process!r} with index {index}")
    state = item["state"]
    if not isinstance(state, str) or state not in {s.value for s in LIVE_STATES}:
        raise _Bad(f"{where}: state {_show(state)} is not one of "
                   f"{', '.join(sorted(s.value for s in LIVE_STATES))}")
    fingerprint = _str(item, "fingerprint", where)
    started_at = _float(item, "started_at", where)
    stoptime = _float(item, "stoptime", where)
    return ProcessRecord(
        program=program, process=process, index=index,
        pid=_int(item, "pid", where, low=2, high=2**22), start_ticks=_int(item, "start_ticks", where, low=0),
        fingerprint=fingerprint, state=State(state), started_at=started_at,
        restarts=_int(item, "restarts", where, low=0),
        stopsignal=_int(item, "stopsignal", where, low=1, high=64), stoptime=stoptime)


def _keys(obj: dict[str, Any], wanted: frozenset[str], where: str) -> None:
    missing = sorted(wanted - obj.keys())
    extra = sorted(obj.keys() - wanted)
    if missing:
        raise _Bad(f"{where}: missing {', '.join(missing)} (torn or foreign)")
    if extra:
        raise _Bad(f"{where}: unknown key(s) {', '.join(_show(k) for k in extra[:5])}")


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise _Bad(f"{where}: {key} {_show(value)} is not a non-empty string")
    return value


def _int(obj: dict[str, Any], key: str, where: str, *, low: int, high: int = 2**63) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _Bad(f"{where}: {key} {_show(value)} is not an integer in {low}..{high}")
    return value


def _float(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj[key]
    try:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            else math.nan
    except OverflowError:  # an integer of 400 digits
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise _Bad(f"{where}: {key} {_show(value)} is not a number >= 0")
    return number


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
