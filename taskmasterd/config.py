"""Parse and validate the YAML configuration into frozen dataclasses.

Validation walks PyYAML's *node tree*, not the loaded Python objects, so that
every error carries file:line:column and so that YAML 1.1 resolution cannot
bite: `umask: 022` is read as the digits written, `env: {A: 042}` keeps the
string "042", and `stdout: null` (written) is told apart from an absent key.

No I/O here except reading the file and those it includes (`taskmasterd:
{include: ...}`, taskmasterd.includes); no apprise, no asyncio, no D-Bus.
This module is Taskmaster's schema: the top level and `taskmasterd:` here,
`programs:` in `taskmasterd.programschema` (ProgramConfig and its key
table), `alerts:` in `taskmasterd.alertschema`; composing the file, locating
issues, merge keys and the generic scalar readers are in
`taskmasterd.yamlnodes`.

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
* variables `%{name}` (taskmasterd.variables) in cmd, env values,
  workingdir, stdout and stderr: expanded first, then the value is split
  (cmd) or resolved (paths; `journal` only as written); `%%{` is a
  literal `%{`, any other `%` is literal. env.NAME, program, numprocs,
  here (the defining file's directory) and host at load; process and
  process_num stay markers that spawn.launch_spec fills per process. An
  unknown name or an unset env.NAME is an error at the value.
* redirect_stderr: a boolean; stderr goes where stdout goes, and a
  `stderr:` of the same program is an error (taskmasterd.redirectschema).
* after (start ordering, taskmasterd.deps): a program name or a list of
  them, each any non-null scalar as written (`after: [1]` names program
  "1"); `[]` is none. Checked across programs once all are read: an
  unknown name, a name listed twice, a program after itself and each cycle
  are errors at the item (a cycle at the item that closes it, with its path).
* include (taskmasterd.includes): a path or glob, or a list of them,
  relative to the main file's directory. Each file named is read (each
  once, at most MAX_INCLUDED_FILES, each a regular file of MAX_FILE_SIZE
  at most and MAX_INCLUDED_SIZE in all) by a validator of its own, so that
  its issues and relative paths are its own; it may hold programs and
  alerts only. Then the checks across programs see every file: a program
  defined twice is an error at the second definition naming both places,
  and after: names any program of the tree. Every issue of every file is
  raised at once (the main file's first, then each file's in the order
  read); Config.files says which files were read and what each defined.
* the top-level sections taskmasterd, programs, alerts and tasks may be left
  empty (null), which means the same as absent.
* tasks (one-shot tasks, taskmasterd/tasks): max_parallel an integer
  1–4096; keep a number of days > 0 (fractions allowed, at most 36600);
  timeout seconds >= 0 up to a year (0: none); stopsignal and stoptime as
  a program's; max_queued an integer 1–1000000 (default 10000).
* alerts (taskmasterd.alertschema, whose reader the validator inherits):
  a URL is checked for its syntax here (scheme://...) and keeps its place
  in the file; whether apprise can use it is asked by the daemon's loader
  once the file is valid (hostcheck.load -> alerts.urls), an error at the
  same place. Alert title/body templates (any non-null scalar) are
  str.format strings whose fields must be named and among TEMPLATE_FIELDS.

Aliases are fine anywhere, and merge keys (`<<: *defaults`, or a list of
aliases) work in every mapping: keys written in the mapping win over merged
ones, and among merged mappings the first listed wins (as in YAML). A key
written twice in one mapping is an error at the second occurrence.
"""


from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from taskmasterd import deps, includes

