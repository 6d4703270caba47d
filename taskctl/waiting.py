"""start/stop/restart wait for the outcome, as systemctl and supervisorctl do.

`Watch` is pure: it is told what happened (ProcessStateChanged events, and
ListProcesses rows) and says, per process, whether it reached its goal
(RUNNING for start/restart; STOPPED or EXITED for stop), failed (FATAL,
a spawn error, stopped by someone else before RUNNING...), or must still be
waited for. BACKOFF is not an end: the daemon's startretries decide
between RUNNING and FATAL. Nor is a start held by the daemon until the
programs of its `after:` are RUNNING: the process stays STOPPED (EXITED,
FATAL) with the description "waiting for db (STOPPED)", shown in the
progress line, and taskctl waits (a `taskctl start db` elsewhere releases it).
Nor is a RUNNING process whose stop waits for its dependents to be down
(stop all, restart all: "...; stop waits for web").

`wait` drives it with a `Client` already subscribed to the events (taskctl
subscribes BEFORE calling the method, so that no transition is missed).

Events say little (no spawn error), and one that looks final may not be:
a restart's STOPPED is followed, in the same turn of the daemon's loop, by
STARTING. Such an event asks for a re-check: a ListProcesses, whose reply
comes after every signal the daemon sent before it, decides.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TextIO, TypeVar

from taskctl.context import Context
from taskctl.exitcodes import EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT
from taskctl.format import VERBS, dumps, error_line, exit_code_for, result_json
from taskctl.model import CallError, Event, OwnerChanged, ProcessRow, Reloaded, StateChange
from taskmasterd.states import State

if TYPE_CHECKING:
    from taskctl.client import Client

PROGRESS_AFTER = 1.0  # seconds of waiting before a progress line appears (terminal only)
PROGRESS_EVERY = 0.5  # seconds between two refreshes of that line
PROGRESS_NAMES = 4  # processes named on the line; the rest are counted

RUNNING, STARTING = State.RUNNING.value, State.STARTING.value
DOWN_STATES = frozenset(s.value for s in (State.STOPPED, State.EXITED, State.FATAL, State.UNKNOWN))
# On the way to the goal: wait (BACKOFF included: it retries).
UP_WAY = frozenset(s.value for s in (State.STARTING, State.BACKOFF, State.STOPPING))
GOALS = {"start": "up", "restart": "up", "stop": "down"}
HELD = "waiting for "  # how the daemon describes a start held by `after:`
# ... and a stop that waits until the programs started after it are down
# (stop all, restart all): still RUNNING, on its way all the same.
STOP_HELD = "; stop waits for "


class Outcome(NamedTuple):
    """How one process ended up. `label`/`reason` explain a failure
    (`web: ERROR (label): reason`)."""

    process: str
    ok: bool
    state: str
    label: str = ""
    reason: str = ""


O_ = TypeVar("O_")
R = TypeVar("R")


class Waited(Protocol, Generic[O_, R]):
    """What `wait` drives: a pure watch told the events and the present
    state (`fetch`, a list call answered after every signal sent before
    it), which decides outcomes. `Watch` (processes) and
    `taskctl.taskwait.TaskWatch` (a task or an activity) are ones."""

    recheck: bool

    def pending(self) -> list[str]: ...
    def on_event(self, event: Event) -> list[O_]: ...
    def fetch(self, client: Client) -> R: ...
    def on_rows(self, rows: R) -> list[O_]: ...
    def progress(self, waited: float, left: float | None) -> str: ...


class Watch:
    """The processes one command waits for, and what is known of them."""

    def __init__(self, command: str, names: Iterable[str],
                 pids: Mapping[str, int] | None = None) -> None:
        """`pids`: for a restart, each process's pid before the request: an
        overlap restart (`restart: overlap`) keeps the process RUNNING and
        is done when RUNNING -> RUNNING brings another pid; the same pid
        back (expected false) means it failed, the old process kept."""
        self.command = command
        self._before = dict(pids or {})
        self._overlap_failed: set[str] = set()
        self.up = GOALS[command] == "up"
        self.names = list(dict.fromkeys(names))
        self.state: dict[str, str] = {n: "" for n in self.names}
        self.waiting: dict[str, str] = {}  # held starts: "waiting for db (STOPPED)"
        self.outcomes: dict[str, Outcome] = {}
        self.recheck = False
        self._started: set[str] = set()  # seen entering STARTING since the request

    def pending(self) -> list[str]:
        return [n for n in self.names if n not in self.outcomes]

    def on_events(self, events: Iterable[Event]) -> list[Outcome]:
        return [o for e in events for o in self.on_event(e)]

    def on_event(self, event: Event) -> list[Outcome]:
        """What an event decides (most often nothing)."""
        if isinstance(event, Reloaded):
            self.recheck = bool(self.pending())  # removed or renamed: the rows will say
            return []
        if not isinstance(event, StateChange) or event.process not in self.state \
                or event.process in self.outcomes:
            return []
        name, new = event.process, event.new
        self.state[name] = new
        self.waiting.pop(name, None)
        if self.up and event.old == RUNNING == new and name not in self._started:
            if event.pid != self._before.get(name, event.pid):
                return self._decide(Outcome(name, True, new))  # the successor took over
            self._overlap_failed.add(name)
            self.recheck = True  # the rows say why
            return []
        if self.up:
            if new == STARTING:
                self._started.add(name)
            # A RUNNING counts once this watch saw the start: not one from
            # before the request that came in with it.
            if new == RUNNING and name in self._started:
                return self._decide(Outcome(name, True, new))
            if new not in UP_WAY and new != RUNNING:
                self.recheck = True  # FATAL (why?), STOPPED (a restart goes on?)
        elif new in DOWN_STATES:
            return self._decide(Outcome(name, True, new))
        elif new != State.STOPPING.value:
            self.recheck = True  # started again?
        return []

    def fetch(self, client: Client) -> list[ProcessRow]:
        return client.list_processes()

    def progress(self, waited: float, left: float | None) -> str:
        if self.waiting:
            self.recheck = True  # what a held start waits for changes without its events
        return progress_text(self, waited, left)

    def on_rows(self, rows: Sequence[ProcessRow]) -> list[Outcome]:
        """The present state (ListProcesses), which decides every process
        that is no longer on its way."""
        self.recheck = False
        by_name = {r.name: r for r in rows}
        decided = []
        for name in self.pending():
            row = by_name.get(name)
            if row is None:
                decided += self._decide(Outcome(name, False, "", "no such process",
                                                f"{name} was removed by a reload"))
                continue
            self.state[name] = row.state
            self.waiting.pop(name, None)
            outcome = self._judge(row)
            if outcome is not None:
                decided += self._decide(outcome)
        return decided

    def _judge(self, row: ProcessRow) -> Outcome | None:
        name, state = row.name, row.state
        if STOP_HELD in row.description:
            return None  # its stop (or its restart's) comes once its dependents are down
        if self.up:
            if state == RUNNING and self._overlapping(row):
                if name not in self._overlap_failed:
                    return None  # an overlap restart under way: the old pid still serves
                return Outcome(name, False, state, "overlap restart failed", row.description)
            if state == RUNNING:
                return Outcome(name, True, state)
            if state in UP_WAY:
                return None
            if state in DOWN_STATES and row.description.startswith(HELD):
                self.waiting[name] = row.description
                return None  # held until its `after:` programs are RUNNING
            if row.spawn_error:
                return Outcome(name, False, state, "spawn error", row.spawn_error)
            if state == State.FATAL.value:
                return Outcome(name, False, state, "abnormal termination", row.description)
            why = f" ({row.description})" if row.description else ""
            return Outcome(name, False, state, state.lower(),
                           f"{state} before reaching RUNNING{why}")
        if state in DOWN_STATES:
            return Outcome(name, True, state)
        if state == State.STOPPING.value:
            return None
        return Outcome(name, False, state, "started again",
                       f"{state} again (started by another request?)")

    def _overlapping(self, row: ProcessRow) -> bool:
        """A restarted process still RUNNING with the pid it had before."""
        return (self.command == "restart" and row.name not in self._started and row.pid != 0
                and row.pid == self._before.get(row.name))

    def _decide(self, outcome: Outcome) -> list[Outcome]:
        self.outcomes[outcome.process] = outcome
        return [outcome]


# ---- the progress line (pure text) -------------------------------------------


def progress_text(watch: Watch, waited: float, left: float | None) -> str:
    """`waiting for web:0 (STARTING), web:1 (BACKOFF); 3 s, gives up in 297 s`."""
    pending = watch.pending()
    shown = [f"{n} ({_state_text(watch, n, '?')})" for n in pending[:PROGRESS_NAMES]]
    if len(pending) > PROGRESS_NAMES:
        shown.append(f"{len(pending) - PROGRESS_NAMES} more")
    text = f"waiting for {', '.join(shown)}; {int(waited)} s"
    if left is not None:
        text += f", gives up in {max(0, int(left + 0.999))} s"
    return text


def _state_text(watch: Watch, name: str, unknown: str) -> str:
    """`STARTING`, or `STOPPED, waiting for db (STOPPED)` for a held start."""
    state = watch.state[name] or unknown
    held = watch.waiting.get(name)
    return f"{state}, {held}" if held else state


def pending_text(watch: Watch) -> str:
    """`web:0 is still BACKOFF, web:1 STARTING`."""
    parts = [f"{n} {watch.state[n] or 'UNKNOWN'}"
             + (f" ({watch.waiting[n]})" if n in watch.waiting else "") for n in watch.pending()]
    return parts[0].replace(" ", " is still ", 1) + "".join(f", {p}" for p in parts[1:])


class Progress:
    """One line on a terminal, rewritten in place (\\r) and cleared at the
    end; nothing at all when `stream` is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        try:
            self.enabled = stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self.shown = False
        self.last = ""

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns or 80  # 0: size unset
        except (OSError, ValueError):
            width = 80
        if len(text) >= width:  # a wrapped line could not be rewritten in place
            text = text[:max(0, width - 2)] + "…"
        if self.shown and text == self.last:
            return
        self.last = text
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


