"""Parse and validate the YAML configuration into frozen dataclasses.

Validation walks PyYAML's *node tree*, not the loaded Python objects, so that
every error carries file:line:column and so that YAML 1.1 resolution cannot
bite: `umask: 022` is read as the digits written, `env: {A: 042}` keeps the
string "042", and `stdout: null` (written) is told apart from an absent key.

No I/O here except reading the one file; no asyncio, no D-Bus. This module
is Taskmaster's schema; composing the file, locating issues, merge keys and
the generic scalar readers are in `taskmasterd.yamlnodes`.

Entry points: `load_config(path)` reads a file, `parse_config(text, path)`
validates text said to come from `path`. Both return a `Config` or raise
`ConfigError` carrying *every* problem found (not just the first), each a
`ConfigIssue` with file, line, column, keypath and a message.

How values are read (the node's source text decides, never YAML 1.1):

* integers (numprocs, startretries, startlimit_burst, exitcodes): unquoted decimal digits,
  optionally with a leading "-" (so that a negative value gets a range
  message). Leading zeros do not make them octal: `exitcodes: 010` is 10.
  A quoted number ("2") is an error.
* seconds (starttime, stoptime, restartdelay, startlimit_interval, alert rate): unquoted decimal numbers
  such as 5, 0.5 or 10.; no exponent, no .inf/.nan; 0 to 86400.
* sizes (stdout_maxbytes, stderr_maxbytes): as supervisord writes them,
  digits with an optional KB, MB or GB suffix (any case, 1024-based, quoted
  or not): 1048576, 1MB and "1 mb" are the same; 0 = unlimited; at most 1024GB.
* umask: the octal digits written, quoted or not, with an optional 0o
  prefix: 022, 22, "022", '0o22', 0o22 and 0022 all mean 0o22. 18 is an
  error (not octal), so is anything above 0777.
* booleans (autostart; autorestart also takes them): exactly true, false,
  yes, no, on, off in any case, quoted or not. Nothing else (not y/n, not
  1/0).
* strings (cmd, user, alert program patterns): any non-null scalar, as
  written, so `cmd: true` runs /bin/true and `user: 1000` is the uid
  "1000". Paths (workingdir, stdout, stderr, logfile, logdir, statedir) and
  alert URLs must be YAML strings: an unquoted number, boolean or date is
  an error (quote it). Relative paths are resolved against the directory
  of the config file (os.path.normpath, no symlink resolution).
* stdout/stderr: absent -> AUTO; `null`, `~`, an empty value or the string
  /dev/null -> NULL; the exact string `journal` -> JOURNAL (write
  ./journal for a file of that name); any other string -> FILE.
* env values: the scalar's source text ("42", "022", "on", "1.50");
  a null value is an error (write '' for an empty value).
* the top-level sections taskmasterd, programs and alerts may be left
  empty (null), which means the same as absent.
* alerts (taskmasterd.alertschema, whose reader the validator inherits):
  URLs are checked by apprise itself (`Apprise().add(url)`), imported only
  when the file has alerts; an URL it cannot use is an error at the url's
  line. Alert title/body templates (any non-null scalar) are str.format
  strings whose fields must be named and among TEMPLATE_FIELDS.

Aliases are fine anywhere, and merge keys (`<<: *defaults`, or a list of
aliases) work in every mapping: keys written in the mapping win over merged
ones, and among merged mappings the first listed wins (as in YAML). A key
written twice in one mapping is an error at the second occurrence.
"""

from __future__ import annotations

import enum
import functools
import os
import re
import shlex
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from taskmasterd import signames

# Re-exported: the alerts' model and the loader's errors are part of this module's API.
from taskmasterd.alertschema import ALERT_EVENTS as ALERT_EVENTS
from taskmasterd.alertschema import DEFAULT_ALERT_RATE as DEFAULT_ALERT_RATE
from taskmasterd.alertschema import TEMPLATE_FIELDS as TEMPLATE_FIELDS
from taskmasterd.alertschema import AlertConfig as AlertConfig
from taskmasterd.alertschema import AlertReader
from taskmasterd.yamlnodes import (
    BOOLEANS,
    NULL,
    Reject,
    Reported,
    is_null,
    kind,
    quoted,
    show,
    suggest,
    surrogate_problem,
    unknown_key,
)
from taskmasterd.yamlnodes import ConfigError as ConfigError
from taskmasterd.yamlnodes import ConfigIssue as ConfigIssue

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


