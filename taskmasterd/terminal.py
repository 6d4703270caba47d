"""Pseudo-terminals for console programs (issue 18, docs/console.md): the
system calls taskmasterd/spawn.py makes for `console: true`.

The program gets the terminal's slave side as stdin, stdout and stderr, in
a session of its own whose controlling terminal it is (so job control,
^C from an attached viewer, SIGWINCH and SIGHUP work as on a real
terminal); the master side goes to the log writer, which records its
output, and to `taskctl attach` through OpenConsole.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
from collections.abc import Mapping

DEFAULT_ROWS, DEFAULT_COLUMNS = 24, 80  # until a viewer says its size
DEFAULT_TERM = "xterm-256color"  # what nearly every viewer's terminal understands


def open_terminal(owner: int | None) -> tuple[int, int]:
    """(master, slave) of a new pseudo-terminal, both close-on-exec, the
    slave owned by `owner` (a uid; None: the daemon's) as login(1) does, so
    a program running as that user may reopen /dev/tty."""
    master, slave = os.openpty()
    try:
        set_size(master, DEFAULT_ROWS, DEFAULT_COLUMNS)
        if owner is not None and owner != os.geteuid():
            os.fchown(slave, owner, -1)
            os.fchmod(slave, 0o620)
    except OSError:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def set_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    rows, columns, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, columns


def take_controlling_terminal() -> None:
    """In the child, after setsid and before exec (subprocess's preexec_fn):
    its stdin, the slave, becomes the session's controlling terminal. Only
    C-level calls on modules already imported: safe after fork."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def terminal_env(env: Mapping[str, str], program_env: Mapping[str, str]) -> dict[str, str]:
    """`env` (the program's whole environment) with a console's TERM: the
    program's own `env:` TERM if set, else one every common terminal
    renders (the daemon's TERM, if it has one, describes the terminal it
    was started from, not the viewers')."""
    return {**env, "TERM": program_env.get("TERM") or DEFAULT_TERM}


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
