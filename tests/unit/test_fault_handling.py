"""Faults in the daemon's outputs, unit by unit (issue 11 §9): a log file
that cannot be written, a journald that is gone, the bus reconnection delays.
The same faults with the real daemon: tests/integration/test_faults.py."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmasterd.bus.service import RETRY_DELAYS, retry_delay
from taskmasterd.events import Event, Kind, Reloaded
from taskmasterd.journal import JournalSink
from taskmasterd.logsink import LifecycleLog
from taskmasterd.states import State


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("taskmasterd")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def ev(n: int) -> Event:
    return Event(kind=State.EXITED, message=f"exit number {n}", process="web", program="web",
                 pid=100 + n, exit_status=3, expected=False)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_reported_once_and_the_lost_lines_counted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logfile = tmp_path / "taskmasterd.log"
    logfile.symlink_to("/dev/full")  # every write: ENOSPC
    lifelog = LifecycleLog(str(logfile))
    try:
        for n in range(50):  # no event loop here: each line is written at once
            lifelog.write(ev(n))
        err = capsys.readouterr().err
        assert err.count("exit number") == 50  # stderr still has every line
        assert err.count("cannot write the log file") == 1, err
        assert f"log: cannot write the log file {logfile} (No space left on device)" in err
        assert "Logging error" not in err and "Traceback" not in err, err
        logfile.unlink()  # room again: a file (the handler reopens it, append mode)...
        logfile.write_text("2026-12-02 10:3")  # ...ending in a line a full disk cut short
        lifelog.write(ev(50))
        text = logfile.read_text()
        assert text.startswith("2026-12-02 10:3\n20"), text  # ended, not glued to the next
        # 50 events + the warning itself were lost
        assert f"log: the log file {logfile} is written again; 51 line(s) were lost " \
               "(No space left on device)" in text
        assert "exit number 50" in text
    finally:
        lifelog.close()


def test_journal_refusing_is_reported_once(records: Records) -> None:
    calls = []

    def send(text: str, **fields: str) -> None:
        calls.append(text)
        if len(calls) <= 3:
            raise ConnectionRefusedError(111, "Connection refused")

    sink = JournalSink(send=send)
    for n in range(5):
        sink.write(ev(n))
    assert len(calls) == 5  # tried each time: it is back at the 4th
    assert [m for m in records.messages if m.startswith("journal:")] == [
        "journal: cannot reach journald (Connection refused); events go to the log file only "
        "until it is back",
        "journal: journald is reachable again; events go to the journal again"]


def test_journal_socket_gone_is_reported_once(tmp_path: Path, records: Records) -> None:
    """libsystemd drops a message silently when the socket is gone: the sink looks first."""
    socket_path = tmp_path / "socket"
    sent: list[str] = []
    sink = JournalSink(send=lambda text, **kw: sent.append(text), socket_path=str(socket_path))
    for n in range(3):
        sink.write(ev(n))
    assert sent == []
    socket_path.touch()
    sink.write(ev(3))
    assert sent == ["web EXITED pid=103 status=3 expected=no: exit number 3"]
    assert sum(m.startswith("journal: cannot reach") for m in records.messages) == 1
    assert sum(m.startswith("journal: journald is reachable again") for m in records.messages) == 1


def test_bus_reconnection_delays_grow_then_stay() -> None:
    delays = [retry_delay(n) for n in range(12)]
    assert delays[0] < 1 and delays == sorted(delays)
    assert delays[-1] == delays[-5] == RETRY_DELAYS[-1] == 30.0


def test_undecodable_path_bytes_reach_the_journal_and_dbus_escaped() -> None:
    """A path of non-UTF-8 bytes (a surrogate once decoded) in a message."""
    from taskmasterd.bus import wire

    odd = "/etc/t" + os.fsdecode(b"\xfe") + ".yaml"
    sent: list[tuple[str, dict[str, str]]] = []
    JournalSink(send=lambda text, **kw: sent.append((text, kw))).write(
        Event(kind=Kind.RELOAD, message=f"reloaded {odd}", reload=Reloaded(added=(odd,))))
    [(text, kw)] = sent
    assert text.endswith("reloaded /etc/t\\udcfe.yaml") and kw["TASKMASTER_ADDED"] == "/etc/t\\udcfe.yaml"
    assert wire.encode_body("s", [odd]).endswith(b"/etc/t\\udcfe.yaml\0")
