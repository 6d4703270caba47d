"""What a process's state machine keeps: its fields and what they tell
(`program`, `start_pending`, `watchdog_active`), read by the rest of the
daemon (describe.py, the supervisor's ProcessInfo, the state store, D-Bus).
The transitions that change them, and the table that chooses one, are
process.py's `Process`, which extends this record; split out so that
process.py holds the machine alone, under the ~500-line limit.

Pure: no asyncio, no os.*, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskmasterd.config import ProgramConfig
from taskmasterd.lifecycle import AfterStop, LastExit, SpawnError
from taskmasterd.startlimit import StartLimit, StartLimitHit
from taskmasterd.states import State


@dataclass
class ProcessData:
    name: str  # "prog" or "prog:N"
    config: ProgramConfig  # swapped in place by a reload that keeps the PID
    index: int = 0
    state: State = State.STOPPED
    pid: int = 0
    exit_status: int | None = None
    expected: bool = True
    spawn_error: SpawnError | None = None
    retries: int = 0  # supervisord's `backoff`: failed starts in a row
    deadline: float | None = None
    started_at: float | None = None  # `now` of the last successful spawn
    want_up: bool = False  # wanted state (s6): should it be running?
    after_stop: AfterStop = AfterStop.NOTHING  # once a STOPPING process has exited
    restarts: int = 0  # automatic restarts since the last administrative start
    last_exit: LastExit | None = None  # the last exit ever collected (never reset)
    start_limit: StartLimit = field(default_factory=StartLimit, repr=False)
    start_limit_hit: StartLimitHit | None = None  # why it is FATAL, if the start limit
    exit_unknown: bool = False  # the last exit was an adopted process's: no status
    ready_seen: bool = False  # STARTING: it said it is ready (READY)
    status_text: str = ""  # its last STATUS= (notify), cleared at each spawn
    failure: str = ""  # why the last start failed or why it was stopped, if not an exit

    @property
    def program(self) -> str:
        return self.config.name

    @property
    def start_pending(self) -> bool:
        """An administrative start waits for the process to be down."""
        return self.after_stop is AfterStop.START

    @property
    def watchdog_active(self) -> bool:
        return (self.state is State.RUNNING and self.config.watchdog > 0
                and self.config.ready is not None and self.config.ready.kind == "notify")
