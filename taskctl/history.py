"""`taskctl history TARGET`: the state timeline of programs, read back from
what taskmasterd already wrote — the journal (its entries carry
`TASKMASTER_*` fields and a MESSAGE_ID per kind: taskmasterd/journal.py) or,
without journald, the lifecycle log file (taskmasterd/logsink.py's lines).

The daemon is not needed: a history is most wanted after it died. It is only
asked (ConfigFile, its pid) to find its log file; unreachable, taskctl looks
where a daemon of its own uid would write by default.

Parsing (journal fields, log lines, --since) is pure and separate from the
readers. Heavy imports (systemd, the daemon's config reader) happen only
when the command runs: `build_parser` imports this module for every command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import glob
import gzip
import json
import os
import re
import signal
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from taskctl import argtypes
from taskctl.model import CallError, Unreachable
from taskmasterd.states import State

if TYPE_CHECKING:
    from taskctl.context import Context

IDENTIFIER = "taskmasterd"  # SYSLOG_IDENTIFIER of the daemon's journal entries
JOURNAL_SOCKET = "/run/systemd/journal/socket"  # the daemon sends its events there when it exists
JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")
GLOB_CHARS = frozenset("*?[")
_STATE_NAMES = frozenset(s.value for s in State)
DAEMON = "taskmasterd"  # the `process` of daemon-level events (RELOAD, DAEMON_START...)

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class Entry(NamedTuple):
    """One event of the timeline."""

    time: float  # seconds since the epoch
    process: str  # "web", "web:0", or "taskmasterd" for daemon events
    program: str  # "" for daemon events
    kind: str  # a state (STARTING ... UNKNOWN) or SPAWN_ERROR, KILLED, SIGNALLED, RELOAD ...
    old: str  # the state before (state events; "" when unknown or not a transition)
    pid: int  # 0: none
    exit_status: int | None  # < 0: killed by that signal
    expected: bool | None  # EXITED/STOPPED only
    message: str  # the daemon's sentence

    @property
    def is_state(self) -> bool:
        return self.kind in _STATE_NAMES


# ---- parsing: log lines, journal fields ------------------------------------------------

# logsink's line: date time.ms LEVEL process KIND key=value...: sentence
_LINE = re.compile(r"(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(?P<ms>\d{3}) [A-Z]+ "
                   r"(?P<process>\S+) (?P<kind>[A-Z_]+)(?P<fields>(?: [a-z_]+=\S*)*): "
                   r"(?P<message>.*)")


def _kinds() -> frozenset[str]:
    from taskmasterd.journal import KINDS  # the daemon's list: one definition

    return frozenset(KINDS)


def _program_of(process: str) -> str:
    return "" if process == DAEMON else process.rpartition(":")[0] or process


def parse_log_line(line: str) -> Entry | None:
    """An event line of the lifecycle log, or None (another line: a warning,
    a traceback, a line cut by a full disk)."""
    m = _LINE.fullmatch(line.rstrip("\n"))
    if m is None or m["kind"] not in _kinds():
        return None
    stamp = dt.datetime.strptime(m["date"], "%Y-%m-%d %H:%M:%S").timestamp() + int(m["ms"]) / 1000
    fields = dict(f.split("=", 1) for f in m["fields"].split())
    return Entry(
        time=stamp, process=m["process"], program=_program_of(m["process"]), kind=m["kind"],
        old="", pid=_int(fields.get("pid")) or 0, exit_status=_int(fields.get("status")),
        expected={"yes": True, "no": False}.get(fields.get("expected", "")),
        message=m["message"])


def with_old_states(entries: Iterable[Entry]) -> Iterator[Entry]:
    """The log line has no old state: it is the state of the process's
    previous event (unknown for its first one, and after a daemon start)."""
    last: dict[str, str] = {}
    for e in entries:
        if e.kind == "DAEMON_START":
            last.clear()
        if e.is_state:
            if not e.old and e.process in last:
                e = e._replace(old=last[e.process])
            last[e.process] = e.kind
        yield e


def from_journal(fields: Mapping[str, Any]) -> Entry | None:
    """An entry of systemd.journal.Reader (its converted values: datetime,
    str), or None when it is not one of the daemon's events."""
    kind = _text(fields.get("TASKMASTER_EVENT"))
    process = _text(fields.get("TASKMASTER_PROCESS"))
    if not kind or not process:
        return None
    when = fields.get("__REALTIME_TIMESTAMP")
    stamp = when.timestamp() if isinstance(when, dt.datetime) else float(when or 0) / 1e6
    message = _text(fields.get("MESSAGE"))
    # MESSAGE is the log line without date and level: keep the sentence
    parsed = _LINE.fullmatch("0000-01-01 00:00:00.000 X " + message)
    expected = _text(fields.get("TASKMASTER_EXPECTED"))
    return Entry(
        time=stamp, process=process,
        program=_text(fields.get("TASKMASTER_PROGRAM")) or _program_of(process), kind=kind,
        old=_text(fields.get("TASKMASTER_OLD_STATE")),
        pid=_int(fields.get("TASKMASTER_PID")) or 0,
        exit_status=_int(fields.get("TASKMASTER_EXIT_STATUS")),
        expected={"yes": True, "no": False}.get(expected),
        message=parsed["message"] if parsed else message)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(_text(value))
    except ValueError:
        return None


