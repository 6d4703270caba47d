"""Signal names and numbers as text: the one parser (and its error messages)
shared by the config (stopsignal), the D-Bus Signal methods and taskctl.
Pure; imports nothing heavy.

Only ASCII is read: `str.isdigit()` and `int()` accept other scripts' digits
("٩" is 9, SIGKILL) and `str.upper()` maps some non-ASCII letters to ASCII
("ſ" to "S", "ı" to "I"), so a check on the text as given comes first.
"""

from __future__ import annotations

import signal

HINT = ("expected a signal name like TERM, HUP, INT, QUIT, KILL, USR1 or USR2 (with or without "
        "SIG), or its number")


def parse(text: str) -> signal.Signals:
    """`TERM`, `sigterm`, `SIGTERM`, `15` -> signal.SIGTERM; ValueError
    otherwise, its message saying why (shown as-is by every caller)."""
    stripped = text.strip()
    if not stripped.isascii():
        raise ValueError(f"unknown signal {text!r} (signal names and numbers are ASCII); {HINT}")
    if stripped.isdigit():
        try:
            return signal.Signals(int(stripped) if len(stripped) <= 6 else -1)
        except ValueError:
            raise ValueError(f"{stripped} is not a signal number; {HINT}") from None
    name = stripped.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    member = signal.Signals.__members__.get(name)
    if member is None:
        raise ValueError(f"unknown signal {text!r}; {HINT}")
    return member
