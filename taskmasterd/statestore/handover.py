"""What a re-executing daemon hands to itself (pure: no I/O but the fd read).

`taskctl daemon-reexec` replaces the daemon's program in the same process:
its children stay its children. The old image writes a `Handover` into a
memfd whose number the new image finds in TASKMASTERD_HANDOVER: the state
store's records of the live processes (records.py's format) plus the number
of each one's pidfd, kept open across the exec; the state of the processes
without a child (stopped, exited, fatal: not started again); and the
version that wrote it. `decode` refuses anything else with a reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from taskmasterd.states import State
from taskmasterd.statestore import records
from taskmasterd.statestore.records import Refused, Snapshot

FORMAT = "taskmaster-handover"
VERSION = 1
ENV = "TASKMASTERD_HANDOVER"


@dataclass(frozen=True)
class Down:
    """A process without a child, as it was."""

    process: str
    state: State
    exit_status: int | None
    exit_unknown: bool
    restarts: int
    restart_pending: bool  # a retry or an autorestart was due: start it
    retries: int = 0  # failed starts in a row (BACKOFF): startretries goes on counting


@dataclass(frozen=True)
class Handover:
    snapshot: Snapshot
    pidfds: dict[str, int]  # process name -> pidfd number (open across the exec)
    down: tuple[Down, ...]
    from_version: str
    embedded_bus: dict[str, object] | None = None  # the private bus kept alive, if any
    reap: tuple[int, ...] = ()  # other children of ours to collect when they exit (log writer)


def encode(h: Handover) -> bytes:
    doc = {
        "format": FORMAT, "version": VERSION, "from_version": h.from_version,
        "state": json.loads(records.encode(h.snapshot)),
        "pidfds": h.pidfds,
        "down": [{"process": d.process, "state": d.state.value, "exit_status": d.exit_status,
                  "exit_unknown": d.exit_unknown, "restarts": d.restarts,
                  "restart_pending": d.restart_pending, "retries": d.retries} for d in h.down],
        "embedded_bus": h.embedded_bus,
        "reap": list(h.reap),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> Handover | Refused:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return Refused("not valid JSON")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        return Refused("not a taskmasterd handover of this version")
    snapshot = records.decode(json.dumps(doc.get("state")).encode())
    if isinstance(snapshot, Refused):
        return snapshot
    pidfds, down, version = doc.get("pidfds"), doc.get("down"), doc.get("from_version")
    embedded, reap = doc.get("embedded_bus"), doc.get("reap")
    if not isinstance(pidfds, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in pidfds.items()):
        return Refused("pidfds: not a map of process names to fd numbers")
    if not isinstance(down, list) or not isinstance(version, str) or not (
            embedded is None or isinstance(embedded, dict)) or not isinstance(reap, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and p > 1 for p in reap):
        return Refused("down, from_version, embedded_bus or reap malformed")
    try:
        downs = tuple(Down(process=str(d["process"]), state=State(d["state"]),
                           exit_status=d["exit_status"] if isinstance(d["exit_status"], int) else None,
                           exit_unknown=bool(d["exit_unknown"]), restarts=int(d["restarts"]),
                           restart_pending=bool(d["restart_pending"]),
                           retries=int(d.get("retries", 0))) for d in down)
    except (KeyError, TypeError, ValueError):
        return Refused("down: malformed entry")
    return Handover(snapshot, dict(pidfds), downs, version, embedded, tuple(reap))


def write_memfd(h: Handover) -> int:
    """A memfd holding `h`, inheritable (it must survive the exec)."""
    fd = os.memfd_create("taskmasterd-handover", 0)  # no MFD_CLOEXEC
    data = encode(h)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd


def take(environ: dict[str, str] | None = None) -> Handover | Refused | None:
    """The handover this process was started with (None: a normal start).
    The variable is removed (no child inherits it) and the memfd closed."""
    env = os.environ if environ is None else environ
    value = env.pop(ENV, None)
    if value is None:
        return None
    try:
        fd = int(value)
        with os.fdopen(fd, "rb") as f:
            data = f.read(64 * 1024 * 1024)
    except (ValueError, OSError) as exc:
        return Refused(f"cannot read the handover ({value}): {exc}")
    return decode(data)
