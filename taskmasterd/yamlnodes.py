"""Reading a YAML node tree, with every problem located.

PyYAML's *nodes* (not the loaded Python objects) keep the line and column
of every value and the text as written, so a reader built on them can say
`file:line:column: key.path: what is wrong, what was expected` and is not
bitten by YAML 1.1's resolution (022 an octal int, `on` a boolean).

`NodeReader` composes a file (libyaml when PyYAML has it; PyYAML's own
parser again for a file libyaml rejects, so that the syntax errors keep
PyYAML's wording), records every issue instead of stopping at the first,
walks mappings with merge keys and duplicate keys handled, and reads typed
scalars (`_text`, `_int`, `_seconds`, `_bool`...) that raise `Reject` with
"expected X, found Y". It knows nothing of Taskmaster's schema: that is
`taskmasterd.config`, which subclasses it.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, located and explained."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    keypath: str  # e.g. "programs.nginx.umask"
    message: str  # what is wrong and what is expected

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        if self.keypath:
            return f"{where}: {self.keypath}: {self.message}"
        return f"{where}: {self.message}"


@dataclass
class ConfigError(Exception):
    """Every problem found in a file; raised by load_config."""

    issues: list[ConfigIssue] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


# The tags PyYAML's resolver gives plain scalars (YAML 1.1).
TAG = "tag:yaml.org,2002:"
NULL = TAG + "null"
BOOL = TAG + "bool"
INT = TAG + "int"
FLOAT = TAG + "float"
STR = TAG + "str"
TIMESTAMP = TAG + "timestamp"
MERGE = TAG + "merge"

BOOLEANS: dict[str, bool] = {
    "true": True,
    "yes": True,
    "on": True,
    "false": False,
    "no": False,
    "off": False,
}

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
# The most issues reported for one file. A 16 MB file of bad keys made
# 1.3 million of them: a minute of work and a D-Bus error (Reload) bigger
# than any bus accepts. Past this many, reading stops.
MAX_ISSUES = 100
MAX_KEYPATH = 200  # characters of a key path shown in an issue
MAX_MESSAGE = 1000  # characters of an issue's message

MAX_SECONDS = 86400.0  # the longest duration `_seconds` accepts: one day
INT_RE = re.compile(r"-?[0-9]+")
# Line breaks YAML counts but editors, grep -n and sed -n Np do not: a lone CR,
# NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR. A file holding one gets its issue
# positions recomputed from the character offset, lines counted by '\n' only.
ODD_BREAK_RE = re.compile("\r(?!\n)|[\x85\u2028\u2029]")
NUMBER_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_PAIR_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def surrogate_problem(value: str) -> str | None:
    """What is wrong with a string holding a surrogate code point (written as a
    "\\udXXX" escape), or None. Such a string cannot be encoded, so it could
    reach neither execve, nor open, nor the environment, nor D-Bus."""
    found = _SURROGATE_RE.search(value)
    if found is None:
        return None
    pair = _PAIR_RE.search(value)
    if pair is not None:
        char = pair.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        return (f"a string with the surrogate pair \\u{ord(pair.group()[0]):04x}"
                f"\\u{ord(pair.group()[1]):04x}: YAML's \\u escapes are not combined; "
                f"write \\U{ord(char):08X} or the character itself")
    return (f"a string with the lone surrogate \\u{ord(found.group()):04x}, which is not "
            "a character; remove it")


def _printable(text: str) -> str:
    if _SURROGATE_RE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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


class NodeReader:
    """Composes one file and reads its node tree, recording every issue."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.file = path
        self.issues: list[ConfigIssue] = []
        self._seen: set[tuple[int, int, str, str]] = set()
        self._odd_breaks = ODD_BREAK_RE.search(text) is not None
        self._line_starts: list[int] | None = None

    # ---- recording

    def error(self, node: Node | None, keypath: str, message: str) -> None:
        if node is None:
            line = column = 1
        elif self._odd_breaks:
            line, column = self._position(node.start_mark.index)
        else:
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
        # A key or value quoted back may hold a lone surrogate (a "\\udXXX"
        # escape): shown as that escape, so that the issue can be printed,
        # logged and sent over D-Bus. A key or value of a megabyte would be
        # quoted whole in the message and the key path (and in a D-Bus reply
        # past the bus's limit): both are clipped.
        keypath = _clip(_printable(keypath), MAX_KEYPATH)
        message = _clip(_printable(message), MAX_MESSAGE)
        key = (line, column, keypath, message)
        if key not in self._seen:
            self._seen.add(key)
            if len(self.issues) >= MAX_ISSUES:
                self.issues.append(ConfigIssue(
                    self.file, line, column, "",
                    f"more than {MAX_ISSUES} errors: the rest of the file was not checked; "
                    "fix these first"))
                self.fail()
            self.issues.append(ConfigIssue(self.file, line, column, keypath, message))

    def _position(self, index: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset, lines split at '\n' only."""
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        index = max(0, min(index, len(self.text)))
        line = bisect.bisect_right(self._line_starts, index)
        return line, index - self._line_starts[line - 1] + 1

    def fail(self) -> NoReturn:
        self.issues.sort(key=lambda i: (i.line, i.column))
        raise ConfigError(self.issues)

    # ---- composing

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

    @staticmethod
    def _join(keypath: str, key: str) -> str:
        return f"{keypath}.{key}" if keypath else key

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


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit - 40]}... ({len(text)} characters)"


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
