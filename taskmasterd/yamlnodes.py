"""Reading a YAML node tree, with every problem located.

PyYAML's *nodes* (not the loaded Python objects) keep the line and column
of every value and the text as written, so a reader built on them can say
`file:line:column: key.path: what is wrong, what was expected` and is not
bitten by YAML 1.1's resolution (022 an octal int, `on` a boolean).

`NodeReader` composes a file (yamlcompose.Composer), records every issue
instead of stopping at the first (yamlissues.IssueLog), walks mappings with
merge keys and duplicate keys handled, and reads typed scalars (`_text`,
`_int`, `_seconds`, `_bool`...) that raise `Reject` with "expected X,
found Y". It knows nothing of Taskmaster's schema: that is
`taskmasterd.configschema` (with programschema and alertschema), which
subclasses it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# Re-exported: the tags and limits are part of this module's API.
from taskmasterd.yamlcompose import BOOL as BOOL
from taskmasterd.yamlcompose import FLOAT as FLOAT
from taskmasterd.yamlcompose import INT as INT
from taskmasterd.yamlcompose import MAX_DEPTH as MAX_DEPTH
from taskmasterd.yamlcompose import MERGE as MERGE
from taskmasterd.yamlcompose import NULL as NULL
from taskmasterd.yamlcompose import STR as STR
from taskmasterd.yamlcompose import TIMESTAMP as TIMESTAMP
from taskmasterd.yamlcompose import Composer
from taskmasterd.yamlissues import MAX_ISSUES as MAX_ISSUES
from taskmasterd.yamlissues import ConfigError as ConfigError
from taskmasterd.yamlissues import ConfigIssue as ConfigIssue
from taskmasterd.yamlissues import surrogate_problem as surrogate_problem

BOOLEANS: dict[str, bool] = {
    "true": True,
    "yes": True,
    "on": True,
    "false": False,
    "no": False,
    "off": False,
}
MAX_SECONDS = 86400.0  # the longest duration `_seconds` accepts: one day
INT_RE = re.compile(r"-?[0-9]+")
NUMBER_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


class Reject(Exception):
    """A value is invalid; recorded at `node` (default: the value node)."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


class Reported(Exception):
    """A value is invalid and its issues have already been recorded."""


