"""The start limit with the real daemon: a crash loop with starttime 0 gives
up after startlimit_burst automatic restarts, and says so in the log, over
D-Bus (NRestarts) and in `taskctl status`. Waits are on log lines, never
sleeps."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig
from tests.integration.test_alerts import HttpSink, http_sink, with_alerts  # noqa: F401 (fixture)
from tests.integration.test_taskctl import taskctl

Start = Callable[..., Daemon]
NAME = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
PROGRAM = "org.taskmaster.Taskmaster1.Program"
LOOP = "sh -c 'exit 5'"
HIT = re.compile(r"start limit hit \((\d+) restarts in (\d+\.\d+) s\)")


def busctl(address: str, *args: str) -> str:
    r = subprocess.run(["busctl", f"--address={address}", *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def spawns(d: Daemon, process: str, since: int = 0) -> int:
    return sum(1 for ln in d.since(since) if ln.kind == "STARTING" and ln.process == process)


def status_json(address: str, target: str) -> dict[str, Any]:
    r = taskctl(address, "--json", "status", target)
    [row] = json.loads(r.stdout)
    assert isinstance(row, dict)
    return row


def test_a_crash_loop_gives_up_after_the_burst_and_shows_its_restarts(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d = daemons(write_config({"loop": {"cmd": LOOP, "starttime": 0}}))
    fatal = d.wait_for(event("FATAL", "loop"), timeout=30)
    # The first start, then 10 automatic restarts; the 11th is refused.
    assert spawns(d, "loop") == 11
    assert [ln.kind for ln in d.lines if ln.process == "loop"].count("EXITED") == 11
    m = HIT.search(fatal.message)
    assert m and m[1] == "10" and float(m[2]) < 10, fatal.raw
    assert fatal.message.endswith("; last: exit status 5") and fatal.fields["status"] == "5"
    assert "startlimit_burst 10 per startlimit_interval 10s" in fatal.message

    # D-Bus: ListProcesses has NRestarts and the last exit, the program's Processes too.
    listed = shlex.split(busctl(bus_address, "call", NAME, PATH, MANAGER, "ListProcesses"))
    assert listed[:5] == ["a(sssuitssuitb)", "1", "loop", "loop", "FATAL"]
    description, spawn_error, n_restarts, last_status, _last_us, last_expected = listed[-6:]
    assert HIT.match(description) and description.endswith("; last: exit status 5")
    assert (spawn_error, n_restarts, last_status, last_expected) == ("", "10", "5", "false")
    processes = busctl(bus_address, "get-property", NAME, f"{PATH}/program/loop", PROGRAM,
                       "Processes")
    got = shlex.split(processes)
    assert got[:6] == ["a(ssuutitb)", "1", "loop", "FATAL", "0", "10"]
    assert got[7] == "5" and got[9] == "false"  # (got[6], got[8]: the start and exit times)

    # taskctl: the table and --json.
    r = taskctl(bus_address, "status", "loop")
    assert r.returncode == 3, r
    [_header, line] = r.stdout.splitlines()
    assert line.split()[:3] == ["loop", "FATAL", "-"]
    assert "start limit hit (10 restarts in" in line and line.endswith(
        "; last: exit status 5, restarts 10")
    row = status_json(bus_address, "loop")
    assert (row["state"], row["restarts"], row["exit_status"]) == ("FATAL", 10, 5)

    # An administrative start resets the window and the count: a new burst.
    mark = len(d.lines)
    assert taskctl(bus_address, "start", "loop").returncode == 0
    d.wait_for(event("FATAL", "loop"), timeout=30)
    assert spawns(d, "loop", mark) == 11
    assert status_json(bus_address, "loop")["restarts"] == 10


def test_burst_0_keeps_restarting_until_stopped(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d = daemons(write_config({"loop": {"cmd": LOOP, "starttime": 0, "startlimit_burst": 0}}))
    d.wait_count(event("STARTING", "loop"), 30, timeout=30)
    row = status_json(bus_address, "loop")
    assert row["restarts"] >= 29 and row["state"] in ("RUNNING", "EXITED", "STARTING")
    r = taskctl(bus_address, "stop", "loop")
    assert r.returncode == 0, r
    d.wait_for(event("STOPPED", "loop"), timeout=30)
    assert not any(ln.kind == "FATAL" for ln in d.lines)
    assert spawns(d, "loop") > 11


def test_a_reload_sets_the_limit_in_place(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    d = daemons(write_config({"loop": {"cmd": LOOP, "starttime": 0, "startlimit_burst": 0}}))
    d.wait_count(event("STARTING", "loop"), 12, timeout=30)
    write_config({"loop": {"cmd": LOOP, "starttime": 0, "startlimit_burst": 3,
                           "startlimit_interval": 60}})
    reload = d.reload()
    assert reload.kind == "RELOAD" and "updated in place: loop (startlimit_burst, startlimit_interval)" \
        in reload.message, reload.raw
    fatal = d.wait_for(event("FATAL", "loop"), timeout=30)
    assert "start limit hit (3 restarts in" in fatal.message, fatal.raw
    # Applied in place: the looping process was not restarted by the reload.
    assert not any(ln.kind == "STOPPING" for ln in d.lines)


def test_giving_up_on_the_start_limit_alerts_as_fatal(
        write_config: WriteConfig, daemons: Start, http_sink: HttpSink) -> None:  # noqa: F811
    cfg = with_alerts(write_config({"loop": {"cmd": LOOP, "starttime": 0}}),
                      [{"url": http_sink.url("json", "/fatal"), "events": ["FATAL"], "rate": 0}])
    d = daemons(cfg)
    d.wait_for(event("FATAL", "loop"), timeout=30)
    [got] = http_sink.wait(1, timeout=30)
    message = got.json()["message"]
    assert "state: FATAL" in message and "status: exit status 5" in message, message
    assert HIT.search(message), message


def test_fatal_after_startretries_names_the_last_exit_status(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d = daemons(write_config({"fails": {"cmd": "sh -c 'exit 7'", "starttime": 5, "startretries": 1}}))
    fatal = d.wait_for(event("FATAL", "fails"), timeout=30)
    assert fatal.message.endswith("too many start retries too quickly; last: exit status 7"), fatal.raw
    row = status_json(bus_address, "fails")
    # The BACKOFF retry was an automatic restart.
    assert row["description"] == "exited too quickly (exit status 7), gave up, restarts 1"
    assert (row["state"], row["restarts"]) == ("FATAL", 1)
