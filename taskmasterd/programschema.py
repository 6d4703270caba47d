"""The `programs:` part of the configuration: its reader (the validator in
taskmasterd.configschema inherits `ProgramReader`). The model it reads into —
ProgramConfig, its key table (each key's reader is a method here) and the
values' types — is taskmasterd.programmodel, re-exported here.

Variables (`%{name}`, taskmasterd.variables) are expanded by the readers of
cmd, env values, workingdir, stdout and stderr, with the program's facts
(`_program_facts`: its name, numprocs, the file's directory, the host and
the environment read when the reader was made).

How values are read is told in taskmasterd.config's docstring. Pure: no
I/O, no asyncio, no D-Bus (os.environ and the host name are read once, by
the reader).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import socket
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from taskmasterd import signames, variables
from taskmasterd.consoleschema import console_problems
from taskmasterd.probeschema import cross_problems
from taskmasterd.programmodel import _BY_NAME
from taskmasterd.programmodel import DEFAULT_BACKUPS as DEFAULT_BACKUPS
from taskmasterd.programmodel import DEFAULT_MAXBYTES as DEFAULT_MAXBYTES
from taskmasterd.programmodel import LAUNCH_KEYS as LAUNCH_KEYS
from taskmasterd.programmodel import MAX_BACKUPS as MAX_BACKUPS
from taskmasterd.programmodel import MAX_MAXBYTES as MAX_MAXBYTES
from taskmasterd.programmodel import PROGRAM_KEYS as PROGRAM_KEYS
from taskmasterd.programmodel import PROGRAM_TABLE as PROGRAM_TABLE
from taskmasterd.programmodel import AutoRestart as AutoRestart
from taskmasterd.programmodel import Output as Output
from taskmasterd.programmodel import OutputKind as OutputKind
from taskmasterd.programmodel import ProgramConfig as ProgramConfig
from taskmasterd.programmodel import ProgramKey as ProgramKey
from taskmasterd.programmodel import RestartMode as RestartMode
from taskmasterd.redirectschema import redirect_problems
from taskmasterd.yamlnodes import (
    BOOLEANS,
    NULL,
    NodeReader,
    Reject,
    Reported,
    is_null,
    kind,
    quoted,
    show,
    surrogate_problem,
    unknown_key,
)

_SIZE_UNITS = {"KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}
_SIZE_RE = re.compile(r"([0-9]+)\s*(KB|MB|GB)?", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """supervisord's byte sizes: digits, optionally followed by KB, MB or GB
    (any case, 1024-based). None when `text` is not one."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None or not text.isascii() or len(m.group(1)) > 18:
        return None
    return int(m.group(1)) * _SIZE_UNITS.get((m.group(2) or "").upper(), 1)


