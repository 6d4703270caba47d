"""taskctl's waiting and start ordering (`after:`): a start the daemon holds
("waiting for db (STOPPED)") and a stop that waits for its dependents
("...; stop waits for web") are on their way, not failures; what they wait
for shows in the progress line and in the give-up message (pure)."""

from __future__ import annotations

from taskctl.model import ProcessRow, StateChange
from taskctl.waiting import Outcome, Watch, pending_text, progress_text


def row(name: str, state: str, description: str = "") -> ProcessRow:
    return ProcessRow(name, name, state, 0, 0, 0, description, "", 0)


def change(process: str, old: str, new: str) -> StateChange:
    return StateChange(process, process, old, new, 0, 0, True, 0.0)


def test_a_held_start_is_waited_for_and_shown() -> None:
    w = Watch("start", ["web"])
    assert w.on_rows([row("web", "STOPPED", "waiting for db (STOPPED)")]) == []
    assert w.pending() == ["web"]
    assert w.progress(3, 27) == \
        "waiting for web (STOPPED, waiting for db (STOPPED)); 3 s, gives up in 27 s"
    assert pending_text(w) == "web is still STOPPED (waiting for db (STOPPED))"
    # the progress line asks the daemon again: what it waits for changes without web's events
    assert w.recheck
    w.on_rows([row("web", "STOPPED", "waiting for db (STARTING)")])
    assert "waiting for db (STARTING)" in progress_text(w, 4, None)
    # released: its own events decide
    assert w.on_event(change("web", "STOPPED", "STARTING")) == []
    assert "waiting for db" not in progress_text(w, 5, None)
    assert w.on_event(change("web", "STARTING", "RUNNING")) == [Outcome("web", True, "RUNNING")]


def test_a_stopped_process_not_held_still_fails_a_start() -> None:
    w = Watch("start", ["web"])
    [outcome] = w.on_rows([row("web", "STOPPED", "not started")])
    assert not outcome.ok and "STOPPED before reaching RUNNING" in outcome.reason


def test_a_stop_that_waits_for_its_dependents_is_on_its_way() -> None:
    deferred = row("db", "RUNNING", "pid 42, uptime 0:00:03; stop waits for web")
    stop = Watch("stop", ["db"])
    assert stop.on_rows([deferred]) == [] and stop.pending() == ["db"]
    assert stop.on_event(change("db", "RUNNING", "STOPPING")) == []
    assert stop.on_event(change("db", "STOPPING", "STOPPED")) == [Outcome("db", True, "STOPPED")]
    # a restart: the RUNNING from before its stop is not the outcome
    restart = Watch("restart", ["db"])
    assert restart.on_rows([deferred]) == [] and restart.pending() == ["db"]
    # without that, a RUNNING row is a stop that failed ("started again")
    [outcome] = Watch("stop", ["db"]).on_rows([row("db", "RUNNING", "pid 42")])
    assert not outcome.ok
