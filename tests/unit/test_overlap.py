"""Overlapping restart (`restart: overlap`, issue 15), the pure parts:
which requests overlap, what ends an overlap (the successor's own state
machine, on a fake clock), the `restart:` key, and how `taskctl restart`
waits for one (taskctl.waiting.Watch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskctl.model import ProcessRow, StateChange
from taskctl.waiting import Outcome, Watch
from taskmasterd import config
from taskmasterd.lifecycle import Changed, SpawnError
from taskmasterd.overlap import overlaps, successor_reason
from taskmasterd.probeschema import Check
from taskmasterd.process import Process
from taskmasterd.programschema import RestartMode
from taskmasterd.states import State
from tests.unit.test_process import Clock, program, running, started

S = State
OVERLAP = RestartMode.OVERLAP


# ---- which requests overlap -----------------------------------------------------


def test_an_administrative_restart_or_relaunch_of_a_running_process_overlaps() -> None:
    p, _ = running(restart=OVERLAP, starttime=0)
    assert p.state is S.RUNNING
    assert overlaps(p, Process.restart) and overlaps(p, Process.relaunch)


@pytest.mark.parametrize("request_", [Process.start, Process.stop])
def test_other_requests_never_overlap(request_: object) -> None:
    p, _ = running(restart=OVERLAP, starttime=0)
    assert not overlaps(p, request_)  # type: ignore[arg-type]


def test_the_default_restarts_stop_then_start() -> None:
    p, _ = running(starttime=0)
    assert p.config.restart is RestartMode.STOP_START and not overlaps(p, Process.restart)


def test_a_process_that_is_not_running_restarts_as_always() -> None:
    clock = Clock()
    p = Process(name="web", config=program(restart=OVERLAP, starttime=5))
    assert not overlaps(p, Process.restart)  # STOPPED
    started(p, clock)
    assert p.state is S.STARTING and not overlaps(p, Process.restart)
    p.on_exit(1, clock.advance(1))
    assert p.state is S.BACKOFF and not overlaps(p, Process.restart)


# ---- what ends an overlap: the successor's transitions ---------------------------


def test_a_successor_that_gets_ready_does_not_end_it() -> None:
    for new in (S.STARTING, S.RUNNING):
        assert successor_reason(Changed(S.STOPPED, new, 9), "") == ""


def test_a_successor_never_ready_ends_it_with_the_machines_reason() -> None:
    clock = Clock()
    succ = Process(name="web", config=program(ready=Check("notify"), starttime=0, readytimeout=5))
    started(succ, clock, pid=200)
    out = succ.on_timer(clock.advance(5))
    (ch,) = [a for a in out if isinstance(a, Changed)]
    assert ch.new is S.STOPPING
    assert successor_reason(ch, succ.failure) == "the successor was not ready within 5 s (notify)"


def test_a_successor_that_exits_or_cannot_spawn_ends_it() -> None:
    clock = Clock()
    succ = Process(name="web", config=program(starttime=5, startretries=0))
    started(succ, clock, pid=200)
    out = succ.on_exit(3, clock.advance(1))
    reasons = [successor_reason(a, succ.failure) for a in out if isinstance(a, Changed)]
    assert reasons[0] == "the successor exited before it was ready (exit status 3)"
    err = SpawnError("ENOENT", "execve /nope", "No such file or directory")
    assert successor_reason(Changed(S.STARTING, S.BACKOFF, 0, spawn_error=err), "") == \
        f"the successor could not be spawned: {err}"


def test_a_stop_we_asked_for_is_no_new_reason() -> None:
    assert successor_reason(Changed(S.RUNNING, S.STOPPING, 9), "") == ""


# ---- the key --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "mode"), [("overlap", OVERLAP), ("stop-start", RestartMode.STOP_START),
                                            ("OVERLAP", OVERLAP)])
def test_the_restart_key(tmp_path: Path, text: str, mode: RestartMode) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"programs:\n  web:\n    cmd: sleep 1\n    restart: {text}\n")
    assert config.load_config(path).programs[0].restart is mode


def test_a_bad_restart_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("programs:\n  web:\n    cmd: sleep 1\n    restart: rolling\n")
    with pytest.raises(config.ConfigError, match="expected stop-start or overlap, found"):
        config.load_config(path)


# ---- taskctl restart waits for the new pid ---------------------------------------


def change(old: str, new: str, pid: int, expected: bool = True) -> StateChange:
    return StateChange("web", "web", old, new, pid, 0, expected, 0.0)


def row(state: str, pid: int, description: str = "") -> ProcessRow:
    return ProcessRow("web", "web", state, pid, 0, 0, description, "", 0)


def test_restart_waits_while_the_old_pid_runs_then_succeeds_on_the_new_one() -> None:
    w = Watch("restart", ["web"], {"web": 100})
    assert w.on_rows([row("RUNNING", 100)]) == []  # the overlap is under way
    assert w.pending() == ["web"]
    assert w.on_event(change("RUNNING", "RUNNING", 200)) == [Outcome("web", True, "RUNNING")]


def test_restart_fails_when_the_same_pid_comes_back() -> None:
    w = Watch("restart", ["web"], {"web": 100})
    assert w.on_event(change("RUNNING", "RUNNING", 100, expected=False)) == []
    assert w.recheck
    why = "pid 100, uptime 0:00:09; overlap restart failed: the successor was not ready within 2 s"
    (outcome,) = w.on_rows([row("RUNNING", 100, why)])
    assert not outcome.ok and outcome.label == "overlap restart failed" and outcome.reason == why


def test_a_stop_start_restart_still_waits_for_its_start() -> None:
    w = Watch("restart", ["web"], {"web": 100})
    w.on_event(change("RUNNING", "STOPPING", 100))
    w.on_event(change("STOPPING", "STOPPED", 100))
    w.on_event(change("STOPPED", "STARTING", 300))
    assert w.on_event(change("STARTING", "RUNNING", 300)) == [Outcome("web", True, "RUNNING")]


def test_a_restart_already_done_when_the_rows_come_is_seen_by_its_pid() -> None:
    w = Watch("restart", ["web"], {"web": 100})
    assert w.on_rows([row("RUNNING", 200)]) == [Outcome("web", True, "RUNNING")]


def test_an_overlap_whose_successor_took_over_while_not_ready_yet() -> None:
    """The old process died during the overlap: RUNNING -> STARTING with the
    successor's pid, then RUNNING as any start."""
    w = Watch("restart", ["web"], {"web": 100})
    assert w.on_event(change("RUNNING", "STARTING", 200)) == []
    assert w.on_event(change("STARTING", "RUNNING", 200)) == [Outcome("web", True, "RUNNING")]
