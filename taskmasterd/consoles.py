"""Manager.OpenConsole and Manager.WatchConsole (issue 18, docs/console.md):
a console process's terminal and its output, for `taskctl attach`.

The daemon is not in the keystrokes' path: OpenConsole hands out the
terminal's master itself (a duplicate of the copy the daemon holds for the
log writer, taskmasterd/logpipes.py), and the client writes into it. Output
has one reader, the log writer (a terminal's read takes the bytes): it
records them and copies them to each viewer's socket (WatchConsole,
taskmasterd/consolefan.py).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from taskmasterd import targets
from taskmasterd.errors import BadName, NoConsole, NotRunning

if TYPE_CHECKING:
    from taskmasterd.supervisor import Supervisor


def _console_process(sup: Supervisor, name: str) -> str:
    """`name`'s process name, checked: it exists and runs on a console."""
    names = targets.resolve(name, sup.config.programs)  # BadName, NoSuchProgram
    if len(names) != 1:
        raise BadName(f"{name} names {len(names)} processes, each with its own console: "
                      f"name one, e.g. {names[0]}")
    slot = sup.slots[names[0]]
    if not slot.process.config.console:
        raise NoConsole(f"{name} does not run on a console: its program needs console: true "
                        "(its output can be followed with taskctl tail -f)")
    return slot.process.name


def open_console(sup: Supervisor, name: str) -> int:
    """A duplicate of `name`'s terminal master (the caller sends and closes
    it). Only written to by the client: a read would take output from the
    log writer."""
    process = _console_process(sup, name)
    master = sup.logpipes.terminal(process)
    if master is None:
        raise NotRunning(f"{name} is not running: it has no terminal to attach to")
    return os.dup(master)


def watch_console(sup: Supervisor, name: str) -> int:
    """One end of a new stream socket (the caller sends and closes it): the
    log writer writes `name`'s scrollback into the other end, then its
    output as it comes, and closes it when the terminal closes."""
    process = _console_process(sup, name)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.shutdown(socket.SHUT_RD)  # nothing comes back this way
    if not sup.logpipes.watch(process, ours.detach()):
        theirs.close()
        raise NotRunning(f"{name} is not running: it has no terminal to watch")
    return theirs.detach()