# supervisord's [program:x] option names -> Taskmaster's, or None if unsupported.
SUPERVISORD_NAMES: dict[str, str | None] = {
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
    "redirect_stderr": "redirect_stderr",  # the same name
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


class ProgramReader(NodeReader):
    """Reads `programs:` into ProgramConfig values, each key by its entry
    in PROGRAM_TABLE. Relative paths are resolved against the directory of
    the file."""

    def __init__(self, text: str, path: str) -> None:
        super().__init__(text, path)
        self.abspath = os.path.abspath(path)
        self.basedir = os.path.dirname(self.abspath)
        # `after:` item nodes by key path (programs.web.after), for the
        # checks across programs (unknown names, cycles) once all are read.
        self.after_items: dict[str, list[tuple[ScalarNode, str]]] = {}  # (node, its key path)
        self.program_names: list[str] = []  # every program of the file, read or not
        # What %{env.X} and %{host} read (taskmasterd.variables): at load, so
        # a reload reads them again.
        self.environ: dict[str, str] = dict(os.environ)
        self.host = socket.gethostname()
        self._facts: variables.Facts | None = None  # the program being read

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
            self.program_names.append(name)
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
        values: dict[str, Any] = {}
        ok = True
        has_cmd = False
        key_nodes: dict[str, ScalarNode] = {}
        entries = self.entries(node, kp)
        self._facts = self._program_facts(name, entries)
        for k, v in entries:
            key = k.value
            fkp = f"{kp}.{key}"
            entry = _BY_NAME.get(key)
            if entry is None:
                self.error(k, fkp, self._unknown_program_key(key))
                ok = False
                continue
            has_cmd = has_cmd or key == "cmd"
            key_nodes[key] = k
            ok = self._read(functools.partial(entry.read, self, fkp), v, fkp, values, key) and ok
        if ok:
            for key, message in [*cross_problems(values), *console_problems(values),
                                 *redirect_problems(values)]:
                self.error(key_nodes.get(key, name_node), f"{kp}.{key}", message)
                ok = False
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

    def _program_facts(self, name: str, entries: list[tuple[ScalarNode, Node]]) -> variables.Facts:
        """What the load-time variables of program `name` stand for. Its
        numprocs is looked at before the keys are read, in any order (an
        invalid one is reported with its key; 1 stands in meanwhile)."""
        numprocs = 1
        for k, v in entries:
            if k.value == "numprocs":
                try:
                    numprocs = self._int(v, 1, 1000)
                except Reject:
                    pass
        return variables.Facts(program=name, numprocs=numprocs, here=self.basedir,
                               host=self.host, environ=self.environ)

    def _expand(self, node: Node, kp: str, text: str) -> str:
        """`text` (of `node`, at key path `kp`) with its variables expanded
        for the program being read; each bad reference is an issue at the
        value (Reported)."""
        assert self._facts is not None, "variables are read in a program's keys only"
        value, problems = variables.expand(text, self._facts)
        for problem in problems:
            self.error(node, kp, problem)
        if problems:
            raise Reported
        return value

    @staticmethod
    def _unknown_program_key(key: str) -> str:
        if key in SUPERVISORD_NAMES:
            new = SUPERVISORD_NAMES[key]
            if new is None:
                return f"unknown key '{key}': supervisord's '{key}' is not supported by Taskmaster"
            return f"unknown key '{key}' (did you mean '{new}'? '{key}' is supervisord's name for it)"
        return unknown_key(key, PROGRAM_KEYS, "a program")

    # ---- Taskmaster's own readers (raise Reject)

    def _resolve(self, text: str) -> str:
        return os.path.normpath(os.path.join(self.basedir, text))

    def _path(self, node: Node) -> str:
        return self._resolve(self._text(node, "a path", strict=True))

    def _program_path(self, node: Node, kp: str) -> str:
        """A path of a program (workingdir): its variables expanded, then
        resolved against the file's directory (per-process markers stay:
        taskmasterd.variables)."""
        text = self._expand(node, kp, self._text(node, "a path", strict=True))
        if not text.strip():
            raise Reject("expected a path, found an empty string once its variables are expanded")
        return self._resolve(text)

    def _cmd(self, node: Node, kp: str) -> tuple[str, tuple[str, ...]]:
        """(the command as shown, its words). Variables are expanded before
        the split, as supervisord does: a value with spaces makes several
        words unless quoted. The words keep per-process markers."""
        text = self._text(node, "a command line")
        marked = self._expand(node, kp, text)
        expanded = " once its variables are expanded" if marked != text else ""
        try:
            argv = tuple(shlex.split(marked))
        except ValueError as e:
            raise Reject(
                f"cannot split cmd into words{expanded}: {e} (unbalanced quotes or a trailing "
                "backslash?); check its quoting"
            ) from None
        if not argv or not argv[0]:
            raise Reject(
                f"cmd has no program to run after splitting into words{expanded}; "
                "expected a command like /usr/bin/nginx -c /etc/nginx.conf"
            )
        return variables.display(marked), argv

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

    def _restart_mode(self, node: Node) -> RestartMode:
        what = "stop-start or overlap"
        scalar = self._scalar(node, what)
        try:
            return RestartMode(scalar.value.lower())
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

    def _output(self, node: Node, kp: str) -> Output:
        what = "a file path, 'journal' or null"
        line, column = self.where(node)
        if isinstance(node, ScalarNode) and node.tag == NULL:
            return Output(OutputKind.NULL, line=line, column=column)
        text = self._text(node, what, strict=True)
        if text == "journal":  # as written: a variable never makes it the journal
            return Output(OutputKind.JOURNAL, line=line, column=column)
        text = self._expand(node, kp, text)
        if not text.strip():
            raise Reject(f"expected {what}, found an empty string once its variables are expanded")
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

    def _after(self, node: Node, kp: str) -> tuple[str, ...]:
        """A program name or a list of them (names checked across programs
        by the validator, at these nodes)."""
        what = "a program name or a list of them like [db, cache]"
        items = list(node.value) if isinstance(node, SequenceNode) else [node]
        names: list[str] = []
        scalars: list[tuple[ScalarNode, str]] = []
        bad = False
        for i, item in enumerate(items):
            ikp = f"{kp}[{i}]" if isinstance(node, SequenceNode) else kp
            try:
                names.append(self._text(item, what))
                assert isinstance(item, ScalarNode)
                scalars.append((item, ikp))
            except Reject as r:
                self.error(item, ikp, r.message)
                bad = True
        if bad:
            raise Reported
        self.after_items[kp] = scalars
        return tuple(names)

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
                try:
                    out[name] = self._expand(v, vkp, v.value)
                except Reported:
                    bad = True
        if bad:
            raise Reported
        return tuple(sorted(out.items()))
