"""Readiness, the watchdog and health verdicts in the life-cycle state
machine (issue 15), transition by transition, on a fake clock."""

from __future__ import annotations

import signal

import pytest

from taskmasterd.config import AutoRestart
from taskmasterd.lifecycle import AfterStop, Changed, Kill, Spawn
from taskmasterd.probeschema import Check
from taskmasterd.process import Process
from taskmasterd.states import State
from tests.unit.test_process import Clock, changes, program, started

S = State
NOTIFY = Check("notify")
TCP = Check("tcp", "127.0.0.1:6379")


def starting(**kw: object) -> tuple[Process, Clock]:
    clock = Clock()
    p = Process(name="db", config=program(**kw))
    out = started(p, clock, pid=300)
    assert changes(out) == [(S.STOPPED, S.STARTING)]
    return p, clock


def kills(actions: list[object]) -> list[signal.Signals]:
    return [a.sig for a in actions if isinstance(a, Kill)]


# ---- readiness -------------------------------------------------------------------


def test_ready_after_starttime_is_running_at_once() -> None:
    p, clock = starting(ready=NOTIFY, starttime=1, readytimeout=60)
    assert p.deadline == clock.now + 1
    assert p.on_timer(clock.advance(1)) == []  # starttime passed, not ready: still STARTING
    assert p.state is S.STARTING and p.deadline == clock.now + 59  # now readytimeout
    out = p.on_ready("READY=1", clock.advance(1))
    assert changes(out) == [(S.STARTING, S.RUNNING)] and p.deadline is None


def test_ready_before_starttime_waits_for_starttime() -> None:
    """starttime stays the minimum: READY early is RUNNING at starttime."""
    p, clock = starting(ready=TCP, starttime=5)
    assert p.on_ready("connected", clock.advance(2)) == []
    assert p.state is S.STARTING and p.ready_seen and p.deadline == clock.now + 3
    out = p.on_timer(clock.advance(3))
    assert changes(out) == [(S.STARTING, S.RUNNING)]


def test_starttime_zero_waits_only_for_ready() -> None:
    p, clock = starting(ready=NOTIFY, starttime=0, readytimeout=10)
    assert p.state is S.STARTING and p.deadline == clock.now + 10
    assert changes(p.on_ready("READY=1", clock.advance(0.2))) == [(S.STARTING, S.RUNNING)]


def test_without_ready_a_ready_notice_changes_nothing() -> None:
    p, clock = starting(starttime=5)
    assert p.on_ready("READY=1", clock.advance(1)) == [] and not p.ready_seen
    assert changes(p.on_timer(clock.advance(4))) == [(S.STARTING, S.RUNNING)]


def test_not_ready_in_time_is_stopped_then_backoff_then_fatal() -> None:
    p, clock = starting(ready=NOTIFY, starttime=1, readytimeout=10, startretries=1,
                        stoptime=3)
    p.on_timer(clock.advance(1))
    out = p.on_timer(clock.advance(9))  # readytimeout
    assert changes(out) == [(S.STARTING, S.STOPPING)]
    assert kills(out) == [signal.SIGTERM] and p.after_stop is AfterStop.BACKOFF
    stopping = next(a for a in out if isinstance(a, Changed))
    assert stopping.reason == "not ready within 10 s (notify)"
    assert p.deadline == clock.now + 3  # stoptime, then SIGKILL
    out = p.on_exit(-signal.SIGTERM, clock.advance(0.1))
    assert changes(out) == [(S.STOPPING, S.BACKOFF)] and p.retries == 1
    assert p.last_exit is not None and not p.last_exit.expected
    # the retry: spawned again, never ready again -> FATAL (startretries 1)
    assert p.on_timer(clock.advance(p.deadline - clock.now)) == [Spawn()]
    assert changes(p.on_spawned(301, clock.now)) == [(S.BACKOFF, S.STARTING)]
    assert not p.ready_seen  # each attempt must say it again
    p.on_timer(clock.advance(1))
    p.on_timer(clock.advance(9))
    out = p.on_exit(-signal.SIGTERM, clock.advance(0.1))
    assert changes(out) == [(S.STOPPING, S.BACKOFF), (S.BACKOFF, S.FATAL)]
    assert p.failure.startswith("not ready within 10 s")


def test_a_process_that_ignores_the_stop_is_killed_then_backoff() -> None:
    p, clock = starting(ready=TCP, starttime=0, readytimeout=5, stoptime=2)
    p.on_timer(clock.advance(5))
    out = p.on_timer(clock.advance(2))
    assert kills(out) == [signal.SIGKILL] and p.state is S.STOPPING
    assert changes(p.on_exit(-signal.SIGKILL, clock.advance(0.1))) == [(S.STOPPING, S.BACKOFF)]


def test_exit_before_ready_is_a_failed_start_as_before() -> None:
    p, clock = starting(ready=NOTIFY, starttime=1)
    out = p.on_exit(1, clock.advance(0.5))
    assert changes(out) == [(S.STARTING, S.BACKOFF)]


