"""The life-cycle state machine, transition by transition, on a fake clock."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmasterd.config import AutoRestart, ProgramConfig
from taskmasterd.lifecycle import Action, Changed, Kill, LastExit, Refused, Spawn, SpawnError, worst_state
from taskmasterd.process import Process
from taskmasterd.startlimit import StartLimit, StartLimitHit
from taskmasterd.states import State

S = State
ENOENT = SpawnError("ENOENT", "execve /nope", "No such file or directory")


def program(**kw: object) -> ProgramConfig:
    base = ProgramConfig(name="web", cmd="web", argv=("web",))
    return replace(base, **kw)  # type: ignore[arg-type]


def changes(actions: list[Action]) -> list[tuple[State, State]]:
    return [(a.old, a.new) for a in actions if isinstance(a, Changed)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, dt: float) -> float:
        self.now += dt
        return self.now


def started(p: Process, clock: Clock, pid: int = 100) -> list[Action]:
    """start() then a successful spawn, as the supervisor would do it."""
    out = p.start(clock.now)
    assert out == [Spawn()]
    return p.on_spawned(pid, clock.now)


def running(**kw: object) -> tuple[Process, Clock]:
    clock = Clock()
    p = Process(name="web", config=program(**kw))
    started(p, clock)
    if p.state is S.STARTING:
        assert p.deadline is not None
        p.on_timer(clock.advance(p.deadline - clock.now))
    assert p.state is S.RUNNING
    return p, clock


def test_start_spawns_then_starting_with_deadline_at_starttime() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=5))
    assert p.start(clock.now) == [Spawn()]
    assert p.state is S.STOPPED  # STARTING is entered once the spawn succeeded
    out = p.on_spawned(4242, clock.now)
    assert changes(out) == [(S.STOPPED, S.STARTING)]
    assert out[0] == Changed(S.STOPPED, S.STARTING, 4242)
    assert p.deadline == clock.now + 5


def test_running_only_after_starttime() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=5))
    started(p, clock)
    assert p.on_timer(clock.advance(4.999)) == []  # early wake-up: nothing
    assert p.state is S.STARTING
    out = p.on_timer(clock.advance(0.001))
    assert changes(out) == [(S.STARTING, S.RUNNING)]
    assert p.deadline is None


def test_starttime_zero_is_running_at_once() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=0))
    out = started(p, clock)
    assert changes(out) == [(S.STOPPED, S.STARTING), (S.STARTING, S.RUNNING)]
    assert p.deadline is None


@pytest.mark.parametrize("code", [0, 1, 2, -9])
def test_exit_while_starting_is_backoff_whatever_the_code(code: int) -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=5, exitcodes=frozenset({0, 1, 2})))
    started(p, clock)
    out = p.on_exit(code, clock.advance(1))
    assert changes(out) == [(S.STARTING, S.BACKOFF)]
    assert p.deadline == clock.now + 1  # first retry after 1 s
    assert p.pid == 0


def test_backoff_delays_grow_1_2_3_then_fatal_after_startretries() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=5, startretries=3))
    started(p, clock)
    delays = []
    for attempt in range(1, 4):
        out = p.on_exit(1, clock.advance(0.5))
        assert changes(out) == [(S.STARTING, S.BACKOFF)]
        assert p.retries == attempt
        assert p.deadline is not None
        delays.append(p.deadline - clock.now)
        assert p.on_timer(clock.advance(p.deadline - clock.now - 0.01)) == []
        assert p.on_timer(clock.advance(0.01)) == [Spawn()]
        p.on_spawned(200 + attempt, clock.now)
    assert delays == [1, 2, 3]
    out = p.on_exit(1, clock.advance(0.5))  # the 4th failure in a row
    assert changes(out) == [(S.STARTING, S.BACKOFF), (S.BACKOFF, S.FATAL)]
    assert p.deadline is None
    assert p.state is S.FATAL


def test_restartdelay_is_added_to_backoff() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=5, restartdelay=2.5))
    started(p, clock)
    p.on_exit(1, clock.now)
    assert p.deadline == clock.now + 3.5


def test_startretries_zero_goes_fatal_on_first_failure() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=5, startretries=0))
    started(p, clock)
    assert changes(p.on_exit(1, clock.now)) == [(S.STARTING, S.BACKOFF), (S.BACKOFF, S.FATAL)]


def test_spawn_error_is_starting_then_backoff_and_recorded() -> None:
    clock = Clock()
    p = Process(name="web", config=program(startretries=1))
    p.start(clock.now)
    out = p.on_spawn_failed(ENOENT, clock.now)
    assert changes(out) == [(S.STOPPED, S.STARTING), (S.STARTING, S.BACKOFF)]
    backoff = out[-1]
    assert isinstance(backoff, Changed) and backoff.spawn_error == ENOENT
    assert p.spawn_error == ENOENT and p.pid == 0
    assert p.on_timer(clock.advance(1)) == [Spawn()]
    out = p.on_spawn_failed(ENOENT, clock.now)
    assert changes(out) == [(S.BACKOFF, S.STARTING), (S.STARTING, S.BACKOFF), (S.BACKOFF, S.FATAL)]


def test_running_resets_retries() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=1))
    started(p, clock)
    p.on_exit(1, clock.advance(0.1))
    assert p.retries == 1
    p.on_timer(clock.advance(1))
    p.on_spawned(101, clock.now)
    p.on_timer(clock.advance(1))
    assert p.state is S.RUNNING and p.retries == 0


@pytest.mark.parametrize(
    ("policy", "code", "expected", "restarts"),
    [
        (AutoRestart.UNEXPECTED, 0, True, False),
        (AutoRestart.UNEXPECTED, 2, True, False),  # 2 is in exitcodes
        (AutoRestart.UNEXPECTED, 1, False, True),
        (AutoRestart.UNEXPECTED, -9, False, True),  # a signal is never expected
        (AutoRestart.ALWAYS, 0, True, True),
        (AutoRestart.ALWAYS, 1, False, True),
        (AutoRestart.NEVER, 1, False, False),
        (AutoRestart.NEVER, -15, False, False),
    ],
)
def test_exit_while_running(policy: AutoRestart, code: int, expected: bool, restarts: bool) -> None:
    p, clock = running(autorestart=policy, exitcodes=frozenset({0, 2}))
    out = p.on_exit(code, clock.advance(60))
    ch = out[0]
    assert isinstance(ch, Changed)
    assert (ch.old, ch.new, ch.exit_status, ch.expected) == (S.RUNNING, S.EXITED, code, expected)
    assert ch.pid == 100  # the pid that exited
    assert (Spawn() in out) is restarts
    assert p.state is S.EXITED and p.pid == 0


def test_autorestart_spawns_immediately_and_goes_through_starting() -> None:
    p, clock = running(starttime=1)
    assert p.on_exit(-9, clock.advance(10))[-1] == Spawn()
    out = p.on_spawned(555, clock.now)
    assert changes(out) == [(S.EXITED, S.STARTING)]
    assert p.pid == 555


def test_autorestart_waits_restartdelay_after_exited() -> None:
    p, clock = running(restartdelay=2)
    out = p.on_exit(1, clock.advance(10))
    assert Spawn() not in out
    assert p.deadline == clock.now + 2
    assert p.on_timer(clock.advance(2)) == [Spawn()]


def test_stop_sends_stopsignal_then_sigkill_after_stoptime() -> None:
    p, clock = running(stopsignal=signal.SIGUSR1, stoptime=1.5)
    out = p.stop(clock.now)
    assert changes(out) == [(S.RUNNING, S.STOPPING)]
    assert Kill(signal.SIGUSR1, "stop requested") in out
    assert p.deadline == clock.now + 1.5
    assert p.on_timer(clock.advance(1.499)) == []
    out = p.on_timer(clock.advance(0.001))
    assert [a.sig for a in out if isinstance(a, Kill)] == [signal.SIGKILL]
    assert p.state is S.STOPPING  # until the exit is seen
    out = p.on_exit(-9, clock.advance(0.01))
    assert changes(out) == [(S.STOPPING, S.STOPPED)]
    assert p.deadline is None


def test_stop_exit_before_stoptime_cancels_the_kill() -> None:
    p, clock = running()
    p.stop(clock.now)
    out = p.on_exit(-15, clock.advance(0.2))
    assert changes(out) == [(S.STOPPING, S.STOPPED)]
    assert Spawn() not in out  # a stop is never followed by an autorestart
    assert p.deadline is None


def test_stop_in_starting_and_backoff() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=5))
    started(p, clock)
    assert changes(p.stop(clock.now)) == [(S.STARTING, S.STOPPING)]
    p.on_exit(-15, clock.now)
    assert p.state is S.STOPPED
    started(p, clock)
    p.on_exit(1, clock.advance(0.1))
    assert p.state is S.BACKOFF
    assert changes(p.stop(clock.now)) == [(S.BACKOFF, S.STOPPED)]
    assert p.deadline is None


@pytest.mark.parametrize("state", [S.STOPPED, S.FATAL])
def test_stop_refused_when_not_running(state: State) -> None:
    p = Process(name="web", config=program(), state=state)
    with pytest.raises(Refused) as err:
        p.stop(0)
    assert err.value.code == "NotRunning"


def test_stop_of_exited_refused_unless_a_restart_is_pending() -> None:
    p, clock = running(autorestart=AutoRestart.NEVER)
    p.on_exit(0, clock.now)
    with pytest.raises(Refused):
        p.stop(clock.now)
    p, clock = running(restartdelay=5)
    p.on_exit(1, clock.now)
    assert changes(p.stop(clock.now)) == [(S.EXITED, S.STOPPED)]
    assert p.deadline is None


@pytest.mark.parametrize("starttime", [0, 5])
def test_start_refused_when_started(starttime: float) -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=starttime))
    started(p, clock)
    with pytest.raises(Refused) as err:
        p.start(clock.now)
    assert err.value.code == "AlreadyStarted"


def test_restart_running_stops_then_starts_once_stopped() -> None:
    p, clock = running()
    out = p.restart(clock.now)
    assert changes(out) == [(S.RUNNING, S.STOPPING)]
    out = p.on_exit(-15, clock.advance(0.1))
    assert changes(out) == [(S.STOPPING, S.STOPPED)]
    assert out[-1] == Spawn()
    assert changes(p.on_spawned(777, clock.now)) == [(S.STOPPED, S.STARTING)]


def test_start_during_stopping_waits_for_the_stop() -> None:
    p, clock = running()
    p.stop(clock.now)
    assert p.start(clock.now) == []
    assert p.on_exit(-15, clock.now)[-1] == Spawn()


def test_stop_during_restart_cancels_the_pending_start() -> None:
    p, clock = running()
    p.restart(clock.now)
    p.stop(clock.now)
    assert Spawn() not in p.on_exit(-15, clock.now)
    assert p.state is S.STOPPED


def test_restart_from_fatal_and_backoff_resets_retries() -> None:
    clock = Clock()
    p = Process(name="web", config=program(startretries=0, starttime=5))
    started(p, clock)
    p.on_exit(1, clock.now)
    assert p.state is S.FATAL
    assert p.restart(clock.now) == [Spawn()]
    p.on_spawned(9, clock.now)
    p.on_exit(1, clock.now)
    assert p.state is S.FATAL


def test_user_start_after_fatal_gets_fresh_retries() -> None:
    clock = Clock()
    p = Process(name="web", config=program(startretries=1, starttime=5))
    started(p, clock)
    p.on_exit(1, clock.now)
    p.on_timer(clock.advance(1))
    p.on_spawned(2, clock.now)
    p.on_exit(1, clock.now)
    assert p.state is S.FATAL
    started(p, clock)
    assert changes(p.on_exit(1, clock.now)) == [(S.STARTING, S.BACKOFF)]


def test_exit_in_a_state_without_a_process_is_unknown() -> None:
    p = Process(name="web", config=program())
    assert changes(p.on_exit(0, 0)) == [(S.STOPPED, S.UNKNOWN)]
    assert p.last_exit == LastExit(0, 0, expected=False)


def test_last_exit_is_every_exit_and_survives_restarts() -> None:
    """Status (or signal), when, expected: kept through the respawns that
    clear `exit_status`, and never reset by an administrative start."""
    p, clock = running(autorestart=AutoRestart.UNEXPECTED, exitcodes=frozenset({0}))
    assert p.last_exit is None
    p.on_exit(-9, clock.advance(60))  # RUNNING -> EXITED, unexpected: restarted at once
    assert p.last_exit == LastExit(-9, clock.now, expected=False)
    p.on_spawned(101, clock.advance(1))
    assert p.exit_status is None and p.last_exit == LastExit(-9, clock.now - 1, expected=False)
    p.on_timer(clock.advance(p.config.starttime))
    assert p.state is S.RUNNING
    p.on_exit(0, clock.advance(5))  # expected: not restarted
    assert p.last_exit == LastExit(0, clock.now, expected=True)
    started(p, clock, pid=102)
    p.on_exit(3, clock.advance(0.1))  # too quickly: BACKOFF, never expected
    assert p.state is S.BACKOFF and p.last_exit == LastExit(3, clock.now, expected=False)
    p.on_timer(clock.advance(p.deadline - clock.now if p.deadline else 0))
    p.on_spawned(103, clock.now)
    p.stop(clock.advance(1))
    p.on_exit(-15, clock.advance(0.5))  # stopped on request: expected
    assert p.state is S.STOPPED and p.last_exit == LastExit(-15, clock.now, expected=True)
    assert p.start(clock.now) == [Spawn()] and p.last_exit.status == -15


def test_stale_timer_is_ignored() -> None:
    p, clock = running()
    assert p.on_timer(clock.advance(100)) == []


def test_kill_is_repeated_while_the_process_survives() -> None:
    p, clock = running(stoptime=1)
    p.stop(clock.now)
    p.on_timer(clock.advance(1))
    assert p.deadline == clock.now + 1
    out = p.on_timer(clock.advance(1))
    assert [a.sig for a in out if isinstance(a, Kill)] == [signal.SIGKILL]


def test_config_swapped_in_place_applies_to_the_next_exit() -> None:
    p, clock = running(autorestart=AutoRestart.UNEXPECTED)
    p.config = replace(p.config, autorestart=AutoRestart.NEVER)
    assert Spawn() not in p.on_exit(1, clock.now)


def test_worst_state() -> None:
    assert worst_state([S.RUNNING, S.FATAL, S.BACKOFF]) is S.FATAL
    assert worst_state([S.RUNNING, S.RUNNING]) is S.RUNNING
    assert worst_state([]) is S.STOPPED


EVENTS = st.sampled_from(["start", "stop", "restart", "exit", "timer"])


def drive(p: Process, what: str, code: int, now: float) -> list[Action] | None:
    """One random step of the property tests: a request (start, stop,
    restart), an exit with `code` (None: no process to exit), or the timer
    (at its deadline when that is later than now). Raises Refused as the core does."""
    if what == "exit":
        return p.on_exit(code, now) if p.pid else None
    if what == "timer":
        return p.on_timer(now if p.deadline is None else max(now, p.deadline))
    return list(getattr(p, what)(now))


@settings(max_examples=300)
@given(st.lists(st.tuples(EVENTS, st.floats(0, 5), st.integers(-15, 3)), max_size=40))
def test_any_sequence_keeps_the_invariants(steps: list[tuple[str, float, int]]) -> None:
    """Whatever happens, a pid exists exactly in the states that have one,
    every Changed starts from the state we were in, and a deadline exists
    exactly where a timer means something."""
    clock = Clock()
    p = Process(name="web", config=program(starttime=1, startretries=2, stoptime=1))
    pid = 1
    for what, dt, code in steps:
        clock.advance(dt)
        before = p.state
        try:
            out = drive(p, what, code, clock.now)
        except Refused:
            assert p.state is before
            continue
        if out is None:
            continue
        while out and out[-1] == Spawn():
            pid += 1
            # A spawn either works or fails: both must be handled.
            more = p.on_spawned(pid, clock.now) if pid % 3 else p.on_spawn_failed(ENOENT, clock.now)
            out = out[:-1] + more
        state = before
        for a in out:
            if isinstance(a, Changed):
                assert a.old is state
                state = a.new
        assert state is p.state
        assert bool(p.pid) == (p.state in (S.STARTING, S.RUNNING, S.STOPPING))
        has_deadline = p.deadline is not None
        if p.state in (S.BACKOFF, S.STOPPING) or (p.state is S.STARTING):
            assert has_deadline
        if p.state in (S.STOPPED, S.FATAL, S.RUNNING):
            assert not has_deadline


def test_relaunch_restarts_running_and_retries_fatal_but_respects_a_stop() -> None:
    p, clock = running()
    assert changes(p.relaunch(clock.now)) == [(S.RUNNING, S.STOPPING)]
    assert p.on_exit(-15, clock.now)[-1] == Spawn()  # comes back with the new config
    clock = Clock()
    fatal = Process(name="web", config=program(startretries=0, starttime=5, autostart=False))
    started(fatal, clock)
    fatal.on_exit(127, clock.now)
    assert fatal.state is S.FATAL
    assert fatal.relaunch(clock.now) == [Spawn()]  # the fixed command gets its chance
    stopped, clock = running(autostart=False)
    stopped.stop(clock.now)
    stopped.on_exit(-15, clock.now)
    assert stopped.relaunch(clock.now) == []  # stopped on purpose, stays stopped


# ---- the start limit (systemd's StartLimitBurst / StartLimitIntervalSec) -------------------


def test_start_limit_admits_burst_restarts_per_interval_then_slides() -> None:
    limit = StartLimit()
    t = 1000.0
    assert all(limit.admit(t + i * 0.1, 3, 10) for i in range(3))
    assert not limit.admit(t + 0.3, 3, 10)  # a 4th within 10 s: refused, not recorded
    assert limit.hit(t + 0.3) == StartLimitHit(3, pytest.approx(0.3))
    assert not limit.admit(t + 9.99, 3, 10)
    assert limit.admit(t + 10, 3, 10)  # the first one left the window
    assert not limit.admit(t + 10.05, 3, 10)
    assert limit.admit(t + 10.1, 3, 10)


def test_start_limit_memory_is_bounded_by_the_burst() -> None:
    limit = StartLimit()
    for i in range(10_000):
        limit.admit(i * 2.0, 5, 10)  # slow enough to be always admitted
        assert len(limit.times) <= 5
    for i in range(1000):
        limit.admit(30_000 + i * 0.001, 5, 10)  # a fast loop: refused, nothing added
        assert len(limit.times) <= 5


@pytest.mark.parametrize(("burst", "interval"), [(0, 10.0), (10, 0.0)])
def test_start_limit_zero_disables_it(burst: int, interval: float) -> None:
    limit = StartLimit()
    assert all(limit.admit(1000 + i * 1e-6, burst, interval) for i in range(1000))
    assert len(limit.times) == 0


def test_start_limit_lowered_burst_applies_at_once() -> None:
    limit = StartLimit()
    assert all(limit.admit(1000 + i, 10, 100) for i in range(6))
    assert not limit.admit(1006, 3, 100)  # a reload lowered the burst: 6 > 3 already
    assert len(limit.times) == 3  # trimmed to the new burst
    assert limit.hit(1006) == StartLimitHit(3, 3.0)


def test_start_limit_hit_reads_like_systemd() -> None:
    assert str(StartLimitHit(10, 0.0412)) == "start limit hit (10 restarts in 0.04 s)"
    assert str(StartLimitHit(10, 12.345)) == "start limit hit (10 restarts in 12.3 s)"


def crash(p: Process, clock: Clock, status: int = 5, dt: float = 0.004) -> list[Action]:
    """The running process exits `status` after `dt`; a Spawn it asks for succeeds."""
    out = p.on_exit(status, clock.advance(dt))
    if out and out[-1] == Spawn():
        out = out[:-1] + p.on_spawned(p.restarts + 500, clock.now)
    return out


def test_crash_loop_with_starttime_0_gives_up_after_the_burst() -> None:
    """(RUNNING, EXIT) then autorestart at once: the 11th restart within 10 s
    is refused: EXITED -> FATAL, no spawn, the last exit status recorded."""
    clock = Clock()
    p = Process(name="web", config=program(starttime=0))
    assert changes(started(p, clock)) == [(S.STOPPED, S.STARTING), (S.STARTING, S.RUNNING)]
    spawns = 1
    for n in range(1, 11):
        out = crash(p, clock)
        assert changes(out) == [(S.RUNNING, S.EXITED), (S.EXITED, S.STARTING), (S.STARTING, S.RUNNING)]
        spawns += 1
        assert p.restarts == n
    out = p.on_exit(5, clock.advance(0.004))
    assert Spawn() not in out
    assert changes(out) == [(S.RUNNING, S.EXITED), (S.EXITED, S.FATAL)]
    fatal = out[-1]
    assert isinstance(fatal, Changed) and fatal.exit_status == 5 and not fatal.expected
    assert fatal.start_limit_hit == StartLimitHit(10, pytest.approx(0.04))
    assert p.start_limit_hit == fatal.start_limit_hit
    assert (spawns, p.state, p.pid, p.deadline, p.exit_status, p.restarts) == (11, S.FATAL, 0, None, 5, 10)


def test_restartdelay_autorestart_gives_up_at_the_timer() -> None:
    """(EXITED, TIMER): the restart due after restartdelay is the one refused."""
    clock = Clock()
    p = Process(name="web", config=program(starttime=0, restartdelay=0.5, startlimit_burst=2,
                                           startlimit_interval=10))
    started(p, clock)
    for _ in range(2):
        assert changes(p.on_exit(1, clock.advance(0.1))) == [(S.RUNNING, S.EXITED)]
        assert p.on_timer(clock.advance(0.5)) == [Spawn()]
        p.on_spawned(600, clock.now)
    assert changes(p.on_exit(1, clock.advance(0.1))) == [(S.RUNNING, S.EXITED)]
    assert p.deadline is not None and p.state is S.EXITED
    out = p.on_timer(clock.advance(0.5))
    assert changes(out) == [(S.EXITED, S.FATAL)] and Spawn() not in out
    assert p.deadline is None and p.restarts == 2


def test_backoff_retries_count_toward_the_start_limit() -> None:
    """(BACKOFF, TIMER): a retry past the limit is FATAL, though startretries
    would allow more."""
    clock = Clock()
    p = Process(name="web", config=program(starttime=5, startretries=100, startlimit_burst=2,
                                           startlimit_interval=60))
    started(p, clock)
    for _ in range(2):
        p.on_exit(1, clock.advance(0.1))
        assert p.state is S.BACKOFF
        assert p.on_timer(clock.advance(p.deadline - clock.now)) == [Spawn()]  # type: ignore[operator]
        p.on_spawned(700, clock.now)
    p.on_exit(1, clock.advance(0.1))
    out = p.on_timer(clock.advance(p.deadline - clock.now))  # type: ignore[operator]
    assert changes(out) == [(S.BACKOFF, S.FATAL)]
    fatal = out[-1]
    assert isinstance(fatal, Changed) and fatal.exit_status == 1
    assert fatal.start_limit_hit == StartLimitHit(2, pytest.approx(5.2))  # tries at 1.1, 3.2; 6.3 refused
    assert p.retries == 0 and p.restarts == 2


def test_restarts_spread_out_never_hit_the_limit_but_are_counted() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=0))  # 10 per 10 s
    started(p, clock)
    for _ in range(50):
        crash(p, clock, dt=1.01)  # one restart a second: 10 in any 10 s window at most
    assert p.state is S.RUNNING and p.restarts == 50


def test_burst_0_keeps_restarting() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=0, startlimit_burst=0))
    started(p, clock)
    for _ in range(500):
        crash(p, clock, dt=0.001)
    assert p.state is S.RUNNING and p.restarts == 500 and not p.start_limit.times


def test_an_administrative_start_resets_the_window_and_the_count() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=0, startlimit_burst=3))
    started(p, clock)
    for _ in range(3):
        crash(p, clock)
    assert changes(p.on_exit(5, clock.advance(0.001)))[-1] == (S.EXITED, S.FATAL)
    assert p.start(clock.now) == [Spawn()]  # systemctl reset-failed + start
    assert p.restarts == 0 and p.start_limit_hit is None
    p.on_spawned(800, clock.now)
    for n in range(1, 4):  # a whole new burst, at once
        assert p.state is S.RUNNING
        crash(p, clock)
        assert p.restarts == n
    assert changes(p.on_exit(5, clock.advance(0.001)))[-1] == (S.EXITED, S.FATAL)


def test_an_administrative_restart_resets_the_count() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=0, startlimit_burst=3))
    started(p, clock)
    crash(p, clock)
    crash(p, clock)
    assert p.restarts == 2
    p.restart(clock.now)
    assert p.on_exit(-15, clock.now)[-1] == Spawn()
    p.on_spawned(900, clock.now)
    assert p.restarts == 0 and len(p.start_limit.times) == 0


def test_start_limit_follows_a_reload_in_place() -> None:
    """The config is swapped in place by a reload: the next restart obeys it."""
    clock = Clock()
    p = Process(name="web", config=program(starttime=0))
    started(p, clock)
    for _ in range(4):
        crash(p, clock)
    p.config = replace(p.config, startlimit_burst=4)
    assert changes(p.on_exit(5, clock.advance(0.001)))[-1] == (S.EXITED, S.FATAL)
    assert p.restarts == 4


def test_fatal_after_startretries_carries_the_last_exit_status() -> None:
    clock = Clock()
    p = Process(name="web", config=program(starttime=5, startretries=0))
    started(p, clock)
    out = p.on_exit(5, clock.now)
    fatal = out[-1]
    assert isinstance(fatal, Changed) and fatal.new is S.FATAL
    assert fatal.exit_status == 5 and fatal.start_limit_hit is None and p.start_limit_hit is None


@settings(max_examples=300)
@given(st.lists(st.tuples(EVENTS, st.floats(0, 0.5), st.integers(-15, 3)), max_size=60),
       st.integers(0, 4), st.sampled_from([0.0, 0.3]))
def test_any_sequence_with_a_start_limit_keeps_the_invariants(
        steps: list[tuple[str, float, int]], burst: int, restartdelay: float) -> None:
    """A fast crash loop under random requests: the window never holds more
    than the burst, restarts never exceed the spawns since the last
    administrative start, and FATAL by the limit has no pid and no deadline."""
    clock = Clock()
    p = Process(name="web", config=program(starttime=0, autorestart=AutoRestart.ALWAYS,
                                           startlimit_burst=burst, startlimit_interval=1,
                                           restartdelay=restartdelay))
    pid = 1
    spawns_since_start = 0
    for what, dt, code in steps:
        clock.advance(dt)
        try:
            out = drive(p, what, code, clock.now)
        except Refused:
            continue
        if out is None:
            continue
        if what not in ("exit", "timer") and p.restarts == 0:
            spawns_since_start = 0
        while out and out[-1] == Spawn():
            pid += 1
            spawns_since_start += 1
            out = out[:-1] + p.on_spawned(pid, clock.now)
        assert len(p.start_limit.times) <= burst
        assert p.restarts <= spawns_since_start
        assert bool(p.pid) == (p.state in (S.STARTING, S.RUNNING, S.STOPPING))
        if p.state is S.FATAL:
            assert p.deadline is None and p.start_limit_hit is not None and burst > 0


# ---- adoption (a process a previous daemon started) --------------------------


def test_adopt_past_starttime_is_running_at_once() -> None:
    p = Process("web", program(starttime=5))
    actions = p.adopt(4242, age=60.0, now=1000.0)
    assert actions == [Changed(S.STOPPED, S.RUNNING, 4242)]
    assert (p.pid, p.want_up, p.deadline, p.started_at) == (4242, True, None, 940.0)


def test_adopt_within_starttime_is_starting_for_what_is_left() -> None:
    p = Process("web", program(starttime=5))
    assert p.adopt(4242, age=2.0, now=1000.0) == [Changed(S.STOPPED, S.STARTING, 4242)]
    assert p.deadline == 1003.0
    assert changes(p.on_timer(1003.0)) == [(S.STARTING, S.RUNNING)]


def test_adopt_only_a_fresh_process() -> None:
    p = Process("web", program())
    started(p, Clock())
    with pytest.raises(AssertionError):
        p.adopt(7, 1.0, 1000.0)


def test_unknown_exit_of_an_adopted_process_is_unexpected() -> None:
    p = Process("web", program(starttime=1, exitcodes=frozenset({0})))
    p.adopt(4242, age=60.0, now=1000.0)
    actions = p.on_exit(None, 1001.0)
    exited = actions[0]
    assert isinstance(exited, Changed) and exited.new is S.EXITED
    assert (exited.exit_status, exited.expected, exited.status_unknown) == (None, False, True)
    assert Spawn() in actions  # autorestart: unexpected
    assert p.last_exit == LastExit(None, 1001.0, False)
    never = Process("db", program(autorestart=AutoRestart.NEVER))
    never.adopt(7, age=60.0, now=1000.0)
    never.on_exit(None, 1001.0)
    assert (never.state, never.exit_unknown, never.exit_status) == (S.EXITED, True, None)


def test_unknown_exit_while_stopping_and_starting() -> None:
    p = Process("web", program(starttime=10))
    p.adopt(4242, age=1.0, now=1000.0)
    stop = p.stop(1000.5)
    assert any(isinstance(a, Kill) for a in stop)
    stopped = p.on_exit(None, 1000.6)
    assert stopped == [Changed(S.STOPPING, S.STOPPED, 4242, None, True, status_unknown=True)]
    q = Process("web", program(starttime=10))
    q.adopt(4242, age=1.0, now=1000.0)
    backoff = q.on_exit(None, 1001.0)
    assert [(a.new, a.status_unknown) for a in backoff if isinstance(a, Changed)] == \
        [(S.BACKOFF, True)]
    q.on_timer(q.deadline or 0)
    q.on_spawned(5, 1002.0)
    assert not q.exit_unknown  # a new run: its exit will be known
