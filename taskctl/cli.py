"""taskctl's command line: parsing, the commands, and their output.

Everything that decides what is printed or which exit code is returned is a
pure function of plain values (`taskctl.model`), tested without a daemon;
`execute` glues them to a `taskctl.client.Client`. Imports stay light: the
client (jeepney) is loaded only when a command needs the daemon.

Exit codes (LSB / supervisorctl): 0 ok, 1 error, 2 bad usage, 3 `status`:
a shown process is not RUNNING, 4 no such program, 7 daemon unreachable,
130 interrupted.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from taskctl.model import (
    UP_STATES,
    CallError,
    Event,
    ProcessRow,
    Reloaded,
    StateChange,
    Unreachable,
)

if TYPE_CHECKING:
    from taskctl.client import Client

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NO_SUCH = 4
EXIT_UNREACHABLE = 7
EXIT_INTERRUPTED = 130

TAIL_BYTES = 1600  # supervisorctl's default
FOLLOW_POLL = 0.2  # seconds between reads of a followed log file
REOPEN_AFTER = 1.0  # seconds without new data before checking for a rotation
GLOB_CHARS = frozenset("*?[")

# name, arguments, summary: `help` and the shell's completion use this.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("status", "[TARGET...]", "state, uptime, restarts of processes (exit 3 when one shown is not RUNNING)"),
    ("start", "TARGET...", "start processes"),
    ("stop", "TARGET...", "stop processes"),
    ("restart", "TARGET...", "stop then start processes"),
    ("signal", "SIG TARGET...", "send a signal (TERM, HUP, USR1, 9, ...) to processes"),
    ("reload", "", "re-read the configuration and apply the changes"),
    ("shutdown", "", "stop every process and taskmasterd itself"),
    ("pid", "[TARGET...]", "pid of taskmasterd, or of processes"),
    ("tail", "[-f] [--stderr] [-c BYTES] PROCESS",
     "end of a process's output (-f: keep following, across rotations)"),
    ("events", "", "follow state changes and reloads (Ctrl-C to stop)"),
    ("alert", "test [URL|INDEX]", "send a test message to every alert target, or to one"),
    ("help", "[COMMAND]", "list the commands, or explain one"),
)
COMMAND_NAMES = tuple(c[0] for c in COMMANDS)
# Commands whose arguments are targets (program, prog:N, glob, all).
TARGET_COMMANDS = frozenset({"status", "start", "stop", "restart", "signal", "pid", "tail"})

ERROR_LABELS = {
    "NoSuchProgram": "no such process",
    "BadName": "bad name",
    "AlreadyStarted": "already started",
    "NotRunning": "not running",
    "ShuttingDown": "shutting down",
    "AccessDenied": "access denied",
    "ConfigInvalid": "invalid configuration",
    "NotAFile": "not a file",
    "NoOutput": "no output yet",
    "Failed": "failed",
}
ACCESS_DENIED = "only root and members of the group taskmaster may do this (refused by the bus policy)"
VERBS = {"start": "started", "stop": "stopped", "restart": "restarted", "signal": "signalled"}


# ---- pure rendering -----------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """H:MM:SS, hours unbounded (as the daemon's descriptions)."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_status(status: int) -> str:
    """An exit status: < 0 means killed by that signal."""
    if status < 0:
        return f"killed by {signal_name(-status)}"
    return f"exit status {status}"


def uptime(row: ProcessRow, now: float) -> float | None:
    """Seconds the process has been up (None unless it is up)."""
    if row.state in UP_STATES and row.pid and row.started_at_us:
        return max(0.0, now - row.started_at_us / 1_000_000)
    return None


def describe_row(row: ProcessRow, now: float) -> str:
    """The last column of `status`: uptime, or what the daemon says (exit
    status, spawn error, ...), then `restarts N` once the process has been
    restarted automatically. The pid has its own column."""
    text = _describe_state(row, now)
    if row.restarts:
        return f"{text}, restarts {row.restarts}" if text else f"restarts {row.restarts}"
    return text


def _describe_state(row: ProcessRow, now: float) -> str:
    up = uptime(row, now)
    if up is not None:
        return f"uptime {format_duration(up)}"
    if row.spawn_error and "spawn error" not in row.description:
        return f"spawn error: {row.spawn_error}"
    text = row.description
    if text.startswith("pid ") and ", " in text:
        text = text.split(", ", 1)[1]
    if not text and row.exit_status:
        text = describe_status(row.exit_status)
    return text


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns, 3 spaces apart; the last column is not padded."""
    table = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    out = []
    for r in table:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + r[len(widths):]
        out.append("   ".join(cells).rstrip())
    return out


def status_lines(rows: Sequence[ProcessRow], now: float) -> list[str]:
    """The `status` table (a header, then one line per process)."""
    return format_table(("NAME", "STATE", "PID", "DESCRIPTION"),
                        [(r.name, r.state, str(r.pid) if r.pid else "-", describe_row(r, now))
                         for r in rows])


def matches(target: str, row: ProcessRow) -> bool:
    """The daemon's target rules: `all`, a glob on program or process names,
    an exact process name (`web`, `web:0`), or a program name."""
    if target == "all":
        return True
    if GLOB_CHARS & set(target):
        return fnmatch.fnmatchcase(row.program, target) or fnmatch.fnmatchcase(row.name, target)
    return target in (row.name, row.program)


def filter_rows(rows: Sequence[ProcessRow], targets: Sequence[str]
                ) -> tuple[list[ProcessRow], list[str]]:
    """(rows selected, in the daemon's order; targets that matched nothing).
    No targets: every row."""
    if not targets:
        return list(rows), []
    missing = [t for t in targets if not any(matches(t, r) for r in rows)]
    return [r for r in rows if any(matches(t, r) for t in targets)], missing


def status_exit_code(rows: Sequence[ProcessRow], missing: Sequence[str] = ()) -> int:
    if missing:
        return EXIT_NO_SUCH
    return EXIT_NOT_RUNNING if any(r.state != "RUNNING" for r in rows) else EXIT_OK


def exit_code_for(error: str) -> int:
    """Exit code for a D-Bus error (short name)."""
    if error in ("NoSuchProgram", "BadName"):
        return EXIT_NO_SUCH
    if error in ("ServiceUnknown", "NameHasNoOwner", "NoReply", "Disconnected"):
        return EXIT_UNREACHABLE
    return EXIT_ERROR


def error_message(exc: CallError) -> str:
    if exc.name == "AccessDenied":
        return ACCESS_DENIED
    return exc.message.strip()


def error_line(target: str, exc: CallError) -> str:
    """supervisorctl's "name: ERROR (reason)" plus the daemon's message."""
    label = ERROR_LABELS.get(exc.name, exc.name)
    message = error_message(exc)
    return f"{target}: ERROR ({label}): {message}" if message else f"{target}: ERROR ({label})"


def action_lines(command: str, names: Sequence[str]) -> list[str]:
    verb = VERBS.get(command, command)
    return [f"{n}: {verb}" for n in names]


def row_json(row: ProcessRow, now: float) -> dict[str, Any]:
    up = uptime(row, now)
    return {
        "name": row.name,
        "program": row.program,
        "state": row.state,
        "pid": row.pid or None,
        "exit_status": row.exit_status,
        "started_at": row.started_at_us / 1_000_000 if row.started_at_us else None,
        "uptime": int(up) if up is not None else None,
        "description": describe_row(row, now),
        "spawn_error": row.spawn_error or None,
        "restarts": row.restarts,
        "last_exit": {"status": row.last_exit_status, "time": row.last_exit_us / 1_000_000,
                      "expected": row.last_exit_expected} if row.last_exit_us else None,
    }


def result_json(target: str, names: Sequence[str] | None, exc: CallError | None = None
                ) -> dict[str, Any]:
    """One target's outcome of start/stop/restart/signal."""
    if exc is None:
        return {"target": target, "ok": True, "processes": list(names or [])}
    return {"target": target, "ok": False, "error": exc.name, "message": error_message(exc)}


def reload_lines(result: Reloaded) -> list[str]:
    lines = [f"{what}: {', '.join(names)}"
             for what, names in (("added", result.added), ("changed", result.changed),
                                 ("removed", result.removed)) if names]
    return lines or ["no changes"]


def reload_json(result: Reloaded) -> dict[str, Any]:
    return {"added": list(result.added), "changed": list(result.changed),
            "removed": list(result.removed)}


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def event_line(event: Event) -> str:
    """One human line per event."""
    if isinstance(event, StateChange):
        details = []
        if event.pid:
            details.append(f"pid {event.pid}")
        if event.new == "EXITED" or (event.exit_status and event.new in
                                     ("STOPPED", "BACKOFF", "FATAL")):
            details.append(describe_status(event.exit_status))
        if event.new == "EXITED":
            details.append("expected" if event.expected else "unexpected")
        tail = f" ({', '.join(details)})" if details else ""
        return f"{clock(event.time)} {event.process}: {event.old} -> {event.new}{tail}"
    if isinstance(event, Reloaded):
        return f"{clock(event.time)} reloaded: " + "; ".join(reload_lines(event))
    if event.owner:
        return f"{clock(event.time)} taskmasterd is on the bus"
    return f"{clock(event.time)} taskmasterd left the bus"


def event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, StateChange):
        return {"event": "ProcessStateChanged", "time": event.time, "process": event.process,
                "program": event.program, "old": event.old, "new": event.new,
                "pid": event.pid or None, "exit_status": event.exit_status,
                "expected": event.expected}
    if isinstance(event, Reloaded):
        return {"event": "Reloaded", "time": event.time, **reload_json(event)}
    return {"event": "NameOwnerChanged", "time": event.time, "owner": event.owner or None}


def alert_lines(results: Sequence[tuple[str, bool, str]]) -> list[str]:
    """`alert test`: `OK  url` or `FAIL url : why`, one line per target."""
    return [f"OK  {url}" if ok else f"FAIL {url} : {detail}" for url, ok, detail in results]


def alert_json(results: Sequence[tuple[str, bool, str]]) -> list[dict[str, Any]]:
    return [{"url": url, "ok": ok, "detail": detail} for url, ok, detail in results]


def alert_exit_code(results: Sequence[tuple[str, bool, str]]) -> int:
    """0 when every target got its message; 1 if one did not, or there is none."""
    return EXIT_OK if results and all(ok for _url, ok, _detail in results) else EXIT_ERROR


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2)


