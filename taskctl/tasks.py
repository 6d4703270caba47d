"""taskctl's task commands: run, activity, tasks, activities, task, cancel
(the D-Bus calls are `taskctl.taskapi`, the output `taskctl.taskformat`, the
waiting of --wait `taskctl.taskwait`).

A task file is checked here first with the daemon's own checker
(`taskmasterd.tasks.spec`), so a mistake is reported as `file:line:col`
(exit 2) without anything being sent; the daemon checks again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from taskctl import argtypes, taskapi
from taskctl.context import Context
from taskctl.exitcodes import EXIT_ERROR, EXIT_NO_SUCH, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE
from taskctl.format import dumps, error_line, exit_code_for
from taskctl.model import CallError, TaskRow
from taskctl.taskformat import (
    TASK_STATES,
    activity_json,
    activity_lines,
    end_json,
    task_detail_json,
    task_detail_lines,
    task_end_line,
    task_json,
    task_lines,
)

TAIL_LINES = 10  # `task ID`: lines of each stream shown (tail(1)'s default)
READ_BLOCK = 8192


# ---- the grammar (taskctl.parser calls these) ----------------------------------------


def add_arguments(name: str, sp: argparse.ArgumentParser) -> None:
    if name == "run":
        sp.add_argument("--name", metavar="N", help="a label shown by taskctl tasks "
                        "(default: the command's basename)")
        sp.add_argument("--timeout", type=argtypes.seconds, metavar="SECONDS",
                        help="stop the task after this long and mark it failed (0: never; "
                             "default: the daemon's tasks.timeout)")
        sp.add_argument("--env", action="append", type=argtypes.env_pair, default=[],
                        metavar="K=V", help="an environment variable for the task (repeatable)")
        sp.add_argument("--workdir", metavar="DIR", help="the directory it runs in (absolute)")
        sp.add_argument("--user", metavar="USER", help="the user it runs as")
        sp.add_argument("--activity", metavar="ID",
                        help="append it to this queued or running activity")
        sp.add_argument("--file", metavar="FILE",
                        help="the task as a JSON file (- : standard input) instead of a command")
        add_wait_arguments(sp, "--wait-timeout")
        sp.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                        help="the command and its arguments (after --)")
    elif name == "activity":
        sp.add_argument("--file", metavar="FILE", required=True,
                        help='the activity as a JSON file: {"name": ..., "tasks": [task, ...]} '
                             "(- : standard input)")
        # --timeout too: an activity has no timeout of its own, and start/stop
        # call their wait's limit so
        add_wait_arguments(sp, "--wait-timeout", "--timeout")
    elif name in ("tasks", "activities"):
        states = TASK_STATES if name == "tasks" else TASK_STATES[:-1]
        sp.add_argument("--state", choices=states, metavar="STATE",
                        help=f"only those in this state ({', '.join(states)})")
        if name == "tasks":
            sp.add_argument("--activity", metavar="ID", help="only the tasks of this activity")
    elif name == "task":
        sp.add_argument("-n", "--lines", type=argtypes.at_least(0), default=TAIL_LINES,
                        metavar="N", help=f"lines of stdout and stderr shown (default {TAIL_LINES})")
        sp.add_argument("id", metavar="ID", help="a task id (or an activity id)")
    elif name == "cancel":
        sp.add_argument("ids", nargs="+", metavar="ID", help="a task or an activity id")


def add_wait_arguments(sp: argparse.ArgumentParser, *timeout_flags: str) -> None:
    sp.add_argument("--wait", action="store_true",
                    help="wait for the end; exit with the task's exit status (signal n: 128+n, "
                         "not started: 127/126, over its timeout: 124, cancelled or lost: 1)")
    sp.add_argument(*timeout_flags, dest="wait_timeout", type=argtypes.seconds, default=0.0,
                    metavar="SECONDS",
                    help="with --wait: give up waiting after this long, exit 124; the task "
                         "goes on (default 0: no limit)")


def waits(args: argparse.Namespace) -> bool:
    return args.command in ("run", "activity") and bool(args.wait)


# ---- reading what to submit ---------------------------------------------------------


class Usage(Exception):
    """Bad usage: the one line to print (exit 2)."""


def read_file(path: str) -> tuple[bytes, str]:
    try:
        if path == "-":
            return sys.stdin.buffer.read(), "<stdin>"
        with open(path, "rb") as f:
            return f.read(), path
    except OSError as exc:
        raise Usage(f"cannot read {path}: {exc.strerror or exc}") from None


def task_spec(args: argparse.Namespace) -> Any:
    """The TaskSpec `run` submits (Usage when it is not one)."""
    from taskmasterd.errors import TaskInvalid
    from taskmasterd.tasks import spec

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    options = {"name": args.name, "timeout": args.timeout, "workingdir": args.workdir,
               "user": args.user, "activity": args.activity}
    try:
        if args.file is not None:
            given = [f"--{k}" for k, v in options.items() if v is not None] + \
                (["--env"] if args.env else []) + (["a command"] if argv else [])
            if given:
                raise Usage(f"--file gives the whole task: {', '.join(given)} cannot be added "
                            "to it")
            return spec.load_task_file(*read_file(args.file))
        if not argv:
            raise Usage("run: a command is needed (taskctl run [OPTIONS] -- CMD ARGS...) "
                        "or --file FILE")
        obj: dict[str, Any] = {"command": argv[0], "args": argv[1:]}
        obj.update({k: v for k, v in options.items() if v is not None})
        if args.env:
            obj["env"] = dict(args.env)
        return spec.parse_task(obj, "the task")
    except TaskInvalid as exc:
        raise Usage(str(exc)) from None


# ---- the commands --------------------------------------------------------------------


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    try:
        spec = task_spec(args)
    except Usage as exc:
        ctx.error(f"taskctl: {exc}")
        return EXIT_USAGE
    return _submit(ctx, args, "task", lambda: taskapi.submit_task(ctx.client, spec))


def cmd_activity(ctx: Context, args: argparse.Namespace) -> int:
    from taskmasterd.errors import TaskInvalid
    from taskmasterd.tasks import spec

    try:
        name, specs = spec.load_activity_file(*read_file(args.file))
    except (Usage, TaskInvalid) as exc:
        ctx.error(f"taskctl: {exc}")
        return EXIT_USAGE
    return _submit(ctx, args, "activity",
                   lambda: taskapi.submit_activity(ctx.client, name, specs))


def _submit(ctx: Context, args: argparse.Namespace, kind: str, submit: Any) -> int:
    """Submit; print the id (--json: {id, state}); with --wait, wait for the
    end and return its exit status. Subscribed BEFORE submitting: a task
    that ends at once is not missed."""
    client = ctx.client
    if not args.wait:
        try:
            new_id = submit()
        except CallError as exc:
            return _refused(ctx, args.command, exc)
        if ctx.json:
            ctx.print(dumps({"id": new_id, "state": _state(ctx, kind, new_id)}))
        else:
            ctx.print(new_id)
        return EXIT_OK
    from taskctl.taskwait import TaskWatch
    from taskctl.waiting import Progress, TimedOut, wait

    with client.subscription():
        started = time.monotonic()
        try:
            new_id = submit()
        except CallError as exc:
            return _refused(ctx, args.command, exc)
        if not ctx.json:
            ctx.print(new_id)
            ctx.out.flush()
        watch = TaskWatch(kind, new_id)
        timeout = args.wait_timeout or None
        try:
            wait(client, watch, timeout=timeout, progress=Progress(ctx.err),
                 report=lambda ended: None, started=started)
        except TimedOut:
            ctx.error(f"taskctl: gave up waiting after {args.wait_timeout:g} s: {kind} {new_id} "
                      f"is still {watch.state or 'queued'} (it goes on; taskctl "
                      f"{'task' if kind == 'task' else 'activities'} shows it)")
            return EXIT_TIMEOUT
        except KeyboardInterrupt:
            ctx.error(f"taskctl: stopped waiting: {kind} {new_id} is still "
                      f"{watch.state or 'queued'} (it goes on)")
            raise
    ended = watch.ended
    assert ended is not None
    if ended.gone:
        ctx.error(f"taskctl: {kind} {new_id} disappeared before its end was seen")
        return EXIT_ERROR
    if ctx.json:
        if kind == "task":
            assert ended.task is not None
            ctx.print(dumps(end_json(ended.task)))
        else:
            assert ended.activity is not None
            out = {**activity_json(ended.activity), "exit_status": ended.code}
            if ended.task is not None:
                out["failed"] = end_json(ended.task)
            ctx.print(dumps(out))
    elif ended.code:
        if kind == "task":
            assert ended.task is not None
            ctx.error(f"taskctl: {task_end_line(ended.task)}")
        else:
            assert ended.activity is not None
            line = f"taskctl: activity {new_id} {ended.state}"
            if ended.task is not None:
                line += f" at {task_end_line(ended.task)}"
            elif ended.activity.reason:
                line += f": {ended.activity.reason}"
            ctx.error(line)
    return ended.code


def _refused(ctx: Context, command: str, exc: CallError) -> int:
    ctx.error(error_line(command, exc))
    return exit_code_for(exc.name)


def _state(ctx: Context, kind: str, new_id: str) -> str:
    """The state of what was just submitted (queued, unless it started already)."""
    try:
        if kind == "task":
            return taskapi.task_state(ctx.client, new_id)
        return next((a.state for a in taskapi.list_activities(ctx.client) if a.id == new_id),
                    "queued")
    except CallError:
        return "queued"


def _width(ctx: Context) -> int | None:
    """A terminal's width (long reasons are cut to it); None on a pipe."""
    try:
        if ctx.out.isatty():
            return os.get_terminal_size(ctx.out.fileno()).columns or None
    except (OSError, ValueError, AttributeError):
        pass
    return None


