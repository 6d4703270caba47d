"""Start ordering (`after:`, issue 15) with the real daemon and real
processes: db is ready (systemd-notify --ready) some time after it is
spawned, web has `after: [db]`. The log's lines come in the order the
daemon published them: "before" below is their order in the log."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.harness import Daemon, LogLine, event
from tests.integration.conftest import WriteConfig
from tests.integration.test_readiness import QUIET
from tests.integration.test_taskctl import popen_taskctl, taskctl

Start = Callable[..., Daemon]  # the daemons fixture


def db_program(delay_file: Path, **extra: object) -> dict[str, Any]:
    """Ready (notify) the number of seconds written in `delay_file` after it
    is spawned: the same cmd for every delay, so no reload is needed."""
    return {"cmd": f"sh -c 'sleep $(cat {delay_file}); systemd-notify --ready; "
                   "exec sleep 100000'",
            "ready": "notify", "starttime": 0, "stoptime": 5, **QUIET, **extra}


# Takes 0.1 s to stop after SIGTERM: without ordering, db's STOPPING would
# come in between its STOPPING and STOPPED (sent in the same loop turn, it
# would be logged before web could even run its trap).
SLOW_STOP = "sh -c 'trap \"sleep 0.1; exit 0\" TERM; sleep 100000 & wait'"


def index(lines: list[LogLine], kind: str, process: str) -> int:
    found = [i for i, ln in enumerate(lines) if ln.kind == kind and ln.process == process]
    assert len(found) == 1, (kind, process, [ln.raw for ln in lines])
    return found[0]


def test_web_spawns_after_dbs_running_never_before_20_runs(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """The issue's test: db ready 1 s after its spawn, web after: [db]. At
    the daemon's start (1 s), then 20 `restart all` (0.1 s): web's STARTING
    comes after db's RUNNING every time, and web stops before db stops."""
    delay = workdir / "delay"
    delay.write_text("1\n")
    cfg = write_config({"web": {"cmd": SLOW_STOP, "after": ["db"], "starttime": 0, **QUIET},
                        "db": db_program(delay)})
    d = daemons(cfg)
    held = d.wait_for(event("WAITING", "web"))
    assert "start held: waiting for db (STOPPED) (after: db)" in held.message  # web is first
    d.wait_for(event("RUNNING", "web"), timeout=20)
    lines = d.since(0)
    db_start, db_up = index(lines, "STARTING", "db"), index(lines, "RUNNING", "db")
    web_start = index(lines, "STARTING", "web")
    assert db_start < db_up < web_start
    assert lines[web_start].timestamp - lines[db_start].timestamp >= 0.95  # its 1 s
    delay.write_text("0.1\n")
    for run in range(20):
        mark = len(d.since(0))
        out = taskctl(bus_address, "restart", "all", "--timeout", "20")
        assert out.returncode == 0, (run, out.stdout, out.stderr)
        lines = d.since(mark)
        order = [index(lines, kind, name) for kind, name in (
            ("STOPPING", "web"), ("STOPPED", "web"), ("STOPPING", "db"), ("STOPPED", "db"),
            ("STARTING", "db"), ("RUNNING", "db"), ("STARTING", "web"), ("RUNNING", "web"))]
        assert order == sorted(order), (run, [ln.raw for ln in lines])


def test_stop_all_and_shutdown_stop_dependents_first(write_config: WriteConfig, daemons: Start,
                                                     bus_address: str, workdir: Path) -> None:
    """Three levels (front after api after db): `stop all` and the daemon's
    shutdown stop front, then api, then db, each once the one before is down;
    `start all` starts them the other way round. A lone `stop db` stops db
    alone."""
    delay = workdir / "delay"
    delay.write_text("0.2\n")
    cfg = write_config({
        "front": {"cmd": SLOW_STOP, "after": "api", "starttime": 0, **QUIET},
        "api": {"cmd": SLOW_STOP, "after": ["db"], "starttime": 0, **QUIET},
        "db": db_program(delay)})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "front"), timeout=20)

    def stops_in_order(lines: list[LogLine]) -> None:
        front_down, api_down = index(lines, "STOPPED", "front"), index(lines, "STOPPED", "api")
        assert index(lines, "STOPPING", "front") < front_down < index(lines, "STOPPING", "api")
        assert api_down < index(lines, "STOPPING", "db")

    mark = len(d.since(0))
    out = taskctl(bus_address, "stop", "all")
    assert out.returncode == 0, out.stderr
    lines = d.since(mark)
    stops_in_order(lines)
    waits = [ln for ln in lines if ln.kind == "WAITING"]
    assert {ln.process for ln in waits} == {"api", "db"}
    assert any("stop waits until its dependents are down: api, front" in ln.message
               for ln in waits if ln.process == "db")

    mark = len(d.since(0))
    out = taskctl(bus_address, "start", "all", "--timeout", "20")
    assert out.returncode == 0, out.stderr
    lines = d.since(mark)
    assert index(lines, "RUNNING", "db") < index(lines, "STARTING", "api")
    assert index(lines, "RUNNING", "api") < index(lines, "STARTING", "front")

    mark = len(d.since(0))
    out = taskctl(bus_address, "stop", "db")
    assert out.returncode == 0 and "db: stopped" in out.stdout, out.stderr
    lines = d.since(mark)
    assert [(ln.process, ln.kind) for ln in lines] == [("db", "STOPPING"), ("db", "STOPPED")]
    out = taskctl(bus_address, "start", "db", "--timeout", "20")
    assert out.returncode == 0, out.stderr

    mark = len(d.since(0))
    assert d.terminate() == 0
    stops_in_order(d.since(mark))


