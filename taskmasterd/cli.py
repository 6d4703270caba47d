"""Command line of taskmasterd (supervisord's and systemd's habits)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from taskmasterd import __version__
from taskmasterd.bus import pinned
from taskmasterd.busaddr import BusChoice, daemon_default
from taskmasterd.config import Config, ConfigError
from taskmasterd.hostcheck import load as load_config
from taskmasterd.paths import default_config_path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskmasterd",
        description="Keep programs running as a YAML file says (foreground daemon).",
        epilog="Signals: TERM or INT stop every program, then the daemon (exit 0); HUP reloads "
               "the configuration file; USR2 reopens the log file (after logrotate).")
    p.add_argument("-c", "--config", metavar="FILE",
                   help=f"configuration file (default: {default_config_path()})")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--system", dest="bus", action="store_const", const="system",
                       help="serve on the system bus (default for root when there is one)")
    where.add_argument("--user", dest="bus", action="store_const", const="user",
                       help="serve on the session bus (default for others when there is one)")
    where.add_argument("--address", metavar="ADDR", help="serve on the bus at this D-Bus address")
    where.add_argument("--bus", choices=("system", "user", "private"),
                       help="private: start an embedded dbus-daemon (default when no bus is reachable)")
    p.add_argument("--shell", action="store_true",
                   help="run in the foreground with taskctl's interactive shell on this terminal")
    p.add_argument("--check-config", metavar="FILE",
                   help="validate FILE, print every error with file:line:column, exit 0/1")
    p.add_argument("--run-task", metavar="FILE",
                   help="run the one task of the JSON file FILE here, without a daemon: status.json, "
                        "stdout and stderr in the current directory; exit with the task's status")
    p.add_argument("--import-supervisord", metavar="FILE",
                   help="convert supervisord's configuration FILE (and its [include] files) into "
                        "DIR/taskmaster.yaml and DIR/conf.d/*.yaml; print what is not carried over "
                        "(docs/migrating.md)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="with --import-supervisord: where to write (default: the current directory)")
    p.add_argument("--force", action="store_true",
                   help="with --import-supervisord: replace files that exist")
    p.add_argument("--version", action="version", version=f"taskmasterd {__version__}")
    return p


def load_or_report(path: str, failure: str) -> Config | None:
    """The config, or None after printing every issue and `failure`."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(failure.format(path=path, n=len(exc.issues)), file=sys.stderr)
        return None


def check_config(path: str) -> int:
    config = load_or_report(path, "{path}: {n} error(s)")
    if config is None:
        return 1
    n = sum(p.numprocs for p in config.programs)
    if not config.daemon.include:
        print(f"{path}: OK ({len(config.programs)} programs, {n} processes)")
        return 0
    print(f"{path}: OK ({len(config.programs)} programs, {n} processes, "
          f"from {len(config.files)} file{'s' if len(config.files) > 1 else ''})")
    for f in config.files:  # which files were read, and what each gave
        alerts = f", {len(f.alerts)} alerts" if f.alerts else ""
        print(f"  {f.name}: {len(f.programs)} programs{alerts}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if (args.output is not None or args.force) and not args.import_supervisord:
        p.error("-o/--output and --force go with --import-supervisord")
    if args.import_supervisord:
        from taskmasterd.importer.run import run as import_supervisord

        return import_supervisord(args.import_supervisord, args.output or ".", args.force)
    if args.check_config:
        return check_config(args.check_config)
    if args.run_task:
        from taskmasterd.tasks.standalone import run_task_file

        return run_task_file(args.run_task)
    wrong_library = pinned.problem(pinned.found_version())
    if wrong_library is not None:
        print(f"taskmasterd: not started: {wrong_library}", file=sys.stderr)
        return 1
    path = args.config or default_config_path()
    config = load_or_report(path, "taskmasterd: not started: {path} has {n} error(s)")
    if config is None:
        return 1
    if args.address:
        choice = BusChoice("address", args.address)
    elif args.bus:
        choice = BusChoice(args.bus)
    else:
        choice = daemon_default()
    if args.shell:
        from taskmasterd.foreground import run_with_shell

        return run_with_shell(config, choice)
    from taskmasterd.daemon import serve

    return asyncio.run(serve(config, choice))
