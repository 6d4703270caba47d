"""The `tasks:` section of the configuration (one-shot tasks' settings,
taskmasterd/tasks/settings.py): its reader, a mixin of the validator in
taskmasterd.configschema. Pure: no I/O."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from yaml.nodes import MappingNode, Node

from taskmasterd.tasks.settings import TASK_SETTING_KEYS, TaskSettings
from taskmasterd.tasks.spec import MAX_TIMEOUT
from taskmasterd.yamlnodes import NUMBER_RE, NodeReader, Reject, is_null, kind, quoted, show, unknown_key

MAX_PARALLEL = 4096
MAX_KEEP = 36600.0  # days: a century
MAX_QUEUED = 1_000_000  # tasks not yet ended: past this, memory and the bus suffer


class TasksReader(NodeReader):
    if TYPE_CHECKING:  # the program reader's, shared (taskmasterd.programschema)
        def _signal(self, node: Node) -> signal.Signals: ...

    def _tasks(self, node: Node) -> TaskSettings | None:
        if is_null(node):
            return TaskSettings()
        if not isinstance(node, MappingNode):
            self.error(node, "tasks", f"expected a mapping of task settings, found {kind(node)}")
            return None
        values: dict[str, Any] = {}
        ok = True
        for k, v in self.entries(node, "tasks"):
            key = k.value
            kp = f"tasks.{key}"
            reader: Callable[[Node], Any] | None = {
                "max_parallel": lambda n: self._int(n, 1, MAX_PARALLEL),
                "keep": lambda n: self._number(n, "a number of days like 7 or 0.5", 0.0,
                                               MAX_KEEP, zero=False),
                "timeout": lambda n: self._number(n, "a number of seconds like 60 or 0 (none)",
                                                  0.0, MAX_TIMEOUT),
                "stopsignal": self._signal,
                "stoptime": self._seconds,
                "max_queued": lambda n: self._int(n, 1, MAX_QUEUED),
            }.get(key)
            if reader is None:
                self.error(k, kp, unknown_key(key, TASK_SETTING_KEYS, "tasks"))
                ok = False
                continue
            ok = self._read(reader, v, kp, values, key) and ok
        return TaskSettings(**values) if ok else None

    def _number(self, node: Node, what: str, lo: float, hi: float, zero: bool = True) -> float:
        """An unquoted decimal number in [lo, hi] (lo excluded when not `zero`)."""
        scalar = self._scalar(node, what)
        if quoted(scalar) or not NUMBER_RE.fullmatch(scalar.value):
            raise Reject(f"expected {what}, found {show(scalar)}")
        value = float(scalar.value)
        if value < lo or (not zero and value == lo):
            raise Reject(f"must be {'>=' if zero else '>'} {lo:g}, found {scalar.value}")
        if value > hi:
            raise Reject(f"must be <= {hi:.10g}, found {scalar.value}")
        return value