def no_such(ctx: Context, id: str) -> int:
    ctx.error(f"{id}: ERROR (no such task): no task or activity has the id {id} "
              "(taskctl tasks lists them)")
    return EXIT_NO_SUCH


def cmd_tasks(ctx: Context, args: argparse.Namespace) -> int:
    rows = taskapi.list_tasks(ctx.client)
    if args.activity:
        if not any(a.id == args.activity for a in taskapi.list_activities(ctx.client)):
            return no_such(ctx, args.activity)
        rows = [r for r in rows if r.activity == args.activity]
    if args.state:
        rows = [r for r in rows if r.state == args.state]
    if ctx.json:
        ctx.print(dumps([task_json(r) for r in rows]))
    elif rows:
        for line in task_lines(rows, time.time(), _width(ctx)):
            ctx.print(line)
    return EXIT_OK


def cmd_activities(ctx: Context, args: argparse.Namespace) -> int:
    rows = taskapi.list_activities(ctx.client)
    if args.state:
        rows = [r for r in rows if r.state == args.state]
    if ctx.json:
        ctx.print(dumps([activity_json(r) for r in rows]))
    elif rows:
        for line in activity_lines(rows, time.time(), _width(ctx)):
            ctx.print(line)
    return EXIT_OK


def cmd_task(ctx: Context, args: argparse.Namespace) -> int:
    tasks = taskapi.list_tasks(ctx.client)
    row = next((r for r in tasks if r.id == args.id), None)
    if row is None:
        act = next((a for a in taskapi.list_activities(ctx.client) if a.id == args.id), None)
        if act is None:
            return no_such(ctx, args.id)
        members = [r for r in tasks if r.activity == act.id]
        if ctx.json:
            ctx.print(dumps({**activity_json(act), "task_rows": [task_json(r) for r in members]}))
            return EXIT_OK
        for line in activity_lines([act], time.time(), _width(ctx)):
            ctx.print(line)
        if members:
            ctx.print()
            for line in task_lines(members, time.time(), _width(ctx)):
                ctx.print(line)
        return EXIT_OK
    try:
        props = taskapi.task_properties(ctx.client, row.id)
    except CallError as exc:  # removed meanwhile, or an older daemon: the row has the essentials
        if exc.name not in taskapi.NO_OBJECT_ERRORS and exc.name != "AccessDenied":
            raise
        props = {}
    outputs: dict[str, str | None] = {}
    refused = ""
    for stream in ("stdout", "stderr"):
        try:
            outputs[stream] = tail_of(ctx, row, stream, args.lines)
        except CallError as exc:
            if exc.name == "AccessDenied":
                refused = ("only root and members of the group taskmaster may read a task's "
                           "output")
            elif exc.name in ("NoOutput", "NotAFile") or exc.name in taskapi.NO_OBJECT_ERRORS:
                outputs[stream] = ""
                continue
            else:
                refused = error_line(stream, exc)
            break
    if ctx.json:
        out = task_detail_json(row, props)
        out["stdout"] = outputs.get("stdout") if not refused else None
        out["stderr"] = outputs.get("stderr") if not refused else None
        ctx.print(dumps(out))
    else:
        for line in task_detail_lines(row, props, time.time()):
            ctx.print(line)
        if not refused:
            for stream in ("stdout", "stderr"):
                _print_tail(ctx, stream, outputs.get(stream) or "", args.lines)
    if refused:
        ctx.error(f"taskctl: the output of task {row.id} is not shown: {refused}")
    return EXIT_OK


