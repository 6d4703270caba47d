"""taskctl start/stop/restart waiting for the outcome: the pure decisions
(`Watch`), the progress line, and the wait loop on a fake client and a
fake clock (no daemon, no sleeping)."""

from __future__ import annotations

import io
from collections import deque

import pytest

from taskctl import waiting
from taskctl.model import Event, OwnerChanged, ProcessRow, Reloaded, StateChange, Unreachable
from taskctl.waiting import Outcome, Progress, TimedOut, Watch


class FakeClock:
    """Monotonic seconds that move only when told (a wait "sleeps" by advancing it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def change(process: str, old: str, new: str, status: int = 0) -> StateChange:
    return StateChange(process, process.partition(":")[0], old, new, 0, status, True, 0.0)


def row(name: str, state: str, *, description: str = "", spawn_error: str = "") -> ProcessRow:
    return ProcessRow(name, name.partition(":")[0], state, 0, 0, 0, description, spawn_error, 0)


def test_start_succeeds_on_running_after_starting() -> None:
    w = Watch("start", ["web"])
    assert w.on_event(change("web", "STOPPED", "STARTING")) == []
    assert w.on_event(change("web", "STARTING", "RUNNING")) == [Outcome("web", True, "RUNNING")]
    assert w.pending() == []


def test_a_running_from_before_the_request_decides_nothing() -> None:
    w = Watch("start", ["web"])
    assert w.on_event(change("web", "STARTING", "RUNNING")) == []
    assert w.pending() == ["web"] and not w.recheck


def test_backoff_is_not_the_end() -> None:
    w = Watch("start", ["web"])
    w.on_event(change("web", "STOPPED", "STARTING"))
    assert w.on_event(change("web", "STARTING", "BACKOFF", 1)) == []
    assert not w.recheck
    assert w.on_event(change("web", "BACKOFF", "STARTING")) == []
    assert w.on_event(change("web", "STARTING", "RUNNING"))[0].ok


def test_fatal_asks_the_rows_which_give_the_spawn_error() -> None:
    w = Watch("restart", ["launcher"])
    w.on_event(change("launcher", "BACKOFF", "FATAL"))
    assert w.recheck and w.pending() == ["launcher"]
    err = "ENOENT (execve /nonexistent): No such file or directory"
    [out] = w.on_rows([row("launcher", "FATAL", spawn_error=err)])
    assert out == Outcome("launcher", False, "FATAL", "spawn error", err)
    assert not w.recheck
    assert waiting.outcome_line(out, "restart") == f"launcher: ERROR (spawn error): {err}"


def test_fatal_after_exits_is_an_abnormal_termination() -> None:
    w = Watch("start", ["quick"])
    why = "exited too quickly (exit status 3), gave up"
    [out] = w.on_rows([row("quick", "FATAL", description=why)])
    assert (out.ok, out.label, out.reason) == (False, "abnormal termination", why)


def test_a_restart_goes_through_stopped() -> None:
    """STOPPED then STARTING come in the same turn of the daemon: the rows
    fetched after STOPPED already show the new start."""
    w = Watch("restart", ["web"])
    w.on_event(change("web", "RUNNING", "STOPPING"))
    w.on_event(change("web", "STOPPING", "STOPPED", -15))
    assert w.recheck
    assert w.on_events([change("web", "STOPPED", "STARTING")]) == []
    assert w.on_rows([row("web", "STARTING")]) == []
    assert w.on_event(change("web", "STARTING", "RUNNING"))[0].ok


def test_stopped_by_someone_else_before_running_fails() -> None:
    w = Watch("start", ["web"])
    w.on_event(change("web", "STARTING", "STOPPING"))
    w.on_event(change("web", "STOPPING", "STOPPED"))
    [out] = w.on_rows([row("web", "STOPPED", description="exit status 0")])
    assert not out.ok and out.label == "stopped"
    assert out.reason == "STOPPED before reaching RUNNING (exit status 0)"


def test_stop_ends_at_stopped_or_exited() -> None:
    w = Watch("stop", ["a", "b", "c"])
    assert w.on_event(change("a", "STOPPING", "STOPPED", -9)) == [Outcome("a", True, "STOPPED")]
    assert w.on_event(change("b", "EXITED", "STOPPED")) == [Outcome("b", True, "STOPPED")]
    assert w.on_rows([row("a", "STOPPED"), row("b", "STOPPED"), row("c", "STOPPING")]) == []
    assert w.pending() == ["c"]


def test_stop_fails_when_started_again() -> None:
    w = Watch("stop", ["web"])
    w.on_event(change("web", "STOPPED", "STARTING"))
    assert w.recheck
    [out] = w.on_rows([row("web", "RUNNING")])
    assert not out.ok and out.label == "started again"


def test_a_reload_that_removes_the_process() -> None:
    w = Watch("start", ["web:2"])
    w.on_event(Reloaded((), ("web",), ()))
    assert w.recheck
    [out] = w.on_rows([row("web:0", "RUNNING")])
    assert (out.ok, out.label) == (False, "no such process")


def test_events_of_other_processes_are_ignored() -> None:
    w = Watch("start", ["web"])
    assert w.on_event(change("db", "STARTING", "FATAL")) == []
    assert not w.recheck


def test_progress_and_pending_text() -> None:
    w = Watch("start", [f"p{i}" for i in range(6)])
    w.on_event(change("p0", "STOPPED", "STARTING"))
    w.on_event(change("p1", "STARTING", "BACKOFF"))
    text = waiting.progress_text(w, 3.4, 296.2)
    assert text == ("waiting for p0 (STARTING), p1 (BACKOFF), p2 (?), p3 (?), 2 more; "
                    "3 s, gives up in 297 s")
    assert waiting.progress_text(w, 1, None).endswith("; 1 s")
    assert waiting.pending_text(w).startswith("p0 is still STARTING, p1 BACKOFF, p2 UNKNOWN")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation  # no size known: 80 columns


def test_progress_only_on_a_terminal() -> None:
    pipe = io.StringIO()
    p = Progress(pipe)
    p.show("waiting for web (STARTING)")
    p.clear()
    assert pipe.getvalue() == ""

    tty = Tty()
    p = Progress(tty)
    p.show("waiting for web (STARTING)")
    p.show("waiting for web (STARTING)")  # unchanged: not written again
    p.show("x" * 200)
    p.clear()
    assert tty.getvalue() == ("\r\x1b[Kwaiting for web (STARTING)"
                              "\r\x1b[K" + "x" * 78 + "…" + "\r\x1b[K")


class FakeClient:
    """take_events / list_processes / next_event over scripted answers; a
    next_event with nothing left lets the virtual clock run to its timeout."""

    def __init__(self, clock: FakeClock, events: list[Event | None],
                 rows: list[list[ProcessRow]]) -> None:
        self.clock = clock
        self.events = deque(events)
        self.rows = deque(rows)
        self.queued: list[Event] = []
        self.waits: list[float | None] = []
        self.choice = None

    def take_events(self) -> list[Event]:
        out, self.queued = self.queued, []
        return out

    def list_processes(self) -> list[ProcessRow]:
        return self.rows.popleft() if len(self.rows) > 1 else self.rows[0]

    def next_event(self, timeout: float | None) -> Event | None:
        self.waits.append(timeout)
        event = self.events.popleft() if self.events else None
        if event is None:  # nothing happens for `timeout` seconds
            assert timeout is not None, "would wait forever"
            self.clock.advance(timeout)
        return event

    def gone(self, reason: str) -> Unreachable:
        return Unreachable("the bus", reason, kind="user", cause=Unreachable.LOST)


def run(client: FakeClient, watch: Watch, clock: FakeClock, timeout: float | None,
        stream: io.StringIO | None = None) -> list[Outcome]:
    got: list[Outcome] = []
    waiting.wait(client, watch, timeout=timeout, progress=Progress(stream or io.StringIO()),  # type: ignore[arg-type]
                 report=got.append, clock=clock.monotonic)
    return got


def test_wait_until_running_without_a_timer_off_a_terminal() -> None:
    clock = FakeClock()
    client = FakeClient(clock, [change("web", "STARTING", "BACKOFF"),
                                change("web", "BACKOFF", "STARTING"),
                                change("web", "STARTING", "RUNNING")],
                        [[row("web", "STARTING")]])
    client.queued = [change("web", "STOPPED", "STARTING")]
    assert run(client, Watch("start", ["web"]), clock, None) == [Outcome("web", True, "RUNNING")]
    assert client.waits == [None, None, None]  # woken by events only


def test_wait_times_out_and_says_what_is_pending() -> None:
    clock = FakeClock()
    client = FakeClient(clock, [], [[row("web", "BACKOFF")]])
    w = Watch("start", ["web"])
    with pytest.raises(TimedOut):
        run(client, w, clock, 5.0)
    assert clock.monotonic() == pytest.approx(5.0)
    assert waiting.pending_text(w) == "web is still BACKOFF"


def test_wait_draws_progress_after_a_second_on_a_terminal() -> None:
    clock = FakeClock()
    client = FakeClient(clock, [None, None, None, change("web", "STARTING", "RUNNING")],
                        [[row("web", "STARTING")]])
    client.queued = [change("web", "STOPPED", "STARTING")]
    tty = Tty()
    assert run(client, Watch("start", ["web"]), clock, 60.0, tty)[0].ok
    assert client.waits[0] == waiting.PROGRESS_EVERY
    out = tty.getvalue()
    assert "waiting for web (STARTING); 1 s, gives up in 59 s" in out
    assert out.endswith("\r\x1b[K")  # cleared at the end


def test_the_daemon_leaving_the_bus_ends_the_wait() -> None:
    clock = FakeClock()
    client = FakeClient(clock, [OwnerChanged("", 0.0)], [[row("web", "STOPPING")]])
    with pytest.raises(Unreachable, match="left the bus"):
        run(client, Watch("stop", ["web"]), clock, None)
