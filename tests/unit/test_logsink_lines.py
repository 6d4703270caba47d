"""taskmasterd/logsink.py: a lifecycle line written straight to the log
file's and stderr's handlers (no LogRecord) is the line logging would have
written, and a handler someone else added still gets every event."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmasterd.logsink import LifecycleLog, log
from taskmasterd.tasks import notices
from taskmasterd.tasks.records import TaskState, TaskStatus
from taskmasterd.tasks.spec import TaskSpec

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (INFO|WARNING) (.*)$")


def event(state: TaskState = TaskState.QUEUED) -> object:
    status = TaskStatus(id="3df2bb24", spec=TaskSpec(command="/bin/true"), state=state, seq=1,
                        submitted=time.time())
    return notices.task_event(None, status)


@contextlib.contextmanager
def only(ll: LifecycleLog) -> Iterator[None]:
    """The taskmasterd logger with the lifecycle log's handlers only, as in
    the daemon (pytest adds its own to every logger that does not propagate)."""
    others = [h for h in log.handlers if h not in (ll._file, ll._stderr)]
    for h in others:
        log.removeHandler(h)
    try:
        yield
    finally:
        for h in others:
            log.addHandler(h)


@pytest.fixture
def lifelog(tmp_path: Path) -> Iterator[LifecycleLog]:
    ll = LifecycleLog(str(tmp_path / "tm.log"), stderr=True)
    assert ll._stderr is not None
    ll._stderr.setStream(io.StringIO())
    yield ll
    ll.close()


def written(ll: LifecycleLog) -> tuple[list[str], list[str]]:
    assert ll._file is not None and ll._stderr is not None
    ll._file.flush()
    ll._stderr.flush()
    stream = ll._stderr.stream
    assert isinstance(stream, io.StringIO)
    return Path(ll.logfile).read_text().splitlines(), stream.getvalue().splitlines()


def test_the_direct_line_is_the_line_logging_writes(lifelog: LifecycleLog) -> None:
    async def main() -> None:
        assert lifelog._ours_only()
        lifelog.write(event())  # type: ignore[arg-type]
        lifelog.write(event(TaskState.FAILED))  # type: ignore[arg-type]
        other = logging.NullHandler()
        log.addHandler(other)  # someone else listens: through logging
        try:
            assert not lifelog._ours_only()
            lifelog.write(event())  # type: ignore[arg-type]
            lifelog.write(event(TaskState.FAILED))  # type: ignore[arg-type]
        finally:
            log.removeHandler(other)
        assert lifelog._ours_only()
    with only(lifelog):
        asyncio.run(main())
    file_lines, stderr_lines = written(lifelog)
    assert file_lines == stderr_lines and len(file_lines) == 4
    parts = [LINE.match(line) for line in file_lines]
    assert all(parts), file_lines
    direct, through = parts[:2], parts[2:]
    assert [(m.group(1), m.group(2)) for m in direct if m] == \
        [(m.group(1), m.group(2)) for m in through if m]
    assert [m.group(1) for m in direct if m] == ["INFO", "WARNING"]


def test_a_handler_someone_added_still_gets_the_events(lifelog: LifecycleLog) -> None:
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())
    keep = Keep()
    log.addHandler(keep)
    try:
        lifelog.write(event())  # type: ignore[arg-type]
    finally:
        log.removeHandler(keep)
    assert got and "TASK_QUEUED" in got[0]


def test_events_stay_off_stderr_when_the_journal_has_them(tmp_path: Path) -> None:
    ll = LifecycleLog(str(tmp_path / "tm.log"), stderr=True, events_to_stderr=False)
    try:
        assert ll._stderr is not None
        ll._stderr.setStream(io.StringIO())
        with only(ll):
            assert ll._ours_only()
            ll.write(event())  # type: ignore[arg-type]
            log.warning("not an event")
        file_lines, stderr_lines = written(ll)
        assert any("TASK_QUEUED" in line for line in file_lines)
        assert stderr_lines and not any("TASK_QUEUED" in line for line in stderr_lines)
    finally:
        ll.close()
