"""Issues in a config file, each located: what `NodeReader` records.

`IssueLog` keeps every issue found in one file (not just the first), each at
`file:line:column` with its key path, deduplicated and capped (MAX_ISSUES);
positions count lines at '\n' only, as editors and `sed -n` do, even in a
file holding a lone CR or a U+2028 (YAML counts those as line breaks).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import NoReturn

from yaml.nodes import Node


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


# The most issues reported for one file. A 16 MB file of bad keys made
# 1.3 million of them: a minute of work and a D-Bus error (Reload) bigger
# than any bus accepts. Past this many, reading stops.
MAX_ISSUES = 100
MAX_KEYPATH = 200  # characters of a key path shown in an issue
MAX_MESSAGE = 1000  # characters of an issue's message

# Line breaks YAML counts but editors, grep -n and sed -n Np do not: a lone CR,
# NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR. A file holding one gets its issue
# positions recomputed from the character offset, lines counted by '\n' only.
ODD_BREAK_RE = re.compile("\r(?!\n)|[\x85\u2028\u2029]")


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


class IssueLog:
    """The issues of one file (its text, for positions, and its name)."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.file = path
        self.issues: list[ConfigIssue] = []
        self._seen: set[tuple[int, int, str, str]] = set()
        self._odd_breaks = ODD_BREAK_RE.search(text) is not None
        self._line_starts: list[int] | None = None

    def where(self, node: Node) -> tuple[int, int]:
        """1-based (line, column) of a node, as issues give it: a value
        checked once the file is loaded (an alert URL, an output) keeps it."""
        if self._odd_breaks:
            return self._position(node.start_mark.index)
        return node.start_mark.line + 1, node.start_mark.column + 1

    def error(self, node: Node | None, keypath: str, message: str) -> None:
        line, column = (1, 1) if node is None else self.where(node)
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


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit - 40]}... ({len(text)} characters)"