def help_text(command: str | None = None) -> str:
    if command is None:
        width = max(len(f"{n} {a}".strip()) for n, a, _ in COMMANDS)
        lines = ["commands (help COMMAND for details):"]
        lines += [f"  {f'{n} {a}'.strip():<{width}}  {s}" for n, a, s in COMMANDS]
        lines.append("targets: a program (web), a process (web:0), a glob (web-*), or all")
        return "\n".join(lines)
    parser = build_parser()
    sub: argparse.ArgumentParser | None = _subparsers(parser).choices.get(command)
    if sub is None:
        raise KeyError(command)
    return sub.format_help().rstrip()


# ---- parsing ----------------------------------------------------------------------------


def build_parser(*, shell: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskctl",
        description="Control taskmasterd over D-Bus. Without a command: an interactive shell.",
        epilog="targets: a program (web), a process (web:0), a glob (web-*), or all. "
               "Exit status: 0 ok, 1 error, 2 bad usage (an unknown signal, a malformed --address "
               "too), 3 a process is not running (status), 4 no such program, 7 taskmasterd "
               "unreachable, 130 interrupted.")
    if not shell:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--system", dest="bus", action="store_const", const="system",
                           help="talk to taskmasterd on the system bus")
        where.add_argument("--user", dest="bus", action="store_const", const="user",
                           help="talk to taskmasterd on the session bus")
        where.add_argument("--address", metavar="ADDR",
                           help="talk to taskmasterd on the bus at this D-Bus address")
        p.add_argument("--version", action="version", version=f"taskctl {_version()}")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    summaries = {n: s for n, _a, s in COMMANDS}

    def command(name: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=summaries[name], description=summaries[name])
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
        return sp

    command("status").add_argument("targets", nargs="*", metavar="TARGET")
    for name in ("start", "stop", "restart"):
        command(name).add_argument("targets", nargs="+", metavar="TARGET")
    sp = command("signal")
    sp.add_argument("signal", metavar="SIG", type=_signal,
                    help="TERM, SIGHUP, USR1, 9, ... (ASCII; an unknown one: exit 2, nothing sent)")
    sp.add_argument("targets", nargs="+", metavar="TARGET")
    command("reload")
    command("shutdown")
    command("pid").add_argument("targets", nargs="*", metavar="TARGET")
    sp = command("tail")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing what is added")
    sp.add_argument("--stderr", action="store_true", help="the standard error instead of output")
    sp.add_argument("-c", "--bytes", type=_positive, default=TAIL_BYTES, metavar="BYTES",
                    help=f"how much of the end to print first (default {TAIL_BYTES})")
    sp.add_argument("process", metavar="PROCESS",
                    help="a process; one that never ran has no output yet (exit 1)")
    command("events")
    sp = command("alert")
    sp.add_argument("action", choices=("test",), metavar="test",
                    help="send a test message and report, per target, whether it was delivered")
    sp.add_argument("target", nargs="?", default="", metavar="URL|INDEX",
                    help="only this target: its number (from 0, in the file's order) or its URL")
    command("help").add_argument("topic", nargs="?", metavar="COMMAND", choices=COMMAND_NAMES)
    return p


