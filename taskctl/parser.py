"""taskctl's command line grammar: the commands, their arguments, their help.

Shared by the command line (`taskctl.cli`) and the shell (`taskctl.shell`).
Imports stay light: nothing here talks to the daemon.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from taskctl import argtypes

TAIL_BYTES = 1600  # supervisorctl's default
# start/stop/restart: seconds before taskctl gives up waiting. A safety net:
# the daemon's startretries and stoptime (then SIGKILL) decide long before.
DEFAULT_TIMEOUT = 300.0

# name, arguments, summary: `help` and the shell's completion use this.
REEXEC_TIMEOUT = 30.0  # seconds daemon-reexec waits for the new daemon

COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("status", "[TARGET...]", "state, uptime, restarts of processes (exit 3 when one shown is not RUNNING)"),
    ("start", "[--no-block] TARGET...", "start processes; wait until RUNNING (exit 1 if one fails)"),
    ("stop", "[--no-block] TARGET...", "stop processes; wait until they are down"),
    ("restart", "[--no-block] TARGET...", "stop then start processes; wait until RUNNING"),
    ("signal", "SIG TARGET...", "send a signal (TERM, HUP, USR1, 9, ...) to processes"),
    ("reload", "[--dry-run]",
     "re-read the configuration and apply the changes (--dry-run: only say what would change, and why)"),
    ("shutdown", "", "stop every process and taskmasterd itself"),
    ("daemon-reexec", "[--timeout SECONDS]",
     "re-execute taskmasterd in place (an upgrade): no program is restarted"),
    ("pid", "[TARGET...]", "pid of taskmasterd, or of processes"),
    ("tail", "[-f] [--stderr] [-c BYTES] PROCESS",
     "end of a process's output (-f: keep following, across rotations)"),
    ("attach", "[--read-only] [--detach-keys KEYS] PROCESS",
     "a process's console (console: true): its output and your keys; detach: Ctrl-] d"),
    ("events", "", "follow state changes and reloads (Ctrl-C to stop)"),
    ("history", "[--since TIME] [-n N] TARGET", "past state changes, from the journal or the log file"),
    ("alert", "test [URL|INDEX]", "send a test message to every alert target, or to one"),
    ("run", "[OPTIONS] [--wait] -- CMD ARGS... | --file FILE",
     "submit a one-shot task; print its id (--wait: exit with its exit status)"),
    ("activity", "--file FILE [--wait]", "submit an activity: tasks run one after the other"),
    ("tasks", "[--state S] [--activity ID]", "the tasks: state, exit, start, duration, reason"),
    ("activities", "[--state S]", "the activities: state, tasks, reason"),
    ("task", "[-n LINES] ID", "a task's properties and the end of its stdout and stderr"),
    ("cancel", "ID...", "cancel a task or an activity (its running task is stopped)"),
    ("update", "", "supervisorctl's word: taskctl reload"),
    ("reread", "", "supervisorctl's word: taskctl reload --dry-run"),
    ("avail", "", "every program: in use (loaded, how many processes up) or only in the file"),
    ("maintail", "[-f] [-c BYTES]",
     "end of taskmasterd's own log (its log file, or the journal); -f: keep following"),
    ("help", "[COMMAND]", "list the commands, or explain one"),
)
COMMAND_NAMES = tuple(c[0] for c in COMMANDS)
# Commands whose arguments are targets (program, prog:N, glob, all).
TARGET_COMMANDS = frozenset({"status", "start", "stop", "restart", "signal", "pid", "tail", "history",
                             "attach"})
ATTACH_HELP = (
    "Attach the console of a process whose program has `console: true`, as tmux or screen "
    "do: its output (the last console_scrollback bytes first, then live) and, unless "
    "--read-only, your keys, sent straight to its terminal (Ctrl-C, Ctrl-Z go to the "
    "program). Detach with Ctrl-] then d, or the keys of --detach-keys or "
    "$TASKCTL_DETACH_KEYS; the first key typed twice sends itself once. Several viewers may "
    "attach at once: all but the --read-only ones type into the same terminal, and the "
    "latest to attach or resize sets its size. With stdin not a terminal (a script), "
    "what it reads is sent as it comes, and its end does not detach. Over -H, taskctl runs there, in a "
    "terminal ssh allocates. "
    "Exit status: 0 detached, or the process exited (\"web:0 exited: exit status 1\"); "
    "1 the console closed without an exit (taskmasterd drops a viewer that falls too far "
    "behind), no console (console: true missing), not running, access denied; 2 bad "
    "detach keys; 4 no such process; 7 taskmasterd unreachable or gone; SIGTERM, SIGHUP: "
    "the terminal restored, then that signal.")
# Commands whose arguments are task (or activity) ids.
TASK_ID_COMMANDS = frozenset({"task", "cancel"})


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
               "start, stop and restart wait for the outcome (--no-block: not). "
               "Exit status: 0 ok, 1 error (a start that ended FATAL too), 2 bad usage (an "
               "unknown signal, a malformed --address, an invalid task too), 3 a process is "
               "not running (status), 4 no such program or task, 7 taskmasterd unreachable, "
               "124 gave up waiting (--timeout), 130 interrupted; run --wait: the task's "
               "exit status.")
    if not shell:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--system", dest="bus", action="store_const", const="system",
                           help="talk to taskmasterd on the system bus")
        where.add_argument("--user", dest="bus", action="store_const", const="user",
                           help="talk to taskmasterd on the session bus")
        where.add_argument("--address", metavar="ADDR",
                           help="talk to taskmasterd on the bus at this D-Bus address")
        p.add_argument("-H", "--host", metavar="[USER@]HOST[:PORT]", type=argtypes.host,
                       help="talk to taskmasterd on another host, through ssh and "
                            "systemd-stdio-bridge there (its system bus, or the one "
                            "--user/--address name there)")
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
        sp = command(name)
        sp.add_argument("--no-block", action="store_true",
                        help="return once taskmasterd has accepted the request, without waiting "
                             "for the outcome")
        sp.add_argument("--timeout", type=argtypes.seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="give up waiting after this long, exit 124; the request goes on "
                             f"(default {DEFAULT_TIMEOUT:g}; 0: no limit)")
        sp.add_argument("targets", nargs="+", metavar="TARGET")
    sp = command("signal")
    sp.add_argument("signal", metavar="SIG", type=argtypes.signal_name,
                    help="TERM, SIGHUP, USR1, 9, ... (ASCII; an unknown one: exit 2, nothing sent)")
    sp.add_argument("targets", nargs="+", metavar="TARGET")
    command("reload").add_argument(
        "--dry-run", action="store_true",
        help="print what a reload would do now (added, restarted, changed in place, removed; "
             "and why), apply nothing; a bad configuration: its errors, exit 1")
    command("update")
    command("reread")
    command("avail")
    sp = command("maintail")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing what is added")
    sp.add_argument("-c", "--bytes", type=argtypes.at_least(0), default=TAIL_BYTES, metavar="BYTES",
                    help=f"how much of the end to print first (default {TAIL_BYTES})")
    command("shutdown")
    command("daemon-reexec").add_argument(
        "--timeout", type=argtypes.seconds, default=REEXEC_TIMEOUT, metavar="SECONDS",
        help=f"give up waiting for the new daemon after this long, exit 124 (default "
             f"{REEXEC_TIMEOUT:g})")
    command("pid").add_argument("targets", nargs="*", metavar="TARGET")
    sp = command("tail")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing what is added")
    sp.add_argument("--stderr", action="store_true", help="the standard error instead of output")
    sp.add_argument("-c", "--bytes", type=argtypes.at_least(0), default=TAIL_BYTES, metavar="BYTES",
                    help=f"how much of the end to print first (default {TAIL_BYTES})")
    sp.add_argument("process", metavar="PROCESS",
                    help="a process (web:0 when its program has several); one that never "
                         "ran has no output yet (exit 1)")
    sp = command("attach")
    sp.description = ATTACH_HELP
    sp.add_argument("--read-only", action="store_true",
                    help="only watch: nothing typed is sent (the detach keys still work), "
                         "the terminal's size is left as it is")
    sp.add_argument("--detach-keys", metavar="KEYS", type=argtypes.detach_keys,
                    help="the keys that detach, in docker's syntax: comma-separated, each "
                         "ctrl-X (X in a-z @ [ \\ ] ^ _) or one printable character "
                         "(default ctrl-],d; $TASKCTL_DETACH_KEYS sets another)")
    sp.add_argument("process", metavar="PROCESS",
                    help="a process (web:0 when its program has several)")
    command("events")
    from taskctl import history

    history.add_arguments(command("history"))
    sp = command("alert")
    sp.add_argument("action", choices=("test",), metavar="test",
                    help="send a test message and report, per target, whether it was delivered")
    sp.add_argument("target", nargs="?", default="", metavar="URL|INDEX",
                    help="only this target: its number (from 0, in the file's order) or its URL")
    from taskctl import tasks

    for name in ("run", "activity", "tasks", "activities", "task", "cancel"):
        tasks.add_arguments(name, command(name))
    command("help").add_argument("topic", nargs="?", metavar="COMMAND", choices=COMMAND_NAMES)
    return p


def _subparsers(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError("no subcommands")


def _version() -> str:
    from taskmasterd import __version__

    return __version__


# Options before the command that take a value (and their unambiguous prefixes).
_VALUED = ("-H", "--host", "--ho", "--hos", "--address", "--ad", "--add", "--addr", "--addre",
           "--addres")


def _command_index(argv: Sequence[str]) -> int | None:
    """Where the command is in `argv`: the first word that is not an option
    or an option's value."""
    after_valued = False
    for i, word in enumerate(argv):
        if after_valued:
            after_valued = False
        elif word in _VALUED:
            after_valued = True
        elif not word.startswith("-"):
            return i
    return None


def command_word(argv: Sequence[str]) -> str | None:
    """The command as typed, before argparse reads it."""
    i = _command_index(argv)
    return None if i is None else argv[i]


def command_words(argv: Sequence[str], args: argparse.Namespace) -> list[str]:
    """The command and its arguments as typed (what `taskctl -H` runs on the
    host for tail and history), --json carried over; [] if not found."""
    i = _command_index(argv)
    if i is None or argv[i] != args.command:
        return []
    words = list(argv[i:])
    if getattr(args, "json", False) and "--json" not in words:
        words.insert(1, "--json")
    return words


def bus_choice(args: argparse.Namespace) -> Any:
    """The BusChoice the flags force, or None for the default resolution."""
    from taskmasterd.busaddr import BusChoice

    if getattr(args, "address", None):
        return BusChoice("address", args.address)
    if getattr(args, "bus", None):
        return BusChoice(args.bus)
    return None

