"""Signal names and numbers as text, shared by the config, the D-Bus
methods and taskctl (pure; imports nothing heavy).

Only ASCII is read: `str.isdigit()` and `int()` accept other scripts' digits
("٩" is 9, SIGKILL) and `str.upper()` maps some non-ASCII letters to ASCII
("ſ" to "S", "ı" to "I"), so a check on the text as given comes first.
"""

from __future__ import annotations

import signal

HINT = "try TERM, HUP, INT, QUIT, KILL, USR1 or USR2 (with or without SIG), or a number"


def parse(text: str) -> signal.Signals:
    """`TERM`, `sigterm`, `SIGTERM`, `15` -> signal.SIGTERM; ValueError (with
    the reason) otherwise."""
    stripped = text.strip()
    if not stripped.isascii():
        raise ValueError(f"unknown signal {text!r}: signal names and numbers are ASCII; {HINT}")
    if stripped.isdigit():
        try:
            return signal.Signals(int(stripped) if len(stripped) <= 6 else -1)
        except ValueError:
            raise ValueError(f"no signal number {stripped}; {HINT}") from None
    name = stripped.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    member = signal.Signals.__members__.get(name)
    if member is None:
        raise ValueError(f"unknown signal {text!r}; {HINT}")
    return member