# ---- waiting ------------------------------------------------------------------


class TimedOut(Exception):
    """The processes still pending after the timeout are in the watch."""


def wait(client: Client, watch: Waited[O_, R], *, timeout: float | None, progress: Progress,
         report: Callable[[O_], None], started: float | None = None,
         clock: Callable[[], float] = time.monotonic) -> None:
    """Wait until everything `watch` waits for is decided (each reported as it
    is). `client` is subscribed and the requests were made. Raises TimedOut
    after `timeout` seconds (None: no limit), Unreachable if the daemon
    goes, KeyboardInterrupt on Ctrl-C (the requests go on: only taskctl
    stops waiting)."""
    started = clock() if started is None else started
    deadline = None if timeout is None else started + timeout

    def emit(outcomes: list[O_]) -> None:
        if outcomes:
            progress.clear()
        for outcome in outcomes:
            report(outcome)

    def on_events(events: Iterable[Event]) -> list[O_]:
        return [o for e in events for o in watch.on_event(e)]

    def check() -> None:
        rows = watch.fetch(client)
        emit(on_events(client.take_events()))  # older than the rows
        emit(watch.on_rows(rows))

    try:
        # The events received with the requests' replies first, in order
        # (a RUNNING counts only after a STARTING seen here), then the rows,
        # which are newer, for the rest.
        emit(on_events(client.take_events()))
        check()
        while watch.pending():
            if watch.recheck:
                check()
                continue
            now = clock()
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                raise TimedOut
            if progress.enabled and now - started >= PROGRESS_AFTER:
                progress.show(watch.progress(now - started, left))
            wake = PROGRESS_EVERY if progress.enabled else None  # else: only events wake us
            if left is not None:
                wake = left if wake is None else min(wake, left)
            event = client.next_event(wake)
            if isinstance(event, OwnerChanged) and not event.owner:
                raise client.gone("taskmasterd left the bus while taskctl waited")
            if event is not None:
                emit(watch.on_event(event))
    finally:
        progress.clear()


