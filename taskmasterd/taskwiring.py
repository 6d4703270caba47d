"""The daemon's tasks: its TaskManager and the task runner's client, built
for one statedir and config file (taskmasterd/daemon.py wires it).

The runner (taskmasterd/tasks/runner.py) outlives the daemon: a clean
shutdown or a re-exec detaches from it (running tasks go on), and the next
daemon -- or our own new image after a re-exec -- attaches to it again at
`TaskManager.open()` through its socket in the runtime directory.
"""

from __future__ import annotations

import logging
from typing import Any

from taskmasterd.busaddr import runtime_dir
from taskmasterd.errors import NoSuchTask
from taskmasterd.events import EventBus
from taskmasterd.supervisor import Supervisor
from taskmasterd.tasks.manager import TaskManager
from taskmasterd.tasks.runnerclient import RunnerClient, runner_socket
from taskmasterd.tasks.settings import TaskSettings

log = logging.getLogger("taskmasterd")


def create_task_manager(statedir: str, config_path: str, settings: TaskSettings,
                        bus: EventBus) -> TaskManager:
    manager: TaskManager | None = None

    def on_status(status: Any) -> None:
        if manager is not None:
            manager.on_status(status)

    def on_statuses(statuses: list[Any]) -> None:
        if manager is not None:
            manager.on_statuses(statuses)

    def on_gone(pid: int, reason: str) -> None:
        if manager is not None:
            manager.on_gone(pid, reason)

    path = runner_socket(runtime_dir(), statedir, config_path)
    client = RunnerClient(statedir, path, on_status=on_status, on_gone=on_gone,
                          on_statuses=on_statuses)
    manager = TaskManager(statedir, settings, bus, client)
    return manager


def stderr_file(tasks: TaskManager, sup: Supervisor, process: str) -> str:
    """The stderr file an alert shows the tail of: a task's or an
    activity's (by id), else a process's (by name)."""
    if tasks.knows(process):
        try:
            return tasks.stderr_file(process)
        except NoSuchTask:
            pass
    return sup.output_file(process, "stderr")
