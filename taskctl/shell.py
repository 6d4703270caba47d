"""taskctl's interactive shell (`taskctl` without a command).

Every command of the command line works as a shell line (the same parser and
`taskctl.commands.execute`); errors are printed and the shell goes on. readline gives
line editing, a history kept in `$XDG_STATE_HOME/taskmaster/taskctl_history`
(or `$TASKCTL_HISTFILE`), and tab completion of commands, signal names,
program/process names (from ListProcesses, refreshed after a reload) and
task/activity ids (from ListTasks and ListActivities, for task, cancel and
--activity). `connect HOST` talks to taskmasterd on another host through ssh
(as `taskctl -H`), `connect local` back here: one daemon at a time, the host
in the prompt, hosts completed from ~/.ssh/config and known_hosts.

`run_shell(client)` is usable from another program too (taskmasterd --shell
runs it in a thread): it installs no signal handler. In the main thread,
Ctrl-C cancels the line being typed or stops `events` / `tail -f`; from
another thread, `client.cancel()` stops a running command.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from taskctl.commands import execute
from taskctl.exitcodes import EXIT_OK
from taskctl.habits import ELSEWHERE
from taskctl.parser import COMMAND_NAMES, TARGET_COMMANDS, TASK_ID_COMMANDS, build_parser, help_text

if TYPE_CHECKING:
    from taskctl.client import Client

PROMPT = "taskmaster> "
HISTORY_LENGTH = 1000
NAMES_TTL = 2.0  # seconds a ListProcesses answer serves completion
COMPLETION_TIMEOUT = 2.0
LEAVE = ("exit", "quit")
CONNECT = "connect"
CONNECT_HELP = ("connect [--system|--user|--address ADDR] [USER@]HOST[:PORT] | connect local\n"
                "  talk to taskmasterd on another host, through ssh and systemd-stdio-bridge "
                "there\n  (its system bus, or the bus the flags name there); local: back to "
                "this host's\n  daemon. One daemon at a time; the prompt shows which.")
SHELL_WORDS = (*COMMAND_NAMES, CONNECT, *LEAVE)
SIGNAL_NAMES = tuple(sorted(s.name[3:] for s in signal.Signals
                            if s.name.startswith("SIG") and not s.name.startswith("SIGRT")))


def history_file(environ: Mapping[str, str] = os.environ) -> str:
    if environ.get("TASKCTL_HISTFILE"):
        return environ["TASKCTL_HISTFILE"]
    state = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "taskmaster", "taskctl_history")


OPTIONS = {
    "tail": ["--follow", "--stderr", "--bytes"],
    "maintail": ["--follow", "--bytes"],
    "reload": ["--dry-run"],
    "attach": ["--read-only", "--detach-keys"],
    "start": ["--no-block", "--timeout"], "stop": ["--no-block", "--timeout"],
    "restart": ["--no-block", "--timeout"],
    "history": ["--since", "--until", "--lines", "--file", "--directory"],
    "run": ["--name", "--timeout", "--env", "--workdir", "--user", "--activity", "--file",
            "--wait", "--wait-timeout"],
    "activity": ["--file", "--wait", "--wait-timeout", "--timeout"],
    "tasks": ["--state", "--activity"], "activities": ["--state"], "task": ["--lines"],
    CONNECT: ["--system", "--user", "--address"],
}
# Options whose value is the next word (not an argument, for completion).
VALUED_OPTIONS = frozenset({"--detach-keys", "-c", "--bytes"})
TASK_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "lost")


def complete_words(before: str, text: str, names: Callable[[], list[str]],
                   task_ids: Callable[[], list[str]] = list,
                   hosts: Callable[[], list[str]] = list) -> list[str]:
    """Completions of `text`, the word being typed after `before` (pure but
    for `names`, called only when program/process names are wanted,
    `task_ids`, only when task or activity ids are, and `hosts` for connect)."""
    words = before.split()
    while words and words[0].startswith("-"):  # e.g. "--json status"
        words.pop(0)
    if not words:
        return [w for w in SHELL_WORDS if w.startswith(text)]
    command = words[0]
    # the words that are arguments (not options, nor the value of one that takes it)
    args = [w for i, w in enumerate(words[1:], 1)
            if not w.startswith("-") and words[i - 1] not in VALUED_OPTIONS]
    if text.startswith("-"):
        options = ["--json", "--help", *OPTIONS.get(command, [])]
        return [o for o in options if o.startswith(text)]
    last = words[-1] if len(words) > 1 else ""
    if last == "--detach-keys":
        return []  # keys, not names
    if last == "--activity" and command in ("run", "tasks"):
        return [i for i in task_ids() if i.startswith(text)]
    if last == "--state" and command in ("tasks", "activities"):
        return [s for s in TASK_STATES if s.startswith(text)]
    if command in TASK_ID_COMMANDS:
        given = [w for i, w in enumerate(words[1:], 1)
                 if not w.startswith("-") and words[i - 1] not in ("-n", "--lines")]
        if command == "task" and given:
            return []
        return [i for i in task_ids() if i.startswith(text) and i not in given]
    if command == "help":
        return [w for w in (*COMMAND_NAMES, CONNECT) if w.startswith(text)] if not args else []
    if command == CONNECT:
        if args or last == "--address":
            return []
        return [h for h in ("local", *hosts()) if h.startswith(text)]
    if command == "signal" and not args:
        upper = text.upper()
        return [s for s in SIGNAL_NAMES if s.startswith(upper.removeprefix("SIG"))]
    if command in TARGET_COMMANDS:
        if command in ("tail", "attach") and args:
            return []  # one process
        return [n for n in names() if n.startswith(text)]
    return []


class Shell:
    def __init__(self, client: Client, *, json_output: bool = False,
                 stdin: TextIO | None = None, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        self.client = client
        self.home = client  # `connect local` comes back to it; the caller closes it
        self.visited: list[str] = []  # hosts connected to, for completion
        self.json_output = json_output
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.parser = build_parser(shell=True)
        self._names: list[str] = []
        self._names_at = -1e9
        self._ids: list[str] = []
        self._ids_at = -1e9
        self._matches: list[str] = []
        self._readline: Any = None
        self._history_start = 0
        self.histfile = history_file()

    # -- readline ---------------------------------------------------------------------

    def interactive(self) -> bool:
        try:
            return self.stdin is sys.stdin and self.stdin.isatty() and self.stdout.isatty()
        except (AttributeError, ValueError):
            return False

    def setup_readline(self) -> None:
        try:
            import readline
        except ImportError:  # no line editing, still a shell
            return
        self._readline = readline
        readline.set_completer(self.complete)
        readline.set_completer_delims(" \t\n")
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        readline.set_history_length(HISTORY_LENGTH)
        try:
            readline.read_history_file(self.histfile)
        except OSError:
            pass
        self._history_start = readline.get_current_history_length()

    def save_history(self) -> None:
        readline = self._readline
        if readline is None:
            return
        new = readline.get_current_history_length() - self._history_start
        if new <= 0:
            return
        try:
            os.makedirs(os.path.dirname(self.histfile) or ".", exist_ok=True)
            if not os.path.exists(self.histfile):
                with open(self.histfile, "a", encoding="utf-8"):
                    pass
            readline.append_history_file(new, self.histfile)
            self._trim_history()
        except OSError as exc:
            self.stderr.write(f"taskctl: cannot save the history in {self.histfile}: "
                              f"{exc.strerror or exc}\n")

    def _trim_history(self) -> None:
        with open(self.histfile, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
        if len(lines) > 2 * HISTORY_LENGTH and not lines[0].startswith("_HiStOrY_V2_"):
            tmp = self.histfile + ".tmp"
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.writelines(lines[-HISTORY_LENGTH:])
            os.replace(tmp, self.histfile)

    def complete(self, text: str, state: int) -> str | None:
        try:
            if state == 0:
                line = self._readline.get_line_buffer()
                before = line[:self._readline.get_begidx()]
                self._matches = complete_words(before, text, self.names, self.task_ids,
                                               self.hosts)
                if len(self._matches) == 1:  # Python's readline appends nothing itself
                    self._matches[0] += " "
            return self._matches[state] if state < len(self._matches) else None
        except Exception:
            return None

    def names(self) -> list[str]:
        """Programs, processes and `all`, from ListProcesses (cached briefly)."""
        if time.monotonic() - self._names_at < NAMES_TTL:
            return self._names
        saved = self.client.timeout
        self.client.timeout = COMPLETION_TIMEOUT
        try:
            rows = self.client.list_processes()
        except Exception:
            return self._names
        finally:
            self.client.timeout = saved
        names = {"all"}
        for r in rows:
            names.update((r.name, r.program))
        self._names = sorted(names)
        self._names_at = time.monotonic()
        return self._names

    def task_ids(self) -> list[str]:
        """Task and activity ids, from ListTasks and ListActivities (cached briefly)."""
        if time.monotonic() - self._ids_at < NAMES_TTL:
            return self._ids
        from taskctl import taskapi

        saved = self.client.timeout
        self.client.timeout = COMPLETION_TIMEOUT
        try:
            ids = [t.id for t in taskapi.list_tasks(self.client)]
            ids += [a.id for a in taskapi.list_activities(self.client)]
        except Exception:
            return self._ids
        finally:
            self.client.timeout = saved
        self._ids = sorted(set(ids))
        self._ids_at = time.monotonic()
        return self._ids

    def hosts(self) -> list[str]:
        from taskctl.hosts import known_hosts

        return sorted({*self.visited, *known_hosts()})

    @property
    def prompt(self) -> str:
        host = getattr(self.client, "host", None)
        return PROMPT if host is None else f"taskmaster@{host}> "

    def connect(self, words: list[str]) -> None:
        """`connect HOST` / `connect local`: the shell's daemon from now on,
        once it answers; the current one stays if it does not."""
        from taskctl.client import Client
        from taskctl.hosts import Host
        from taskctl.model import Unreachable
        from taskctl.parser import bus_choice

        args = self._connect_args(words)
        if args is None:
            return
        if args.target == "local":
            if args.bus or args.address:
                self.stderr.write("taskctl: connect local takes no bus flag: it goes back to "
                                  "this host's daemon (the one this shell started with, "
                                  "when it started here)\n")
                return
            local = self.home if getattr(self.home, "host", None) is None \
                else Client(timeout=self.home.timeout)
            try:
                local.connect()
            except Unreachable as exc:
                if local is not self.home:
                    local.close()
                self.stderr.write(f"taskctl: {exc.line()}\n")
                return
            self._switch(local)
            where = local.choice.describe() if local.choice else "this host"
            self.stdout.write(f"connected to taskmasterd on {where}\n")
            return
        try:
            host = Host.parse(args.target)
        except ValueError as exc:
            self.stderr.write(f"taskctl: connect: {exc}\n")
            return
        client = Client(bus_choice(args), host=host, timeout=self.home.timeout)
        try:
            client.connect()
            version = client.version()
        except Unreachable as exc:
            client.close()
            self.stderr.write(f"taskctl: {exc.line()}\n")
            return
        except Exception as exc:  # an error reply to Version: not a taskmasterd we know
            client.close()
            self.stderr.write(f"taskctl: connect {host}: {exc}\n")
            return
        self._switch(client)
        if str(host) not in self.visited:
            self.visited.append(str(host))
        self.stdout.write(f"connected to taskmasterd {version} on {host}\n")

    def _connect_args(self, words: list[str]) -> Any:
        import argparse

        p = argparse.ArgumentParser(prog=CONNECT, add_help=False, exit_on_error=False)
        where = p.add_mutually_exclusive_group()
        where.add_argument("--system", dest="bus", action="store_const", const="system")
        where.add_argument("--user", dest="bus", action="store_const", const="user")
        where.add_argument("--address")
        p.add_argument("target", nargs="?")
        try:
            args, extra = p.parse_known_args(words)
        except argparse.ArgumentError as exc:
            self.stderr.write(f"taskctl: connect: {exc}\n")
            return None
        if extra or not args.target:
            self.stderr.write("taskctl: usage: " + CONNECT_HELP.splitlines()[0] + "\n")
            return None
        return args

    def _switch(self, client: Client) -> None:
        if self.client is not client and self.client is not self.home:
            self.client.close()
        self.client = client
        self._names_at = self._ids_at = -1e9  # another daemon, other names

    # -- the loop --------------------------------------------------------------------

    def read_line(self, interactive: bool) -> str | None:
        """The next line (None at the end of input)."""
        if interactive:
            try:
                return input(self.prompt)
            except EOFError:
                self.stdout.write("\n")
                return None
        line = self.stdin.readline()
        return line if line else None

    def run(self) -> int:
        interactive = self.interactive()
        if interactive:
            self.setup_readline()
        try:
            while True:
                try:
                    line = self.read_line(interactive)
                except KeyboardInterrupt:  # cancels the line being typed
                    self.stdout.write("\n")
                    continue
                if line is None:
                    return EXIT_OK
                if self.onecmd(line):
                    return EXIT_OK
        finally:
            self._switch(self.home)  # closes a remote one; the caller closes its own
            self.save_history()
            self.stdout.flush()

    def onecmd(self, line: str) -> bool:
        """Run one shell line; True when the shell must end."""
        line = line.strip()
        if not line or line.startswith("#"):
            return False
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.stderr.write(f"taskctl: {exc}\n")
            return False
        if not words:
            return False
        if words[0] in LEAVE:
            return True
        if words[0] == "?":
            words[0] = "help"
        if words[0] == "help":
            return self.help(words[1:])
        if words[0] == CONNECT:
            self.connect(words[1:])
            return False
        if words[0] not in COMMAND_NAMES and not words[0].startswith("-"):
            instead = ELSEWHERE.get(words[0])
            self.stderr.write(f"taskctl: {instead}\n" if instead else
                              f"taskctl: unknown command {words[0]!r}; type help for the list\n")
            return False
        try:
            args = self.parser.parse_args(words)
        except SystemExit:  # argparse printed the usage or the help
            return False
        if args.command is None:
            self.help([])
            return False
        args.json = bool(args.json) or self.json_output
        args.words = words  # what runs on the host for tail and history, when remote
        self.stdout.flush()
        try:
            code = execute(self.client, args, out=self.stdout, err=self.stderr,
                               interactive=True)
        except KeyboardInterrupt:  # stops events, tail -f, a slow call
            self.stdout.write("\n")
            self.stdout.flush()
            return False
        if args.command in ("reload", "update") and code == EXIT_OK:
            self._names_at = -1e9
        if args.command in ("run", "activity", "cancel"):
            self._ids_at = -1e9  # a new id (or a new state)
        return args.command == "shutdown" and code == EXIT_OK

    def help(self, topics: list[str]) -> bool:
        if not topics:
            self.stdout.write(help_text() + "\n"
                              "connect HOST | connect local: another host's taskmasterd (ssh), "
                              "or back (help connect)\n"
                              "exit, quit or Ctrl-D: leave the shell; Ctrl-C: cancel the line "
                              "or stop events / tail -f\n")
            return False
        for topic in topics:
            if topic == CONNECT:
                self.stdout.write(CONNECT_HELP + "\n")
                continue
            try:
                self.stdout.write(help_text(topic) + "\n")
            except KeyError:
                if topic in LEAVE:
                    self.stdout.write(f"{topic}: leave the shell (Ctrl-D too)\n")
                else:
                    self.stderr.write(f"taskctl: no command {topic!r}; try help\n")
        return False


def run_shell(client: Client, *, on_exit: Callable[[], object] | None = None,
              json_output: bool = False) -> int:
    """Run the interactive shell on `client` until exit/quit/Ctrl-D (or
    `shutdown`); returns 0. `on_exit()` is called (in this thread) when it ends,
    however it ends."""
    try:
        return Shell(client, json_output=json_output).run()
    finally:
        if on_exit is not None:
            on_exit()

