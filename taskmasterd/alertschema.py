"""The `alerts:` part of the configuration: its model (AlertConfig, the
events and template fields) and its schema, read off the node tree as the
rest of the file is (taskmasterd.configschema's validator inherits `AlertReader`).

An alert URL is checked for its syntax only (scheme://...): whether apprise
can use it is asked once the file is loaded (taskmasterd.alerts.urls), at
the place AlertConfig keeps (line, column). Title/body templates are
str.format strings whose fields must be named and among TEMPLATE_FIELDS.
Pure: no apprise, no asyncio, no D-Bus.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from taskmasterd.yamlnodes import NodeReader, Reject, Reported, is_null, kind, show, unknown_key

# Events an alert can subscribe to (process states, daemon events, tasks and activities).
ALERT_EVENTS: tuple[str, ...] = (
    "STARTING",
    "RUNNING",
    "BACKOFF",
    "STOPPING",
    "STOPPED",
    "EXITED",
    "EXITED_EXPECTED",
    "EXITED_UNEXPECTED",
    "FATAL",
    "SPAWN_ERROR",
    "ADOPTED",
    "UNHEALTHY",
    "RELOAD",
    "RELOAD_FAILED",
    "DAEMON_START",
    "DAEMON_STOP",
    "TASK_QUEUED",
    "TASK_STARTED",
    "TASK_SUCCEEDED",
    "TASK_FAILED",
    "TASK_CANCELLED",
    "TASK_LOST",
    "TASK_ADOPTED",
    "ACTIVITY_STARTED",
    "ACTIVITY_SUCCEEDED",
    "ACTIVITY_FAILED",
    "ACTIVITY_CANCELLED",
)

# What a target hears when its `events` is left out: crashes, and the ends
# a task runner's user waits for (taskd notifies an activity's end either way).
DEFAULT_EVENTS: frozenset[str] = frozenset({"FATAL", "EXITED_UNEXPECTED", "TASK_FAILED",
                                            "ACTIVITY_FAILED", "ACTIVITY_SUCCEEDED"})

# Named fields an alert's title/body template may use (str.format style; every
# value is text, empty when it does not apply). See taskmasterd/alerts/render.py.
TEMPLATE_FIELDS: tuple[str, ...] = (
    "host",
    "program",
    "process",
    "pid",
    "event",
    "state",
    "status",
    "time",
    "since",
    "count",
    "message",
    "stderr_tail",
)

DEFAULT_ALERT_RATE = 60.0  # seconds between two messages to one target


@dataclass(frozen=True)
class AlertConfig:
    url: str  # an apprise URL, as written (may hold secrets: never log it)
    events: frozenset[str] = DEFAULT_EVENTS
    programs: tuple[str, ...] = ("*",)  # globs on program (or process) names
    rate: float = DEFAULT_ALERT_RATE  # minimum interval between two messages, seconds
    title: str | None = None  # str.format templates over TEMPLATE_FIELDS;
    body: str | None = None  # None: the built-in text
    # Where the url: value is in the file (1-based; 0 when not from a file).
    # Not part of the value: moving an alert in the file changes nothing.
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


ALERT_KEYS: tuple[str, ...] = ("url", "events", "programs", "rate", "title", "body")


class AlertReader(NodeReader):
    """Reads `alerts:` (a list of mappings) into AlertConfig values."""

    def _alerts(self, node: Node) -> tuple[AlertConfig, ...] | None:
        if is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            self.error(
                node,
                "alerts",
                f"expected a list of alerts (each '- url: ...'), found {kind(node)}",
            )
            return None
        out: list[AlertConfig] = []
        ok = True
        for i, item in enumerate(node.value):
            alert = self._alert(item, f"alerts[{i}]")
            if alert is None:
                ok = False
            else:
                out.append(alert)
        return tuple(out) if ok else None

    def _alert(self, node: Node, kp: str) -> AlertConfig | None:
        if not isinstance(node, MappingNode):
            self.error(node, kp, f"an alert must be a mapping with at least 'url:', found {kind(node)}")
            return None
        readers: dict[str, Callable[[Node], Any]] = {
            "url": self._url,
            "events": lambda n: self._events(n, f"{kp}.events"),
            "programs": lambda n: self._patterns(n, f"{kp}.programs"),
            "rate": self._seconds,
            "title": self._template,
            "body": self._template,
        }
        values: dict[str, Any] = {}
        ok = True
        url_node: Node | None = None
        for k, v in self.entries(node, kp):
            key = k.value
            reader = readers.get(key)
            if reader is None:
                self.error(k, f"{kp}.{key}", unknown_key(key, ALERT_KEYS, "an alert"))
                ok = False
                continue
            if key == "url":
                url_node = v
            ok = self._read(reader, v, f"{kp}.{key}", values, key) and ok
        if url_node is None:
            self.error(node, kp, f"an alert needs a 'url:' (e.g. url: {_URL_EXAMPLE})")
            return None
        if not ok:
            return None
        line, column = self.where(url_node)
        return AlertConfig(**values, line=line, column=column)

    def _url(self, node: Node) -> str:
        text = self._text(node, "a URL", strict=True)
        scheme, sep, _rest = text.partition("://")
        if not sep or not scheme:
            raise Reject(f"expected a URL like {_URL_EXAMPLE} (apprise's syntax), found {show(node)}")
        return text

    def _template(self, node: Node) -> str:
        text = self._text(node, "a message template")
        problem = _template_problem(text)
        if problem is not None:
            raise Reject(problem)
        return text

    def _events(self, node: Node, kp: str) -> frozenset[str]:
        items = self._list(node, "a list of event names")
        out: set[str] = set()
        bad = False
        for i, item in enumerate(items):
            ikp = f"{kp}[{i}]"
            if not isinstance(item, ScalarNode) or is_null(item) or item.value.upper() not in ALERT_EVENTS:
                self.error(
                    item,
                    ikp,
                    f"unknown event {show(item)}; expected one of {', '.join(ALERT_EVENTS)}",
                )
                bad = True
            else:
                out.add(item.value.upper())
        if bad:
            raise Reported
        return frozenset(out)

    def _patterns(self, node: Node, kp: str) -> tuple[str, ...]:
        items = self._list(node, "a list of program names or globs")
        out: list[str] = []
        bad = False
        for i, item in enumerate(items):
            try:
                out.append(self._text(item, "a program name or glob"))
            except Reject as r:
                self.error(item, f"{kp}[{i}]", r.message)
                bad = True
        if bad:
            raise Reported
        return tuple(out)


_URL_EXAMPLE = "json://example.com/hook or mailto://user:password@smtp.example.com?to=ops@example.com"
APPRISE_WIKI = "https://github.com/caronc/apprise/wiki"


def _template_problem(text: str) -> str | None:
    """What is wrong with a title/body template, or None."""
    known = ", ".join(TEMPLATE_FIELDS)
    try:
        names = [name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name is not None]
    except ValueError as e:
        return f"invalid template: {e}; write {{{{ and }}}} for literal braces"
    for name in names:
        if name == "" or name.isdigit():
            return f"template fields must be named, like {{program}}; known fields: {known}"
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base != name:
            return f"template field {{{name}}}: only plain names are allowed, like {{{base}}}"
        if base not in TEMPLATE_FIELDS:
            close = difflib.get_close_matches(base, TEMPLATE_FIELDS, n=1, cutoff=0.6)
            hint = f" (did you mean {{{close[0]}}}?)" if close else ""
            return f"unknown template field {{{base}}}{hint}; known fields: {known}"
    try:
        text.format(**{f: "x" for f in TEMPLATE_FIELDS})
    except (ValueError, TypeError, KeyError, IndexError) as e:
        return f"invalid template: {e} (every field is text)"
    return None