class AutoRestart(enum.Enum):
    ALWAYS = "always"
    NEVER = "never"
    UNEXPECTED = "unexpected"


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
_SIZE_UNITS = {"KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}
_SIZE_RE = re.compile(r"([0-9]+)\s*(KB|MB|GB)?", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """supervisord's byte sizes: digits, optionally followed by KB, MB or GB
    (any case, 1024-based). None when `text` is not one."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None or not text.isascii() or len(m.group(1)) > 18:
        return None
    return int(m.group(1)) * _SIZE_UNITS.get((m.group(2) or "").upper(), 1)


@dataclass(frozen=True)
class ProgramConfig:
    name: str
    cmd: str  # as written
    argv: tuple[str, ...]  # shlex-split cmd; argv[0] is looked up in PATH
    numprocs: int = 1
    umask: int | None = None  # None: inherit the daemon's
    workingdir: str | None = None  # absolute; None: the daemon's cwd
    autostart: bool = True
    autorestart: AutoRestart = AutoRestart.UNEXPECTED
    exitcodes: frozenset[int] = frozenset({0})
    startretries: int = 3
    starttime: float = 1.0
    # systemd's StartLimitBurst/StartLimitIntervalSec over automatic restarts
    # (process.StartLimit); 0 in either disables the limit.
    startlimit_burst: int = 10
    startlimit_interval: float = 10.0
    stopsignal: signal.Signals = signal.SIGTERM
    stoptime: float = 10.0
    stdout: Output = Output()
    stderr: Output = Output()
    env: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs
    user: str | None = None
    restartdelay: float = 0.0
    # Rotation of FILE/AUTO-file outputs (supervisord's stdout_logfile_maxbytes
    # and _backups): at most maxbytes per file, FILE.1 ... FILE.<backups>;
    # maxbytes 0 = unbounded, the child writes its file itself.
    stdout_maxbytes: int = DEFAULT_MAXBYTES
    stdout_backups: int = DEFAULT_BACKUPS
    stderr_maxbytes: int = DEFAULT_MAXBYTES
    stderr_backups: int = DEFAULT_BACKUPS

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def process_names(self) -> list[str]:
        """`prog` when numprocs is 1, else `prog:0` ... `prog:N-1`."""
        if self.numprocs == 1:
            return [self.name]
        return [f"{self.name}:{i}" for i in range(self.numprocs)]


@dataclass(frozen=True)
class GlobalConfig:
    # None means "the daemon picks the default for its uid" (see paths.py).
    logfile: str | None = None
    loglevel: str = "info"  # debug | info | warning | error
    logdir: str | None = None
    statedir: str | None = None


@dataclass(frozen=True)
class Config:
    path: str  # absolute path of the file it was read from
    daemon: GlobalConfig = GlobalConfig()
    programs: tuple[ProgramConfig, ...] = ()  # in file order
    alerts: tuple[AlertConfig, ...] = ()

    def program(self, name: str) -> ProgramConfig | None:
        return self._by_name.get(name)

    @functools.cached_property
    def _by_name(self) -> dict[str, ProgramConfig]:
        # Not a field: frozen and compared by value all the same. The D-Bus
        # properties look programs up by name on every read.
        return {p.name: p for p in self.programs}


# The largest configuration file read: a file of 1,000 programs is ~100 KB.
# Anything bigger is refused before it is read (`--check-config /dev/zero`
# would read until the kernel stopped it).
MAX_FILE_SIZE = 16 * 1024 * 1024

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def load_config(path: str | Path) -> Config:
    """Read and validate `path`; raise ConfigError with all issues at once."""
    name = os.fspath(path)

    def refuse(message: str) -> ConfigError:
        return ConfigError([ConfigIssue(name, 1, 1, "", message)])

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise refuse(f"cannot read the config file: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = next((w for test, w in _FILE_KINDS if test(st.st_mode)), "not a regular file")
            raise refuse(f"cannot read the config file: it is {what}; expected a regular file")
        if st.st_size > MAX_FILE_SIZE:
            raise refuse(f"cannot read the config file: it is {st.st_size} bytes; at most "
                         f"{MAX_FILE_SIZE} ({MAX_FILE_SIZE >> 20} MiB) are read")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_SIZE + 1)  # it may have grown since fstat
    except OSError as e:
        raise refuse(f"cannot read the config file: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_SIZE:
        raise refuse(f"cannot read the config file: it is over {MAX_FILE_SIZE} bytes; "
                     f"at most {MAX_FILE_SIZE >> 20} MiB are read")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            [ConfigIssue(name, line, column, "", f"not valid UTF-8 ({e.reason}); expected UTF-8 text")]
        ) from None
    return parse_config(text, name)


def parse_config(text: str, path: str) -> Config:
    """Validate `text`, said to be the contents of `path`.

    `path` is used as written in issues; relative paths in the file are
    resolved against its directory. Raise ConfigError with every issue.
    """
    try:
        return _Validator(text, path).run()
    except RecursionError:
        # The last resort: composing caps nesting (yamlnodes.MAX_DEPTH) and the
        # walks are bounded, so this is a structure nothing else foresaw.
        raise ConfigError([ConfigIssue(
            path, 1, 1, "", "the file is nested too deeply to be read (anchors, aliases "
            "and merge keys more than a few hundred levels deep); simplify it")]) from None


# --------------------------------------------------------------------------
# The validator. Everything below is private.


TOP_KEYS: tuple[str, ...] = ("taskmasterd", "programs", "alerts")
GLOBAL_KEYS: tuple[str, ...] = ("logfile", "loglevel", "logdir", "statedir")
PROGRAM_KEYS: tuple[str, ...] = (
    "cmd",
    "numprocs",
    "umask",
    "workingdir",
    "autostart",
    "autorestart",
    "exitcodes",
    "startretries",
    "starttime",
    "startlimit_burst",
    "startlimit_interval",
    "stopsignal",
    "stoptime",
    "stdout",
    "stderr",
    "env",
    "user",
    "restartdelay",
    "stdout_maxbytes",
    "stdout_backups",
    "stderr_maxbytes",
    "stderr_backups",
)

# supervisord's [program:x] option names -> Taskmaster's, or None if unsupported.
_SUPERVISORD_NAMES: dict[str, str | None] = {
    "command": "cmd",
    "directory": "workingdir",
    "startsecs": "starttime",
    "stopwaitsecs": "stoptime",
    "environment": "env",
    "stdout_logfile": "stdout",
    "stderr_logfile": "stderr",
    "process_name": None,
    "numprocs_start": None,
    "priority": None,
    "redirect_stderr": None,
    "stopasgroup": None,
    "killasgroup": None,
    "stdout_logfile_maxbytes": "stdout_maxbytes",
    "stderr_logfile_maxbytes": "stderr_maxbytes",
    "stdout_logfile_backups": "stdout_backups",
    "stderr_logfile_backups": "stderr_backups",
}


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_OCTAL_RE = re.compile(r"[0-7]+")
_UMASK_MSG = "umask must be octal digits like 022 (a digit 8 or 9 is not octal)"


class _Validator(AlertReader):
    """Taskmaster's schema, read off the node tree (see the module docstring)."""

    def __init__(self, text: str, path: str) -> None:
        super().__init__(text, path)
        self.abspath = os.path.abspath(path)
        self.basedir = os.path.dirname(self.abspath)

    # ---- entry point

    def run(self) -> Config:
        root = self._compose()
        if root is None or is_null(root):
            self.error(
                None,
                "",
                "the file is empty; expected a mapping with 'programs:' "
                "(and optionally 'taskmasterd:' and 'alerts:')",
            )
            self.fail()
        config = self._top(root)
        if self.issues or config is None:
            self.fail()
        return config

    # ---- top level

    def _top(self, root: Node) -> Config | None:
        if not isinstance(root, MappingNode):
            self.error(
                root,
                "",
                "the top level must be a mapping with the keys taskmasterd, "
                f"programs and alerts; found {kind(root)}",
            )
            return None
        daemon: GlobalConfig | None = GlobalConfig()
        programs: tuple[ProgramConfig, ...] | None = ()
        alerts: tuple[AlertConfig, ...] | None = ()
        for k, v in self.entries(root, ""):
            key = k.value
            if key == "taskmasterd":
                daemon = self._global(v)
            elif key == "programs":
                programs = self._programs(v)
            elif key == "alerts":
                alerts = self._alerts(v)
            else:
                self.error(k, key, self._unknown_top(key, v))
        if daemon is None or programs is None or alerts is None:
            return None
        return Config(path=self.abspath, daemon=daemon, programs=programs, alerts=alerts)

    def _unknown_top(self, key: str, value: Node) -> str:
        msg = f"unknown top-level key '{key}'"
        if self._has_key(value, "cmd"):
            return f"{msg}; a program belongs under 'programs:' — indent it there"
        if key in PROGRAM_KEYS:
            return f"{msg}; '{key}' is a program setting — indent it under its program in 'programs:'"
        if key in GLOBAL_KEYS:
            return f"{msg}; '{key}' is a daemon setting — indent it under 'taskmasterd:'"
        guess = suggest(key, TOP_KEYS)
        if guess is not None:
            return f"{msg} (did you mean '{guess}'?)"
        return f"{msg}; expected taskmasterd, programs or alerts"

    # ---- taskmasterd:

    def _global(self, node: Node) -> GlobalConfig | None:
        if is_null(node):
            return GlobalConfig()
        if not isinstance(node, MappingNode):
            self.error(node, "taskmasterd", f"expected a mapping of daemon settings, found {kind(node)}")
            return None
        values: dict[str, Any] = {}
        ok = True
        for k, v in self.entries(node, "taskmasterd"):
            key = k.value
            kp = f"taskmasterd.{key}"
            reader: Callable[[Node], Any] | None = {
                "logfile": self._path,
                "logdir": self._path,
                "statedir": self._path,
                "loglevel": self._loglevel,
            }.get(key)
            if reader is None:
                self.error(k, kp, unknown_key(key, GLOBAL_KEYS, "taskmasterd"))
                ok = False
                continue
            ok = self._read(reader, v, kp, values, key) and ok
        return GlobalConfig(**values) if ok else None

    def _loglevel(self, node: Node) -> str:
        text = self._text(node, "a log level (debug, info, warning or error)")
        if text.lower() not in LOG_LEVELS:
            raise Reject(f"expected debug, info, warning or error, found {show(node)}")
        return text.lower()

    # ---- programs:

    def _programs(self, node: Node) -> tuple[ProgramConfig, ...] | None:
        if is_null(node):
            return ()
        if not isinstance(node, MappingNode):
            self.error(
                node,
                "programs",
                f"expected a mapping of program name -> settings, found {kind(node)}",
            )
            return None
        entries = self.entries(node, "programs")
        out: list[ProgramConfig] = []
        ok = True
        for i, (k, v) in enumerate(entries):
            name = k.value
            kp = f"programs.{name}"
            if name in PROGRAM_KEYS and not self._has_key(v, "cmd"):
                if isinstance(v, MappingNode) or not is_null(v):
                    what = (
                        "has no 'cmd'"
                        if isinstance(v, MappingNode)
                        else (f"must be a mapping of settings, found {kind(v)}")
                    )
                else:
                    what = "has no settings"
                self.error(
                    k,
                    kp,
                    f"program '{name}' {what}; '{name}' is a program setting — indent it under its program",
                )
                ok = False
                continue
            ok = self._program_name(k, kp) and ok
            if is_null(v):
                nxt = entries[i + 1][0] if i + 1 < len(entries) else None
                if (
                    nxt is not None
                    and nxt.value in PROGRAM_KEYS
                    and nxt.start_mark.line > k.start_mark.line
                    and nxt.start_mark.column == k.start_mark.column
                ):
                    msg = (
                        f"program '{name}' has no settings — the keys after it are at "
                        f"the same indentation as '{name}:' and must be indented under it"
                    )
                else:
                    msg = (
                        f"program '{name}' has no settings; expected a mapping with at "
                        f"least 'cmd:', indented under '{name}:'"
                    )
                self.error(k, kp, msg)
                ok = False
                continue
            if not isinstance(v, MappingNode):
                self.error(
                    v,
                    kp,
                    f"program '{name}' must be a mapping of settings, found {kind(v)}; "
                    f"write its command as 'cmd: ...' indented under '{name}:'",
                )
                ok = False
                continue
            program = self._program(name, k, v, kp)
            if program is None:
                ok = False
            else:
                out.append(program)
        return tuple(out) if ok else None

    def _program_name(self, k: ScalarNode, kp: str) -> bool:
        name = k.value
        allowed = "use 1 to 64 letters, digits, '_', '.' or '-'"
        problem: str | None = None
        if not name:
            problem = f"a program name must not be empty; {allowed}"
        elif ":" in name:
            problem = (
                f"program name '{name}' must not contain ':' (it names processes, as in prog:0); {allowed}"
            )
        elif any(c in name for c in "*?[]"):
            problem = (
                f"program name '{name}' must not contain the glob characters * ? [ ] "
                f"(they match program names); {allowed}"
            )
        elif len(name) > 64:
            problem = f"program name is {len(name)} characters long; {allowed}"
        elif not _NAME_RE.fullmatch(name):
            problem = f"program name '{name}' has characters that are not allowed; {allowed}"
        elif name == "all":
            problem = "program name 'all' is reserved (it targets every program); choose another name"
        elif set(name) == {"."}:
            problem = f"program name '{name}' is not allowed (it is a path component); {allowed}"
        if problem is None:
            return True
        self.error(k, kp, problem)
        return False

    def _program(self, name: str, name_node: ScalarNode, node: MappingNode, kp: str) -> ProgramConfig | None:
        readers: dict[str, Callable[[Node], Any]] = {
            "cmd": self._cmd,
            "numprocs": lambda n: self._int(n, 1, 1000),
            "umask": self._umask,
            "workingdir": self._path,
            "autostart": self._bool,
            "autorestart": self._autorestart,
            "exitcodes": lambda n: self._exitcodes(n, f"{kp}.exitcodes"),
            "startretries": lambda n: self._int(n, 0, 1000),
            "starttime": self._seconds,
            "startlimit_burst": lambda n: self._int(n, 0, 1000),
            "startlimit_interval": self._seconds,
            "stopsignal": self._signal,
            "stoptime": self._seconds,
            "stdout": self._output,
            "stderr": self._output,
            "env": lambda n: self._env(n, f"{kp}.env"),
            "user": lambda n: self._text(n, "a user name or numeric uid"),
            "restartdelay": self._seconds,
            "stdout_maxbytes": self._size,
            "stdout_backups": lambda n: self._int(n, 0, MAX_BACKUPS),
            "stderr_maxbytes": self._size,
            "stderr_backups": lambda n: self._int(n, 0, MAX_BACKUPS),
        }
        values: dict[str, Any] = {}
        ok = True
        has_cmd = False
        for k, v in self.entries(node, kp):
            key = k.value
            fkp = f"{kp}.{key}"
            reader = readers.get(key)
            if reader is None:
                self.error(k, fkp, self._unknown_program_key(key))
                ok = False
                continue
            has_cmd = has_cmd or key == "cmd"
            ok = self._read(reader, v, fkp, values, key) and ok
        if not has_cmd:
            self.error(
                name_node,
                kp,
                f"program '{name}' has no 'cmd'; every program needs a command, "
                "e.g. cmd: /usr/bin/nginx -g 'daemon off;'",
            )
            return None
        if not ok:
            return None
        cmd, argv = values.pop("cmd")
        return ProgramConfig(name=name, cmd=cmd, argv=argv, **values)

    @staticmethod
    def _unknown_program_key(key: str) -> str:
        if key in _SUPERVISORD_NAMES:
            new = _SUPERVISORD_NAMES[key]
            if new is None:
                return f"unknown key '{key}': supervisord's '{key}' is not supported by Taskmaster"
            return f"unknown key '{key}' (did you mean '{new}'? '{key}' is supervisord's name for it)"
        return unknown_key(key, PROGRAM_KEYS, "a program")

    # ---- Taskmaster's own readers (raise Reject)

    def _resolve(self, text: str) -> str:
        return os.path.normpath(os.path.join(self.basedir, text))

    def _path(self, node: Node) -> str:
        return self._resolve(self._text(node, "a path", strict=True))

    def _cmd(self, node: Node) -> tuple[str, tuple[str, ...]]:
        cmd = self._text(node, "a command line")
        try:
            argv = tuple(shlex.split(cmd))
        except ValueError as e:
            raise Reject(
                f"cannot split cmd into words: {e} (unbalanced quotes or a trailing backslash?); "
                "check its quoting"
            ) from None
        if not argv or not argv[0]:
            raise Reject(
                "cmd has no program to run after splitting into words; "
                "expected a command like /usr/bin/nginx -c /etc/nginx.conf"
            )
        return cmd, argv

    def _umask(self, node: Node) -> int:
        if not isinstance(node, ScalarNode) or node.tag == NULL or node.tag.startswith("!"):
            raise Reject(f"{_UMASK_MSG}, found {kind(node)}")
        text = node.value
        digits = text[2:] if text[:2] in ("0o", "0O") else text
        if not _OCTAL_RE.fullmatch(digits):
            raise Reject(f"{_UMASK_MSG}, found {show(node)}")
        value = int(digits, 8)
        if value > 0o777:
            raise Reject(f"{_UMASK_MSG}, found {show(node)}, which is above the largest umask 0777")
        return value

    def _autorestart(self, node: Node) -> AutoRestart:
        what = "always, never or unexpected (or true/false)"
        scalar = self._scalar(node, what)
        text = scalar.value.lower()
        if text in BOOLEANS:
            return AutoRestart.ALWAYS if BOOLEANS[text] else AutoRestart.NEVER
        try:
            return AutoRestart(text)
        except ValueError:
            raise Reject(f"expected {what}, found {show(scalar)}") from None

    def _exitcodes(self, node: Node, kp: str) -> frozenset[int]:
        if isinstance(node, ScalarNode):
            return frozenset({self._int(node, 0, 255)})
        if not isinstance(node, SequenceNode):
            raise Reject(f"expected an exit code 0–255 or a list of them, found {kind(node)}")
        if not node.value:
            raise Reject("expected an exit code 0–255 or a list of them, found an empty list")
        codes: set[int] = set()
        bad = False
        for i, item in enumerate(node.value):
            try:
                codes.add(self._int(item, 0, 255))
            except Reject as r:
                self.error(item, f"{kp}[{i}]", r.message)
                bad = True
        if bad:
            raise Reported
        return frozenset(codes)

    def _signal(self, node: Node) -> signal.Signals:
        scalar = self._scalar(node, "a signal name")
        text = scalar.value
        if quoted(scalar) and text.strip().isdigit():  # "9" is text: not a number here
            raise Reject(f"unknown signal {text!r} (a signal number is written without quotes); "
                         f"{signames.HINT}")
        try:
            return signames.parse(text)
        except ValueError as exc:
            raise Reject(str(exc)) from None

    def _output(self, node: Node) -> Output:
        what = "a file path, 'journal' or null"
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if isinstance(node, ScalarNode) and node.tag == NULL:
            return Output(OutputKind.NULL, line=line, column=column)
        text = self._text(node, what, strict=True)
        if text == "journal":
            return Output(OutputKind.JOURNAL, line=line, column=column)
        path = self._resolve(text)
        if path == os.devnull:
            return Output(OutputKind.NULL, line=line, column=column)
        return Output(OutputKind.FILE, path, line=line, column=column)

    def _size(self, node: Node) -> int:
        what = "a size in bytes like 50MB, 512KB, 1GB or 1048576 (0 = unlimited)"
        scalar = self._scalar(node, what)
        value = parse_size(scalar.value)
        if value is None:
            raise Reject(f"expected {what}, found {show(scalar)}")
        if value > MAX_MAXBYTES:
            raise Reject(f"must be at most 1024GB, found {show(scalar)}")
        return value

    def _env(self, node: Node, kp: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(node, MappingNode):
            raise Reject(f"expected a mapping of NAME: value, found {kind(node)}")
        out: dict[str, str] = {}
        bad = False
        for k, v in self.entries(node, kp):
            name = k.value
            vkp = f"{kp}.{name}"
            if not name or "=" in name or "\0" in name or surrogate_problem(name):
                self.error(
                    k,
                    vkp,
                    f"invalid environment variable name {name!r}; expected a non-empty "
                    "name without '=' or NUL",
                )
                bad = True
                continue
            if not isinstance(v, ScalarNode) or v.tag.startswith("!"):
                self.error(v, vkp, f"env values must be strings or numbers, found {kind(v)}")
                bad = True
            elif v.tag == NULL:
                self.error(
                    v,
                    vkp,
                    "env values must be strings or numbers, found null; use '' for an empty value",
                )
                bad = True
            elif "\0" in v.value:
                self.error(v, vkp, "env values must not contain a NUL character")
                bad = True
            elif surrogate_problem(v.value):
                self.error(v, vkp, f"env values must be text, found {surrogate_problem(v.value)}")
                bad = True
            else:
                out[name] = v.value
        if bad:
            raise Reported
        return tuple(sorted(out.items()))