def kind(node: Node) -> str:
    """What a node is, for "found ..." in messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a sequence"
    assert isinstance(node, ScalarNode)
    if node.style in ("'", '"'):
        return "a string"
    return {
        NULL: "null",
        BOOL: "a boolean",
        INT: "an integer",
        FLOAT: "a number",
        TIMESTAMP: "a date",
        MERGE: "a merge key '<<'",
    }.get(node.tag, "a string")


def show(node: Node) -> str:
    """A node for "found ..." when the type may be right but the value is not."""
    if not isinstance(node, ScalarNode):
        return kind(node)
    if node.tag == NULL:
        return "null"
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    if node.style in ("'", '"'):
        return f"the quoted string {text!r}"
    return repr(text)


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL


def quoted(node: ScalarNode) -> bool:
    return node.style in ("'", '"')


def suggest(key: str, known: tuple[str, ...]) -> str | None:
    if len(key) > 100:  # no typo of a known key; difflib's cost grows with it
        return None
    lowered = key.lower()
    if lowered in known:
        return lowered
    close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key(key: str, known: tuple[str, ...], where: str) -> str:
    msg = f"unknown key '{key}'"
    guess = suggest(key, known)
    if guess is not None:
        return f"{msg} (did you mean '{guess}'?)"
    return f"{msg}; {where} accepts: {', '.join(known)}"


class NodeReader(Composer):
    """Composes one file and reads its node tree, recording every issue."""

    # ---- mappings

    def entries(
        self, node: MappingNode, keypath: str, _stack: tuple[int, ...] = (),
        _done: set[int] | None = None,
    ) -> list[tuple[ScalarNode, Node]]:
        """(key, value) pairs of a mapping, with merge keys expanded.

        Reports non-scalar keys, duplicate keys (kept: the first) and bad
        merge values. Keys written in the mapping win over merged keys;
        among merged mappings the first listed wins.
        """
        own: dict[str, ScalarNode] = {}
        keep: list[bool] = []
        for k, _v in node.value:
            if isinstance(k, ScalarNode) and k.tag == MERGE:
                keep.append(True)
                continue
            if not isinstance(k, ScalarNode):
                self.error(k, keypath, f"expected a name as key, found {kind(k)}")
                keep.append(False)
                continue
            first = own.get(k.value)
            if first is not None:
                where = self._join(keypath, k.value)
                self.error(
                    k,
                    where,
                    f"duplicate key '{k.value}' (first defined at line "
                    f"{first.start_mark.line + 1}); each key may appear only once",
                )
                keep.append(False)
                continue
            own[k.value] = k
            keep.append(True)

        seen = set(own)
        out: list[tuple[ScalarNode, Node]] = []
        stack = (*_stack, id(node))
        # A mapping merged twice (directly or through others) adds nothing the
        # first time did not: expanded once, so that nested merge lists of
        # aliases cannot make the expansion exponential.
        done = set() if _done is None else _done
        for (k, v), ok in zip(node.value, keep, strict=True):
            if not ok:
                continue
            if k.tag != MERGE:
                out.append((k, v))
                continue
            if isinstance(v, MappingNode):
                sources = [v]
            elif isinstance(v, SequenceNode) and v.value and all(isinstance(s, MappingNode) for s in v.value):
                sources = list(v.value)
            else:
                self.error(
                    v,
                    keypath,
                    "a merge key '<<' expects an alias to a mapping like "
                    f"'<<: *defaults' or a list of them, found {kind(v)}",
                )
                continue
            for source in sources:
                if id(source) in stack:
                    self.error(v, keypath, "a merge key '<<' refers to the mapping that contains it")
                    continue
                if id(source) in done:
                    continue
                if len(stack) > MAX_DEPTH:
                    self.error(v, keypath, f"merge keys '<<' chained more than {MAX_DEPTH} "
                               "levels deep (a mapping merging one that merges another...)")
                    return out
                done.add(id(source))
                for mk, mv in self.entries(source, keypath, stack, done):
                    if mk.value not in seen:
                        seen.add(mk.value)
                        out.append((mk, mv))
        return out

    def _has_key(self, node: Node, key: str, _seen: set[int] | None = None,
                 _depth: int = 0) -> bool:
        """Whether a mapping has `key`, directly or through a merge (no reporting)."""
        seen = set() if _seen is None else _seen
        if not isinstance(node, MappingNode) or id(node) in seen or _depth > MAX_DEPTH:
            return False
        seen.add(id(node))  # each mapping looked at once: cycles and alias bombs end
        for k, v in node.value:
            if not isinstance(k, ScalarNode):
                continue
            if k.tag == MERGE:
                sources = v.value if isinstance(v, SequenceNode) else [v]
                if any(self._has_key(s, key, seen, _depth + 1) for s in sources):
                    return True
            elif k.value == key:
                return True
        return False

    # ---- readers (raise Reject)

    def _read(
        self,
        reader: Callable[[Node], Any],
        node: Node,
        keypath: str,
        values: dict[str, Any],
        key: str,
    ) -> bool:
        """values[key] = reader(node); a refusal is recorded as an issue at
        the node (or the one it names) and gives False."""
        try:
            values[key] = reader(node)
        except Reject as r:
            self.error(r.node if r.node is not None else node, keypath, r.message)
            return False
        except Reported:
            return False
        return True

    @staticmethod
    def _list(node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise Reject(f"expected {what}, found {kind(node)}")
        if not node.value:
            raise Reject(f"expected {what}, found an empty list; omit the key for the default")
        return list(node.value)

    @staticmethod
    def _scalar(node: Node, what: str) -> ScalarNode:
        if not isinstance(node, ScalarNode):
            raise Reject(f"expected {what}, found {kind(node)}")
        if node.tag.startswith("!"):
            raise Reject(f"unsupported YAML tag '{node.tag}'; expected {what}")
        if node.tag == NULL:
            raise Reject(f"expected {what}, found null")
        return node

    def _text(self, node: Node, what: str, strict: bool = False) -> str:
        """A non-empty string. strict: unquoted numbers/booleans/dates are refused."""
        scalar = self._scalar(node, what)
        if strict and not quoted(scalar) and scalar.tag != STR:
            raise Reject(
                f"expected {what}, found {kind(scalar)} ({scalar.value}); quote it if it is meant as text"
            )
        if not scalar.value.strip():
            raise Reject(f"expected {what}, found an empty string")
        if "\0" in scalar.value:
            raise Reject(f"expected {what}, found a string with a NUL character")
        problem = surrogate_problem(scalar.value)
        if problem is not None:
            raise Reject(f"expected {what}, found {problem}")
        return str(scalar.value)

    def _int(self, node: Node, lo: int, hi: int) -> int:
        what = f"an integer {lo}–{hi}"
        scalar = self._scalar(node, what)
        if quoted(scalar) or not INT_RE.fullmatch(scalar.value):
            hint = " (remove the quotes)" if quoted(scalar) and INT_RE.fullmatch(scalar.value) else ""
            raise Reject(f"expected {what}, found {show(scalar)}{hint}")
        sign = "-" if scalar.value.startswith("-") else ""
        digits = scalar.value.lstrip("-").lstrip("0") or "0"
        if len(digits) > 18:
            raise Reject(f"must be between {lo} and {hi}, found {show(scalar)}")
        n = int(sign + digits)
        if not lo <= n <= hi:
            raise Reject(f"must be between {lo} and {hi}, found {n}")
        return n

    def _seconds(self, node: Node) -> float:
        what = "a number of seconds like 5 or 0.5"
        scalar = self._scalar(node, what)
        if quoted(scalar) or not NUMBER_RE.fullmatch(scalar.value):
            raise Reject(f"expected {what}, found {show(scalar)}")
        value = float(scalar.value)
        if value < 0:
            raise Reject(f"must be >= 0, found {scalar.value}")
        if value > MAX_SECONDS:
            raise Reject(f"must be <= {MAX_SECONDS:g} (one day), found {scalar.value}")
        return value

    def _bool(self, node: Node) -> bool:
        what = "true or false"
        scalar = self._scalar(node, what)
        value = BOOLEANS.get(scalar.value.lower())
        if value is None:
            raise Reject(f"expected {what} (or yes/no, on/off), found {show(scalar)}")
        return value