def _signal(text: str) -> str:
    """A signal name or number as taskmasterd reads it (checked here: a bad one
    is bad usage, exit 2, not a reply from the daemon); sent as typed."""
    from taskmasterd import signames

    try:
        signames.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _subparsers(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError("no subcommands")


def _version() -> str:
    from taskmasterd import __version__

    return __version__


def bus_choice(args: argparse.Namespace) -> Any:
    """The BusChoice the flags force, or None for the default resolution."""
    from taskmasterd.busaddr import BusChoice

    if getattr(args, "address", None):
        return BusChoice("address", args.address)
    if getattr(args, "bus", None):
        return BusChoice(args.bus)
    return None


# ---- running commands ----------------------------------------------------------------------


class Context:
    """What a command runs with. interactive: in the shell (never exec, Ctrl-C
    returns to the prompt)."""

    def __init__(self, client: Client, out: TextIO, err: TextIO, json: bool = False,
                 interactive: bool = False) -> None:
        self.client = client
        self.out = out
        self.err = err
        self.json = json
        self.interactive = interactive

    def print(self, line: str = "") -> None:
        self.out.write(line + "\n")

    def error(self, line: str) -> None:
        self.out.flush()
        self.err.write(line + "\n")
        self.err.flush()


def execute(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO,
            interactive: bool = False) -> int:
    """Run one parsed command; returns its exit code. Unreachable and error
    replies are printed, never raised; KeyboardInterrupt propagates."""
    ctx = Context(client, out, err, bool(getattr(args, "json", False)), interactive)
    try:
        return COMMAND_FUNCS[args.command](ctx, args)
    except Unreachable as exc:
        ctx.error(f"taskctl: {exc.line()}")
        return EXIT_UNREACHABLE
    except CallError as exc:
        ctx.error(error_line("taskctl", exc))
        return exit_code_for(exc.name)
    finally:
        out.flush()


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    rows = ctx.client.list_processes()
    now = time.time()
    shown, missing = filter_rows(rows, args.targets)
    if ctx.json:
        ctx.print(dumps([row_json(r, now) for r in shown]))
    elif shown:
        for line in status_lines(shown, now):
            ctx.print(line)
    for target in missing:
        ctx.error(f"{target}: ERROR (no such process)")
    return status_exit_code(shown, missing)


def cmd_action(ctx: Context, args: argparse.Namespace) -> int:
    command = args.command
    code = EXIT_OK
    results = []
    for target in args.targets:
        try:
            if command == "signal":
                names = ctx.client.signal(target, args.signal)
            else:
                names = getattr(ctx.client, command)(target)
        except CallError as exc:
            ctx.error(error_line(target, exc))
            code = max(code, exit_code_for(exc.name))
            results.append(result_json(target, None, exc))
            continue
        results.append(result_json(target, names))
        if not ctx.json:
            for line in action_lines(command, names):
                ctx.print(line)
            ctx.out.flush()
    if ctx.json:
        ctx.print(dumps(results))
    return code


def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    try:
        result = ctx.client.reload()
    except CallError as exc:
        if exc.name != "ConfigInvalid":
            raise
        ctx.error("taskctl: reload refused, the configuration is invalid "
                  "(taskmasterd keeps running the previous one):")
        ctx.error(exc.message.rstrip())
        return EXIT_ERROR
    if ctx.json:
        ctx.print(dumps(reload_json(result)))
    else:
        for line in reload_lines(result):
            ctx.print(line)
    return EXIT_OK


def cmd_shutdown(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.shutdown()
    if ctx.json:
        ctx.print(dumps({"shutdown": True}))
    else:
        ctx.print("taskmasterd: shutting down")
    return EXIT_OK


def cmd_pid(ctx: Context, args: argparse.Namespace) -> int:
    if not args.targets:
        pid = ctx.client.daemon_pid()
        ctx.print(dumps({"pid": pid}) if ctx.json else str(pid))
        return EXIT_OK
    shown, missing = filter_rows(ctx.client.list_processes(), args.targets)
    if ctx.json:
        ctx.print(dumps({r.name: r.pid or None for r in shown}))
    else:
        for r in shown:
            ctx.print(str(r.pid))
    for target in missing:
        ctx.error(f"{target}: ERROR (no such process)")
    return EXIT_NO_SUCH if missing else EXIT_OK


def cmd_tail(ctx: Context, args: argparse.Namespace) -> int:
    stream = "stderr" if args.stderr else "stdout"
    try:
        fd = ctx.client.open_log(args.process, stream)
    except CallError as exc:
        if exc.name != "NotAFile" or "goes to the journal" not in exc.message:
            ctx.error(error_line(args.process, exc))
            return exit_code_for(exc.name)
        return journal_fallback(ctx, args, exc)

    def reopen() -> int | None:
        try:
            return ctx.client.open_log(args.process, stream)
        except CallError:
            return None  # stopped, removed, daemon gone: keep the file we have

    return follow_fd(ctx, fd, args.bytes, args.follow, reopen)


def follow_fd(ctx: Context, fd: int, nbytes: int, follow: bool,
              reopen: Callable[[], int | None] | None = None) -> int:
    """Print the last `nbytes` of the file; with `follow`, then what is added
    (polled: the client side of `tail -f`). Closes `fd`.

    Rotation: when the file has had nothing new for REOPEN_AFTER s, `reopen`
    asks the daemon for the file again; another file (st_dev, st_ino) means
    ours was rotated away: its rest is printed, then the new one from its
    start. A file truncated in place (0 backups) is read again from the top."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        size = os.fstat(fd).st_size
        pos = os.lseek(fd, max(0, size - nbytes), os.SEEK_SET)
        while pos < size:
            chunk = os.read(fd, min(65536, size - pos))
            if not chunk:
                break
            pos += len(chunk)
            ctx.out.write(decoder.decode(chunk))
        ctx.out.flush()
        quiet = 0.0
        while follow:
            chunk = os.read(fd, 65536)
            if chunk:
                pos += len(chunk)
                quiet = 0.0
                ctx.out.write(decoder.decode(chunk))
                continue
            ctx.out.flush()
            st = os.fstat(fd)
            if st.st_size < pos:  # truncated: start again from the top
                pos = os.lseek(fd, 0, os.SEEK_SET)
            quiet += FOLLOW_POLL
            if reopen is not None and quiet >= REOPEN_AFTER:
                quiet = 0.0
                new = reopen()
                if new is not None and _same_file(os.fstat(new), st):
                    os.close(new)
                elif new is not None:
                    while chunk := os.read(fd, 65536):  # what was written before the rotation
                        ctx.out.write(decoder.decode(chunk))
                    os.close(fd)
                    fd, pos = new, 0
                    continue
            ctx.client.sleep(FOLLOW_POLL)
        ctx.out.write(decoder.decode(b"", final=True))
        ctx.out.flush()
    finally:
        os.close(fd)
    return EXIT_OK


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def journal_fallback(ctx: Context, args: argparse.Namespace, exc: CallError) -> int:
    """The output goes to the journal: journalctl -t <program> (exec'd from the CLI)."""
    import shutil
    import subprocess

    journalctl = shutil.which("journalctl")
    if journalctl is None:
        ctx.error(error_line(args.process, exc))
        return EXIT_ERROR
    program = args.process.partition(":")[0]
    for row in ctx.client.list_processes():
        if row.name == args.process:
            program = row.program
    argv = [journalctl, "--no-pager", *(["-f"] if args.follow else ["-n", "20"]), "-t", program]
    ctx.out.flush()
    ctx.err.flush()
    if not ctx.interactive:
        os.execv(journalctl, argv)
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise


def cmd_events(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client.subscription():
        # Subscribed first, then checked that someone is there: no event is missed.
        pid = ctx.client.daemon_pid()
        where = ctx.client.choice.describe() if ctx.client.choice else "the bus"
        ctx.error(f"taskctl: following the events of taskmasterd (pid {pid}) on {where}; "
                  "Ctrl-C to stop")
        for event in ctx.client.events():
            ctx.print(json.dumps(event_json(event)) if ctx.json else event_line(event))
            ctx.out.flush()
    return EXIT_OK  # not reached: events() ends by an exception


def cmd_alert(ctx: Context, args: argparse.Namespace) -> int:
    results = ctx.client.test_alerts(args.target)
    if ctx.json:
        ctx.print(dumps(alert_json(results)))
    else:
        for line in alert_lines(results):
            ctx.print(line)
    if not results:
        ctx.error("taskctl: taskmasterd has no alert targets (add an 'alerts:' section to its "
                  "configuration, then reload)")
    return alert_exit_code(results)


def cmd_help(ctx: Context, args: argparse.Namespace) -> int:
    ctx.print(help_text(args.topic))
    return EXIT_OK


COMMAND_FUNCS = {
    "status": cmd_status, "start": cmd_action, "stop": cmd_action, "restart": cmd_action,
    "signal": cmd_action, "reload": cmd_reload, "shutdown": cmd_shutdown, "pid": cmd_pid,
    "tail": cmd_tail, "events": cmd_events, "alert": cmd_alert, "help": cmd_help,
}


def follows(args: argparse.Namespace) -> bool:
    """Whether the command runs until it is interrupted (the shell, `events`,
    `tail -f`): Ctrl-C is the way to stop it."""
    return args.command in (None, "events") or (args.command == "tail" and args.follow)


def take_sigint() -> None:
    """SIGINT raises KeyboardInterrupt, even if it was ignored when taskctl
    started. A shell without job control starts background commands with
    SIGINT ignored (`sh -c 'taskctl events &'`, a script, some CI runners),
    and Python then keeps it ignored: `events` or `tail -f` could then be
    stopped by nothing but SIGTERM. For a command whose only way to end is
    Ctrl-C, an ignored SIGINT is never what was meant."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (taskctl events | head): say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "help":
        print(help_text(args.topic))
        return EXIT_OK
    if follows(args):
        take_sigint()
    from taskctl.client import Client, address_problem

    problem = address_problem(args.address) if args.address is not None else None
    if problem is not None:
        print(f"taskctl: --address: {problem}", file=sys.stderr)
        return EXIT_USAGE

    client = Client(bus_choice(args))
    try:
        if args.command is None:
            from taskctl.shell import run_shell

            return run_shell(client, json_output=args.json)
        return execute(client, args, out=sys.stdout, err=sys.stderr)
    finally:
        try:
            client.close()
        except KeyboardInterrupt:
            pass
