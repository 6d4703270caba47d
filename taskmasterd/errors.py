"""Domain errors. `code` is stable: the D-Bus layer maps it to
org.taskmaster.Taskmaster1.Error.<code> and taskctl to an exit code.
"""

from __future__ import annotations


class TaskmasterError(Exception):
    code = "Failed"


class NoSuchProgram(TaskmasterError):
    code = "NoSuchProgram"


class BadName(TaskmasterError):
    code = "BadName"


class AlreadyStarted(TaskmasterError):
    code = "AlreadyStarted"


class NotRunning(TaskmasterError):
    code = "NotRunning"


class ConfigInvalid(TaskmasterError):
    code = "ConfigInvalid"


class NotAFile(TaskmasterError):
    code = "NotAFile"


class NoOutput(TaskmasterError):
    """The output file does not exist (yet): the process never wrote to it."""

    code = "NoOutput"


class NoConsole(TaskmasterError):
    """The process does not run on a console (its program has no `console: true`)."""

    code = "NoConsole"


class ShuttingDown(TaskmasterError):
    code = "ShuttingDown"


class NoSuchTask(TaskmasterError):
    """No task or activity has that id (never had, or removed after `tasks.keep`)."""

    code = "NoSuchTask"


class TaskInvalid(TaskmasterError):
    """A task or activity as submitted is not one: the message names the key and why."""

    code = "TaskInvalid"


class QueueFull(TaskmasterError):
    """A submission would take the tasks not yet ended past `tasks.max_queued`."""

    code = "QueueFull"


BY_CODE: dict[str, type[TaskmasterError]] = {
    cls.code: cls for cls in (NoSuchProgram, BadName, AlreadyStarted, NotRunning,
                              ConfigInvalid, NotAFile, NoOutput, NoConsole, ShuttingDown, NoSuchTask,
                              TaskInvalid, QueueFull)
}
