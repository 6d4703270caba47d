"""Pure parts of the systemd integration: journal fields, status, watchdog."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from taskmasterd.events import Event, Kind, Reloaded
from taskmasterd.journal import MESSAGE_IDS, JournalSink, fields
from taskmasterd.lifecycle import SpawnError
from taskmasterd.logsink import format_event
from taskmasterd.notify import Notifier, status_line, watchdog_interval
from taskmasterd.states import State
from tests.dgram import fill_queue


def test_exit_event_fields() -> None:
    ev = Event(kind=State.EXITED, message="exited (killed by SIGKILL; not expected)",
               process="web:1", program="web", old_state=State.RUNNING, new_state=State.EXITED,
               pid=4242, exit_status=-9, expected=False)
    f = fields(ev)
    assert f["TASKMASTER_EVENT"] == "EXITED" and f["TASKMASTER_PROGRAM"] == "web"
    assert f["TASKMASTER_PROCESS"] == "web:1" and f["TASKMASTER_PID"] == "4242"
    assert f["TASKMASTER_EXIT_STATUS"] == "-9" and f["TASKMASTER_EXPECTED"] == "no"
    assert f["MESSAGE_ID"] == MESSAGE_IDS["EXITED"] and f["PRIORITY"] == "4"
    assert f["TASKMASTER_OLD_STATE"] == "RUNNING"
    assert f["MESSAGE"].startswith("web:1 EXITED pid=4242 status=-9 expected=no: ")


def test_daemon_event_fields_and_priorities() -> None:
    f = fields(Event(kind=Kind.RELOAD_FAILED, message="bad"))
    assert f["TASKMASTER_PROCESS"] == "taskmasterd" and "TASKMASTER_PROGRAM" not in f
    assert f["PRIORITY"] == "3" and "TASKMASTER_PID" not in f
    error = SpawnError("ENOENT", "execve /nope", "No such file or directory")
    spawn = fields(Event(kind=Kind.SPAWN_ERROR, message=f"spawn error: {error}", process="a",
                         program="a", spawn_error=error))
    assert spawn["TASKMASTER_ERRNO"] == "ENOENT" and spawn["TASKMASTER_EVENT"] == "SPAWN_ERROR"
    assert spawn["MESSAGE"] == ("a SPAWN_ERROR errno=ENOENT: spawn error: ENOENT (execve /nope): "
                                "No such file or directory")


def test_typed_reload_and_daemon_start_give_the_same_lines_and_fields() -> None:
    """The typed record renders exactly as the key=value fields of before."""
    reload = Event(kind=Kind.RELOAD, message="reloaded; added: c, d; removed: a",
                   reload=Reloaded(added=("c", "d"), removed=("a",)))
    assert format_event(reload) == ("taskmasterd RELOAD added=c,d changed= removed=a: "
                                    "reloaded; added: c, d; removed: a")
    f = fields(reload)
    assert (f["TASKMASTER_ADDED"], f["TASKMASTER_CHANGED"], f["TASKMASTER_REMOVED"]) == ("c,d", "", "a")
    started = Event(kind=Kind.DAEMON_START, message="taskmasterd 1 started", pid=4321)
    assert format_event(started) == "taskmasterd DAEMON_START pid=4321: taskmasterd 1 started"
    assert fields(started)["TASKMASTER_PID"] == "4321"
    assert started.is_transition is False and reload.is_transition is False


def test_message_ids_are_stable_distinct_and_documented() -> None:
    assert MESSAGE_IDS["EXITED"] == "df745f6d863e555c9e08c7e4c06fa123"  # never changes
    assert len(set(MESSAGE_IDS.values())) == len(MESSAGE_IDS)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = dict(re.findall(r"^\| ([A-Z_]+) \| `([0-9a-f]{32})` \|", readme, re.M))
    assert documented == MESSAGE_IDS


def test_sink_sends_message_and_fields() -> None:
    sent: list[tuple[str, dict[str, str]]] = []
    sink = JournalSink(send=lambda text, **kw: sent.append((text, kw)))
    sink.write(Event(kind="FATAL", message="gave up", process="x", program="x"))
    [(text, kw)] = sent
    assert text == "x FATAL: gave up" and kw["PRIORITY"] == "3" and kw["TASKMASTER_EVENT"] == "FATAL"


def test_status_line() -> None:
    assert status_line({State.RUNNING: 12, State.FATAL: 1}) == "12 running, 1 fatal, 0 backoff"
    assert status_line({State.RUNNING: 1, State.STOPPED: 2}) == "1 running, 0 fatal, 0 backoff, 2 stopped"


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_notifier_without_socket_is_silent_and_a_broken_one_stops_trying() -> None:
    calls: list[str] = []
    Notifier({}, send=calls.append).ready("x")
    assert calls == []

    def broken(text: str) -> None:
        calls.append(text)
        raise ConnectionRefusedError(111, "refused")
    n = Notifier({"NOTIFY_SOCKET": "/run/x"}, send=broken)
    n.ready("1 running")
    n.status("2 running")
    assert calls == ["READY=1\nSTATUS=1 running"]


def test_stopping_extends_the_stop_timeout_to_the_longest_stoptime() -> None:
    sent: list[str] = []
    Notifier({"NOTIFY_SOCKET": "/run/x"}, send=sent.append).stopping(300.0)
    Notifier({"NOTIFY_SOCKET": "/run/x"}, send=sent.append).stopping(300.0, after=11.0)
    Notifier({"NOTIFY_SOCKET": "/run/x"}, send=sent.append).stopping(0.0)
    assert sent == ["STOPPING=1\nSTATUS=stopping every program\nEXTEND_TIMEOUT_USEC=305000000",
                    "STOPPING=1\nSTATUS=stopping every program\nEXTEND_TIMEOUT_USEC=316000000",
                    "STOPPING=1\nSTATUS=stopping every program"]


def _drain(sock: socket.socket) -> list[str]:
    got = []
    while True:
        try:
            got.append(sock.recv(65536).decode())
        except BlockingIOError:
            return got


def test_a_full_notify_queue_never_blocks_and_keeps_the_order(tmp_path: Path) -> None:
    """A notify socket whose reader fell behind (its queue full): the messages
    never block the loop (sd_notify's send did); they wait, a newer STATUS=
    replacing the waiting one, and go out in order once the reader catches
    up, retried on the (virtual) clock."""
    import asyncio

    from tests.virtual_clock import run

    path = str(tmp_path / "notify")
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(path)
    reader.setblocking(False)
    filled = fill_queue(path)

    async def main() -> tuple[list[str], list[str], float]:
        loop = asyncio.get_running_loop()
        n = Notifier({"NOTIFY_SOCKET": path})
        n.ready("0 running")
        for i in range(1, 40):
            n.status(f"{i} running")
        n.reloading()
        n.ready("after the reload")
        n.status("final")
        waiting = list(n.waiting)
        assert _drain(reader) == filled  # the reader catches up
        t0 = loop.time()
        while n.waiting:
            await asyncio.sleep(0.01)  # sleep-ok: virtual clock: the retry comes
        return waiting, _drain(reader), loop.time() - t0

    # In a thread: a notifier that blocks (as sd_notify did) fails the test
    # instead of hanging it.
    outcome: list[object] = []

    def go() -> None:
        try:
            outcome.append(run(main()))
        except BaseException as exc:  # re-raised below, in the test's thread
            outcome.append(exc)
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(30)
    assert outcome, "a notify message blocked on the full queue"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    waiting, later, waited = outcome[0]  # type: ignore[misc]
    # STATUS=1..39 were each replaced by a newer lone STATUS= while they waited.
    assert waiting == ["READY=1\nSTATUS=0 running",
                       "RELOADING=1\nSTATUS=reloading the configuration",
                       "READY=1\nSTATUS=after the reload", "STATUS=final"]
    assert later == waiting  # then sent, in order
    assert waited == pytest.approx(0.05, abs=0.011)  # the first retry
    reader.close()


def test_a_notify_message_waiting_is_sent_before_a_newer_one() -> None:
    """While messages wait, a new one waits behind them (never overtakes);
    a dead socket then ends the notifying, the waiting dropped."""
    attempts: list[str] = []
    full = [True]

    def send(text: str) -> None:
        attempts.append(text)
        if full[0]:
            raise BlockingIOError(11, "full")

    n = Notifier({"NOTIFY_SOCKET": "/run/x"}, send=send)
    n.ready("1 running")
    n.status("2 running")
    n.stopping()
    assert attempts == ["READY=1\nSTATUS=1 running"]  # tried once; the others queue behind
    assert n.waiting == ["READY=1\nSTATUS=1 running", "STATUS=2 running",
                         "STOPPING=1\nSTATUS=stopping every program"]

    def gone(text: str) -> None:
        raise ConnectionRefusedError(111, "refused")
    n._send = gone
    n._send_waiting()
    assert n.waiting == [] and n._broken


def test_watchdog_pings_every_half_period_on_the_virtual_clock() -> None:
    """WATCHDOG_USEC=400000: WATCHDOG=1 at once, then every 0.2 s exactly,
    until STOPPING (tests/virtual_clock.py: no real waiting, exact times)."""
    import asyncio

    from tests.virtual_clock import run

    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        sent: list[tuple[float, str]] = []
        n = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "400000"},
                     send=lambda text: sent.append((loop.time(), text)))
        n.start_watchdog()
        await asyncio.sleep(0.9)  # sleep-ok: virtual clock: two watchdog periods pass
        n.stopping()
        await asyncio.sleep(10)  # sleep-ok: virtual clock: no ping after STOPPING
        return sent

    sent = run(main())
    pings = [t for t, text in sent if text == "WATCHDOG=1"]
    assert pings == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8], abs=1e-9)
    assert sent[-1][1].startswith("STOPPING=1") and sent[-1][0] == pytest.approx(0.9)


def test_task_and_activity_events_lines_fields_and_levels() -> None:
    """A task's end: its id, activity, state and exit status in the log line
    and the journal; failed, lost and a failed activity are warnings."""
    import logging

    from taskmasterd.logsink import level_of
    from taskmasterd.tasks import notices
    from taskmasterd.tasks.records import ActivityState, ActivityStatus, TaskState, TaskStatus
    from taskmasterd.tasks.spec import TaskSpec

    failed = TaskStatus(id="3df2bb24", spec=TaskSpec(command="/usr/bin/deploy"),
                        state=TaskState.FAILED, seq=4, submitted=1.0, activity="0a1b2c3d",
                        pid=77, exit_code=3, reason="exited with status 3")
    ev = notices.task_event(TaskState.RUNNING, failed)
    assert format_event(ev) == ("3df2bb24 TASK_FAILED pid=77 status=3 task=3df2bb24 "
                                "activity=0a1b2c3d task_state=failed: task deploy (3df2bb24) "
                                "failed in activity 0a1b2c3d: exited with status 3")
    f = fields(ev)
    assert f["TASKMASTER_TASK"] == "3df2bb24" and f["TASKMASTER_ACTIVITY"] == "0a1b2c3d"
    assert f["TASKMASTER_TASK_STATE"] == "failed" and f["TASKMASTER_EXIT_STATUS"] == "3"
    assert f["TASKMASTER_PROGRAM"] == "deploy" and f["MESSAGE_ID"] == MESSAGE_IDS["TASK_FAILED"]
    assert level_of(ev) == logging.WARNING
    killed = notices.task_event(TaskState.RUNNING, failed.replace(exit_code=None, signal=9,
                                                                  reason="", activity=""))
    assert fields(killed)["TASKMASTER_EXIT_STATUS"] == "-9" and "TASKMASTER_ACTIVITY" not in fields(killed)
    assert killed.message == "task deploy (3df2bb24) failed: killed by SIGKILL"
    lost = notices.task_event(TaskState.RUNNING, failed.replace(state=TaskState.LOST, exit_code=None))
    assert level_of(lost) == logging.WARNING
    ok = notices.task_event(TaskState.RUNNING, failed.replace(state=TaskState.SUCCEEDED, exit_code=0))
    assert level_of(ok) == logging.INFO and ok.kind == Kind.TASK_SUCCEEDED
    act = ActivityStatus(id="0a1b2c3d", name="release", state=ActivityState.FAILED,
                         tasks=("3df2bb24",), seq=3, submitted=1.0, failed_task="3df2bb24",
                         reason="its task 3df2bb24 failed: exited with status 3")
    aev = notices.activity_event(ActivityState.RUNNING, act)
    assert format_event(aev) == ("0a1b2c3d ACTIVITY_FAILED activity=0a1b2c3d activity_state=failed: "
                                 "activity release (0a1b2c3d) failed: its task 3df2bb24 failed: "
                                 "exited with status 3")
    assert fields(aev)["TASKMASTER_ACTIVITY_STATE"] == "failed"
    assert level_of(aev) == logging.WARNING
