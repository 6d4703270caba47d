"""Composing a config file into one YAML node tree, or located errors.

libyaml when PyYAML has it; PyYAML's own parser again for a file libyaml
rejects, so that the syntax errors keep PyYAML's wording (with hints). The
tree is then checked: tags outside YAML's core schema and nesting deeper
than MAX_DEPTH are refused, each at its place, before any key is read.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import Node, ScalarNode, SequenceNode

from taskmasterd.yamlissues import IssueLog

# The tags PyYAML's resolver gives plain scalars (YAML 1.1).
TAG = "tag:yaml.org,2002:"
NULL = TAG + "null"
BOOL = TAG + "bool"
INT = TAG + "int"
FLOAT = TAG + "float"
STR = TAG + "str"
TIMESTAMP = TAG + "timestamp"
MERGE = TAG + "merge"

# Tags a node may carry explicitly, when they only restate what YAML would
# resolve anyway (`!!int 3`, `!!map {...}`); `!!str` is accepted on any
# scalar. Anything else (`!!binary`, `!!python/object`, `!!int "sleep 1"`,
# `!local`) is refused: the schema reads text, and a tag that changes the
# meaning of a value would be silently ignored.
SEQ = TAG + "seq"
MAP = TAG + "map"
CORE_SCALAR_TAGS = frozenset({NULL, BOOL, INT, FLOAT, STR, TIMESTAMP, MERGE})
# The deepest nesting of mappings and lists accepted. Taskmaster's schema
# needs 4 levels; PyYAML composes recursively (1,000 nested '[' overflowed
# Python's stack), and libyaml stops at 1,000 levels anyway.
MAX_DEPTH = 100


class Composer(IssueLog):
    """Composes one file (`_compose`), recording what is wrong with it."""

    def _compose(self) -> Node | None:
        # libyaml composes ~10x faster (1000 programs: 30 ms instead of
        # 300 ms of the daemon's start-up); its node tree is the same (the
        # tags are resolved by the same Python resolver), only its error
        # messages and marks differ. So a file libyaml finds fault with is
        # parsed again by PyYAML, whose messages the hints below explain.
        # Its character offsets are not PyYAML's when the text starts with a
        # BOM; with odd line breaks positions come from the offsets: PyYAML then.
        fast = getattr(yaml, "CSafeLoader", None)
        if fast is not None and not self._odd_breaks:
            try:
                root, second = _compose_with(fast(self.text))
                if second is None:
                    self._check_tree(root)
                    return root
            except yaml.YAMLError:
                pass
        try:
            loader = _DepthCappedLoader(self.text)
        except yaml.reader.ReaderError as e:
            self._reader_error(e)
            self.fail()
        try:
            root, second = _compose_with(loader)
        except yaml.reader.ReaderError as e:
            self._reader_error(e)
            self.fail()
        except yaml.MarkedYAMLError as e:
            self._syntax_error(e)
            self.fail()
        except yaml.YAMLError as e:
            self.error(None, "", f"invalid YAML: {e}")
            self.fail()
        if second is not None:
            self.error(
                _Mark(second),
                "",
                "the file holds more than one YAML document (a '---' or '...' "
                "separator); expected a single document",
            )
        self._check_tree(root)
        return root

    def _check_tree(self, root: Node | None) -> None:
        """Refuse tags outside the core schema and nesting deeper than
        MAX_DEPTH, each located; fail when there is any.

        Iterative (no recursion on hostile depth), and each node is visited
        once even when aliases share it (an alias bomb costs its size, not
        its expansion). Key paths are worked out only when there is a
        problem to report."""
        if root is None:
            return
        problems: list[tuple[Node, str]] = []
        resolved: dict[str, str] = {}  # plain-scalar text -> its implicit tag
        seen: set[int] = set()
        todo: list[tuple[Node, int]] = [(root, 1)]
        while todo:
            node, depth = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if type(node) is ScalarNode and node.tag == STR:
                continue  # the common case, first
            problem = _tag_problem(node, resolved)
            if problem is not None:
                problems.append((node, problem))
                continue
            if isinstance(node, ScalarNode):
                continue
            if depth > MAX_DEPTH:
                problems.append((node, f"mappings and lists nested more than {MAX_DEPTH} "
                                       "levels deep; Taskmaster's configuration needs 4"))
                break
            # Pushed last first: nodes are met in document order, so a node
            # shared through aliases counts at the depth where it is written.
            if isinstance(node, SequenceNode):
                todo.extend((item, depth + 1) for item in reversed(node.value))
            else:
                for k, v in reversed(node.value):
                    todo.append((v, depth + 1))
                    todo.append((k, depth + 1))
        if not problems:
            return
        paths = self._keypaths(root, {id(n) for n, _ in problems})
        for node, problem in problems:
            self.error(node, paths.get(id(node), ""), problem)
        self.fail()

    def _keypaths(self, root: Node, wanted: set[int]) -> dict[int, str]:
        """The key path where each node of `wanted` is first met (id -> path)."""
        out: dict[int, str] = {}
        seen: set[int] = set()
        todo: list[tuple[Node, str, int]] = [(root, "", 1)]
        while todo and len(out) < len(wanted):
            node, keypath, depth = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in wanted:
                out[id(node)] = keypath
            if isinstance(node, ScalarNode) or depth > MAX_DEPTH:
                continue
            if isinstance(node, SequenceNode):
                for i, item in reversed(list(enumerate(node.value))):
                    todo.append((item, f"{keypath}[{i}]", depth + 1))
            else:
                for k, v in reversed(node.value):
                    sub = self._join(keypath, k.value) if isinstance(k, ScalarNode) else keypath
                    todo.append((v, sub, depth + 1))
                    todo.append((k, keypath, depth + 1))
        return out

    def _reader_error(self, e: yaml.reader.ReaderError) -> None:
        code = ord(e.character) if isinstance(e.character, str) else e.character
        before = self.text[: e.position]
        line = before.count("\n")
        column = e.position - (before.rfind("\n") + 1)
        self.error(
            _Mark(yaml.Mark("", e.position, line, column, None, 0)),
            "",
            f"invalid YAML: unacceptable character #x{code:04x}"
            f" ({e.reason}); remove it or write it as an escape in a double-quoted string",
        )

    def _syntax_error(self, e: yaml.MarkedYAMLError) -> None:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "syntax error"
        message = f"invalid YAML: {problem}"
        if e.context and e.problem and e.context_mark is not None:
            message += f" ({e.context} started at line {e.context_mark.line + 1})"
        if "'\\t'" in problem:
            message += "; indent with spaces, not tabs"
        elif "expected <block end>" in problem:
            message += "; check the indentation: keys of one mapping must start in the same column"
        elif "mapping values are not allowed here" in problem:
            message += "; check the indentation, or quote a value that contains ': '"
        self.error(_Mark(mark) if mark is not None else None, "", message)

    @staticmethod
    def _join(keypath: str, key: str) -> str:
        return f"{keypath}.{key}" if keypath else key


def _compose_with(loader: yaml.SafeLoader | yaml.CSafeLoader) -> tuple[Node | None, Any]:
    """The first document's node tree, and where a second one starts (None if
    none: else a yaml.Mark, or libyaml's own Mark class: Any)."""
    try:
        root: Node | None = loader.get_node() if loader.check_node() else None
        event = loader.peek_event() if loader.check_node() else None
    finally:
        loader.dispose()
    return root, None if event is None else event.start_mark