def selects(target: str, entry: Entry) -> bool:
    """`all` (daemon events too), a glob or a name: a program (`web`) or a process (`web:0`)."""
    if target == "all":
        return True
    if GLOB_CHARS & set(target):
        return fnmatch.fnmatchcase(entry.program, target) or fnmatch.fnmatchcase(entry.process,
                                                                                 target)
    return target in (entry.process, entry.program)


# ---- --since / --until ------------------------------------------------------------------------

_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60,
          "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "d": 86400,
          "day": 86400, "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}
_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)")
_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M")


def parse_time(text: str, now: float) -> float:
    """A point in time as journalctl's --since takes it, in local time:
    `now`, `today`, `yesterday`, `2026-12-02`, `2026-12-02 10:00[:00]`,
    `10:00[:00]` (today), `@EPOCH`, or a span before now: `1h`, `-1h`,
    `1h ago`, `2d 3h`, `90min` (s, min, h, d, w and their long names).
    Raises ValueError naming what it takes."""
    t = text.strip().lower()
    today = dt.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if t == "now":
        return now
    if t in ("today", "yesterday", "tomorrow"):
        return (today + dt.timedelta(days={"today": 0, "yesterday": -1, "tomorrow": 1}[t])
                ).timestamp()
    if t.startswith("@"):
        try:
            return float(t[1:])
        except ValueError:
            pass
    for fmt in _FORMATS:
        try:
            return dt.datetime.strptime(t.upper(), fmt).timestamp()
        except ValueError:
            continue
    for fmt in ("%H:%M:%S", "%H:%M"):
        try:
            clock = dt.datetime.strptime(t, fmt)
        except ValueError:
            continue
        return today.replace(hour=clock.hour, minute=clock.minute, second=clock.second).timestamp()
    span = t.removeprefix("-").removesuffix("ago").strip()
    seconds, pos = 0.0, 0
    while span and pos < len(span):
        m = _SPAN.match(span, pos)
        if m is None or m[2] not in _UNITS:
            break
        seconds += float(m[1]) * _UNITS[m[2]]
        pos = m.end()
    else:
        if span:
            return now - seconds
    raise ValueError(f"not a time: {text!r} (examples: 1h, 30min, 2d, today, yesterday, "
                     "10:00, 2026-12-02, '2026-12-02 10:00', @1764669600)")


# ---- rendering -----------------------------------------------------------------------------


def _status(entry: Entry) -> str:
    if entry.exit_status is None:
        return ""
    if entry.exit_status < 0:
        try:
            return signal.Signals(-entry.exit_status).name
        except ValueError:
            return f"signal {-entry.exit_status}"
    return f"exit {entry.exit_status}"


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") + f".{int(t * 1000) % 1000:03d}"


