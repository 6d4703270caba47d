"""`taskctl attach PROCESS`: the console of a process started with
`console: true`, like tmux's or screen's: its output (the scrollback first)
and, unless --read-only, the keyboard.

The D-Bus part is this module, and thin: subscribed to the process's state
changes first (an exit is never missed), then `WatchConsole` (the output
socket), then `OpenConsole` (the terminal, written only); the pump between
them and the user's terminal is `taskctl.console`. Several viewers may be
attached at once; all that are not read-only type into the same terminal
(as tmux's clients), and the latest to attach or resize sets its size.

Exit codes: 0 detached, or the process exited (the message says how);
1 the console closed with no exit seen (taskmasterd drops a viewer that
fell too far behind), or an error (NoConsole, NotRunning, AccessDenied);
2 bad detach keys; 4 no such process; 7 taskmasterd unreachable or gone;
SIGTERM and SIGHUP end it with the terminal restored, then by that signal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from taskctl import console, detachkeys
from taskctl.console import End
from taskctl.context import Context
from taskctl.exitcodes import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from taskctl.format import error_line, exit_code_for
from taskctl.model import UP_STATES, CallError, Event, OwnerChanged, StateChange
from taskmasterd.states import describe_status

if TYPE_CHECKING:
    from taskctl.client import Client

# States in which the attached process is still alive (STOPPING: not yet down).
ALIVE = UP_STATES


def chosen_keys(given: bytes | None, environ: Mapping[str, str]) -> bytes:
    """--detach-keys, else $TASKCTL_DETACH_KEYS, else Ctrl-] d. ValueError
    names the environment variable when its value is bad."""
    if given is not None:
        return given
    text = environ.get(detachkeys.ENV)
    if not text:
        return detachkeys.parse(detachkeys.DEFAULT)
    try:
        return detachkeys.parse(text)
    except ValueError as exc:
        raise ValueError(f"${detachkeys.ENV}: {exc}") from None


# ---- the process's end, from the bus ---------------------------------------------


class ExitWatch:
    """`console.Watcher` on the bus: the process's exit (a state change of
    `process` out of the live states, for `pid` when known), and whether
    taskmasterd is on the bus."""

    def __init__(self, client: Client, process: str, pid: int) -> None:
        self.client = client
        self.process = process
        self.pid = pid
        self.exit: StateChange | None = None
        self.gone = False  # taskmasterd left the bus (and is not back)

    def fileno(self) -> int | None:
        return self.client.bus_fd()

    def poll(self) -> bool:
        """Take every event received (none is waited for)."""
        while self.exit is None:
            event = self.client.next_event(0)
            if event is None:
                break
            self.on_event(event)
        return self.exit is not None

    def on_event(self, event: Event) -> None:
        if isinstance(event, OwnerChanged):
            self.gone = not event.owner
        elif is_exit(event, self.process, self.pid):
            assert isinstance(event, StateChange)
            self.exit = event


def is_exit(event: Event, process: str, pid: int) -> bool:
    """Whether `event` is the end of the attached process: its pid (0: not
    known, any end of that process) leaving STARTING/RUNNING/STOPPING."""
    return (isinstance(event, StateChange) and event.process == process
            and event.new not in ALIVE and (pid == 0 or event.pid == pid))


def attached_line(process: str, pid: int, keys: bytes, read_only: bool) -> str:
    who = f"{process} (pid {pid})" if pid else process
    mode = ", read-only" if read_only else ""
    return f"attached to {who}{mode}; detach: {detachkeys.describe(keys)}"


def end_line(process: str, end: End, watch: ExitWatch | None) -> str | None:
    """taskctl's last words (None: none, e.g. the terminal is gone)."""
    if end.how == console.DETACHED:
        return f"detached from {process}"
    if end.how == console.EXITED and watch is not None and watch.exit is not None:
        return f"{process} exited: {describe_status(watch.exit.exit_status)}"
    if end.how == console.CLOSED:
        return f"{process}: the console closed"
    return None


# ---- the command ---------------------------------------------------------------------


def cmd_attach(ctx: Context, args: argparse.Namespace) -> int:
    try:
        keys = chosen_keys(args.detach_keys, os.environ)
    except ValueError as exc:
        ctx.error(f"taskctl: {exc}")
        return EXIT_USAGE
    stdin, stdout = _fd(sys.stdin), _fd(ctx.out)
    if stdout is None:
        ctx.error("taskctl: attach writes to a file descriptor; this output has none")
        return EXIT_ERROR
    client, process = ctx.client, args.process
    with client.subscription():  # first: the process's exit cannot be missed
        try:
            output = client.watch_console(process)
        except CallError as exc:
            return _refused(ctx, process, exc)
        terminal = None
        try:
            if not args.read_only:
                terminal = client.open_console(process)
            pid = _pid(client, process)
            watch = ExitWatch(client, process, pid)
            ctx.out.flush()
            ctx.error(attached_line(process, pid, keys, args.read_only))
            end = session(stdin=stdin, stdout=stdout, output=output, terminal=terminal,
                          keys=keys, watch=watch)
        except CallError as exc:
            return _refused(ctx, process, exc)
        finally:
            for fd in (output, terminal):
                if fd is not None:
                    os.close(fd)
    if end.how == console.CLOSED and watch.gone:
        raise client.gone("taskmasterd left the bus while taskctl was attached")
    line = end_line(process, end, watch)
    if line is not None:
        ctx.error(line)
    if end.how == console.SIGNALLED:
        signal.raise_signal(end.signum)  # the disposition from before: by default, the end
        return 128 + end.signum
    return EXIT_OK if end.how in (console.DETACHED, console.EXITED) else EXIT_ERROR


def session(*, stdin: int | None, stdout: int, output: int, terminal: int | None,
            keys: bytes, watch: console.Watcher | None) -> End:
    """The user's terminal in raw mode (when stdin is one) around the pump,
    restored on every way out; the modes a program left on switched off."""
    console.set_nonblocking(output)
    # The size is a terminal user's: a script (stdin not a terminal) leaves it alone.
    resize = console.SizeForwarder(stdin, terminal) \
        if terminal is not None and console.isatty(stdin) else None
    signals = console.Signals.install()
    try:
        with console.raw_mode(stdin):
            end = console.pump(output=output, stdout=stdout, stdin=stdin, terminal=terminal,
                               detach=detachkeys.DetachFilter(keys), watcher=watch,
                               signals=signals, resize=resize)
    except BaseException:  # the bus lost, Ctrl-C from a pipe's terminal: the same cleanup
        console.finish_output(stdout, End(console.HANGUP, fresh=False))
        raise
    else:
        console.finish_output(stdout, end)
    finally:
        if signals is not None:
            signals.restore()
            if signal.SIGWINCH in signals.seen:
                # The size changed while attached: the shell's readline, whose
                # SIGWINCH handler is back, learns it now.
                os.kill(os.getpid(), signal.SIGWINCH)
    return end


def _refused(ctx: Context, process: str, exc: CallError) -> int:
    """One line; the daemon's message says what to do (`web` with several
    processes: BadName, "name one, e.g. web:0")."""
    ctx.error(error_line(process, exc))
    return exit_code_for(exc.name)


def _pid(client: Client, process: str) -> int:
    """The attached process's pid (0: it is not up now: any end of it counts)."""
    for row in client.list_processes():
        if row.name == process:
            return row.pid if row.state in ALIVE else 0
    return 0


def _fd(stream: TextIO | None) -> int | None:
    try:
        return stream.fileno() if stream is not None else None
    except (AttributeError, OSError, ValueError):
        return None
