"""The sd_notify protocol, as a program speaks it to its own NOTIFY_SOCKET
(`ready: notify`). Pure: one datagram in, a `Notice` or a refusal out.

A datagram is newline-separated NAME=VALUE assignments (sd_notify(3)); an
assignment repeated in one datagram: the later one wins. What we act on:

    READY=1          the process is up (RUNNING)
    RELOADING=1      noted (a reload in progress)
    STOPPING=1       noted (the process is shutting down)
    STATUS=text      free text, shown by `taskctl status` and on D-Bus
    WATCHDOG=1       a keep-alive ping (`watchdog: SECONDS`)
    WATCHDOG=trigger the process asks to be treated as hung
    WATCHDOG_USEC=n  the process asks for another watchdog period
    MAINPID=n        refused by the supervisor: it supervises what it started
    ERRNO=n          the process reports a failure (an errno number)
    BARRIER=1        sd_notify_barrier(3): the receiver closes the fd it carries

Anything else (FDSTORE=1, EXTEND_TIMEOUT_USEC=..., X_* names, names newer
than this module) is accepted and listed in `Notice.ignored`, so the
supervisor can say what it did not act on. A datagram that is not what the
protocol promises (too long, a NUL byte, not UTF-8, a line that is not an
assignment, a bad number or flag) is refused as a whole, with the reason.
systemd too refuses datagrams that are too long or hold a NUL byte; the
rest it skips silently (READY=yes is simply not READY=1), where a refusal
here says what is wrong: a program that works under systemd sends none
of those.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# As systemd's NOTIFY_BUFFER_MAX (PIPE_BUF): a longer datagram is refused.
MAX_DATAGRAM = 4096
# STATUS text kept (characters): shown in a table and sent on D-Bus, so it
# is bounded well below what a datagram could carry.
MAX_STATUS = 1024
# A refusal quotes at most this much of the offending text.
_QUOTE = 40

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DIGITS = re.compile(r"[0-9]{1,20}\Z")
_PID_MAX = 2**31 - 1  # pid_t; Linux's own limit (pid_max) is lower still
_ERRNO_MAX = 2**31 - 1
_USEC_MAX = 2**64 - 1  # systemd's usec_t (UINT64_MAX: infinity)
# name -> the range accepted
_NUMBERS = {"MAINPID": (1, _PID_MAX), "ERRNO": (0, _ERRNO_MAX), "WATCHDOG_USEC": (0, _USEC_MAX)}
_FLAGS = {"READY": "ready", "RELOADING": "reloading", "STOPPING": "stopping", "BARRIER": "barrier"}
# Characters that would break a one-line display or reorder it on a
# terminal: line and paragraph separators and the bidirectional controls
# (besides the C0/C1 controls, found by category).
_UNSHOWABLE = frozenset("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
                        "\u2066\u2067\u2068\u2069")
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Notice:
    """One accepted datagram. A field is None/False when the datagram did
    not set it (or set it back: READY=0)."""

    ready: bool = False
    reloading: bool = False
    stopping: bool = False
    watchdog: bool = False  # WATCHDOG=1
    watchdog_trigger: bool = False  # WATCHDOG=trigger
    watchdog_usec: int | None = None
    status: str | None = None  # "" when the program cleared it (STATUS=)
    mainpid: int | None = None
    errno: int | None = None
    barrier: bool = False
    ignored: tuple[str, ...] = ()  # names not acted on, first appearance order, once each


def quote(text: str) -> str:
    """`text` for a refusal reason: repr'd (controls escaped), cut short."""
    return repr(text) if len(text) <= _QUOTE else repr(text[:_QUOTE]) + "..."


def clean_status(text: str) -> str:
    """STATUS text made safe to store and show: at most MAX_STATUS
    characters (the last one "…" when cut), controls replaced."""
    if len(text) > MAX_STATUS:
        text = text[:MAX_STATUS - 1] + "…"
    return "".join(REPLACEMENT if c in _UNSHOWABLE or unicodedata.category(c) == "Cc" else c
                   for c in text)


def _number(name: str, value: str, low: int, high: int) -> int | str:
    """A decimal in [low, high], or the refusal reason. Plain digits only
    (no sign, spaces or underscores, which int() would take)."""
    if not _DIGITS.match(value) or not low <= int(value) <= high:
        return f"{name}={quote(value)}: not a number from {low} to {high}"
    return int(value)


def parse(data: bytes) -> Notice | str:
    """One datagram -> the Notice, or a str: why it is refused."""
    if len(data) > MAX_DATAGRAM:
        return f"datagram of {len(data)} bytes: longer than {MAX_DATAGRAM}"
    if not data:
        return "empty datagram"
    if b"\0" in data:
        return f"NUL byte at offset {data.index(0)}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte {exc.start})"
    flags = {"ready": False, "reloading": False, "stopping": False, "barrier": False,
             "watchdog": False, "watchdog_trigger": False}
    numbers: dict[str, int | None] = {"mainpid": None, "errno": None, "watchdog_usec": None}
    status: str | None = None
    ignored: dict[str, None] = {}  # an ordered set
    assigned = False
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line:  # a trailing newline, a blank line: nothing assigned
            continue
        name, eq, value = line.partition("=")
        if not eq or not _NAME.match(name):
            return f"line {lineno} is not NAME=VALUE: {quote(line)}"
        assigned = True
        if name in _FLAGS:
            if value not in ("0", "1"):
                return f"{name}={quote(value)}: not 1 or 0"
            flags[_FLAGS[name]] = value == "1"
        elif name == "WATCHDOG":
            if value not in ("0", "1", "trigger"):
                return f"WATCHDOG={quote(value)}: not 1, trigger or 0"
            flags["watchdog"] = value == "1"
            flags["watchdog_trigger"] = value == "trigger"
        elif name == "STATUS":
            status = clean_status(value)
        elif name in _NUMBERS:
            low, high = _NUMBERS[name]
            number = _number(name, value, low, high)
            if isinstance(number, str):
                return number
            numbers[name.lower()] = number
        else:
            ignored[name] = None
    if not assigned:
        return "no NAME=VALUE assignment"
    return Notice(ready=flags["ready"], reloading=flags["reloading"], stopping=flags["stopping"],
                  watchdog=flags["watchdog"], watchdog_trigger=flags["watchdog_trigger"],
                  watchdog_usec=numbers["watchdog_usec"], status=status, mainpid=numbers["mainpid"],
                  errno=numbers["errno"], barrier=flags["barrier"], ignored=tuple(ignored))