def row(entry: Entry) -> tuple[str, ...]:
    if entry.is_state:
        change = f"{entry.old or '?'} -> {entry.kind}"
    else:
        change = entry.kind
    status = _status(entry)
    if entry.expected is not None and entry.kind in ("EXITED", "STOPPED"):
        status = f"{status} ({'expected' if entry.expected else 'unexpected'})".strip()
    return (_when(entry.time), entry.process, change, str(entry.pid) if entry.pid else "-",
            status or "-", entry.message)


HEADER = ("TIME", "PROCESS", "CHANGE", "PID", "STATUS", "MESSAGE")


def lines(entries: Sequence[Entry]) -> list[str]:
    """The table: columns 2 spaces apart, the message last, unpadded."""
    table = [HEADER, *(row(e) for e in entries)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER) - 1)]
    return ["  ".join([c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]).rstrip()
            for r in table]


def to_json(entry: Entry) -> dict[str, Any]:
    """The keys of `taskctl events --json`'s state changes, plus the event
    kind and the message: one consumer can read both."""
    return {"time": round(entry.time, 6), "process": entry.process,
            "program": entry.program or None, "event": entry.kind,
            "old": (entry.old or None) if entry.is_state else None,
            "new": entry.kind if entry.is_state else None, "pid": entry.pid or None,
            "exit_status": entry.exit_status, "expected": entry.expected,
            "message": entry.message}


# ---- reading -------------------------------------------------------------------------------


class SourceError(Exception):
    """The history cannot be read: one line saying why and what to do."""


def window(entries: Iterable[Entry], target: str, since: float | None, until: float | None,
           last: int | None) -> list[Entry]:
    """The entries of `target` in [since, until], the last `last` of them."""
    keep: deque[Entry] = deque(maxlen=last)
    for e in entries:
        if (since is None or e.time >= since) and (until is None or e.time <= until) \
                and selects(target, e):
            keep.append(e)
    return list(keep)


def log_files(path: str) -> list[str]:
    """The log file and what logrotate left of it (FILE.1, FILE.2.gz ...), oldest first."""
    rotated = []
    for name in glob.glob(glob.escape(path) + ".*"):
        m = re.fullmatch(r"\.(\d+)(\.gz)?", name[len(path):])
        if m:
            rotated.append((int(m[1]), name))
    return [name for _n, name in sorted(rotated, reverse=True)] + [path]


def read_log(path: str) -> Iterator[Entry]:
    """Every event of the log file and its rotated copies, in order, old states filled in."""
    if not os.path.exists(path):
        raise SourceError(f"no log file at {path} (taskmasterd writes its events there; another "
                          "file: --file PATH)")

    def raw() -> Iterator[Entry]:
        for name in log_files(path):
            try:
                opener: Any = gzip.open if name.endswith(".gz") else open
                with opener(name, "rt", encoding="utf-8", errors="replace") as f:
                    for line in f:
                        entry = parse_log_line(line)
                        if entry is not None:
                            yield entry
            except FileNotFoundError:
                continue  # rotated away meanwhile
            except PermissionError:
                raise SourceError(f"cannot read {name}: permission denied (run as root, or "
                                  "as the user taskmasterd runs as)") from None
            except (OSError, EOFError) as exc:
                raise SourceError(f"cannot read {name}: {exc}") from None

    return with_old_states(raw())


def journal_problem(dirs: Sequence[str] = JOURNAL_DIRS, euid: int | None = None) -> str | None:
    """Why the system journal cannot be read by us (None: it can, or there is none).
    As journalctl, a user outside the groups systemd-journal and adm reads
    only their own journal, silently: say it instead of showing nothing."""
    if (os.geteuid() if euid is None else euid) == 0:
        return None
    files = [f for d in dirs for f in glob.glob(os.path.join(glob.escape(d), "*", "system*.journal"))]
    if not files or any(os.access(f, os.R_OK) for f in files):
        return None
    return ("cannot read the system journal, where taskmasterd's events are: run as root, or "
            "join the group systemd-journal (`sudo usermod -aG systemd-journal $USER`, then log "
            "in again); or read the lifecycle log file: --file PATH")


