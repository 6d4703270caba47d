"""`taskmasterd --run-task FILE`: one task, no daemon, no bus (Tessia's
`runner sample_task.json`).

The task file is read with spec.load_task_file (a bad one: one line naming
the problem, exit 2). The task gets the id `cli`; its status.json, stdout
and stderr are written in the current directory by the same code as the
task runner's (taskmasterd/tasks/execute.py: spawn, timeout, heartbeat,
atomic status writes). Nothing of the task's output is printed; one line
on stderr says how it ended. The exit status is the task's (execute.exit_status):
its own, 128+n for signal n, 127/126 when it could not be started, 124
when it timed out. SIGINT (Ctrl-C) or SIGTERM stops it as a cancel
(stopsignal, SIGKILL after stoptime; a second signal: SIGKILL at once),
recorded `cancelled`; exit 130/143.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time

from taskmasterd.errors import TaskInvalid
from taskmasterd.tasks.execute import (
    CANCEL,
    Execution,
    exit_status,
    signame,
    summary,
)
from taskmasterd.tasks.records import TaskState, TaskStatus
from taskmasterd.tasks.settings import TaskSettings
from taskmasterd.tasks.spec import MAX_FILE, load_task_file
from taskmasterd.tasks.statuswriter import StatusWriter
from taskmasterd.tasks.taskfiles import TaskDir

BAD_INPUT = 2


def run_task_file(path: str, directory: str | None = None,
                  settings: TaskSettings | None = None) -> int:
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_FILE + 1)
    except OSError as exc:
        print(f"taskmasterd: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return BAD_INPUT
    try:
        spec = load_task_file(text, path)
    except TaskInvalid as exc:
        print(f"taskmasterd: {exc}", file=sys.stderr)
        return BAD_INPUT
    settings = settings or TaskSettings()
    timeout = settings.timeout if spec.timeout is None else spec.timeout
    status = TaskStatus(id="cli", spec=dataclasses.replace(spec, timeout=timeout),
                        state=TaskState.QUEUED, seq=0, submitted=time.time(), timeout=timeout)
    taskdir = TaskDir(os.path.abspath(directory or os.getcwd()))
    return asyncio.run(_run(status, taskdir, settings))


async def _run(status: TaskStatus, taskdir: TaskDir, settings: TaskSettings) -> int:
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    received: list[int] = []

    def done(status: TaskStatus, error: OSError | None) -> None:
        if error is not None:
            print(f"taskmasterd: cannot write {taskdir.status_path} ({status.state.value}): {error}",
                  file=sys.stderr)

    writer = StatusWriter(done, swap=False)  # nothing but its three files in the current directory
    ex = Execution(status, taskdir, stopsignal=int(settings.stopsignal), stoptime=settings.stoptime,
                   runner_pid=os.getpid(), record=lambda s, _news: writer.write(taskdir, s),
                   finished=lambda _ex: finished.set())

    def interrupted(sig: int) -> None:
        if received:  # the second one: no more waiting
            ex.kill_now()
            return
        received.append(sig)
        ex.stop(CANCEL, f"cancelled by {signame(sig)} to taskmasterd --run-task")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted, sig)
    try:
        ex.start()
        await finished.wait()
        await writer.drain()
    finally:
        writer.close()
    end = ex.status
    code = exit_status(end)
    if end.state is TaskState.CANCELLED and received:
        code = 128 + received[0]
    print(f"taskmasterd: {summary(end)}; exit {code}", file=sys.stderr)
    return code