_RESOLVER: Any = yaml.resolver.Resolver()  # PyYAML's methods are untyped


def _tag_problem(node: Node, resolved: dict[str, str]) -> str | None:
    """Why a node's tag is refused, or None (see CORE_SCALAR_TAGS).
    `resolved` caches the implicit tag of each scalar text met."""
    tag = node.tag
    if isinstance(node, ScalarNode):
        if tag == STR:
            return None
        if tag in CORE_SCALAR_TAGS:
            # Implicit, or an explicit tag that says what the text is anyway.
            implicit = resolved.get(node.value)
            if implicit is None:
                implicit = resolved[node.value] = _RESOLVER.resolve(
                    ScalarNode, node.value, (True, False))
            if implicit == tag:
                return None
            shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
            return (f"the tag '{_short(tag)}' does not fit the value {shown!r}; "
                    "remove the tag")
    elif tag == (SEQ if isinstance(node, SequenceNode) else MAP):
        return None
    return (f"unsupported YAML tag '{_short(tag)}'; only plain YAML is read "
            "(strings, numbers, booleans, null, lists, mappings): remove the tag")


def _short(tag: str) -> str:
    return "!!" + tag[len(TAG):] if tag.startswith(TAG) else tag


class _DepthCappedLoader(yaml.SafeLoader):
    """PyYAML's pure loader with the composer's recursion capped at MAX_DEPTH
    (for files libyaml refused, re-read for PyYAML's error messages)."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH and not self.check_event(
                    yaml.ScalarEvent, yaml.AliasEvent):
                event: Any = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None,
                    f"mappings and lists nested more than {MAX_DEPTH} levels deep; "
                    "Taskmaster's configuration needs 4", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Mark(Node):
    """A stand-in node carrying only a position (for parser errors)."""

    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("", None, mark, mark)