def _print_tail(ctx: Context, stream: str, text: str, lines: int) -> None:
    if lines == 0:
        return
    ctx.print()
    if not text:
        ctx.print(f"--- {stream}: empty")
        return
    ctx.print(f"--- {stream} (last {lines} lines)")
    ctx.out.write(text if text.endswith("\n") else text + "\n")


def tail_of(ctx: Context, row: TaskRow, stream: str, lines: int) -> str:
    if lines == 0:
        return ""
    fd = taskapi.open_output(ctx.client, row.id, stream)
    try:
        return last_lines(fd, lines)
    finally:
        os.close(fd)


def last_lines(fd: int, n: int) -> str:
    """The last `n` lines of the file (a last line without its newline
    counts), read backwards by blocks: a large output is not read whole."""
    end = os.fstat(fd).st_size
    pos, data = end, b""
    while pos > 0:
        size = min(READ_BLOCK, pos)
        pos -= size
        data = os.pread(fd, size, pos) + data
        body = data[:-1] if data.endswith(b"\n") else data
        if body.count(b"\n") >= n:
            break
    body = data[:-1] if data.endswith(b"\n") else data
    parts = body.split(b"\n")
    if pos > 0 or len(parts) > n:
        parts = parts[-n:]
    text = b"\n".join(parts).decode("utf-8", errors="replace")
    return text + "\n" if data.endswith(b"\n") else text


def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    code = EXIT_OK
    done: list[dict[str, str]] = []
    for id in args.ids:
        kind = "task"
        try:
            try:
                taskapi.cancel_task(ctx.client, id)
            except CallError as exc:
                if exc.name != "NoSuchTask":
                    raise
                kind = "activity"
                taskapi.cancel_activity(ctx.client, id)
        except CallError as exc:
            if exc.name == "NoSuchTask":
                code = max(code, no_such(ctx, id))
            else:
                ctx.error(error_line(id, exc))
                code = max(code, exit_code_for(exc.name))
            continue
        done.append({"id": id, "kind": kind})
        if not ctx.json:
            ctx.print(f"{kind} {id}: cancelled")
    if ctx.json:
        ctx.print(dumps(done))
    return code


COMMANDS = {"run": cmd_run, "activity": cmd_activity, "tasks": cmd_tasks,
            "activities": cmd_activities, "task": cmd_task, "cancel": cmd_cancel}
