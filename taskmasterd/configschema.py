"""The configuration's validator: `Validator` reads the top level,
`taskmasterd:` and the included files off the node tree, and inherits the
readers of `programs:` (taskmasterd.programschema), `alerts:`
(taskmasterd.alertschema) and `tasks:` (taskmasterd.taskschema); then it
checks across the programs of every file (defined twice, `after:`).

How each value is read is told in taskmasterd.config's docstring; the entry
points (load_config, parse_config) are there too and are the only users of
this module. It fills the model of taskmasterd.configmodel. No I/O but
reading the included files (taskmasterd.configread); no asyncio, no D-Bus.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from taskmasterd import deps, includes
from taskmasterd.alertschema import AlertConfig, AlertReader
from taskmasterd.configmodel import LOG_LEVELS, Config, ConfigFile, GlobalConfig
from taskmasterd.configread import MAX_FILE_SIZE, TooBig, Unreadable, decode, read_file
from taskmasterd.programschema import PROGRAM_KEYS, ProgramConfig, ProgramReader
from taskmasterd.tasks.settings import TASK_SETTING_KEYS, TaskSettings
from taskmasterd.taskschema import TasksReader
from taskmasterd.yamlnodes import (
    MAX_ISSUES,
    ConfigError,
    ConfigIssue,
    Reject,
    Reported,
    is_null,
    kind,
    show,
    suggest,
    unknown_key,
)

TOP_KEYS: tuple[str, ...] = ("taskmasterd", "programs", "alerts", "tasks")
GLOBAL_KEYS: tuple[str, ...] = ("logfile", "loglevel", "logdir", "statedir", "include")


INCLUDED_KEYS: tuple[str, ...] = ("programs", "alerts")  # what an included file may hold
# The included files are read up to this many bytes in all (each also at most
# MAX_FILE_SIZE): the whole tree is kept composed until it is checked.
MAX_INCLUDED_SIZE = MAX_FILE_SIZE


@dataclass
class _Part:
    """What one file gave: its reader (None when it could not be composed)."""

    reader: Validator | None
    programs: tuple[ProgramConfig, ...] | None = ()
    alerts: tuple[AlertConfig, ...] | None = ()
    issues: list[ConfigIssue] = field(default_factory=list)


class Validator(ProgramReader, AlertReader, TasksReader):
    """Taskmaster's schema, read off the node tree (see taskmasterd.config's docstring).

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

    def _check_across(self, readers: list[Validator]) -> None:
        """Across the programs of every file: a program defined twice (at the
        second definition, naming both places) and `after:` (taskmasterd.deps:
        unknown names, cycles..., each at the item's node). Run on every
        program read, even when another one has errors, so that all are told
        at once."""
        owner: dict[str, Validator] = {}
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
            reader = Validator(decode(data, name), name, included=True)
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

