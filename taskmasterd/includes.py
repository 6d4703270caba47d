"""Which files `taskmasterd: {include: [...]}` names (issue 19).

Each pattern is a path relative to the including file's directory (or
absolute); a pattern with glob characters (* ? [) may match nothing (an
empty conf.d), one without them must name a file. Matches are taken sorted
by path, pattern after pattern, each file once (two patterns naming the
same file, or a pattern naming the main file, read it once) and at most
MAX_INCLUDED_FILES of them. Reading and validating them is config.py's job.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

# The most files a configuration may include: each is read, composed and
# kept until the whole tree is checked. A `/*` pattern must not read a disk.
MAX_INCLUDED_FILES = 1000
MAX_PATTERN = 4096  # characters of one pattern (PATH_MAX)
MAX_PATTERNS = 100  # patterns in `include` (each is a directory scan)

_MAGIC_RE = re.compile(r"[*?[]")


@dataclass(frozen=True)
class Included:
    item: int  # index of the pattern that named it first
    name: str  # as issues name it: the pattern joined to the including file's name


@dataclass(frozen=True)
class Problem:
    item: int  # index of the pattern at fault
    message: str


def is_glob(pattern: str) -> bool:
    return _MAGIC_RE.search(pattern) is not None


def expand(including: str, patterns: Sequence[str]) -> tuple[list[Included], list[Problem]]:
    """The files `patterns` name, in order, each once; and what is wrong
    with the patterns. `including` is the including file's name (as given:
    included names are shown relative to it, as it is)."""
    base = os.path.dirname(including)
    seen = {_identity(including)}
    out: list[Included] = []
    problems: list[Problem] = []
    for item, pattern in enumerate(patterns):
        if len(pattern) > MAX_PATTERN:
            problems.append(Problem(item, f"the pattern is {len(pattern)} characters long; "
                                          f"at most {MAX_PATTERN}"))
            continue
        joined = os.path.normpath(os.path.join(base, pattern))
        room = MAX_INCLUDED_FILES - len(out)
        if is_glob(pattern):
            # Bounded before sorting: a pattern matching a million files is refused
            # after MAX_INCLUDED_FILES + 1 of them, not listed whole.
            names = sorted(itertools.islice(glob.iglob(joined), MAX_INCLUDED_FILES + 1))
        else:
            if not os.path.lexists(joined):
                problems.append(Problem(item, f"no file {joined}: a path without glob characters "
                                              "(* ? [) must name a file; write a glob such as "
                                              "'conf.d/*.yaml' to allow none"))
                continue
            names = [joined]
        fresh = []
        for name in names:
            identity = _identity(name)
            if identity not in seen:
                seen.add(identity)
                fresh.append(name)
        if len(fresh) > room:
            problems.append(Problem(item, f"the include patterns name more than "
                                          f"{MAX_INCLUDED_FILES} files; at most "
                                          f"{MAX_INCLUDED_FILES} are read"))
            break
        out.extend(Included(item, name) for name in fresh)
    return out, problems


def _identity(name: str) -> str:
    # Symlinks followed: conf.d/web.yaml -> ../available/web.yaml and a
    # pattern naming available/web.yaml read the file once.
    return os.path.realpath(name)
