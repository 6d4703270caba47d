"""The `programs:` model: ProgramConfig, its key table and the values it
holds (taskmasterd.programschema reads the file into it).

A program key is one field of ProgramConfig, declared with `key(default,
read, launch=...)`: its name, its reader (a method of
programschema.ProgramReader, called through a lambda), its default and
whether it is a launch setting (a change restarts the processes at a
reload: it shapes the exec'd process). PROGRAM_TABLE is read off those
fields; the key list the validator accepts (PROGRAM_KEYS) and the one
reload.py restarts on (LAUNCH_KEYS) come from it. A new key is one field
plus its consumer. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yaml.nodes import Node

from taskmasterd.consoleschema import DEFAULT_SCROLLBACK
from taskmasterd.probeschema import (
    DEFAULT_READYTIMEOUT,
    Check,
    HealthCheck,
    read_health,
    read_positive_seconds,
    read_ready,
)

if TYPE_CHECKING:
    from taskmasterd.programschema import ProgramReader


class AutoRestart(enum.Enum):
    ALWAYS = "always"
    NEVER = "never"
    UNEXPECTED = "unexpected"


class RestartMode(enum.Enum):
    """How an administrative restart of a RUNNING process goes (docs/readiness.md)."""

    STOP_START = "stop-start"  # stop it, then start it again (supervisord's)
    OVERLAP = "overlap"  # start the successor, wait until it is ready, then stop the old one


class OutputKind(enum.Enum):
    AUTO = "auto"  # key absent: the journal under journald, else a file in logdir
    NULL = "null"  # explicitly discarded (null, ~, /dev/null)
    FILE = "file"  # an explicit path
    JOURNAL = "journal"  # a journal stream, identifier = program name


@dataclass(frozen=True)
class Output:
    kind: OutputKind = OutputKind.AUTO
    path: str | None = None  # absolute; set only for FILE
    # Where the value is in the file (1-based; 0 when absent or not from a
    # file), for errors found once the file is loaded ("no journal on this
    # host"). Not part of the value, as for AlertConfig.
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


DEFAULT_MAXBYTES = 50 * 1024 * 1024  # supervisord's stdout_logfile_maxbytes
DEFAULT_BACKUPS = 10  # supervisord's stdout_logfile_backups
MAX_MAXBYTES = 1024 ** 4  # 1 TB: anything larger is a typo, not a bound
MAX_BACKUPS = 1000


Read = Callable[["ProgramReader", str, Node], Any]
"""A key's reader: (the reader, the key path, the value node) -> the value;
raises Reject (or Reported, the issues recorded)."""


def _meta(read: Read, launch: bool) -> dict[str, Any]:
    return {"read": read, "launch": launch}


def key(default: Any, *, read: Read, launch: bool = False) -> Any:
    """A ProgramConfig field that is a program key (see the module docstring)."""
    return field(default=default, metadata=_meta(read, launch))


@dataclass(frozen=True)
class ProgramConfig:
    """One program of the file. Each field but name and argv is a key of its
    mapping, declared with its default, its reader and whether it is a
    launch setting: the table of program keys (PROGRAM_TABLE)."""

    name: str
    # A key without a default (required): as written.
    # Variables (taskmasterd.variables) are expanded in cmd, env values,
    # workingdir, stdout and stderr; per-process ones are markers in the
    # values, replaced by spawn.launch_spec. cmd is the command as shown
    # (markers written %{name}); argv the words run.
    cmd: str = field(metadata=_meta(lambda r, kp, n: r._cmd(n, kp), launch=True))
    argv: tuple[str, ...]  # shlex-split cmd; argv[0] is looked up in PATH
    numprocs: int = key(1, read=lambda r, kp, n: r._int(n, 1, 1000))  # a change resizes
    umask: int | None = key(None, read=lambda r, kp, n: r._umask(n), launch=True)  # None: inherit
    workingdir: str | None = key(None, read=lambda r, kp, n: r._program_path(n, kp),
                                 launch=True)  # None: cwd
    autostart: bool = key(True, read=lambda r, kp, n: r._bool(n))
    autorestart: AutoRestart = key(AutoRestart.UNEXPECTED, read=lambda r, kp, n: r._autorestart(n))
    exitcodes: frozenset[int] = key(frozenset({0}), read=lambda r, kp, n: r._exitcodes(n, kp))
    startretries: int = key(3, read=lambda r, kp, n: r._int(n, 0, 1000))
    starttime: float = key(1.0, read=lambda r, kp, n: r._seconds(n))
    # systemd's StartLimitBurst/StartLimitIntervalSec over automatic restarts
    # (process.StartLimit); 0 in either disables the limit.
    startlimit_burst: int = key(10, read=lambda r, kp, n: r._int(n, 0, 1000))
    startlimit_interval: float = key(10.0, read=lambda r, kp, n: r._seconds(n))
    stopsignal: signal.Signals = key(signal.SIGTERM, read=lambda r, kp, n: r._signal(n))
    stoptime: float = key(10.0, read=lambda r, kp, n: r._seconds(n))
    stdout: Output = key(Output(), read=lambda r, kp, n: r._output(n, kp), launch=True)
    stderr: Output = key(Output(), read=lambda r, kp, n: r._output(n, kp), launch=True)
    # stderr goes where stdout goes: the same file (one pipe when bounded),
    # journal stream or nothing (supervisord's). `stderr:` must be left out.
    redirect_stderr: bool = key(False, read=lambda r, kp, n: r._bool(n), launch=True)
    # sorted (key, value) pairs
    env: tuple[tuple[str, str], ...] = key((), read=lambda r, kp, n: r._env(n, kp), launch=True)
    user: str | None = key(None, read=lambda r, kp, n: r._text(n, "a user name or numeric uid"),
                           launch=True)
    restartdelay: float = key(0.0, read=lambda r, kp, n: r._seconds(n))
    # Start ordering (taskmasterd.deps): started only once these programs
    # are RUNNING; stopped before them. Not a launch setting: in place.
    after: tuple[str, ...] = key((), read=lambda r, kp, n: r._after(n, kp))
    # How `taskctl restart` restarts a RUNNING process (taskmasterd.overlap):
    # applies in place, the next restart follows it.
    restart: RestartMode = key(RestartMode.STOP_START, read=lambda r, kp, n: r._restart_mode(n))
    # Readiness and health (issue 15; taskmasterd.probeschema). `ready` and
    # `watchdog` shape the exec'd process (NOTIFY_SOCKET, WATCHDOG_USEC):
    # launch settings. `readytimeout` and `health` apply in place.
    ready: Check | None = key(None, read=lambda r, kp, n: read_ready(r, kp, n, r._resolve),
                              launch=True)
    readytimeout: float = key(DEFAULT_READYTIMEOUT, read=lambda r, kp, n: read_positive_seconds(r, n))
    watchdog: float = key(0.0, read=lambda r, kp, n: r._seconds(n), launch=True)
    health: HealthCheck | None = key(None, read=lambda r, kp, n: read_health(r, kp, n, r._resolve))
    # Rotation of FILE/AUTO-file outputs (supervisord's stdout_logfile_maxbytes
    # and _backups): at most maxbytes per file, FILE.1 ... FILE.<backups>;
    # maxbytes 0 = unbounded, the child writes its file itself. Launch
    # settings: how output is carried (a file the child holds, or a pipe to
    # the log writer) is decided at spawn.
    stdout_maxbytes: int = key(DEFAULT_MAXBYTES, read=lambda r, kp, n: r._size(n), launch=True)
    stdout_backups: int = key(DEFAULT_BACKUPS, read=lambda r, kp, n: r._int(n, 0, MAX_BACKUPS),
                              launch=True)
    stderr_maxbytes: int = key(DEFAULT_MAXBYTES, read=lambda r, kp, n: r._size(n), launch=True)
    stderr_backups: int = key(DEFAULT_BACKUPS, read=lambda r, kp, n: r._int(n, 0, MAX_BACKUPS),
                              launch=True)
    # A pseudo-terminal for stdin/stdout/stderr, `taskctl attach` (issue 18,
    # taskmasterd.consoleschema, docs/console.md). Launch settings: a
    # process gets its terminal (and its ring's size) when it starts.
    console: bool = key(False, read=lambda r, kp, n: r._bool(n), launch=True)
    console_scrollback: int = key(DEFAULT_SCROLLBACK, read=lambda r, kp, n: r._size(n), launch=True)

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def process_names(self) -> list[str]:
        """`prog` when numprocs is 1, else `prog:0` ... `prog:N-1`."""
        if self.numprocs == 1:
            return [self.name]
        return [f"{self.name}:{i}" for i in range(self.numprocs)]


@dataclass(frozen=True)
class ProgramKey:
    """One entry of the program key table (read off a ProgramConfig field)."""

    name: str
    read: Read
    default: Any  # dataclasses.MISSING: required (cmd)
    launch: bool  # a change restarts the processes at a reload


PROGRAM_TABLE: tuple[ProgramKey, ...] = tuple(
    ProgramKey(f.name, f.metadata["read"], f.default, f.metadata["launch"])
    for f in dataclasses.fields(ProgramConfig) if "read" in f.metadata)
PROGRAM_KEYS: tuple[str, ...] = tuple(k.name for k in PROGRAM_TABLE)
LAUNCH_KEYS: tuple[str, ...] = tuple(k.name for k in PROGRAM_TABLE if k.launch)
_BY_NAME = {k.name: k for k in PROGRAM_TABLE}
