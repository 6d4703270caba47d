"""The reload preview against a real daemon (API 1.6): Manager.PlanReload and
PlanReloadReasons say what the Reload that follows does, and apply nothing
(PlanReloadSettings, 1.7: the settings outside programs);
`taskctl reload --dry-run` and the supervisorctl words (update, reread,
avail, maintail)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_dbus_service import client
from tests.integration.test_taskctl import Lines, taskctl

Start = Callable[..., Daemon]
SLEEPER = "sleep 100000"
ERROR = "org.taskmaster.Taskmaster1.Error."


def programs(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    base = {
        "web": {"cmd": SLEEPER, "starttime": 0},
        "db": {"cmd": SLEEPER, "starttime": 0},
        "workers": {"cmd": SLEEPER, "starttime": 0, "numprocs": 2},
        "old": {"cmd": SLEEPER, "starttime": 0},
        "same": {"cmd": SLEEPER, "starttime": 0},
    }
    return {**base, **extra}


def edited() -> dict[str, dict[str, Any]]:
    new = programs()
    del new["old"]
    new["web"] = {"cmd": "sleep 99999", "starttime": 0, "env": {"A": "1"}}
    new["db"] = {"cmd": SLEEPER, "starttime": 0, "stoptime": 30}
    new["workers"] = {"cmd": SLEEPER, "starttime": 0, "numprocs": 3}
    new["cache"] = {"cmd": SLEEPER, "starttime": 0}
    return new


def started(write_config: WriteConfig, daemons: Start) -> tuple[Daemon, Path]:
    path = write_config(programs())
    d = daemons(path)
    for name in ("web", "db", "workers:0", "workers:1", "old", "same"):
        d.wait_for(event("RUNNING", name), timeout=15)
    return d, path


def pids(address: str) -> dict[str, int]:
    r = taskctl(address, "--json", "status")
    return {row["name"]: row["pid"] for row in json.loads(r.stdout)}


def plan(address: str) -> tuple[list[list[str]], dict[str, str]]:
    async def main() -> tuple[list[list[str]], dict[str, str]]:
        async with client(address) as c:
            lists = await c.ok("PlanReload")
            [reasons] = await c.ok("PlanReloadReasons")
            return lists, reasons
    return asyncio.run(main())


def test_plan_reload_is_what_the_next_reload_does_and_applies_nothing(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d, _ = started(write_config, daemons)
    assert plan(bus_address) == ([[], [], [], []], {})
    write_config(edited())
    before = pids(bus_address)
    mark = len(d.lines)
    (added, changed, removed, restarted), reasons = plan(bus_address)
    assert (added, sorted(changed), removed, restarted) == (["cache"], ["db", "workers"], ["old"],
                                                            ["web"])
    assert reasons == {"cache": "added", "old": "removed",
                       "web": "restarted: cmd, env changed",
                       "db": "changed in place: stoptime",
                       "workers": "changed in place: numprocs 2 -> 3"}
    # Nothing applied: same processes, no event of any kind.
    assert pids(bus_address) == before
    assert not [ln for ln in d.since(mark) if ln.kind.startswith("RELOAD")], d.since(mark)

    async def reload() -> list[list[str]]:
        async with client(bus_address) as c:
            return list(await c.ok("Reload"))
    r_added, r_changed, r_removed = asyncio.run(reload())
    assert (r_added, r_removed) == (added, removed)
    assert sorted(r_changed) == sorted(changed + restarted)
    d.wait_for(event("RUNNING", "cache"))
    d.wait_for(event("RUNNING", "workers:2"))
    after = pids(bus_address)
    # in place: the same PIDs; restarted: a new one
    assert [after[n] for n in ("db", "workers:0", "workers:1", "same")] == \
        [before[n] for n in ("db", "workers:0", "workers:1", "same")]
    wait_until("web restarted", lambda: pids(bus_address)["web"] not in (0, before["web"]))
    assert plan(bus_address) == ([[], [], [], []], {})


def test_an_invalid_file_is_config_invalid_with_every_message_and_no_event(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0}}))
    d.wait_for(event("RUNNING", "web"))
    write_config({"web": {"cmd": SLEEPER, "starttime": "soon"},
                  "db": {"cmd": SLEEPER, "numprocs": 0}})
    mark = len(d.lines)

    async def main() -> None:
        async with client(bus_address) as c:
            for member in ("PlanReload", "PlanReloadReasons"):
                name, text = await c.error(member)
                assert name == ERROR + "ConfigInvalid", text
                assert "programs.web.starttime" in text and "programs.db.numprocs" in text, text
                assert text.count("\n") == 1, text  # one line per issue
            name, reload_text = await c.error("Reload")
            assert name == ERROR + "ConfigInvalid"
            assert reload_text == text  # the very messages Reload refuses with
    asyncio.run(main())
    d.wait_for(event("RELOAD_FAILED"))  # the Reload's: logged after the plans' calls
    kinds = [ln.kind for ln in d.since(mark)]
    assert kinds.count("RELOAD_FAILED") == 1, kinds
    assert "Traceback" not in d.text()


# ---- taskctl ----------------------------------------------------------------------------

REREAD_NOTE = "supervisorctl's 'reread' is 'taskctl reload --dry-run' here"


def test_taskctl_reload_dry_run_prints_the_plan_and_why(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d, _ = started(write_config, daemons)
    r = taskctl(bus_address, "reload", "--dry-run")
    assert (r.returncode, r.stdout, r.stderr) == (0, "nothing would change\n", "")
    write_config(edited())
    before = pids(bus_address)
    mark = len(d.lines)
    r = taskctl(bus_address, "reload", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "cache: added",
        "web: restarted (cmd, env changed)",
        "workers: changed in place (numprocs 2 -> 3)",
        "db: changed in place (stoptime)",
        "old: removed",
    ]
    j = taskctl(bus_address, "reload", "--dry-run", "--json")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    assert (doc["added"], sorted(doc["changed"]), doc["removed"], doc["restarted"]) == \
        (["cache"], ["db", "workers"], ["old"], ["web"])
    assert doc["reasons"]["web"] == "restarted: cmd, env changed"
    # reread: the same, after its note on stderr
    rr = taskctl(bus_address, "reread")
    assert (rr.returncode, rr.stdout) == (0, r.stdout)
    assert rr.stderr.count(REREAD_NOTE) == 1, rr.stderr
    assert pids(bus_address) == before
    assert not [ln for ln in d.since(mark) if ln.kind.startswith("RELOAD")]
    # update: the reload itself
    u = taskctl(bus_address, "update")
    assert u.returncode == 0, u.stderr
    assert "supervisorctl's 'update' is 'taskctl reload' here" in u.stderr
    assert "added: cache" in u.stdout and "removed: old" in u.stdout
    d.wait_for(event("RELOAD"))
    r = taskctl(bus_address, "reload", "--dry-run")
    assert (r.returncode, r.stdout) == (0, "nothing would change\n")


def test_taskctl_reload_dry_run_of_a_bad_file_prints_the_errors_and_exits_1(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0}}))
    d.wait_for(event("RUNNING", "web"))
    path = write_config({"web": {"cmd": SLEEPER, "starttime": "soon"},
                         "db": {"cmd": SLEEPER, "numprocs": 0}})
    mark = len(d.lines)
    for words in (("reload", "--dry-run"), ("reread",)):
        r = taskctl(bus_address, *words)
        assert (r.returncode, r.stdout) == (1, ""), r
        assert "a reload would be refused, the configuration is invalid" in r.stderr
        located = [ln for ln in r.stderr.splitlines() if ln.startswith(f"{path}:")]
        assert len(located) == 2, r.stderr  # file:line:col each
        assert "programs.web.starttime" in r.stderr and "programs.db.numprocs" in r.stderr
    a = taskctl(bus_address, "avail")  # the loaded programs still, and why not the file's
    assert a.returncode == 0, a.stderr
    assert a.stdout.split() == ["web", "in", "use", "1/1", "up"]
    assert "the configuration file is invalid" in a.stderr
    assert not [ln for ln in d.since(mark) if ln.kind.startswith("RELOAD")]


def test_taskctl_avail_shows_loaded_programs_and_those_only_in_the_file(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0, "numprocs": 2},
                              "idle": {"cmd": SLEEPER, "autostart": False}}))
    d.wait_for(event("RUNNING", "web:0"))
    d.wait_for(event("RUNNING", "web:1"))
    write_config({"web": {"cmd": SLEEPER, "starttime": 0, "numprocs": 2},
                  "idle": {"cmd": SLEEPER, "autostart": False},
                  "cache": {"cmd": SLEEPER}})
    r = taskctl(bus_address, "avail")
    assert r.returncode == 0, r.stderr
    assert [line.split() for line in r.stdout.splitlines()] == [
        ["web", "in", "use", "2/2", "up"],
        ["idle", "in", "use", "0/1", "up"],
        ["cache", "avail", "-", "(at", "the", "next", "reload:", "added)"],
    ]
    assert r.stderr.count("supervisorctl's 'avail'") == 1, r.stderr
    j = json.loads(taskctl(bus_address, "--json", "avail").stdout)
    assert [(x["program"], x["in_use"], x["up"]) for x in j] == \
        [("web", True, 2), ("idle", True, 0), ("cache", False, 0)]


def test_taskctl_maintail_prints_the_daemons_log_and_follows_it(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0}}))
    d.wait_for(event("RUNNING", "web"))
    log = workdir / "taskmasterd.log"
    wait_until("the log file has web RUNNING", lambda: "RUNNING" in log.read_text())
    r = taskctl(bus_address, "maintail")
    assert r.returncode == 0, r.stderr
    assert "started with" in r.stdout and "RUNNING" in r.stdout, r.stdout
    assert r.stdout == log.read_bytes()[-1600:].decode(errors="replace")
    assert r.stderr.count("supervisorctl's 'maintail'") == 1, r.stderr
    small = taskctl(bus_address, "maintail", "-c", "10")
    assert small.stdout == log.read_bytes()[-10:].decode(errors="replace")
    # -f: what the daemon logs next (a reload) comes through
    proc = subprocess.Popen([sys.executable, "-m", "taskctl", "--address", bus_address,
                             "maintail", "-f"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        lines = Lines(proc.stdout)
        lines.wait_for(lambda ln: "RUNNING" in ln)  # the end of the file: it is open
        d.reload()
        assert "reloaded" in lines.wait_for(lambda ln: " RELOAD" in ln)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_taskctl_maintail_without_a_readable_log_says_why(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    if os.path.exists("/run/systemd/journal/socket"):
        pytest.skip("a journal here: maintail reads it instead")
    # The log in a directory of its own, removed whole: the daemon's watched
    # handler cannot create the file again (a bare unlink it would undo).
    logdir = workdir / "own"
    logdir.mkdir()
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0}},
                             logfile=str(logdir / "taskmasterd.log")))
    d.wait_for(event("RUNNING", "web"))
    shutil.rmtree(logdir)
    r = taskctl(bus_address, "maintail")
    assert r.returncode == 1
    assert f"cannot read {logdir / 'taskmasterd.log'}: No such file or directory" in r.stderr


def test_the_shell_says_each_word_once(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0}}))
    d.wait_for(event("RUNNING", "web"))
    write_config({"web": {"cmd": SLEEPER, "starttime": 0}, "cache": {"cmd": SLEEPER}})
    env = {**os.environ, "HOME": str(workdir), "TASKCTL_HISTFILE": str(workdir / "h")}
    r = subprocess.run([sys.executable, "-m", "taskctl", "--address", bus_address],
                       input="reread\nreread\nupdate\nreload --dry-run\nhelp reread\n",
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count(REREAD_NOTE) == 1 and r.stderr.count("'update' is") == 1, r.stderr
    out = r.stdout
    assert out.count("cache: added") == 2 and "added: cache" in out, out
    assert "nothing would change" in out  # after the update
    assert "taskctl reload --dry-run" in out  # help reread
    assert "Traceback" not in r.stderr


# ---- settings outside programs: (API 1.7) --------------------------------------------------


def with_tasks(path: Path, max_parallel: int) -> Path:
    """The file write_config made, with a `tasks:` section."""
    doc = yaml.safe_load(path.read_text())
    doc["tasks"] = {"max_parallel": max_parallel}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_settings_are_previewed_applied_and_statedir_is_left_for_a_restart(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """A preview that said "nothing would change" for a new max_parallel, and
    a reload that ignored a new statedir without a word: both say it now."""
    statedir, moved = workdir / "state", workdir / "state2"
    d = daemons(with_tasks(write_config({"web": {"cmd": SLEEPER, "starttime": 0}}), 2))
    d.wait_for(event("RUNNING", "web"))
    with_tasks(write_config({"web": {"cmd": SLEEPER, "starttime": 0}}, loglevel="debug",
                            statedir=str(moved)), 5)
    expected = [["taskmasterd.loglevel", "info", "debug", "applied"],
                ["taskmasterd.statedir", str(statedir), str(moved), "restart"],
                ["tasks.max_parallel", "2", "5", "applied"]]

    async def settings() -> list[list[str]]:
        async with client(bus_address) as c:
            [rows] = await c.ok("PlanReloadSettings")
            return [list(r) for r in rows]
    assert asyncio.run(settings()) == expected
    not_applied = (f"taskmasterd.statedir: {statedir} -> {moved} (not applied: {statedir} stays "
                   "in use until taskmasterd is restarted)")
    r = taskctl(bus_address, "reload", "--dry-run")
    assert (r.returncode, r.stderr) == (0, ""), r
    assert r.stdout.splitlines() == ["taskmasterd.loglevel: info -> debug", not_applied,
                                     "tasks.max_parallel: 2 -> 5"]
    j = json.loads(taskctl(bus_address, "reload", "--dry-run", "--json").stdout)
    assert [list(s.values()) for s in j["settings"]] == expected
    mark = len(d.lines)
    assert not [ln for ln in d.since(mark) if ln.kind.startswith("RELOAD")]

    reload = taskctl(bus_address, "reload")  # what it changed, not "no changes"
    assert (reload.returncode, reload.stderr) == (0, ""), reload
    assert reload.stdout.splitlines() == r.stdout.splitlines()
    line = d.wait_for(event("RELOAD"))
    assert line.message == (
        "reloaded; settings: taskmasterd.loglevel info -> debug, taskmasterd.statedir "
        f"{statedir} -> {moved} (not applied: {statedir} stays in use until taskmasterd is "
        "restarted), tasks.max_parallel 2 -> 5"), line.message
    wait_until("the statedir warning", lambda: "is not applied by a reload" in d.text())
    # Still the old statedir: a task's files go there, and the new one is not made.
    out = subprocess.run(["busctl", f"--address={bus_address}", "call",
                          "org.taskmaster.Taskmaster1", "/org/taskmaster/Taskmaster1",
                          "org.taskmaster.Taskmaster1.Manager", "SubmitTask", "a{sv}", "1",
                          "command", "s", "true"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    task = out.stdout.split()[1].strip('"')
    wait_until("the task's files", lambda: (statedir / "tasks" / task / "status.json").exists())
    assert not moved.exists()
    # Applied: the rest is no change any more; the statedir still is one.
    assert asyncio.run(settings()) == [expected[1]]