# ---- the commands --------------------------------------------------------------


def outcome_line(outcome: Outcome, command: str) -> str:
    """`web:0: started`, or supervisorctl's `web:0: ERROR (spawn error): ENOENT ...`."""
    if outcome.ok:
        return f"{outcome.process}: {VERBS[command]}"
    return f"{outcome.process}: ERROR ({outcome.label}): {outcome.reason}"


def outcome_json(watch: Watch, name: str) -> dict[str, Any]:
    outcome = watch.outcomes.get(name)
    if outcome is None:
        return {"process": name, "ok": False, "state": watch.state[name] or None,
                "error": "timeout", "message": "still on its way when taskctl gave up waiting"}
    return {"process": name, "ok": outcome.ok, "state": outcome.state or None,
            "error": outcome.label or None, "message": outcome.reason or None}


def request_each(ctx: Context, command: str, targets: Sequence[str],
                 results: list[dict[str, Any]], affected: Callable[[list[str]], None],
                 signal: str = "") -> int:
    """Send `command` (start, stop, restart, signal) for each target in turn:
    a failed target gets its error line and does not stop the others; each
    target's result (result_json) goes to `results`, the processes it affected
    to `affected`. Returns the exit code of the requests themselves."""
    code = EXIT_OK
    for target in targets:
        try:
            if command == "signal":
                names = list(ctx.client.signal(target, signal))
            else:
                names = list(getattr(ctx.client, command)(target))
        except CallError as exc:
            ctx.error(error_line(target, exc))
            code = max(code, exit_code_for(exc.name))
            results.append(result_json(target, None, exc))
            continue
        results.append(result_json(target, names))
        affected(names)
    return code