def test_taskctl_start_waits_for_the_after_program(write_config: WriteConfig, daemons: Start,
                                                   bus_address: str, workdir: Path) -> None:
    """db not autostarted: web's start is held at the daemon's start;
    status shows why; `taskctl start web` waits, showing it, until
    `taskctl start db` (another taskctl) releases it; `stop web` cancels a
    held start; --no-block returns at once."""
    delay = workdir / "delay"
    delay.write_text("0.2\n")
    cfg = write_config({"web": {"cmd": "sleep 100000", "after": ["db"], "starttime": 0, **QUIET},
                        "db": db_program(delay, autostart=False)})
    d = daemons(cfg)
    held = d.wait_for(event("WAITING", "web"))
    assert "start held: waiting for db (STOPPED)" in held.message
    status = taskctl(bus_address, "status", "web")
    assert "STOPPED" in status.stdout and "waiting for db (STOPPED)" in status.stdout, status.stdout

    # Gives up after its timeout, saying what it waits for.
    out = taskctl(bus_address, "start", "web", "--timeout", "1")
    assert out.returncode == 124, (out.stdout, out.stderr)
    assert "web is still STOPPED (waiting for db (STOPPED))" in out.stderr, out.stderr

    # A stop cancels the held start: not an error, and said in the log.
    out = taskctl(bus_address, "stop", "web")
    assert out.returncode == 0 and "web: stopped" in out.stdout, (out.stdout, out.stderr)
    cancelled = d.wait_for(event("WAITING", "web"))
    assert "start cancelled by a stop (it was waiting for db (STOPPED))" in cancelled.message
    assert "not started" in taskctl(bus_address, "status", "web").stdout

    # --no-block: accepted and held, taskctl returns at once.
    out = taskctl(bus_address, "start", "--no-block", "web", timeout=10)
    assert out.returncode == 0, (out.stdout, out.stderr)
    d.wait_for(event("WAITING", "web"))
    taskctl(bus_address, "stop", "web")
    d.wait_for(event("WAITING", "web"))  # cancelled again

    waiter = popen_taskctl(bus_address, "start", "web", "--timeout", "30")
    try:
        again = d.wait_for(event("WAITING", "web"))  # its request is in: held
        assert "start held" in again.message
        assert waiter.poll() is None  # still waiting
        mark = len(d.since(0))
        out = taskctl(bus_address, "start", "db", "--timeout", "20")
        assert out.returncode == 0, out.stderr
        stdout, stderr = waiter.communicate(timeout=20)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, (stdout, stderr)
    assert b"web: started" in stdout
    lines = d.since(mark)
    assert index(lines, "RUNNING", "db") < index(lines, "STARTING", "web")


def test_reload_starts_in_order(write_config: WriteConfig, daemons: Start,
                                workdir: Path) -> None:
    """A reload adding web after: [db] with db RUNNING starts web at once; a
    reload adding both api and the cache it starts after (api first in the
    file) starts cache first; changing `after` applies in place."""
    delay = workdir / "delay"
    delay.write_text("0.2\n")
    slow = workdir / "slow"
    slow.write_text("1\n")
    programs: dict[str, dict[str, Any]] = {"db": db_program(delay)}
    cfg = write_config(programs)
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "db"), timeout=20)

    def reload_with(new: dict[str, dict[str, Any]]) -> int:
        doc = yaml.safe_load(cfg.read_text())
        doc["programs"] = new
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        mark = len(d.since(0))
        assert d.reload().kind == "RELOAD"
        return mark

    programs["web"] = {"cmd": "sleep 100000", "after": ["db"], "starttime": 0, **QUIET}
    mark = reload_with(programs)
    d.wait_for(event("RUNNING", "web"))
    assert [ln.kind for ln in d.since(mark) if ln.process == "web"] == ["STARTING", "RUNNING"]

    new = {"api": {"cmd": "sleep 100000", "after": ["cache"], "starttime": 0, **QUIET},
           **programs, "cache": db_program(slow)}
    mark = reload_with(new)
    d.wait_for(event("RUNNING", "api"), timeout=20)
    lines = d.since(mark)
    assert "waiting for cache (STOPPED)" in lines[index(lines, "WAITING", "api")].message  # api is first
    assert index(lines, "RUNNING", "cache") < index(lines, "STARTING", "api")
    assert lines[index(lines, "STARTING", "api")].timestamp - \
        lines[index(lines, "STARTING", "cache")].timestamp >= 0.95

    new["api"] = {**new["api"], "after": ["cache", "db"]}
    mark = reload_with(new)
    assert "updated in place: api (after)" in d.since(mark)[0].message
    assert not [ln for ln in d.since(mark) if ln.process == "api"]


def test_check_config_reports_every_after_error(write_config: WriteConfig) -> None:
    cfg = write_config({"web": {"cmd": "true", "after": ["db", "cahce"]},
                        "db": {"cmd": "true", "after": "web"},
                        "cache": {"cmd": "true"}})
    r = subprocess.run([sys.executable, "-m", "taskmasterd", "--check-config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "programs.web.after[1]: unknown program 'cahce' (did you mean 'cache'?)" in out, out
    assert "programs.db.after: cycle web -> db -> web" in out, out