def test_stop_request_while_waiting_for_ready_is_a_plain_stop() -> None:
    p, clock = starting(ready=NOTIFY)
    out = p.stop(clock.advance(0.5))
    assert changes(out) == [(S.STARTING, S.STOPPING)] and p.after_stop is AfterStop.NOTHING
    assert changes(p.on_exit(0, clock.advance(0.1))) == [(S.STOPPING, S.STOPPED)]


def test_stop_request_while_stopping_for_not_ready_cancels_the_retry() -> None:
    p, clock = starting(ready=NOTIFY, starttime=0, readytimeout=5)
    p.on_timer(clock.advance(5))
    assert p.after_stop is AfterStop.BACKOFF
    assert p.stop(clock.advance(0.1)) == []
    assert changes(p.on_exit(0, clock.advance(0.1))) == [(S.STOPPING, S.STOPPED)]


def test_a_stale_ready_after_the_process_left_starting_is_ignored() -> None:
    p, clock = starting(ready=NOTIFY)
    p.on_exit(1, clock.advance(0.1))
    assert p.state is S.BACKOFF
    assert p.on_ready("READY=1", clock.advance(0.1)) == [] and p.state is S.BACKOFF


# ---- the watchdog ----------------------------------------------------------------------


def watched(**kw: object) -> tuple[Process, Clock]:
    p, clock = starting(ready=NOTIFY, starttime=0, watchdog=5, **kw)
    p.on_ready("READY=1", clock.now)
    assert p.state is S.RUNNING
    return p, clock


def test_watchdog_armed_on_running_and_moved_by_each_ping() -> None:
    p, clock = watched()
    assert p.deadline == clock.now + 5
    for _ in range(3):
        assert p.on_ping(clock.advance(4)) == []
        assert p.deadline == clock.now + 5 and p.state is S.RUNNING


def test_watchdog_expiry_aborts_then_restarts_automatically() -> None:
    p, clock = watched(autorestart=AutoRestart.NEVER, stoptime=2)
    out = p.on_timer(clock.advance(5))
    assert changes(out) == [(S.RUNNING, S.STOPPING)] and kills(out) == [signal.SIGABRT]
    assert p.after_stop is AfterStop.AUTO_RESTART
    out = p.on_exit(-signal.SIGABRT, clock.advance(0.1))
    # restarted whatever autorestart says: the watchdog asked for it
    assert changes(out) == [(S.STOPPING, S.EXITED)] and out[-1] == Spawn()
    exited = next(a for a in out if isinstance(a, Changed))
    assert not exited.expected and exited.reason == "watchdog: no WATCHDOG=1 for 5 s"
    assert p.restarts == 1


def test_watchdog_restarts_count_against_the_start_limit() -> None:
    p, clock = watched(startlimit_burst=1, startlimit_interval=100)
    p.on_timer(clock.advance(5))
    assert p.on_exit(-signal.SIGABRT, clock.advance(0.1))[-1] == Spawn()
    p.on_spawned(302, clock.now)
    p.on_ready("READY=1", clock.now)
    p.on_timer(clock.advance(5))
    out = p.on_exit(-signal.SIGABRT, clock.advance(0.1))
    assert changes(out) == [(S.STOPPING, S.EXITED), (S.EXITED, S.FATAL)]


def test_no_watchdog_without_notify_or_with_zero() -> None:
    p, clock = starting(ready=NOTIFY, starttime=0, watchdog=0)
    p.on_ready("READY=1", clock.now)
    assert p.state is S.RUNNING and p.deadline is None
    assert p.on_ping(clock.advance(1)) == [] and p.deadline is None


def test_pings_while_starting_do_not_arm_the_watchdog() -> None:
    p, clock = starting(ready=NOTIFY, starttime=0, watchdog=5, readytimeout=30)
    assert p.on_ping(clock.advance(1)) == [] and p.deadline == clock.now - 1 + 30


# ---- health -------------------------------------------------------------------------------


def test_unhealthy_stops_then_restarts() -> None:
    p, clock = watched()
    out = p.on_unhealthy("HTTP 503 from http://127.0.0.1/h", clock.advance(1))
    assert changes(out) == [(S.RUNNING, S.STOPPING)] and kills(out) == [signal.SIGTERM]
    stopping = next(a for a in out if isinstance(a, Changed))
    assert stopping.reason == "unhealthy: HTTP 503 from http://127.0.0.1/h"
    out = p.on_exit(0, clock.advance(0.1))
    assert changes(out) == [(S.STOPPING, S.EXITED)] and out[-1] == Spawn()


@pytest.mark.parametrize("state", ["starting", "stopping"])
def test_unhealthy_outside_running_is_ignored(state: str) -> None:
    p, clock = starting(ready=NOTIFY)
    if state == "stopping":
        p.stop(clock.now)
    assert p.on_unhealthy("refused", clock.advance(1)) == []
    assert p.state is (S.STARTING if state == "starting" else S.STOPPING)


def test_restart_request_during_an_automatic_stop_is_an_administrative_start() -> None:
    p, clock = watched()
    p.on_unhealthy("refused", clock.advance(1))
    p.restart(clock.advance(0.1))
    assert p.after_stop is AfterStop.START
    out = p.on_exit(0, clock.advance(0.1))
    assert changes(out) == [(S.STOPPING, S.STOPPED)] and out[-1] == Spawn() and p.restarts == 0