def act_and_wait(ctx: Context, command: str, targets: Sequence[str],
                 timeout: float | None) -> int:
    """start/stop/restart each target, then wait until every process they
    affected has reached its goal or failed; print each outcome as it comes.
    Subscribed BEFORE the requests: no transition can be missed."""
    client = ctx.client
    results: list[dict[str, Any]] = []
    names: list[str] = []
    with client.subscription():
        started = time.monotonic()
        # A restart's pids before it: how an overlap restart's end is told.
        pids = {r.name: r.pid for r in client.list_processes()} if command == "restart" else {}
        code = request_each(ctx, command, targets, results, names.extend)
        watch = Watch(command, names, pids)

        def report(outcome: Outcome) -> None:
            if ctx.json:
                return
            if outcome.ok:
                ctx.print(outcome_line(outcome, command))
                ctx.out.flush()
            else:
                ctx.error(outcome_line(outcome, command))

        try:
            if watch.names:
                wait(client, watch, timeout=timeout or None, progress=Progress(ctx.err),
                     report=report, started=started)
        except TimedOut:
            ctx.error(f"taskctl: gave up waiting after {timeout:g} s: {pending_text(watch)} "
                      f"(the {command} goes on; taskctl status shows where it is)")
            code = max(code, EXIT_TIMEOUT)
        except KeyboardInterrupt:
            if watch.pending():
                ctx.error(f"taskctl: stopped waiting: {pending_text(watch)} "
                          f"(the {command} goes on)")
            raise
    if any(not o.ok for o in watch.outcomes.values()):
        code = max(code, EXIT_ERROR)
    if ctx.json:
        for result in results:
            if result["ok"]:
                result["outcome"] = [outcome_json(watch, n) for n in result["processes"]]
                result["ok"] = all(o["ok"] for o in result["outcome"])
        ctx.print(dumps(results))
    return code
