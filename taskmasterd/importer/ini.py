"""Reading a supervisord configuration as supervisord 4.x reads it.

supervisord parses with Python's RawConfigParser (inline comments `;` and
`#` after whitespace, `strict=False`: a repeated section or option merges,
the later wins), replaces `%(here)s` in each file by that file's directory,
and reads the main file's `[include] files=` (whitespace-separated globs,
relative to the main file's directory, sorted; included files do not
include further). We parse each file with that same parser, so values are
exactly supervisord's, and scan the text once more for the line of each
section and option (configparser does not keep them) for the report.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from dataclasses import dataclass, field

_SECTION_RE = re.compile(r"\[(?P<name>.+)\]")
_OPTION_RE = re.compile(r"(?P<key>[^=:\s][^=:]*?)\s*[=:]")


class InputError(Exception):
    """The configuration cannot be read (missing, unreadable, not INI)."""


@dataclass
class Section:
    name: str  # as written: "program:web"
    path: str  # the file that defines it (the first one, when merged)
    line: int
    options: dict[str, str] = field(default_factory=dict)  # lower-cased keys, as supervisord
    lines: dict[str, int] = field(default_factory=dict)  # option -> its line
    files: dict[str, str] = field(default_factory=dict)  # option -> its file (merges)

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def label(self) -> str:
        return self.name.split(":", 1)[1] if ":" in self.name else ""

    def where(self, option: str | None = None) -> tuple[str, int]:
        if option is None or option not in self.lines:
            return self.path, self.line
        return self.files.get(option, self.path), self.lines[option]


@dataclass
class SourceFile:
    path: str  # as found (the main file as given; includes joined to its directory)
    sections: list[Section]


@dataclass
class Tree:
    main: SourceFile
    includes: list[SourceFile]  # in supervisord's reading order
    unmatched: list[tuple[str, int, str]]  # (file, line, pattern) of include globs matching nothing


def _parser() -> configparser.RawConfigParser:
    # supervisord's UnhosedConfigParser defaults on Python 3.
    return configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)


def _line_numbers(text: str) -> dict[tuple[str, str | None], int]:
    """(section, option or None) -> 1-based line of its first appearance.
    Continuation lines (indented) and comments are skipped, as the parser does."""
    out: dict[tuple[str, str | None], int] = {}
    section: str | None = None
    for n, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip()
        if not stripped or stripped[0] in ";#":
            continue
        if raw[0] in " \t" and section is not None:
            continue  # a continuation of the previous value
        m = _SECTION_RE.match(stripped)
        if m is not None:
            section = m.group("name")
            out.setdefault((section, None), n)
            continue
        m = _OPTION_RE.match(stripped)
        if m is not None and section is not None:
            out.setdefault((section, m.group("key").strip().lower()), n)
    return out


def read_file(path: str) -> SourceFile:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    parser = _parser()
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise InputError(f"{path}: not a supervisord configuration: {exc}".replace("\n", " ")) from None
    lines = _line_numbers(text)
    here = os.path.dirname(os.path.abspath(path))
    sections = []
    for name in parser.sections():
        sec = Section(name, path, lines.get((name, None), 0))
        for key, value in parser.items(name):
            # supervisord replaces %(here)s textually, per file, before any other expansion
            sec.options[key] = value.replace("%(here)s", here)
            sec.lines[key] = lines.get((name, key), sec.line)
            sec.files[key] = path
        sections.append(sec)
    return SourceFile(path, sections)


def read_tree(path: str) -> Tree:
    """The main file and the files its [include] names, as supervisord finds them."""
    if not os.path.isfile(path):
        what = "a directory, not a supervisord.conf" if os.path.isdir(path) else \
            "not a regular file" if os.path.exists(path) else "no such file"
        raise InputError(f"{path}: {what}")
    main = read_file(path)
    includes: list[SourceFile] = []
    unmatched: list[tuple[str, int, str]] = []
    inc = next((s for s in main.sections if s.name == "include"), None)
    if inc is not None and "files" in inc.options:
        base = os.path.dirname(os.path.abspath(path))
        line = inc.lines["files"]
        # ENV_ expansions in files= are supervisord's too; done with our environment
        patterns = expand_environ(inc.options["files"]).split()
        for pattern in patterns:
            full = os.path.join(base, pattern)
            found = sorted(glob.glob(full))
            if not found:
                unmatched.append((path, line, full))
            for name in found:
                includes.append(read_file(name))
    return Tree(main, includes, unmatched)


_ENV_RE = re.compile(r"%\(ENV_(\w+)\)s")


def expand_environ(text: str) -> str:
    return _ENV_RE.sub(lambda m: os.environ.get(m.group(1), m.group(0)), text)
