"""The reload preview against a real daemon (API 1.6): Manager.PlanReload and
PlanReloadReasons say what the Reload that follows does, and apply nothing;
`taskctl reload --dry-run` and the supervisorctl words (update, reread,
avail, maintail)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_dbus_service import client
from tests.integration.test_taskctl import taskctl

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
