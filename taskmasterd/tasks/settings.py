"""The `tasks:` section of the configuration, as the daemon uses it (pure).

    tasks:
      max_parallel: 4     # tasks running at once (>= 1)
      keep: 7             # days a finished task's directory is kept
      timeout: 0          # default limit per task, seconds (0: none)
      stopsignal: TERM    # how a task over its timeout, or cancelled, is stopped
      stoptime: 10        # seconds before SIGKILL follows
      max_queued: 10000   # tasks not yet ended (queued + running); more are refused
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

TASK_SETTING_KEYS: tuple[str, ...] = ("max_parallel", "keep", "timeout", "stopsignal", "stoptime",
                                       "max_queued")


@dataclass(frozen=True)
class TaskSettings:
    max_parallel: int = 4
    keep: float = 7.0  # days
    timeout: float = 0.0  # seconds; 0: no limit
    stopsignal: signal.Signals = signal.SIGTERM
    stoptime: float = 10.0  # seconds
    # Tasks not yet ended (queued + running): each holds a directory, a bus
    # object and memory; a submission beyond is refused (Error.QueueFull).
    max_queued: int = 10000