def read_journal(target: str, since: float | None, directory: str | None = None
                 ) -> Iterator[Entry]:
    """The daemon's event entries from the journal (`directory`: journal files
    there only, as journalctl -D), from `since` on, in order."""
    try:
        from systemd import journal
    except ImportError:
        raise SourceError("python3-systemd is missing: cannot read the journal (apt install "
                          "python3-systemd; or read the lifecycle log file: --file PATH)") from None
    if directory is None:
        problem = journal_problem()
        if problem is not None:
            raise SourceError(problem)
    try:
        reader = journal.Reader(path=directory) if directory else journal.Reader()
    except OSError as exc:
        raise SourceError(f"cannot open the journal{f' in {directory}' if directory else ''}: "
                          f"{exc.strerror or exc}") from None
    with reader:
        if target == "all" or GLOB_CHARS & set(target):
            reader.add_match(SYSLOG_IDENTIFIER=IDENTIFIER)
        else:  # sd-journal: fields ANDed within a group, groups ORed
            reader.add_match(SYSLOG_IDENTIFIER=IDENTIFIER, TASKMASTER_PROGRAM=target)
            reader.add_disjunction()
            reader.add_match(SYSLOG_IDENTIFIER=IDENTIFIER, TASKMASTER_PROCESS=target)
        if since is not None:
            reader.seek_realtime(float(since))  # seconds (an int would be read as µs)
        for fields in reader:
            entry = from_journal(fields)
            if entry is not None:
                yield entry


def daemon_log_file(ctx: Context) -> tuple[str, bool]:
    """Where the daemon writes its lifecycle log: its configuration's
    `logfile`, resolved as the daemon does (for the daemon's uid). Without
    a daemon: the default configuration of this user (and False)."""
    from taskmasterd.config import ConfigError, GlobalConfig, load_config
    from taskmasterd.paths import default_config_path, resolve_paths

    uid: int | None = None
    reachable = True
    try:
        config_path = ctx.client.config_file()
        try:
            uid = os.stat(f"/proc/{ctx.client.daemon_pid()}").st_uid
        except OSError:
            pass
    except (Unreachable, CallError):
        config_path, reachable = default_config_path(), False
    try:
        settings = load_config(config_path).daemon
    except (ConfigError, OSError):  # unreadable (0640) or changed since: the defaults
        settings = GlobalConfig()
    return resolve_paths(settings, uid=uid).logfile, reachable


# ---- the command ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET",
                   help="a program (web), a process (web:0), a glob (web-*), or all (with the "
                        "daemon's own events)")
    p.add_argument("--since", metavar="TIME", help="from this time: 1h, 30min, 2d, today, "
                   "yesterday, 10:00, '2026-12-02 10:00', @EPOCH (local time)")
    p.add_argument("--until", metavar="TIME", help="up to this time (same forms)")
    p.add_argument("-n", "--lines", type=argtypes.at_least(1), metavar="N", help="only the last N events")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--file", metavar="PATH",
                        help="read this lifecycle log file (and its rotated copies)")
    source.add_argument("-D", "--directory", metavar="DIR",
                        help="read the journal files in DIR (as journalctl -D)")


def run(ctx: Context, args: argparse.Namespace, now: float | None = None) -> int:
    import time

    now = time.time() if now is None else now
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        ctx.error(f"taskctl history: {exc}")
        return EXIT_USAGE
    try:
        if args.file is None and (args.directory or os.path.exists(JOURNAL_SOCKET)):
            entries = window(read_journal(args.target, since, args.directory), args.target,
                             since, until, args.lines)
        else:
            path, found = (args.file, True) if args.file else daemon_log_file(ctx)
            try:
                entries = window(read_log(path), args.target, since, until, args.lines)
            except SourceError as exc:
                if found:
                    raise
                raise SourceError(f"{exc}; taskmasterd is not reachable to say where its log "
                                  "is, so this is where its default configuration puts it") from None
    except SourceError as exc:
        ctx.error(f"taskctl history: {exc}")
        return EXIT_ERROR
    if ctx.json:
        for e in entries:
            ctx.print(json.dumps(to_json(e)))
    elif entries:
        for line in lines(entries):
            ctx.print(line)
    else:
        ctx.error(f"taskctl history: no events of {args.target}"
                  + (" in that time" if since or until else ""))
    return EXIT_OK
