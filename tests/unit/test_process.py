"""The life-cycle state machine, transition by transition, on a fake clock."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmasterd.config import AutoRestart, ProgramConfig
from taskmasterd.process import Action, Changed, Kill, Process, Refused, Spawn, SpawnError, State, worst_state

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
            if what == "exit":
                if not p.pid:
                    continue
                out = p.on_exit(code, clock.now)
            elif what == "timer":
                out = p.on_timer(clock.now if p.deadline is None else max(clock.now, p.deadline))
            else:
                out = getattr(p, what)(clock.now)
        except Refused:
            assert p.state is before
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
