"""What a submitted task is (`TaskSpec`), and the one checker of task input
(pure: no asyncio, no D-Bus, no I/O).

Every way in -- D-Bus `SubmitTask(a{sv})` (the adapter unwraps the variants
first), `taskctl run --file task.json`, `taskmasterd --run-task FILE`,
activities -- goes through `parse_task`, so a malformed task gets the same
named error everywhere: which key, where (`task.args[2]`, `activity.tasks[1].env`),
what was expected and what was given. Nothing is queued on an error.

A task's keys (docs/tasks.md):
    command     the program to run (a path, or a name looked up in PATH), required
    args        its arguments, a list of strings
    env         extra environment variables, a mapping of strings
    workingdir  the directory it runs in (absolute)
    timeout     seconds before it is stopped and marked failed (0: never;
                missing: the configured `tasks.timeout`)
    user        the user it runs as (the daemon must be root to switch)
    activity    the id of a queued or running activity to append it to
    name        a label shown by `taskctl tasks` (default: the command's basename)
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from taskmasterd.errors import TaskInvalid

TASK_KEYS: tuple[str, ...] = ("command", "args", "env", "workingdir", "timeout", "user",
                              "activity", "name")
ACTIVITY_KEYS: tuple[str, ...] = ("name", "tasks")

# Bounds: a task is a command line, not a payload; these keep one caller
# from making the daemon hold (and write, and signal) megabytes per task.
MAX_TEXT = 4096  # command, workingdir, user, a name, one env value
MAX_ARG = 65536  # one argument
MAX_ARGS = 4096  # arguments per task
MAX_ENV = 1024  # environment variables per task
MAX_TASKS = 10000  # tasks per activity
# Arguments and environment together, in characters: what one task holds in
# the daemon's memory until `tasks.keep` removes it (execve refuses much
# more anyway: E2BIG past about 2 MiB with the default 8 MiB stack).
MAX_EXEC = 1024 * 1024
MAX_TIMEOUT = 366 * 86400.0  # a year
MAX_FILE = 16 * 1024 * 1024  # a task or activity JSON file

# \Z, not $: `$` also matches before a final newline, and "3df2bb24\n" is
# not an id (nor "A\n" a variable name, nor a name ending in a newline a label).
ID_RE = re.compile(r"^[0-9a-f]{8,32}\Z")  # what new ids look like (records.new_id)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_NAME = re.compile(r"^[^\x00-\x1f\x7f]+\Z")  # a label: any printable text


@dataclass(frozen=True)
class TaskSpec:
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # in the order given
    workingdir: str | None = None
    timeout: float | None = None  # None: the configured default; 0: no limit
    user: str | None = None
    activity: str = ""  # append to this activity ("" : none)
    name: str = ""  # "" : shown as the command's basename

    @functools.cached_property
    def label(self) -> str:
        """(Computed once: a task's name is read a dozen times per state change.)"""
        return self.name or os.path.basename(self.command) or self.command

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.command, *self.args)

    def to_json(self) -> dict[str, object]:
        """The spec as the JSON object `parse_task` reads back (None and
        empty values left out)."""
        out: dict[str, object] = {"command": self.command}
        if self.args:
            out["args"] = list(self.args)
        if self.env:
            out["env"] = dict(self.env)
        for key in ("workingdir", "timeout", "user"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key in ("activity", "name"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _text(value: object, where: str, *, limit: int = MAX_TEXT, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TaskInvalid(f"{where}: expected a string, got {_type_name(value)}")
    if "\x00" in value:
        raise TaskInvalid(f"{where}: contains a NUL character")
    if len(value) > limit:
        raise TaskInvalid(f"{where}: {len(value)} characters long; at most {limit} are accepted")
    if not value and not empty:
        raise TaskInvalid(f"{where}: must not be empty")
    return value


def _suggest(key: str, known: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_task(obj: object, where: str = "task") -> TaskSpec:
    """A TaskSpec from a JSON-like value (dict of str/int/float/bool/list/dict),
    or TaskInvalid naming the first thing wrong, at `where`."""
    if not isinstance(obj, Mapping):
        raise TaskInvalid(f"{where}: expected a mapping of {', '.join(TASK_KEYS)}; got "
                          f"{_type_name(obj)}")
    for key in obj:
        if not isinstance(key, str) or key not in TASK_KEYS:
            shown = key if isinstance(key, str) else repr(key)
            hint = _suggest(key, TASK_KEYS) if isinstance(key, str) else ""
            raise TaskInvalid(f"{where}: unknown key '{shown}'{hint}; a task has "
                              f"{', '.join(TASK_KEYS)}")
    if "command" not in obj:
        raise TaskInvalid(f"{where}: 'command' is required (the program to run)")
    command = _text(obj["command"], f"{where}.command")
    args = _args(obj.get("args", []), f"{where}.args")
    env = _env(obj.get("env", {}), f"{where}.env")
    size = sum(map(len, args)) + sum(len(k) + len(v) + 2 for k, v in env)
    if size > MAX_EXEC:
        raise TaskInvalid(f"{where}: its args and env are {size} characters together; at most "
                          f"{MAX_EXEC} are accepted")
    workingdir = obj.get("workingdir")
    if workingdir is not None:
        workingdir = _text(workingdir, f"{where}.workingdir")
        if not workingdir.startswith("/"):
            raise TaskInvalid(f"{where}.workingdir: must be an absolute path, got {workingdir!r}")
    timeout = _timeout(obj.get("timeout"), f"{where}.timeout")
    user = obj.get("user")
    if user is not None:
        user = _text(user, f"{where}.user", limit=256)
    activity = obj.get("activity", "")
    if activity:
        activity = _text(activity, f"{where}.activity", limit=64)
        if not ID_RE.match(activity):
            raise TaskInvalid(f"{where}.activity: {activity!r} is not an activity id "
                              "(8 to 32 lowercase hex digits, as SubmitActivity returns)")
    elif not isinstance(activity, str):
        raise TaskInvalid(f"{where}.activity: expected a string, got {_type_name(activity)}")
    name = _name(obj.get("name", ""), f"{where}.name")
    return TaskSpec(command=command, args=args, env=env, workingdir=workingdir, timeout=timeout,
                    user=user, activity=activity, name=name)


def _name(value: object, where: str) -> str:
    name = _text(value, where, limit=256, empty=True)
    if name and not _NAME.match(name):
        raise TaskInvalid(f"{where}: contains a control character")
    return name


def _args(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TaskInvalid(f"{where}: expected a list of strings, got {_type_name(value)}")
    if len(value) > MAX_ARGS:
        raise TaskInvalid(f"{where}: {len(value)} arguments; at most {MAX_ARGS} are accepted")
    return tuple(_text(a, f"{where}[{i}]", limit=MAX_ARG, empty=True) for i, a in enumerate(value))


def _env(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise TaskInvalid(f"{where}: expected a mapping of NAME: value strings, got "
                          f"{_type_name(value)}")
    if len(value) > MAX_ENV:
        raise TaskInvalid(f"{where}: {len(value)} variables; at most {MAX_ENV} are accepted")
    out = []
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise TaskInvalid(f"{where}: {key!r} is not a variable name (letters, digits and _, "
                              "not starting with a digit)")
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise TaskInvalid(f"{where}.{key}: expected a string, got {_type_name(val)}")
        out.append((key, _text(str(val), f"{where}.{key}", empty=True)))
    return tuple(out)


def _timeout(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskInvalid(f"{where}: expected a number of seconds, got {_type_name(value)}")
    if isinstance(value, int) and value > MAX_TIMEOUT:  # checked before float(): 10**400
        raise TaskInvalid(f"{where}: {value} seconds is more than a year; use 0 for no limit")
    seconds = float(value) if value >= 0 else -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise TaskInvalid(f"{where}: expected 0 (no limit) or a positive number of seconds, got "
                          f"{value}")
    if seconds > MAX_TIMEOUT:
        raise TaskInvalid(f"{where}: {value} seconds is more than a year; use 0 for no limit")
    return seconds


def parse_activity(obj: object, where: str = "activity") -> tuple[str, list[TaskSpec]]:
    """(name, tasks) from `{"name": ..., "tasks": [task, ...]}`; a task of an
    activity may not name an activity itself."""
    if not isinstance(obj, Mapping):
        raise TaskInvalid(f"{where}: expected a mapping with name and tasks; got {_type_name(obj)}")
    for key in obj:
        if key not in ACTIVITY_KEYS:
            hint = _suggest(key, ACTIVITY_KEYS) if isinstance(key, str) else ""
            raise TaskInvalid(f"{where}: unknown key {key!r}{hint}; an activity has name and tasks")
    name = _name(obj.get("name", ""), f"{where}.name")
    return name, parse_activity_tasks(obj.get("tasks"), f"{where}.tasks")


def parse_activity_tasks(value: object, where: str) -> list[TaskSpec]:
    if not isinstance(value, list | tuple) or not value:
        raise TaskInvalid(f"{where}: expected a non-empty list of tasks, got "
                          f"{'an empty list' if isinstance(value, list | tuple) else _type_name(value)}")
    if len(value) > MAX_TASKS:
        raise TaskInvalid(f"{where}: {len(value)} tasks; at most {MAX_TASKS} are accepted")
    specs = [parse_task(t, f"{where}[{i}]") for i, t in enumerate(value)]
    for i, spec in enumerate(specs):
        if spec.activity:
            raise TaskInvalid(f"{where}[{i}].activity: a task of an activity cannot name another "
                              "activity")
    return specs


class _Twice(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object's keys, each once: JSON alone lets the last of two win
    (`{"command": "rm", "command": "ls"}` would run ls, silently)."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _Twice(key)
        out[key] = value
    return out


def load_json(text: str | bytes, path: str) -> object:
    """A task or activity file's JSON value, or TaskInvalid with `path:line:col`."""
    if len(text) > MAX_FILE:
        raise TaskInvalid(f"{path}: {len(text)} bytes; at most {MAX_FILE} are accepted")
    try:
        return json.loads(text, object_pairs_hook=_unique)
    except _Twice as exc:
        raise TaskInvalid(f"{path}: key {exc.key!r} given twice in one object") from None
    except json.JSONDecodeError as exc:
        raise TaskInvalid(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        # undecodable bytes (UnicodeDecodeError), an integer of more than
        # 4300 digits (Python >= 3.11's limit: a plain ValueError), nesting
        raise TaskInvalid(f"{path}: not valid JSON: {exc}") from None


def load_task_file(text: str | bytes, path: str) -> TaskSpec:
    return parse_task(load_json(text, path), path)


def load_activity_file(text: str | bytes, path: str) -> tuple[str, list[TaskSpec]]:
    return parse_activity(load_json(text, path), path)
