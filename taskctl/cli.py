"""taskctl's command line: `main` parses, connects, and runs one command
(`taskctl.commands`) or, without one, the interactive shell.

Imports stay light: the client (jeepney) is loaded only when a command needs
the daemon. The grammar is `taskctl.parser`, the output `taskctl.format`,
the exit codes `taskctl.exitcodes`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from taskctl.commands import execute as execute
from taskctl.exitcodes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from taskctl.habits import ELSEWHERE
from taskctl.parser import build_parser as build_parser
from taskctl.parser import bus_choice, command_word, command_words, help_text


def follows(args: argparse.Namespace) -> bool:
    """Whether the command runs until it is interrupted (the shell, `events`,
    `tail -f`, `attach` from a pipe) or waits for an outcome (start, stop, restart without
    --no-block; daemon-reexec; run and activity with --wait): Ctrl-C is a
    way to stop it."""
    command = args.command
    waits = (command in ("start", "stop", "restart") and not args.no_block) \
        or command == "daemon-reexec" or (command in ("run", "activity") and args.wait)
    return command in (None, "events", "attach") or \
        (command in ("tail", "maintail") and args.follow) or waits


def take_sigint() -> None:
    """SIGINT raises KeyboardInterrupt, even if it was ignored when taskctl
    started. A shell without job control starts background commands with
    SIGINT ignored (`sh -c 'taskctl events &'`, a script, some CI runners),
    and Python then keeps it ignored: `events` or `tail -f` could then be
    stopped by nothing but SIGTERM, and a start could only be waited out.
    For a command that runs or waits until interrupted, an ignored SIGINT is
    never what was meant."""
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
    argv = list(sys.argv[1:] if argv is None else argv)
    instead = ELSEWHERE.get(command_word(argv) or "")
    if instead is not None:
        print(f"taskctl: {instead}", file=sys.stderr)
        return EXIT_USAGE
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "help":
        print(help_text(args.topic))
        return EXIT_OK
    if follows(args):
        take_sigint()
    from taskctl.buses import address_problem
    from taskctl.client import Client

    problem = address_problem(args.address) if args.address is not None else None
    if problem is not None:
        print(f"taskctl: --address: {problem}", file=sys.stderr)
        return EXIT_USAGE

    if args.host is not None and args.command is not None:
        args.words = command_words(argv, args)  # what runs there for tail and history
    client = Client(bus_choice(args), host=args.host)
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