# Re-exported: the models, the key lists and the loader's errors are part of this module's API.
from taskmasterd.alertschema import ALERT_EVENTS as ALERT_EVENTS
from taskmasterd.alertschema import DEFAULT_ALERT_RATE as DEFAULT_ALERT_RATE
from taskmasterd.alertschema import TEMPLATE_FIELDS as TEMPLATE_FIELDS
from taskmasterd.alertschema import AlertConfig as AlertConfig
from taskmasterd.alertschema import AlertReader
from taskmasterd.configread import MAX_FILE_SIZE as MAX_FILE_SIZE
from taskmasterd.configread import TooBig, Unreadable, decode, read_file
from taskmasterd.programschema import DEFAULT_BACKUPS as DEFAULT_BACKUPS
from taskmasterd.programschema import DEFAULT_MAXBYTES as DEFAULT_MAXBYTES
from taskmasterd.programschema import LAUNCH_KEYS as LAUNCH_KEYS
from taskmasterd.programschema import MAX_BACKUPS as MAX_BACKUPS
from taskmasterd.programschema import MAX_MAXBYTES as MAX_MAXBYTES
from taskmasterd.programschema import PROGRAM_KEYS as PROGRAM_KEYS
from taskmasterd.programschema import AutoRestart as AutoRestart
from taskmasterd.programschema import Output as Output
from taskmasterd.programschema import OutputKind as OutputKind
from taskmasterd.programschema import ProgramConfig as ProgramConfig
from taskmasterd.programschema import ProgramReader
from taskmasterd.programschema import parse_size as parse_size
from taskmasterd.tasks.settings import TASK_SETTING_KEYS, TaskSettings
from taskmasterd.taskschema import TasksReader
from taskmasterd.yamlnodes import (
    MAX_ISSUES,
    Reject,
    Reported,
    is_null,
    kind,
    show,
    suggest,
    unknown_key,
)
from taskmasterd.yamlnodes import ConfigError as ConfigError
from taskmasterd.yamlnodes import ConfigIssue as ConfigIssue

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class GlobalConfig:
    # None means "the daemon picks the default for its uid" (see paths.py).
    logfile: str | None = None
    loglevel: str = "info"  # debug | info | warning | error
    logdir: str | None = None
    statedir: str | None = None
    include: tuple[str, ...] = ()  # the patterns as written (Config.files: what they named)


