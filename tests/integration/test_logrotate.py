"""The lifecycle log and log rotation: SIGUSR2 reopens the log file at once
(supervisord's habit; /etc/logrotate.d/taskmasterd sends it after rotating)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from taskmasterd.logsink import LifecycleLog
from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig


def wait_file_text(path: Path, text: str, timeout: float = 10.0) -> str:
    """The file's text once it holds `text` (the file is written at the end of
    the loop turn, just after stderr)."""
    def content() -> str:
        return path.read_text() if path.exists() else ""

    wait_until(f"{text!r} in {path}", lambda: text in content(), timeout)
    return content()


def open_files(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return found


def test_sigusr2_reopens_a_moved_log_file_at_once(write_config: WriteConfig, workdir: Path,
                                                   daemons: Callable[..., Daemon]) -> None:
    config = write_config({"web": {"cmd": "sleep 100000", "starttime": 0}})
    log = workdir / "taskmasterd.log"
    d = daemons(config)
    d.wait_for(event("RUNNING", "web"))
    # In the file too: stderr and the file are flushed one after the other
    # at the end of the loop turn, and a move the file's flush notices
    # would send the line to the new file.
    wait_file_text(log, " RUNNING ")
    rotated = workdir / "taskmasterd.log.1"
    log.rename(rotated)  # logrotate without copytruncate
    assert str(rotated) in open_files(d.pid)

    d.signal(signal.SIGUSR2)
    d.wait_text("SIGUSR2: reopened the log file")
    # Closed right away, not at the next event: logrotate may compress it now.
    assert str(rotated) not in open_files(d.pid)
    assert str(log) in open_files(d.pid)
    wait_file_text(log, "reopened the log file")
    d.reload()  # an event after the reopen goes to the new file only
    wait_file_text(log, " RELOAD ")
    assert " RELOAD " not in rotated.read_text()
    assert "RUNNING" in rotated.read_text()
    assert d.proc.poll() is None  # SIGUSR2's default action would have killed it


def test_sigusr2_recreates_a_deleted_log_file(write_config: WriteConfig, workdir: Path,
                                              daemons: Callable[..., Daemon]) -> None:
    config = write_config({"web": {"cmd": "sleep 100000", "starttime": 0}})
    log = workdir / "taskmasterd.log"
    d = daemons(config)
    d.wait_for(event("RUNNING", "web"))
    log.unlink()
    d.signal(signal.SIGUSR2)
    d.wait_text("SIGUSR2: reopened the log file")
    wait_file_text(log, "reopened the log file")
    assert d.terminate() == 0


def test_a_failed_reopen_is_retried_at_the_next_write(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "taskmasterd.log"
    lifelog = LifecycleLog(str(path), stderr=False)
    logger = logging.getLogger("taskmasterd")
    try:
        directory.rename(tmp_path / "logs.old")
        directory.write_text("not a directory")  # even root cannot create the file now
        with pytest.raises(NotADirectoryError):
            lifelog.reopen()
        logger.info("lost: the file cannot be created")
        directory.unlink()
        directory.mkdir()
        logger.info("written once the directory is back")
        assert path.read_text().endswith("INFO written once the directory is back\n")
    finally:
        lifelog.close()
