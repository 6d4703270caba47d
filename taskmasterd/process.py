"""The life cycle of one supervised process: supervisord's states, exactly.

Pure: no asyncio, no os.*, no clock. Time comes in as `now` (monotonic
seconds) and decisions go out as *actions* the supervisor carries out
(`Spawn`, `Kill`, `Changed`). The single timer a process needs is
`Process.deadline`; the supervisor re-arms it after every call.

The whole life cycle is the table `_TABLE` at the bottom: state x event ->
handler. A missing cell means the event is refused in that state (requests)
or impossible (exits/timers without a process), see `Process._dispatch`.

Automatic restarts (autorestart after EXITED, BACKOFF retries) pass through
one handler, `_auto_restart`, which asks the process's `StartLimit` (systemd's
StartLimitBurst/StartLimitIntervalSec) first: past the limit the process
gives up (FATAL) instead of spawning, whatever its starttime. An
administrative start (`_start`) resets the window and the restart count.

What the machine keeps (its fields) is ProcessData (processdata.py); its
vocabulary (events, actions, refusals) is taskmasterd.lifecycle's.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from taskmasterd.config import AutoRestart
from taskmasterd.lifecycle import (
    Action,
    AfterStop,
    Changed,
    Event,
    Kill,
    LastExit,
    Refused,
    Spawn,
    SpawnError,
)
from taskmasterd.processdata import ProcessData
from taskmasterd.states import State

# ---- the state machine -----------------------------------------------------


@dataclass
class Process(ProcessData):
    _out: list[Action] = field(default_factory=list, repr=False)
    _spawning: bool = field(default=False, repr=False)

    # -- public entry points: each returns the actions to carry out --------

    def start(self, now: float) -> list[Action]:
        return self._dispatch(Event.START, now, None)

    def stop(self, now: float) -> list[Action]:
        return self._dispatch(Event.STOP, now, None)

    def restart(self, now: float) -> list[Action]:
        return self._dispatch(Event.RESTART, now, None)

    def relaunch(self, now: float) -> list[Action]:
        """Its launch config changed: restart what runs, start what should
        run (a FATAL program whose cmd was just fixed gets its chance, as
        supervisord's update does), leave alone what was stopped on purpose."""
        if self.state in (State.STARTING, State.RUNNING, State.BACKOFF, State.STOPPING):
            return self.restart(now)
        if self.want_up or self.config.autostart:
            return self.start(now)
        return []

    def on_spawned(self, pid: int, now: float) -> list[Action]:
        return self._dispatch(Event.SPAWNED, now, pid)

    def on_spawn_failed(self, error: SpawnError, now: float) -> list[Action]:
        return self._dispatch(Event.SPAWN_FAILED, now, error)

    def on_ready(self, detail: str, now: float) -> list[Action]:
        """READY=1, or the readiness probe succeeded (`detail`: which)."""
        return self._dispatch(Event.READY, now, detail)

    def on_ping(self, now: float) -> list[Action]:
        """WATCHDOG=1."""
        return self._dispatch(Event.PING, now, None)

    def on_unhealthy(self, detail: str, now: float) -> list[Action]:
        """Its health check failed `failures` times in a row (`detail`: the last)."""
        return self._dispatch(Event.UNHEALTHY, now, detail)

    def on_exit(self, status: int | None, now: float) -> list[Action]:
        """`status` None: it exited, how is unknown (an adopted process)."""
        return self._dispatch(Event.EXIT, now, _UNKNOWN if status is None else status)

    def adopt(self, pid: int, age: float, now: float) -> list[Action]:
        """Take back a live process a previous daemon started `age` seconds
        ago: RUNNING, or STARTING for what is left of its starttime. Only a
        fresh (STOPPED, never spawned) process can adopt."""
        if self.state is not State.STOPPED or self._spawning or self.pid:
            raise AssertionError(f"{self.name}: adopt in {self.state}")
        self.want_up = True
        self.pid = pid
        self.started_at = now - age
        self.spawn_error = None
        self._to(State.STARTING)
        left = self.config.starttime - age
        if left <= 0:
            self._running(now, None)
        else:
            self.deadline = now + left
        out, self._out = self._out, []
        # One transition, STOPPED -> STARTING or RUNNING, not two.
        first, last = out[0], out[-1]
        assert isinstance(first, Changed) and isinstance(last, Changed)
        return [Changed(first.old, last.new, pid)]

    def _record_exit(self, status: object, now: float, expected: bool) -> None:
        known = status if isinstance(status, int) else None
        self.exit_status = known
        self.exit_unknown = known is None
        self.last_exit = LastExit(known, now, expected)

    def on_timer(self, now: float) -> list[Action]:
        if self.deadline is None or now < self.deadline:
            return []  # stale or early wake-up: nothing is due
        return self._dispatch(Event.TIMER, now, None)

    def _dispatch(self, event: Event, now: float, arg: object) -> list[Action]:
        if self._spawning and event not in (Event.SPAWNED, Event.SPAWN_FAILED):
            raise AssertionError(f"{self.name}: {event} while a spawn is pending")
        handler = _TABLE.get((self.state, event))
        if handler is None:
            if event is Event.START:
                raise Refused("AlreadyStarted", f"{self.name} is already {self.state.value}")
            if event is Event.STOP:
                raise Refused("NotRunning", f"{self.name} is not running ({self.state.value})")
            if event is Event.EXIT:
                # An exit we did not expect in this state: record it, don't guess.
                self._record_exit(arg, now, False)
                self._to(State.UNKNOWN, exit_status=self.exit_status,
                         status_unknown=self.exit_unknown)
                self.pid = 0
            elif event is Event.TIMER:
                self.deadline = None
            elif event in (Event.READY, Event.PING, Event.UNHEALTHY):
                pass  # a notice about a process that is no longer in that state: stale
            else:
                raise AssertionError(f"{self.name}: no transition for {event} in {self.state}")
        else:
            handler(self, now, arg)
        out, self._out = self._out, []
        return out

    # -- helpers used by the handlers ---------------------------------------

    def _to(self, new: State, **info: object) -> None:
        old, self.state = self.state, new
        self._out.append(Changed(old, new, self.pid, **info))  # type: ignore[arg-type]

    def _spawn(self) -> None:
        self.deadline = None
        self.exit_status = None
        self.exit_unknown = False
        self.ready_seen = False
        self.status_text = ""
        self.failure = ""
        self._spawning = True
        self._out.append(Spawn())

    def _backoff_delay(self) -> float:
        return self.retries + self.config.restartdelay

    # -- handlers (one per cell of the table) -------------------------------

    def _start(self, now: float, _: object) -> None:
        # An administrative start is a fresh start (systemctl start after
        # reset-failed): retries, restart count and start-limit window reset.
        self.want_up = True
        self.after_stop = AfterStop.NOTHING
        self.retries = 0
        self.restarts = 0
        self.start_limit.reset()
        self.start_limit_hit = None
        self.spawn_error = None
        self._spawn()

    def _start_after_stop(self, now: float, _: object) -> None:
        self.want_up = True
        self.after_stop = AfterStop.START

    def _restart_running(self, now: float, arg: object) -> None:
        self._stop(now, arg)
        self.want_up = True
        self.after_stop = AfterStop.START

    def _restart_backoff(self, now: float, arg: object) -> None:
        self._stop_backoff(now, arg)
        self._start(now, arg)

    def _spawned(self, now: float, pid: object) -> None:
        assert isinstance(pid, int)
        self._spawning = False
        self.pid = pid
        self.started_at = now
        self.spawn_error = None
        self._to(State.STARTING)
        if self.config.ready is not None:
            # RUNNING once ready and starttime has passed; failed at readytimeout.
            self.deadline = now + (self.config.starttime if self.config.starttime > 0
                                   else self.config.readytimeout)
        elif self.config.starttime <= 0:
            self._running(now, None)
        else:
            self.deadline = now + self.config.starttime

    def _spawn_failed(self, now: float, error: object) -> None:
        assert isinstance(error, SpawnError)
        self._spawning = False
        self.pid = 0
        self.spawn_error = error
        self._to(State.STARTING)
        self._enter_backoff(now)

    def _enter_backoff(self, now: float) -> None:
        self.retries += 1
        if self.retries > self.config.startretries:
            self._to(State.BACKOFF, exit_status=self.exit_status, expected=False,
                     spawn_error=self.spawn_error, status_unknown=self.exit_unknown)
            self.deadline = None
            self._to(State.FATAL, exit_status=self.exit_status, expected=False,
                     spawn_error=self.spawn_error, status_unknown=self.exit_unknown)
            self.retries = 0
            return
        delay = self._backoff_delay()
        self._to(State.BACKOFF, exit_status=self.exit_status, expected=False,
                 spawn_error=self.spawn_error, retry_in=delay, status_unknown=self.exit_unknown)
        self.deadline = now + delay

    def _running(self, now: float, _: object) -> None:
        self.deadline = None
        self.retries = 0
        self._to(State.RUNNING)
        if self.watchdog_active:
            self.deadline = now + self.config.watchdog

    def _starting_timer(self, now: float, arg: object) -> None:
        """STARTING's deadline: starttime passed, or readytimeout."""
        cfg = self.config
        if cfg.ready is None:
            self._running(now, arg)
            return
        started = self.started_at if self.started_at is not None else now
        if self.ready_seen and now >= started + cfg.starttime:
            self._running(now, arg)
        elif now >= started + cfg.readytimeout:
            self._not_ready(now)
        else:  # starttime passed, not ready yet: wait for READY until readytimeout
            self.deadline = started + cfg.readytimeout

    def _ready(self, now: float, detail: object) -> None:
        if self.config.ready is None or self.ready_seen:
            return  # a READY=1 from a program that needs none, or a second one
        self.ready_seen = True
        started = self.started_at if self.started_at is not None else now
        if now >= started + self.config.starttime:
            self._running(now, None)
        else:  # ready early: RUNNING once starttime has passed (the minimum)
            self.deadline = started + self.config.starttime

    def _not_ready(self, now: float) -> None:
        """readytimeout passed without READY: a failed start; the process is
        stopped first (it is alive), then BACKOFF or FATAL."""
        check = self.config.ready.describe() if self.config.ready is not None else "no check"
        self.failure = f"not ready within {self.config.readytimeout:g} s ({check})"
        self._stop_for(now, self.config.stopsignal, self.failure, AfterStop.BACKOFF)

    def _stop_for(self, now: float, sig: signal.Signals, reason: str, then: AfterStop) -> None:
        """Stop the process for `reason` (not on request): `then` once it exited."""
        self.after_stop = then
        self._to(State.STOPPING, reason=reason)
        self._out.append(Kill(sig, reason))
        self.deadline = now + self.config.stoptime

    def _ping(self, now: float, _: object) -> None:
        if self.watchdog_active:
            self.deadline = now + self.config.watchdog

    def _running_timer(self, now: float, _: object) -> None:
        """RUNNING's deadline: the watchdog expired (no WATCHDOG=1 in time).
        SIGABRT, as systemd's WatchdogSignal= default: a core dump shows
        where it hung."""
        if not self.watchdog_active:
            self.deadline = None
            return
        self.failure = f"watchdog: no WATCHDOG=1 for {self.config.watchdog:g} s"
        self._stop_for(now, signal.SIGABRT, self.failure, AfterStop.AUTO_RESTART)

    def _unhealthy(self, now: float, detail: object) -> None:
        self.failure = f"unhealthy: {detail}"
        self._stop_for(now, self.config.stopsignal, self.failure, AfterStop.AUTO_RESTART)

    def _exit_while_starting(self, now: float, status: object) -> None:
        # Exit codes don't matter before RUNNING: it did not stay up.
        self._record_exit(status, now, expected=False)
        self.deadline = None
        self._enter_backoff(now)
        self.pid = 0

    def _exit_while_running(self, now: float, status: object) -> None:
        # An unknown status (adopted) is never expected: autorestart decides.
        self.expected = isinstance(status, int) and status >= 0 and status in self.config.exitcodes
        self._record_exit(status, now, self.expected)
        self._to(State.EXITED, exit_status=self.exit_status, expected=self.expected,
                 status_unknown=self.exit_unknown)
        self.pid = 0
        policy = self.config.autorestart
        again = policy is AutoRestart.ALWAYS or (
            policy is AutoRestart.UNEXPECTED and not self.expected)
        if not again:
            self.want_up = False
            return
        if self.config.restartdelay > 0:
            self.deadline = now + self.config.restartdelay
        else:
            self._auto_restart(now, None)

    def _exit_while_stopping(self, now: float, status: object) -> None:
        then, self.after_stop = self.after_stop, AfterStop.NOTHING
        self.deadline = None
        if then is AfterStop.BACKOFF:  # a failed start: never expected
            self._record_exit(status, now, expected=False)
            self.pid = 0
            self._enter_backoff(now)
            return
        if then is AfterStop.AUTO_RESTART:
            self._record_exit(status, now, expected=False)
            self.expected = False
            self._to(State.EXITED, exit_status=self.exit_status, expected=False,
                     status_unknown=self.exit_unknown, reason=self.failure)
            self.pid = 0
            self._auto_restart(now, None)
            return
        self._record_exit(status, now, expected=True)
        self._to(State.STOPPED, exit_status=self.exit_status, expected=True,
                 status_unknown=self.exit_unknown)
        self.pid = 0
        if then is AfterStop.START:
            self._start(now, None)

    def _stop(self, now: float, _: object) -> None:
        self.want_up = False
        self.after_stop = AfterStop.NOTHING
        self._to(State.STOPPING)
        self._out.append(Kill(self.config.stopsignal, "stop requested"))
        self.deadline = now + self.config.stoptime

    def _stop_backoff(self, now: float, _: object) -> None:
        # supervisord: BACKOFF -> STOPPED at once, no retry is pending anymore.
        self.want_up = False
        self.deadline = None
        self.retries = 0
        self._to(State.STOPPED)

    def _stop_exited(self, now: float, arg: object) -> None:
        if self.deadline is None:  # no autorestart pending: nothing to stop
            raise Refused("NotRunning", f"{self.name} is not running (EXITED)")
        self._stop_backoff(now, arg)

    def _stop_again(self, now: float, _: object) -> None:
        self.want_up = False
        self.after_stop = AfterStop.NOTHING

    def _kill_overdue(self, now: float, _: object) -> None:
        self._out.append(Kill(signal.SIGKILL, f"still alive {self.config.stoptime:g}s after stop signal"))
        # Keep trying: a process in uninterruptible sleep may need another go.
        self.deadline = now + max(self.config.stoptime, 1.0)

    def _auto_restart(self, now: float, _: object) -> None:
        """Autorestart after EXITED, or a BACKOFF retry: spawn again unless
        that would exceed the start limit, in which case give up."""
        cfg = self.config
        if self.start_limit.admit(now, cfg.startlimit_burst, cfg.startlimit_interval):
            self.restarts += 1
            self._spawn()
            return
        self.deadline = None
        self.retries = 0
        self.start_limit_hit = self.start_limit.hit(now)
        self._to(State.FATAL, exit_status=self.exit_status, expected=False,
                 spawn_error=self.spawn_error, start_limit_hit=self.start_limit_hit,
                 status_unknown=self.exit_unknown)


class _Unknown:
    """The EXIT argument of an adopted process's exit (no status)."""


_UNKNOWN = _Unknown()

Handler = Callable[[Process, float, object], None]

S, E = State, Event
_TABLE: dict[tuple[State, Event], Handler] = {
    (S.STOPPED, E.START): Process._start,
    (S.STOPPED, E.RESTART): Process._start,
    (S.EXITED, E.START): Process._start,
    (S.EXITED, E.RESTART): Process._start,
    (S.EXITED, E.STOP): Process._stop_exited,
    (S.EXITED, E.TIMER): Process._auto_restart,  # autorestart after restartdelay
    (S.FATAL, E.START): Process._start,
    (S.FATAL, E.RESTART): Process._start,
    (S.UNKNOWN, E.START): Process._start,
    (S.UNKNOWN, E.RESTART): Process._start,
    # Spawn results arrive in whatever state the Spawn action was issued from.
    **{(st, E.SPAWNED): Process._spawned for st in (S.STOPPED, S.EXITED, S.FATAL, S.BACKOFF, S.UNKNOWN)},
    **{(st, E.SPAWN_FAILED): Process._spawn_failed
       for st in (S.STOPPED, S.EXITED, S.FATAL, S.BACKOFF, S.UNKNOWN)},
    (S.STARTING, E.TIMER): Process._starting_timer,  # starttime passed, or readytimeout
    (S.STARTING, E.READY): Process._ready,
    (S.STARTING, E.PING): Process._ping,  # the watchdog runs from RUNNING on: nothing to do
    (S.RUNNING, E.TIMER): Process._running_timer,  # the watchdog expired
    (S.RUNNING, E.READY): Process._ready,  # a second READY=1: nothing to do
    (S.RUNNING, E.PING): Process._ping,
    (S.RUNNING, E.UNHEALTHY): Process._unhealthy,
    (S.STARTING, E.EXIT): Process._exit_while_starting,
    (S.STARTING, E.STOP): Process._stop,
    (S.STARTING, E.RESTART): Process._restart_running,
    (S.RUNNING, E.EXIT): Process._exit_while_running,  # EXITED, then autorestart (or FATAL)
    (S.RUNNING, E.STOP): Process._stop,
    (S.RUNNING, E.RESTART): Process._restart_running,
    (S.BACKOFF, E.TIMER): Process._auto_restart,  # the next try, or FATAL
    (S.BACKOFF, E.STOP): Process._stop_backoff,
    (S.BACKOFF, E.RESTART): Process._restart_backoff,
    (S.STOPPING, E.EXIT): Process._exit_while_stopping,
    (S.STOPPING, E.TIMER): Process._kill_overdue,
    (S.STOPPING, E.START): Process._start_after_stop,
    (S.STOPPING, E.RESTART): Process._start_after_stop,
    (S.STOPPING, E.STOP): Process._stop_again,
}
del S, E
