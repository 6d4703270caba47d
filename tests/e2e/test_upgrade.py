"""An upgrade of the .deb under a real systemd re-executes taskmasterd in
place (postinst: `taskctl daemon-reexec`): every program keeps its pid, the
daemon keeps its pid (MainPID, the same process running the new code), the
`Version` property says the new version, the new image sent READY=1 (the
unit went reloading -> running), systemd restarted nothing, no program
started again. A reinstall and a downgrade take the same path; a unit whose
ExecStart= no longer matches the running daemon is restarted instead, and
dpkg's output says why; a removal stops the daemon and its programs.

The higher version is the package under test repacked (tests/e2e/repack.py):
the same scripts and code, another Version and __version__. The tests run in
order on the container of the whole run (conftest.booted) and leave it as
they found it: the package under test installed, the unit stopped.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.container import Container, wait_until
from tests.e2e.helpers import (
    STEADY,
    UNIT,
    alive,
    assert_nothing_left,
    journal_entry,
    pids,
    status,
    systemctl_show,
    wait_state,
)
from tests.e2e.repack import Repacked, repack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUS = ("org.taskmaster.Taskmaster1", "/org/taskmaster/Taskmaster1",
       "org.taskmaster.Taskmaster1.Manager")
STATE: dict[str, Any] = {}  # what the first test leaves to the next ones


@pytest.fixture(scope="module")
def higher(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Repacked:
    return repack(package, tmp_path_factory.mktemp("repack"), "+e2e1")


def dpkg_install(box: Container, deb: Path) -> str:
    """`dpkg -i` in the booted container; what dpkg and the maintainer
    scripts printed. (The tests before may have edited the conffile: keep it.)"""
    shutil.copyfile(deb, box.root / "root" / deb.name)
    proc = box.run(["dpkg", "-i", "--force-confold", f"/root/{deb.name}"], timeout=180)
    return proc.stdout + proc.stderr


def version_property(box: Container) -> str:
    out = box.run(["busctl", "get-property", *BUS, "Version"]).stdout.strip()
    found = re.fullmatch(r's "(.*)"', out)
    assert found, out
    return found[1]


@pytest.fixture
def debug_pid1(booted: Container) -> Iterator[None]:
    """systemd logs each sd_notify message it gets ("Got notification
    message from PID ...") and each unit state change at debug level only."""
    booted.run(["systemctl", "log-level", "debug"])
    try:
        yield
    finally:
        booted.run(["systemctl", "log-level", "info"])


def notifications(box: Container, pid: int, since: int) -> list[str]:
    """The sd_notify messages systemd got from `pid` since the mark, in order."""
    out = []
    for e in box.journal(f"UNIT={UNIT}.service", "_PID=1", since=since):
        found = re.fullmatch(rf"{UNIT}\.service: Got notification message from PID {pid} \((.*)\)",
                             str(e.get("MESSAGE")))
        if found:
            out.append(found[1])
    return out


def assert_reexecuted(box: Container, *, daemon: int, programs: dict[str, int], restarts: int,
                      since: int, output: str, version: str, was: str) -> None:
    """What an in-place upgrade leaves: see the module's docstring."""
    assert f"taskmasterd: re-executed (pid {daemon}, version {version})" in output, output
    assert "restarting" not in output, output
    assert systemctl_show(box, "MainPID") == str(daemon)
    assert systemctl_show(box, "NRestarts") == str(restarts)
    assert (systemctl_show(box, "ActiveState"), systemctl_show(box, "SubState")) == (
        "active", "running")
    assert version_property(box) == version
    rows = status(box)
    assert {n: (rows[n]["state"], rows[n]["pid"]) for n in programs} == {
        n: ("RUNNING", pid) for n, pid in programs.items()}
    assert alive(box, programs.values()) == sorted(programs.values())
    # The new image said so, and systemd saw RELOADING=1 then READY=1 from
    # the same pid (taskctl returned once it was sent: it is in the journal).
    journal_entry(box, "from the new image", f"_PID={daemon}", since=since,
                  where=lambda e: f"re-executed: taskmasterd {version}, was {was}"
                  in str(e.get("MESSAGE")))
    notes = wait_until(lambda: (lambda n: n if any("READY=1" in m for m in n) else None)(
        notifications(box, daemon, since)), 15, f"READY=1 from pid {daemon} in the journal")
    reloading = next(i for i, m in enumerate(notes) if "RELOADING=1" in m)
    assert any("READY=1" in m for m in notes[reloading + 1:]), notes
    changes = [str(e.get("MESSAGE")) for e in box.journal(f"UNIT={UNIT}.service", "_PID=1",
                                                           since=since)
               if str(e.get("MESSAGE", "")).startswith(f"{UNIT}.service: Changed ")]
    # (postinst's daemon-reload first logs "dead -> running": systemd
    # re-reading the unit, not a state the daemon went through.)
    reload = f"{UNIT}.service: Changed running -> reload"
    assert reload in changes, changes
    assert changes[changes.index(reload):] == [reload, f"{UNIT}.service: Changed reload -> running"]
    assert all(c.endswith(" -> running") for c in changes[:changes.index(reload)]), changes
    # No program was started again (a STARTING event), none adopted as after a crash.
    restarted = [(e.get("TASKMASTER_EVENT"), e.get("TASKMASTER_PROCESS"))
                 for e in box.journal(f"_SYSTEMD_UNIT={UNIT}.service", since=since)
                 if e.get("TASKMASTER_EVENT") in ("STARTING", "ADOPTED")
                 and e.get("TASKMASTER_PROCESS") in programs]
    assert restarted == []
    # The system bus refused nothing the daemon sent meanwhile (its flush
    # before leaving the bus once was a Peer.Ping, which the policy denies).
    rejected = [str(e.get("MESSAGE")) for e in box.journal("_COMM=dbus-daemon", since=since)
                if "Rejected" in str(e.get("MESSAGE")) and f"pid={daemon} " in str(e.get("MESSAGE"))]
    assert rejected == []


# -- the tests, in order -------------------------------------------------------

def test_an_upgrade_reexecutes_the_daemon_and_keeps_every_program(
        booted: Container, higher: Repacked, debug_pid1: None) -> None:
    box = booted
    box.run(["systemctl", "start", UNIT], timeout=60)
    programs = pids(wait_state(box, dict.fromkeys(STEADY, "RUNNING")), STEADY)
    daemon = int(systemctl_show(box, "MainPID"))
    restarts = int(systemctl_show(box, "NRestarts"))
    assert version_property(box) == higher.from_module_version
    since = box.journal_mark()

    output = dpkg_install(box, higher.deb)

    assert box.run(["dpkg-query", "-W", "-f", "${Version}", "taskmasterd"]).stdout == higher.version
    assert_reexecuted(box, daemon=daemon, programs=programs, restarts=restarts, since=since,
                      output=output, version=higher.module_version,
                      was=higher.from_module_version)
    STATE.update(daemon=daemon, programs=programs, restarts=restarts)


def test_a_reinstall_and_a_downgrade_take_the_same_path(
        booted: Container, package: Path, higher: Repacked, debug_pid1: None) -> None:
    box = booted
    assert STATE, "needs test_an_upgrade_reexecutes_the_daemon_and_keeps_every_program"
    for deb, version, was in ((higher.deb, higher.module_version, higher.module_version),
                              (package, higher.from_module_version, higher.module_version)):
        since = box.journal_mark()
        output = dpkg_install(box, deb)
        assert_reexecuted(box, **STATE, since=since, output=output, version=version, was=was)

    # After three re-execs the programs are still the daemon's children: a
    # SIGKILLed one is seen with its real exit status and started again.
    web = STATE["programs"]["web"]
    since = box.journal_mark()
    box.run(["kill", "-9", str(web)])
    new = wait_state(box, {"web": "RUNNING"}, not_pids={"web": web})["web"]["pid"]
    exited = journal_entry(box, "for web's death by SIGKILL", "TASKMASTER_PROGRAM=web",
                           "TASKMASTER_EVENT=EXITED", since=since)
    assert (exited.get("TASKMASTER_PID"), exited.get("TASKMASTER_EXIT_STATUS")) == (str(web), "-9")
    STATE["programs"] = {**STATE["programs"], "web": new}


def test_a_changed_execstart_restarts_and_says_why(booted: Container, package: Path) -> None:
    """A re-exec runs the daemon's own command line again: when the unit
    says another one, postinst restarts the unit instead, and says so."""
    box = booted
    assert STATE, "needs test_an_upgrade_reexecutes_the_daemon_and_keeps_every_program"
    dropin = f"/run/systemd/system/{UNIT}.service.d/50-e2e-execstart.conf"
    box.run(["mkdir", "-p", dropin.rsplit("/", 1)[0]])
    box.write_file(dropin, "[Service]\nExecStart=\n"
                   "ExecStart=/usr/bin/taskmasterd -c /etc/taskmaster/taskmaster.yaml --system\n")
    try:
        output = dpkg_install(box, package)  # the daemon-reload is postinst's
        assert re.search(r"taskmasterd: the unit's ExecStart= \(.*\) is not the daemon's command "
                         r"line \(.*\): restarting taskmasterd.service instead", output), output
        daemon = int(systemctl_show(box, "MainPID"))
        assert daemon not in (0, STATE["daemon"])
        assert systemctl_show(box, "ActiveState") == "active"
        old = STATE["programs"]
        assert alive(box, old.values()) == []  # stopped by the old daemon
        wait_state(box, dict.fromkeys(STEADY, "RUNNING"), not_pids=old)
        cmdline = box.read_file(f"/proc/{daemon}/cmdline").split("\0")
        assert cmdline[1:-1] == ["/usr/bin/taskmasterd", "-c", "/etc/taskmaster/taskmaster.yaml",
                                 "--system"], cmdline
    finally:
        box.run(["rm", "-f", dropin])
        box.run(["systemctl", "daemon-reload"])


def test_a_removal_stops_the_daemon_and_its_programs(booted: Container, package: Path) -> None:
    box = booted
    everyone = [int(systemctl_show(box, "MainPID")), *pids(status(box), STEADY).values()]
    box.run(["dpkg", "-r", "taskmasterd"], timeout=120)
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "inactive"
    assert_nothing_left(box, everyone, "after dpkg -r")
    # Back to the package under test, the unit stopped (it stays disabled:
    # the fixture disabled it, and postinst respects that).
    dpkg_install(box, package)
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "inactive"
