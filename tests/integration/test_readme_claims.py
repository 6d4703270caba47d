"""What the README claims and no other test covered (issue 11, section 8):
numprocs shrinking and the `prog` <-> `prog:0` rename on reload; the
per-program D-Bus object's methods and State; the 4,096-character limit at
its boundary; `.ShuttingDown`; leftover group processes killed when the main
process exits on its own; `taskctl tail` by a caller who cannot read the
file; no duplicate lines on stderr under journald.

Real daemons on private buses; waits are on log lines, D-Bus replies and
signals, FIFOs and pidfds, with timeouts."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from taskctl.client import Client as Taskctl
from taskmasterd.busaddr import BusChoice
from tests.dbus_fixtures import bus_directory, system_bus
from tests.harness import Daemon, alive, event, parse_log, read_fifo, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_dbus_service import client, state_change

Start = Callable[..., Daemon]
SLEEPER = "sleep 100000"
PATH = "/org/taskmaster/Taskmaster1"
PROGRAM = "org.taskmaster.Taskmaster1.Program"
ERROR = "org.taskmaster.Taskmaster1.Error."
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def pids(address: str) -> dict[str, int]:
    with Taskctl(BusChoice("address", address)) as c:
        return {r.name: r.pid for r in c.list_processes()}


# ---- numprocs changes on reload --------------------------------------------------------


def test_numprocs_grows_shrinks_and_prog_is_renamed_prog_0_and_back(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    def config(n: int) -> Path:
        return write_config({"web": {"cmd": SLEEPER, "starttime": 0, "numprocs": n}})

    d = daemons(config(1))
    d.wait_for(event("RUNNING", "web"))
    first = pids(bus_address)
    assert list(first) == ["web"]

    config(3)
    assert d.reload().kind == "RELOAD"
    d.wait_for(event("RUNNING", "web:1"))
    d.wait_for(event("RUNNING", "web:2"))
    grown = pids(bus_address)
    assert list(grown) == ["web:0", "web:1", "web:2"]
    assert grown["web:0"] == first["web"]  # renamed, not restarted

    config(2)
    assert d.reload().kind == "RELOAD"
    d.wait_for(event("STOPPED", "web:2"))
    shrunk = pids(bus_address)
    assert shrunk == {"web:0": grown["web:0"], "web:1": grown["web:1"]}
    assert not alive(grown["web:2"])

    config(1)
    assert d.reload().kind == "RELOAD"
    d.wait_for(event("STOPPED", "web:1"))
    assert pids(bus_address) == {"web": first["web"]}  # web:0 is `web` again, same process
    assert alive(first["web"]) and not alive(grown["web:1"])
    assert d.terminate() == 0


# ---- the per-program object ------------------------------------------------------------


async def each(c: Any, state: str, *processes: str) -> None:
    """Wait until every one of `processes` has entered `state`, in any order."""
    waiting = set(processes)
    while waiting:
        msg = await c.next_signal(lambda m: m.member == "ProcessStateChanged"
                                  and m.body[0] in waiting and m.body[3] == state)
        waiting.discard(msg.body[0])


def test_program_object_start_stop_restart_signal_and_state(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0, "numprocs": 2},
                              "idle": {"cmd": SLEEPER, "starttime": 0, "autostart": False,
                                       "autorestart": False}}))
    d.wait_count(event("RUNNING"), 2)
    web, idle = f"{PATH}/program/web", f"{PATH}/program/idle"

    async def main() -> None:
        async with client(bus_address) as c:
            async def state(path: str) -> str:
                [value] = await c.ok("Get", "ss", [PROGRAM, "State"], path=path,
                                     interface="org.freedesktop.DBus.Properties")
                return str(value.value)

            assert (await state(web), await state(idle)) == ("RUNNING", "STOPPED")
            assert await c.ok("Start", path=idle, interface=PROGRAM) == [["idle"]]
            await c.next_signal(state_change("idle", "RUNNING"))
            assert await state(idle) == "RUNNING"
            name, _ = await c.error("Start", path=idle, interface=PROGRAM)
            assert name == ERROR + "AlreadyStarted"

            before = pids(bus_address)
            assert await c.ok("Restart", path=web, interface=PROGRAM) == [["web:0", "web:1"]]
            await each(c, "RUNNING", "web:0", "web:1")
            after = pids(bus_address)
            assert after["web:0"] != before["web:0"] and after["web:1"] != before["web:1"]

            assert await c.ok("Signal", "s", ["KILL"], path=idle, interface=PROGRAM) == [["idle"]]
            exited = await c.next_signal(state_change("idle", "EXITED"))
            assert exited.body[4] == before["idle"] and exited.body[5] == -signal.SIGKILL
            assert await state(idle) == "EXITED"
            name, _ = await c.error("Signal", "s", ["KILL"], path=idle, interface=PROGRAM)
            assert name == ERROR + "NotRunning"

            assert await c.ok("Stop", path=web, interface=PROGRAM) == [["web:0", "web:1"]]
            await each(c, "STOPPED", "web:0", "web:1")
            assert await state(web) == "STOPPED"
    asyncio.run(main())
    assert "Traceback" not in d.text()


# ---- the string limit ------------------------------------------------------------------


def test_the_4096_character_limit_at_its_boundary(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0}}))
    d.wait_for(event("RUNNING", "web"))

    async def main() -> None:
        async with client(bus_address) as c:
            for member, sig, short, long in (
                    ("Start", "s", ["x" * 4096], ["x" * 4097]),
                    ("Signal", "ss", ["web", "X" * 4096], ["web", "X" * 4097]),
                    ("OpenLog", "ss", ["web", "s" * 4096], ["web", "s" * 4097])):
                # 4096 characters: past the length check, refused by what
                # follows it (target rules, signal names, stream names).
                name, text = await c.error(member, sig, short)
                assert name.startswith(ERROR) and "characters long" not in text, (member, text)
                # 4097: refused for its length, before anything else.
                name, text = await c.error(member, sig, long)
                assert name == ERROR + "BadName", (member, name)
                assert "is 4097 characters long; at most 4096 are accepted" in text, (member, text)
            assert await c.ok("ListProcesses")
    asyncio.run(main())


# ---- a Start during shutdown -----------------------------------------------------------


def test_start_and_restart_during_shutdown_are_refused_shutting_down(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    ready = workdir / "ready"
    os.mkfifo(ready)
    d = daemons(write_config({
        # Ignores TERM: the shutdown waits for it (stoptime 60) while we call.
        "stubborn": {"cmd": f"sh -c 'trap \"\" TERM; echo ready > {ready}; exec {SLEEPER}'",
                     "starttime": 0, "stoptime": 60},
        "idle": {"cmd": SLEEPER, "autostart": False}}))
    d.wait_for(event("RUNNING", "stubborn"))
    assert read_fifo(ready) == "ready\n"
    stubborn = d.latest_pids()["stubborn"]

    async def main() -> None:
        async with client(bus_address) as c:
            await c.ok("Shutdown")
            await c.next_signal(state_change("stubborn", "STOPPING"))
            for member in ("Start", "Restart"):
                name, text = await c.error(member, "s", ["idle"])
                assert name == ERROR + "ShuttingDown" and "shutting down" in text, (member, name)
            name, _ = await c.error("Start", path=f"{PATH}/program/idle", interface=PROGRAM)
            assert name == ERROR + "ShuttingDown"
            assert await c.ok("ListProcesses")  # still answering meanwhile
    asyncio.run(main())
    os.kill(stubborn, signal.SIGKILL)  # end the wait: the daemon then exits
    assert d.proc.wait(timeout=30) == 0
    assert "idle STARTING" not in d.text()


# ---- the process group -----------------------------------------------------------------


def test_what_the_main_process_left_in_its_group_is_killed_when_it_exits(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    leftover, go = workdir / "leftover", workdir / "go"
    os.mkfifo(leftover)
    os.mkfifo(go)
    d = daemons(write_config({"parent": {
        "cmd": f"sh -c '{SLEEPER} & echo $! > {leftover}; read x < {go}; exit 0'",
        "starttime": 0, "autorestart": False, "exitcodes": [0]}}))
    d.wait_for(event("RUNNING", "parent"))
    child = int(read_fifo(leftover))
    pidfd = os.pidfd_open(child)  # readable once the leftover is gone
    try:
        assert alive(child)
        with open(go, "w") as f:  # the main process exits on its own now
            f.write("go\n")
        exited = d.wait_for(event("EXITED", "parent"))
        assert exited.fields["status"] == "0"
        ready, _, _ = select.select([pidfd], [], [], 10)
        assert ready, f"the leftover {child} of parent is still alive"
    finally:
        os.close(pidfd)
    assert not alive(child)
    assert d.terminate() == 0


# ---- tail through the fd, by a caller who cannot read the file -------------------------


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv (the daemon as root, taskctl as uid 65534)")
def test_tail_by_a_caller_who_cannot_read_the_file(write_config: WriteConfig, workdir: Path) -> None:
    """A member of the group taskmaster is let call OpenLog; the file is root's
    (0600): taskctl reads it through the fd the daemon passes."""
    policy = workdir / "policy.conf"
    policy.write_text(
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n<busconfig>\n'
        '  <policy user="root"><allow own="org.taskmaster.Taskmaster1"/>\n'
        '    <allow send_destination="org.taskmaster.Taskmaster1"/></policy>\n'
        '  <!-- uid 65534 stands for a member of the group taskmaster here -->\n'
        '  <policy user="nobody"><allow send_destination="org.taskmaster.Taskmaster1"/>\n'
        '  </policy>\n</busconfig>\n')
    fifo = workdir / "ready"
    os.mkfifo(fifo)
    cfg = write_config({"talker": {
        "cmd": f"sh -c 'echo secret line; echo ready > {fifo}; exec {SLEEPER}'", "starttime": 0}})
    with bus_directory() as directory, system_bus(directory, policy) as address:
        d = Daemon(cfg, "--address", address)
        try:
            assert read_fifo(fifo) == "ready\n"
            with Taskctl(BusChoice("address", address)) as c:
                fd = c.open_log("talker", "stdout")
            path = os.readlink(f"/proc/self/fd/{fd}")
            os.close(fd)
            # the line goes through the log writer: in the file a moment after
            # the FIFO said ready (under load, not yet)
            wait_until("the line in the output file",
                       lambda: Path(path).read_text() == "secret line\n")
            os.chown(path, 0, 0)
            os.chmod(path, 0o600)
            cannot = subprocess.run([*AS_NOBODY, "cat", path], capture_output=True, text=True,
                                    timeout=30)
            assert cannot.returncode != 0 and "Permission denied" in cannot.stderr
            r = subprocess.run([*AS_NOBODY, sys.executable, "-m", "taskctl", "--address", address,
                                "tail", "talker"], capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            assert (r.returncode, r.stdout, r.stderr) == (0, "secret line\n", "")
        finally:
            d.terminate()


# ---- journald: no duplicates on stderr -------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare (a private /run/systemd/journal)")
def test_under_journald_event_lines_are_not_duplicated_on_stderr(
        write_config: WriteConfig, bus_address: str, workdir: Path) -> None:
    """The daemon's stderr is its journal stream (JOURNAL_STREAM = the dev:ino
    of that very pipe, as systemd sets it) and a journald socket is there (the
    test's, bind-mounted on /run/systemd/journal in a private mount
    namespace): each event goes to the journal once and not to stderr; the
    log file keeps them all."""
    journal = workdir / "journal"
    journal.mkdir()
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(journal / "socket"))
    cfg = write_config({"web": {"cmd": SLEEPER, "starttime": 0, "stdout": None, "stderr": None}})
    script = ('mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && '
              f'mount --bind {journal} /run/systemd/journal && '
              'export JOURNAL_STREAM="$(stat -L -c %d:%i /proc/self/fd/2)" && '
              f'exec {sys.executable} -m taskmasterd -c {cfg} --address "$0"')
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                             bus_address], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=workdir)
    try:
        entries: list[bytes] = []
        deadline = time.monotonic() + 30
        while not any(b"web RUNNING" in e or b"EVENT=RUNNING" in e for e in entries):
            ready, _, _ = select.select([sink], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no RUNNING entry in the journal; got {entries}"
            entries.append(sink.recv(65536))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sink.close()
    assert proc.returncode == 0, err.decode()
    logged = parse_log((workdir / "taskmasterd.log").read_text())
    assert {(ln.process, ln.kind) for ln in logged} >= {("web", "STARTING"), ("web", "RUNNING")}
    assert parse_log(err.decode()) == [], err.decode()  # not one event line on stderr
    running = [e for e in entries if b"RUNNING" in e]
    assert len(running) == 1, running  # and once in the journal
