"""Running one parsed command against the daemon: `execute` and one
function per command (`COMMAND_FUNCS`). The shell and the command line both
come through here; what is printed is decided in `taskctl.format`."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any, TextIO

from taskctl import tasks
from taskctl.connection import DBUS_NAME, DBUS_PATH
from taskctl.context import Context
from taskctl.exitcodes import EXIT_ERROR, EXIT_NO_SUCH, EXIT_OK, EXIT_TIMEOUT, EXIT_UNREACHABLE
from taskctl.follow import cmd_tail
from taskctl.format import (
    action_lines,
    alert_exit_code,
    alert_json,
    alert_lines,
    dumps,
    error_line,
    error_message,
    event_json,
    event_line,
    exit_code_for,
    filter_rows,
    reload_json,
    reload_lines,
    row_json,
    status_exit_code,
    status_lines,
)
from taskctl.habits import say_once
from taskctl.hosts import RUN_THERE
from taskctl.model import CallError, Unreachable
from taskctl.parser import help_text
from taskctl.plan import avail_json, avail_lines, avail_rows, plan_json, plan_lines
from taskctl.waiting import act_and_wait, request_each
from taskmasterd.bus.names import BUS_NAME

if TYPE_CHECKING:
    from taskctl.client import Client


def execute(client: Client, args: argparse.Namespace, *, out: TextIO, err: TextIO,
            interactive: bool = False) -> int:
    """Run one parsed command; returns its exit code. Unreachable and error
    replies are printed, never raised; KeyboardInterrupt propagates."""
    ctx = Context(client, out, err, bool(getattr(args, "json", False)), interactive)
    host = getattr(client, "host", None)  # stand-in clients (tests) have none
    if host is not None and args.command in RUN_THERE:
        from taskctl.sshlink import run_command_there

        return run_command_there(host, client.requested, getattr(args, "words", None)
                                 or [args.command], out, err,
                                 follow=bool(getattr(args, "follow", False)))
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
    if command != "signal" and not args.no_block:
        return act_and_wait(ctx, command, args.targets, args.timeout)
    results: list[dict[str, Any]] = []

    def show(names: list[str]) -> None:
        if not ctx.json:
            for line in action_lines(command, names):
                ctx.print(line)
            ctx.out.flush()

    code = request_each(ctx, command, args.targets, results, show,
                        signal=getattr(args, "signal", ""))
    if ctx.json:
        ctx.print(dumps(results))
    return code


def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    if getattr(args, "dry_run", False):
        return _dry_run(ctx)
    # Reload answers with the programs only: the settings it changes are
    # asked just before it (the same file, read a moment earlier).
    try:
        settings = ctx.client.plan_settings()
    except CallError:  # an invalid file, a daemon shutting down: Reload says it
        settings = ()
    try:
        result = ctx.client.reload()
    except CallError as exc:
        if exc.name != "ConfigInvalid":
            raise
        ctx.error("taskctl: reload refused, the configuration is invalid "
                  "(taskmasterd keeps running the previous one):")
        ctx.error(exc.message.rstrip())
        return EXIT_ERROR
    ctx.emit(reload_json(result, settings), reload_lines(result, settings))
    return EXIT_OK


def _dry_run(ctx: Context) -> int:
    """`reload --dry-run`: the plan and why, nothing applied."""
    try:
        plan = ctx.client.plan_with_settings()
    except CallError as exc:
        if exc.name == "ConfigInvalid":
            ctx.error("taskctl: a reload would be refused, the configuration is invalid "
                      "(taskmasterd keeps running the current one):")
            ctx.error(exc.message.rstrip())
            return EXIT_ERROR
        if exc.name == "UnknownMethod":
            ctx.error("taskctl: this taskmasterd cannot preview a reload (it is older than "
                      "D-Bus API 1.6): upgrade it, or reload without --dry-run")
            return EXIT_ERROR
        raise
    ctx.emit(plan_json(plan), plan_lines(plan))
    return EXIT_OK


def cmd_update(ctx: Context, args: argparse.Namespace) -> int:
    say_once("update", ctx.err)
    args.dry_run = False
    return cmd_reload(ctx, args)


def cmd_reread(ctx: Context, args: argparse.Namespace) -> int:
    say_once("reread", ctx.err)
    return _dry_run(ctx)


def cmd_avail(ctx: Context, args: argparse.Namespace) -> int:
    """Every program: loaded (and how many of its processes are up), or only
    in the file. The file's side needs the plan (root or group taskmaster);
    without it, the loaded programs only, and why."""
    say_once("avail", ctx.err)
    rows = ctx.client.list_processes()
    plan = None
    try:
        plan = ctx.client.plan_reload()
    except CallError as exc:
        why = {"ConfigInvalid": "the configuration file is invalid (taskctl reload --dry-run "
                                "shows its errors)",
               "UnknownMethod": "this taskmasterd is older than D-Bus API 1.6"
               }.get(exc.name) or error_message(exc)
        ctx.error(f"taskctl: programs only in the file are not shown: {why}")
    items = avail_rows(rows, plan)
    ctx.emit(avail_json(items), avail_lines(items))
    return EXIT_OK


def cmd_maintail(ctx: Context, args: argparse.Namespace) -> int:
    from taskctl import maintail

    say_once("maintail", ctx.err)
    return maintail.run(ctx, args)


def cmd_shutdown(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.shutdown()
    if ctx.json:
        ctx.print(dumps({"shutdown": True}))
    else:
        ctx.print("taskmasterd: shutting down")
    return EXIT_OK


def cmd_daemon_reexec(ctx: Context, args: argparse.Namespace) -> int:
    """Manager.Reexecute, then wait for the new image: the name owned by a new
    connection (NameOwnerChanged) whose State is running (it sent READY=1).
    In between, the bus answers ServiceUnknown: retried until --timeout."""
    client = ctx.client
    before = _owner(ctx)
    client.call("Reexecute")
    deadline = time.monotonic() + (args.timeout or float("inf"))
    while True:
        try:
            owner = _owner(ctx)
            if owner not in ("", before) and client.state() == "running":
                break
        except (Unreachable, CallError):
            pass  # the gap: nobody owns the name, or the new image is not serving yet
        if time.monotonic() > deadline:
            ctx.error(f"taskctl: taskmasterd did not come back within {args.timeout:g} s")
            return EXIT_TIMEOUT
        client.sleep(0.05)
    version, pid = client.version(), client.daemon_pid()
    if ctx.json:
        ctx.print(dumps({"reexecuted": True, "pid": pid, "version": version}))
    else:
        ctx.print(f"taskmasterd: re-executed (pid {pid}, version {version})")
    return EXIT_OK


def _owner(ctx: Context) -> str:
    """The unique name owning org.taskmaster.Taskmaster1 ("" if none)."""
    try:
        [owner] = ctx.client.call("GetNameOwner", "s", [BUS_NAME], destination=DBUS_NAME,
                                  path=DBUS_PATH, interface=DBUS_NAME)
    except Unreachable as exc:
        if exc.cause == Unreachable.NO_OWNER:
            return ""
        raise
    return str(owner)


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



def cmd_events(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.client.subscription():
        # Subscribed first, then checked that someone is there: no event is missed.
        pid = ctx.client.daemon_pid()
        where = ctx.client.choice.describe() if ctx.client.choice else "the bus"
        host = getattr(ctx.client, "host", None)
        where += f" of {host}" if host is not None else ""
        ctx.error(f"taskctl: following the events of taskmasterd (pid {pid}) on {where}; "
                  "Ctrl-C to stop")
        for event in ctx.client.events():
            ctx.print(json.dumps(event_json(event)) if ctx.json else event_line(event))
            ctx.out.flush()
    return EXIT_OK  # not reached: events() ends by an exception


def cmd_alert(ctx: Context, args: argparse.Namespace) -> int:
    results = ctx.client.test_alerts(args.target)
    ctx.emit(alert_json(results), alert_lines(results))
    if not results:
        ctx.error("taskctl: taskmasterd has no alert targets (add an 'alerts:' section to its "
                  "configuration, then reload)")
    return alert_exit_code(results)


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    from taskctl import history

    return history.run(ctx, args)


def cmd_attach(ctx: Context, args: argparse.Namespace) -> int:
    from taskctl import attach

    return attach.cmd_attach(ctx, args)


def cmd_help(ctx: Context, args: argparse.Namespace) -> int:
    ctx.print(help_text(args.topic))
    return EXIT_OK


COMMAND_FUNCS = {
    "status": cmd_status, "start": cmd_action, "stop": cmd_action, "restart": cmd_action,
    "signal": cmd_action, "reload": cmd_reload, "shutdown": cmd_shutdown, "pid": cmd_pid,
    "daemon-reexec": cmd_daemon_reexec,
    "tail": cmd_tail, "attach": cmd_attach, "events": cmd_events, "history": cmd_history,
    "alert": cmd_alert, "help": cmd_help,
    "update": cmd_update, "reread": cmd_reread, "avail": cmd_avail, "maintail": cmd_maintail,
    **tasks.COMMANDS,
}

