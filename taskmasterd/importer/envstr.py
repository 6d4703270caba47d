"""supervisord's `environment=KEY="val",KEY2=val` (datatypes.dict_of_key_value_pairs).

supervisord expands `%(...)s` first and then splits with a non-POSIX shlex
whose word characters include `/.+-():`; each pair is KEY = value, pairs
are separated by one token (the comma), and quotes are stripped from the
ends of the value. We split before expanding (the expansions are
translated, not done): each `%(...)X` is swapped for a placeholder made of
word characters, then put back.
"""

from __future__ import annotations

import re
import shlex

_EXPANSION_RE = re.compile(r"%%|%\([^)]*\)[#0\- +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]")


class EnvironmentError_(ValueError):
    pass


def parse_environment(text: str) -> list[tuple[str, str]]:
    """The pairs in order (a repeated KEY: the last wins, as a dict)."""
    saved: list[str] = []

    def hide(m: re.Match[str]) -> str:
        saved.append(m.group(0))
        return f"TMIMPORTx{len(saved) - 1}x"

    hidden = _EXPANSION_RE.sub(hide, text)
    lexer = shlex.shlex(hidden)
    lexer.wordchars += "/.+-():"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise EnvironmentError_(f"cannot split: {exc}") from None
    pairs: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        kv = tokens[i:i + 3]
        if len(kv) != 3 or kv[1] != "=":
            raise EnvironmentError_("expected KEY=value pairs separated by commas")
        pairs[_restore(kv[0], saved)] = _restore(kv[2].strip("'\""), saved)
        i += 4
    return list(pairs.items())


def _restore(text: str, saved: list[str]) -> str:
    return re.sub(r"TMIMPORTx(\d+)x", lambda m: saved[int(m.group(1))], text)
