"""`taskctl history` against a real taskmasterd: from its lifecycle log file
(found through the daemon's ConfigFile), and from a real systemd-journald
that the daemon logs to, run in a private mount namespace (the host's
journal untouched). Waits are on log lines or on taskctl's own output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from taskctl.history import JOURNAL_SOCKET
from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
JOURNALD = "/lib/systemd/systemd-journald"
PROGRAMS = {"crashy": {"cmd": "sh -c 'exit 3'", "starttime": 0, "autorestart": "never"},
            "other": {"cmd": "sleep 100000", "starttime": 0}}


def taskctl(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*prefix, sys.executable, "-m", "taskctl", *args], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_history_from_the_lifecycle_log_found_through_the_daemon(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    if os.path.exists(JOURNAL_SOCKET):
        pytest.skip("this host has journald: taskctl reads the journal (the test below)")
    d = daemons(write_config(PROGRAMS))
    d.wait_for(event("RUNNING", "other"))
    d.cursor = 0  # in either order
    d.wait_for(event("EXITED", "crashy"))

    r = taskctl("--address", bus_address, "history", "crashy")
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stderr
    assert lines[0].split() == ["TIME", "PROCESS", "CHANGE", "PID", "STATUS", "MESSAGE"]
    changes = [" ".join(line.split()[3:6]) for line in lines[1:]]
    assert changes == ["? -> STARTING", "STARTING -> RUNNING", "RUNNING -> EXITED"]
    assert "exit 3 (unexpected)" in lines[3]

    r = taskctl("--address", bus_address, "history", "--json", "all")
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert objs[0]["event"] == "DAEMON_START"
    assert {o["process"] for o in objs} == {"taskmasterd", "crashy", "other"}

    # the daemon gone, the file is still there to read
    assert d.terminate() == 0
    r = taskctl("--address", bus_address, "history", "--file", str(workdir / "taskmasterd.log"),
                "-n", "2", "other")
    assert [line.split()[5] for line in r.stdout.splitlines()[1:]] == ["STOPPING", "STOPPED"]


class JournaldDaemon(Daemon):
    """taskmasterd in a mount namespace with a private /run and journal
    directory, where a real systemd-journald runs: the daemon sends its
    events there, and taskctl entered in the namespace reads them back."""

    def __init__(self, workdir: Path, config: Path, *extra: str) -> None:
        script = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
                  'if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi && '
                  f'{{ {JOURNALD} </dev/null >/dev/null 2>&1 & echo $! > "$0/journald.pid"; }} && '
                  'while [ ! -S /run/systemd/journal/socket ]; do sleep 0.05; done && exec "$@"')
        self.workdir = workdir
        super().__init__(config, *extra, unset=("JOURNAL_STREAM",), prefix=(
            "unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(workdir)))

    def enter(self) -> tuple[str, ...]:
        return ("nsenter", f"--mount=/proc/{self.pid}/ns/mnt")

    def close_journald(self) -> None:
        pidfile = self.workdir / "journald.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount namespace)")
@pytest.mark.skipif(not (os.access(JOURNALD, os.X_OK) and shutil.which("unshare")
                         and shutil.which("nsenter")),
                    reason="needs systemd-journald, unshare and nsenter")
def test_history_from_the_journal(write_config: WriteConfig, bus_address: str,
                                  workdir: Path) -> None:
    d = JournaldDaemon(workdir, write_config(PROGRAMS), "--address", bus_address)
    try:
        d.wait_for(event("EXITED", "crashy"))
        # the log file is removed: what comes back can only be the journal's
        (workdir / "taskmasterd.log").unlink()
        got: dict[str, Any] = {}

        def complete() -> bool:  # journald writes what it receives a moment later
            r = taskctl("--address", bus_address, "history", "--json", "crashy", prefix=d.enter())
            got["r"] = r
            return r.returncode == 0 and '"EXITED"' in r.stdout
        wait_until("the EXITED entry in the journal", complete)
        objs = [json.loads(line) for line in got["r"].stdout.splitlines()]
        assert [(o["old"], o["new"]) for o in objs] == [
            ("STOPPED", "STARTING"), ("STARTING", "RUNNING"), ("RUNNING", "EXITED")]
        assert objs[2]["exit_status"] == 3 and objs[2]["expected"] is False
        assert objs[2]["message"] == "exited (exit status 3; not expected)"
        assert objs[0]["pid"] == objs[2]["pid"] > 0

        r = taskctl("--address", bus_address, "history", "--since", "1h", "-n", "1", "crashy",
                    prefix=d.enter())
        assert "RUNNING -> EXITED" in r.stdout and len(r.stdout.splitlines()) == 2
        r = taskctl("--address", bus_address, "history", "--since", "@1", "--until", "@2",
                    "crashy", prefix=d.enter())
        assert r.stdout == "" and "no events of crashy in that time" in r.stderr
        # -D: the journal files of a directory (as journalctl -D), not the system's
        where = f"/run/log/journal/{Path('/etc/machine-id').read_text().strip()}"  # not flushed
        r = taskctl("history", "-D", where, "--json", "crashy", prefix=d.enter())
        assert [json.loads(line) for line in r.stdout.splitlines()] == objs
        r = taskctl("history", "-D", str(workdir), "crashy", prefix=d.enter())
        assert r.returncode == 0 and "no events of crashy" in r.stderr
    finally:
        code = d.terminate()
        d.close_journald()
    assert code == 0, d.text()[-3000:]
