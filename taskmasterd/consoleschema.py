"""The `console:` keys of a program (issue 18, docs/console.md): the rules
between them and the output keys. Pure: no I/O.

A console program's stdin, stdout and stderr are one pseudo-terminal, so
what it writes to either stream is one stream of terminal output: it is
recorded where `stdout` says (a file, or nothing), never in the journal
(escape sequences and CR LF are not log lines), and `stderr` has nothing
left to say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_SCROLLBACK = 64 * 1024  # bytes of output replayed at attach (tmux keeps lines; we keep bytes)
MAX_SCROLLBACK = 16 * 1024 * 1024


def console_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each rule a program's console keys break; the key
    is where the error is shown."""
    if not values.get("console", False):
        return []
    out: list[tuple[str, str]] = []
    stderr = values.get("stderr")
    # (Output kinds by value: programschema imports this module.)
    if stderr is not None and stderr.kind.value != "auto":
        out.append(("stderr", "a console program's stderr is its terminal (console: true): what it "
                              "writes there is recorded with stdout; remove stderr"))
    stdout = values.get("stdout")
    if stdout is not None and stdout.kind.value == "journal":
        out.append(("stdout", "a console's output is terminal output (escape sequences, CR LF), "
                              "not log lines: stdout must be a file, null or absent (a file in "
                              "logdir), not journal"))
    scrollback = values.get("console_scrollback", DEFAULT_SCROLLBACK)
    if scrollback > MAX_SCROLLBACK:
        out.append(("console_scrollback", f"must be at most 16MB, found {scrollback} bytes"))
    return out