@dataclass(frozen=True)
class ConfigFile:
    """One file of the configuration: the main one or one it includes."""

    path: str  # absolute
    name: str  # as issues name it: as given (main), or joined to the main file's name
    programs: tuple[str, ...] = ()  # the programs it defines, in file order
    alerts: tuple[AlertConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    path: str  # absolute path of the main file
    daemon: GlobalConfig = GlobalConfig()
    programs: tuple[ProgramConfig, ...] = ()  # in file order, the main file's first
    alerts: tuple[AlertConfig, ...] = ()
    tasks: TaskSettings = field(default_factory=TaskSettings)
    # Every file read, the main one first, then the included ones in the
    # order read. Not part of the value: moving a program to another file
    # changes nothing a reload acts on.
    files: tuple[ConfigFile, ...] = field(default=(), compare=False)

    def program(self, name: str) -> ProgramConfig | None:
        return self._by_name.get(name)

    def file_of(self, program: str) -> str:
        """The name (as in issues) of the file defining `program`."""
        return next((f.name for f in self.files if program in f.programs), self.path)

    @functools.cached_property
    def _by_name(self) -> dict[str, ProgramConfig]:
        # Not a field: frozen and compared by value all the same. The D-Bus
        # properties look programs up by name on every read.
        return {p.name: p for p in self.programs}


def load_config(path: str | Path) -> Config:
    """Read and validate `path` and the files it includes; raise ConfigError
    with all issues of all files at once."""
    name = os.fspath(path)
    try:
        data = read_file(name)
    except Unreadable as e:
        raise ConfigError([ConfigIssue(name, 1, 1, "", f"cannot read the config file: {e}")]) from None
    return parse_config(decode(data, name), name)


def parse_config(text: str, path: str) -> Config:
    """Validate `text`, said to be the contents of `path`.

    `path` is used as written in issues; relative paths in the file are
    resolved against its directory, and so are its include patterns (the
    files they name are read). Raise ConfigError with every issue.
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


TOP_KEYS: tuple[str, ...] = ("taskmasterd", "programs", "alerts", "tasks")
GLOBAL_KEYS: tuple[str, ...] = ("logfile", "loglevel", "logdir", "statedir", "include")


INCLUDED_KEYS: tuple[str, ...] = ("programs", "alerts")  # what an included file may hold
# The included files are read up to this many bytes in all (each also at most
# MAX_FILE_SIZE): the whole tree is kept composed until it is checked.
MAX_INCLUDED_SIZE = MAX_FILE_SIZE


@dataclass
class _Part:
    """What one file gave: its reader (None when it could not be composed)."""

    reader: _Validator | None
    programs: tuple[ProgramConfig, ...] | None = ()
    alerts: tuple[AlertConfig, ...] | None = ()
    issues: list[ConfigIssue] = field(default_factory=list)


class _Validator(ProgramReader, AlertReader, TasksReader):
    """Taskmaster's schema, read off the node tree (see the module docstring).

    One per file: the main file's reads the files it includes with one
    each (`included=True`: programs and alerts only), then checks across
    them all (a program defined twice, `after:`)."""

    def __init__(self, text: str, path: str, *, included: bool = False) -> None:
        super().__init__(text, path)
        self.included = included
        self.program_nodes: dict[str, ScalarNode] = {}  # name -> its key, for "defined twice"
        self.include_items: list[tuple[Node, str]] = []  # each pattern's node and key path

    def _program_name(self, k: ScalarNode, kp: str) -> bool:
        self.program_nodes.setdefault(k.value, k)
        return super()._program_name(k, kp)

    def place(self, node: Node) -> str:
        line, column = self.where(node)
        return f"{self.file}:{line}:{column}"

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
        top = self._top(root)
        parts = [_Part(self), *self._read_included()]
        readers = [p.reader for p in parts if p.reader is not None]
        if len(readers) == len(parts):
            # With a file that could not be read, its programs are unknown:
            # the checks across files would only say so, wrongly.
            try:
                self._check_across(readers)
            except ConfigError:
                pass  # a file past MAX_ISSUES: its issues are recorded, the note too
        issues = [*self._sorted(self.issues)]
        for part in parts[1:]:
            issues += self._sorted(part.reader.issues if part.reader is not None else part.issues)
        if issues or top is None or any(p.programs is None or p.alerts is None for p in parts[1:]):
            raise ConfigError(issues)
        daemon, programs, alerts, tasks = top
        files = [ConfigFile(self.abspath, self.file, tuple(p.name for p in programs), alerts)]
        for part in parts[1:]:
            assert part.reader is not None and part.programs is not None and part.alerts is not None
            programs += part.programs
            alerts += part.alerts
            files.append(ConfigFile(part.reader.abspath, part.reader.file,
                                    tuple(p.name for p in part.programs), part.alerts))
        return Config(path=self.abspath, daemon=daemon, programs=programs, alerts=alerts,
                      tasks=tasks, files=tuple(files))

    @staticmethod
    def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
        return sorted(issues, key=lambda i: (i.line, i.column))

    # ---- top level

    def _top(self, root: Node) -> tuple[GlobalConfig, tuple[ProgramConfig, ...],
                                        tuple[AlertConfig, ...], TaskSettings] | None:
        if not isinstance(root, MappingNode):
            self.error(
                root,
                "",
                "the top level must be a mapping with the keys taskmasterd, "
                f"programs, alerts and tasks; found {kind(root)}",
            )
            return None
        daemon: GlobalConfig | None = GlobalConfig()
        programs: tuple[ProgramConfig, ...] | None = ()
        alerts: tuple[AlertConfig, ...] | None = ()
        tasks: TaskSettings | None = TaskSettings()
        for k, v in self.entries(root, ""):
            key = k.value
            if key == "taskmasterd":
                daemon = self._global(v)
            elif key == "programs":
                programs = self._programs(v)
            elif key == "alerts":
                alerts = self._alerts(v)
            elif key == "tasks":
                tasks = self._tasks(v)
            else:
                self.error(k, key, self._unknown_top(key, v))
        if daemon is None or programs is None or alerts is None or tasks is None:
            return None
        return daemon, programs, alerts, tasks

    def _check_across(self, readers: list[_Validator]) -> None:
        """Across the programs of every file: a program defined twice (at the
        second definition, naming both places) and `after:` (taskmasterd.deps:
        unknown names, cycles..., each at the item's node). Run on every
        program read, even when another one has errors, so that all are told
        at once."""
        owner: dict[str, _Validator] = {}
        for reader in readers:
            for name in reader.program_names:
                first = owner.setdefault(name, reader)
                if first is not reader:
                    node = reader.program_nodes[name]
                    reader.error(node, f"programs.{name}",
                                 f"program '{name}' is defined twice: {reader.place(node)} "
                                 f"and {first.place(first.program_nodes[name])}")
        graph = {name: tuple(n.value for n, _ in r.after_items.get(f"programs.{name}.after", ()))
                 for name, r in owner.items()}
        for program, i, message in deps.after_problems(graph):
            reader = owner[program]
            node, keypath = reader.after_items[f"programs.{program}.after"][i]
            reader.error(node, keypath, message)

    # ---- included files

    def _read_included(self) -> list[_Part]:
        """Each file the include patterns name, read and validated by its own
        reader; what cannot be read is an issue at the pattern's item."""
        if not self.include_items:
            return []
        patterns = [node.value for node, _ in self.include_items]
        found, problems = includes.expand(self.file, patterns)
        for problem in problems:
            node, keypath = self.include_items[problem.item]
            self.error(node, keypath, problem.message)
        parts: list[_Part] = []
        size = 0
        for n, inc in enumerate(found):
            node, keypath = self.include_items[inc.item]
            if len(self.issues) + sum(len(p.issues) + len(p.reader.issues if p.reader else [])
                                      for p in parts) >= MAX_ISSUES:
                self.error(node, keypath, f"more than {MAX_ISSUES} errors: {len(found) - n} "
                           "included file(s) were not checked; fix these first")
                break
            left = MAX_INCLUDED_SIZE - size
            try:
                data = read_file(inc.name, min(MAX_FILE_SIZE, left))
            except Unreadable as e:
                why = str(e)
                if isinstance(e, TooBig) and left < MAX_FILE_SIZE:
                    why = (f"the included files would be over {MAX_INCLUDED_SIZE} bytes in all; "
                           "at most that much is read")
                self.error(node, keypath, f"cannot read the included file {inc.name}: {why}")
                parts.append(_Part(None, None, None))
                continue
            size += len(data)
            parts.append(self._read_one(inc.name, data))
        return parts

    @staticmethod
    def _read_one(name: str, data: bytes) -> _Part:
        try:
            reader = _Validator(decode(data, name), name, included=True)
        except ConfigError as e:
            return _Part(None, None, None, e.issues)
        try:
            programs, alerts = reader.part()
        except ConfigError:
            return _Part(None, None, None, reader.issues)
        except RecursionError:
            return _Part(None, None, None, [ConfigIssue(
                name, 1, 1, "", "the file is nested too deeply to be read; simplify it")])
        return _Part(reader, programs, alerts)

    def part(self) -> tuple[tuple[ProgramConfig, ...] | None, tuple[AlertConfig, ...] | None]:
        """An included file's programs and alerts (None: invalid, issues recorded)."""
        root = self._compose()
        if root is None or is_null(root):
            return (), ()  # an empty file in conf.d: nothing (a placeholder)
        if not isinstance(root, MappingNode):
            self.error(root, "", "an included file must be a mapping with the keys programs "
                       f"and alerts; found {kind(root)}")
            return None, None
        programs: tuple[ProgramConfig, ...] | None = ()
        alerts: tuple[AlertConfig, ...] | None = ()
        for k, v in self.entries(root, ""):
            key = k.value
            if key == "programs":
                programs = self._programs(v)
            elif key == "alerts":
                alerts = self._alerts(v)
            elif key in TOP_KEYS:
                self.error(k, key, f"'{key}:' belongs in the main configuration file; an "
                           "included file holds only 'programs:' and 'alerts:'")
            else:
                self.error(k, key, self._unknown_top(key, v))
        return programs, alerts

    def _unknown_top(self, key: str, value: Node) -> str:
        msg = f"unknown top-level key '{key}'"
        if self._has_key(value, "cmd"):
            return f"{msg}; a program belongs under 'programs:' — indent it there"
        if key in PROGRAM_KEYS:
            return f"{msg}; '{key}' is a program setting — indent it under its program in 'programs:'"
        if key in GLOBAL_KEYS:
            return f"{msg}; '{key}' is a daemon setting — indent it under 'taskmasterd:'"
        if key in TASK_SETTING_KEYS:
            return f"{msg}; '{key}' is a task setting — indent it under 'tasks:'"
        guess = suggest(key, TOP_KEYS)
        if guess is not None:
            return f"{msg} (did you mean '{guess}'?)"
        return f"{msg}; expected taskmasterd, programs, alerts or tasks"

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
            include: Callable[[Node], Any] = functools.partial(self._include, kp=kp)
            reader: Callable[[Node], Any] | None = {
                "logfile": self._path,
                "logdir": self._path,
                "statedir": self._path,
                "loglevel": self._loglevel,
                "include": include,
            }.get(key)
            if reader is None:
                self.error(k, kp, unknown_key(key, GLOBAL_KEYS, "taskmasterd"))
                ok = False
                continue
            ok = self._read(reader, v, kp, values, key) and ok
        return GlobalConfig(**values) if ok else None

    def _include(self, node: Node, kp: str) -> tuple[str, ...]:
        """A path or glob, or a list of them (`[]`: none), relative to this
        file's directory; the files they name are read by `_read_included`."""
        what = "a path or glob like conf.d/*.yaml"
        items = [(node, kp)] if not isinstance(node, SequenceNode) else \
            [(item, f"{kp}[{i}]") for i, item in enumerate(node.value)]
        if len(items) > includes.MAX_PATTERNS:
            raise Reject(f"{len(items)} patterns; at most {includes.MAX_PATTERNS} (a glob such "
                         "as conf.d/*.yaml names many files)")
        patterns: list[str] = []
        bad = False
        for item, ikp in items:
            try:
                patterns.append(self._text(item, what, strict=True))
                self.include_items.append((item, ikp))
            except Reject as r:
                self.error(item, ikp, r.message)
                bad = True
        if bad:
            raise Reported()
        return tuple(patterns)

    def _loglevel(self, node: Node) -> str:
        text = self._text(node, "a log level (debug, info, warning or error)")
        if text.lower() not in LOG_LEVELS:
            raise Reject(f"expected debug, info, warning or error, found {show(node)}")
        return text.lower()

