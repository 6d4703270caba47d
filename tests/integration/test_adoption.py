"""Re-adoption: a daemon SIGKILLed, a new one on the same statedir takes its
processes back (same pids, no second copy), sees their exits at once, and
applies what changed in the configuration meanwhile as a reload would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskmasterd.statestore.records import parse_proc_stat
from tests.dbus_fixtures import session_bus
from tests.harness import Daemon, alive, event, processes_with_env, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_dbus_service import client, state_change
from tests.integration.test_taskctl import taskctl

Start = Callable[..., Daemon]


@pytest.fixture
def marker() -> Iterator[str]:
    """An env K=V every program of the test carries: finds them in /proc,
    and kills what a failed test left behind."""
    mark = f"TM_ADOPTION_TEST={uuid.uuid4().hex}"
    yield mark
    for pid in processes_with_env(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sleeper(mark: str, seconds: int = 100000, **kw: object) -> dict[str, object]:
    key, value = mark.split("=")
    return {"cmd": f"sleep {seconds}", "starttime": 0.2, "stdout": None, "stderr": None,
            "env": {key: value}, **kw}


def sigkill(d: Daemon) -> None:
    d.proc.kill()
    d.proc.wait()
    d.close()


def named(mark: str) -> dict[str, list[int]]:
    """Process name -> pids of the live processes of this test (from /proc)."""
    out: dict[str, list[int]] = {}
    for pid in processes_with_env(mark):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"TASKMASTER_PROCESS_NAME="):
                out.setdefault(item.split(b"=", 1)[1].decode(), []).append(pid)
    return out


def group_members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = parse_proc_stat(Path(f"/proc/{entry}/stat").read_text())
            except OSError:
                continue
            if st is not None and st.pgrp == pgid and st.state != "Z":
                found.append(st.pid)
    return found


def test_sigkilled_daemon_is_replaced_without_second_copies(
        write_config: WriteConfig, daemons: Start, bus_address: str, marker: str) -> None:
    config = write_config({"a": sleeper(marker), "b": sleeper(marker, numprocs=2),
                           "once": sleeper(marker, autorestart=False)})
    first = daemons(config)
    first.wait_count(event("RUNNING"), 4)
    pids = first.latest_pids()
    sigkill(first)
    assert all(alive(p) for p in pids.values())  # our programs outlive the daemon

    second = daemons(config)
    adopted = second.wait_count(event("ADOPTED"), 4)
    assert {ln.process: ln.pid for ln in adopted} == pids
    assert all("RUNNING" in ln.message for ln in adopted)
    second.wait_text("took back 4 process(es)")
    assert not [ln for ln in second.lines if ln.kind == "STARTING"]  # nothing spawned
    assert named(marker) == {name: [pid] for name, pid in pids.items()}  # one copy each
    status = taskctl(bus_address, "status")
    for name, pid in pids.items():
        assert any(line.split()[:3] == [name, "RUNNING", str(pid)] for line in status.stdout.splitlines())

    # An adopted process's exit is seen at once; its status cannot be known.
    os.kill(pids["a"], signal.SIGKILL)
    exited = second.wait_for(event("EXITED", "a"), timeout=5)
    assert exited.fields["status"] == "unknown" and exited.fields["expected"] == "no"
    assert "exit status unknown (adopted)" in exited.message
    restarted = second.wait_for(event("STARTING", "a"))  # unexpected: autorestart
    assert restarted.pid not in pids.values()
    os.kill(pids["once"], signal.SIGKILL)
    second.wait_for(event("EXITED", "once"), timeout=5)
    line = [ln for ln in taskctl(bus_address, "status", "once").stdout.splitlines()
            if ln.startswith("once")]
    assert line and "EXITED" in line[0] and "exit status unknown (adopted)" in line[0]

    # Stop, restart and signal act on the adopted processes (their groups).
    assert taskctl(bus_address, "stop", "b:0").returncode == 0
    assert not alive(pids["b:0"])
    r = taskctl(bus_address, "restart", "b:1")
    assert r.returncode == 0, r.stderr
    assert not alive(pids["b:1"])
    assert sorted(named(marker)) == ["a", "b:1"]

    assert second.terminate() == 0
    assert named(marker) == {}
    assert not (config.parent / "state" / "processes.json").exists()  # nothing runs


# A disk that takes its time to flush, for the daemon only: every fsync of a
# file under SLOW_FSYNC_UNDER waits a minute (sitecustomize runs at start-up).
SLOW_DISK = """
import os, sys, time
_under = os.environ.get("SLOW_FSYNC_UNDER", "")
if _under and "taskmasterd" in " ".join(sys.orig_argv):
    _fsync = os.fsync
    def fsync(fd):
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        if where.startswith(_under):
            time.sleep(60)  # sleep-ok: the simulated disk flush
        return _fsync(fd)
    os.fsync = fsync
"""


def test_a_slow_disk_never_hides_a_new_process_from_the_next_daemon(
        write_config: WriteConfig, daemons: Start, marker: str, tmp_path: Path) -> None:
    """The daemon is SIGKILLed while its disk still flushes: processes.json
    names the processes all the same (it is not fsynced), and the next
    daemon takes them back rather than start second copies."""
    config = write_config({"a": sleeper(marker), "b": sleeper(marker)})
    statedir = config.parent / "state"
    site = tmp_path / "slowdisk"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_DISK)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    first = daemons(config, env={"PYTHONPATH": path, "SLOW_FSYNC_UNDER": os.path.realpath(statedir)})
    first.wait_count(event("RUNNING"), 2)
    pids = first.latest_pids()
    wait_until("processes.json naming both", lambda: all(
        f'"pid":{pid}' in (statedir / "processes.json").read_text()
        for pid in pids.values()) if (statedir / "processes.json").exists() else False)
    sigkill(first)

    second = daemons(config)
    adopted = {ln.process: ln.pid for ln in second.wait_count(event("ADOPTED"), 2)}
    assert adopted == pids
    assert not [ln for ln in second.lines if ln.kind == "STARTING"]
    assert named(marker) == {name: [pid] for name, pid in pids.items()}
    assert second.terminate() == 0


def test_config_edited_between_the_daemons(write_config: WriteConfig, daemons: Start,
                                           marker: str) -> None:
    # `gone` leaves a second process in its group: stopping it must take the group.
    gone = sleeper(marker, cmd="sh -c 'sleep 100001 & exec sleep 100002'")
    config = write_config({"kept": sleeper(marker), "changed": sleeper(marker), "gone": gone})
    first = daemons(config)
    first.wait_count(event("RUNNING"), 3)
    pids = first.latest_pids()
    wait_until("gone's background sleep", lambda: len(group_members(pids["gone"])) == 2)
    sigkill(first)

    config = write_config({"kept": sleeper(marker),
                           "changed": sleeper(marker, env={marker.split("=")[0]: "other"})})
    second = daemons(config)
    adopted = {ln.process: ln.pid for ln in second.wait_count(event("ADOPTED"), 3)}
    assert adopted == pids
    mark = second.cursor
    second.wait_for(event("STOPPED", "gone"))
    assert group_members(pids["gone"]) == []
    second.cursor = mark  # the two programs' lines interleave
    new = second.wait_for(event("STARTING", "changed")).pid
    second.wait_for(event("RUNNING", "changed"))
    assert new != pids["changed"] and not alive(pids["changed"])
    assert alive(pids["kept"])
    assert named(marker) == {"kept": [pids["kept"]]}  # `changed` now carries other env
    assert second.terminate() == 0


def test_a_reused_pid_is_not_adopted(write_config: WriteConfig, daemons: Start, marker: str) -> None:
    config = write_config({"a": sleeper(marker)})
    statedir = config.parent / "state"
    # A live process that is not ours, at the recorded pid with another start time.
    stranger = subprocess.Popen(["sleep", "100000"], start_new_session=True)
    try:
        stat = parse_proc_stat(Path(f"/proc/{stranger.pid}/stat").read_text())
        assert stat is not None
        records = [{"program": prog, "process": prog, "index": 0, "pid": stranger.pid + i,
                    "start_ticks": stat.start_ticks - 1, "fingerprint": "x", "state": "RUNNING",
                    "started_at": 1.0, "restarts": 0, "stopsignal": 15, "stoptime": 1.0}
                   for i, prog in enumerate(("a", "ghost"))]
        records[1]["pid"] = stranger.pid
        records[0]["pid"] = os.getpid()  # this test: alive, not ours either
        statedir.mkdir(mode=0o700)
        (statedir / "processes.json").write_text(json.dumps(
            {"format": "taskmaster-state", "version": 1, "daemon_pid": 1, "processes": records}))
        d = daemons(config)
        d.wait_for(event("RUNNING", "a"))
        d.wait_text(f"ghost: pid {stranger.pid} not re-adopted: pid {stranger.pid} is another process")
        assert not [ln for ln in d.lines if ln.kind == "ADOPTED"]
        assert stranger.poll() is None  # the stranger was not stopped as a removed program
        assert len(named(marker)["a"]) == 1
        assert d.terminate() == 0
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_torn_store_is_refused_and_the_daemon_starts_normally(
        write_config: WriteConfig, daemons: Start, marker: str) -> None:
    config = write_config({"a": sleeper(marker)})
    statedir = config.parent / "state"
    statedir.mkdir(mode=0o700)
    torn = b'{"format":"taskmaster-state","version":1,"daemon_pid":7,"processes":[{"progr'
    (statedir / "processes.json").write_bytes(torn)
    d = daemons(config)
    d.wait_text(f"state store {statedir}/processes.json refused: not valid JSON")
    d.wait_for(event("RUNNING", "a"))
    assert (statedir / "processes.json.bad").read_bytes() == torn
    wait_until("the new store", lambda: b'"process":"a"' in (statedir / "processes.json").read_bytes())
    assert d.terminate() == 0


def test_a_second_daemon_on_the_same_statedir_adopts_nothing(
        write_config: WriteConfig, daemons: Start, marker: str, workdir: Path) -> None:
    config = write_config({"a": sleeper(marker)})
    first = daemons(config)
    first.wait_for(event("RUNNING", "a"))
    other = write_config({"b": sleeper(marker)}, name="other.yaml",
                         logfile=str(workdir / "other.log"))
    (workdir / "bus2").mkdir()
    with session_bus(workdir / "bus2") as address:
        second = Daemon(other, "--address", address)
        try:
            second.wait_text("another taskmasterd uses")
            second.wait_for(event("RUNNING", "b"))
            assert alive(first.latest_pids()["a"])  # not stopped as "removed" by the second
            assert second.terminate() == 0
        finally:
            second.close()
    assert first.terminate() == 0


def test_adoption_is_a_state_change_on_dbus(write_config: WriteConfig, daemons: Start,
                                             bus_address: str, marker: str) -> None:
    config = write_config({"a": sleeper(marker)})
    first = daemons(config)
    first.wait_for(event("RUNNING", "a"))
    pid = first.latest_pids()["a"]
    sigkill(first)

    async def main() -> None:
        async with client(bus_address) as c:
            second = daemons(config)
            msg = await asyncio.wait_for(c.next_signal(state_change("a", "RUNNING")), 15)
            assert msg.body[:5] == ["a", "a", "STOPPED", "RUNNING", pid]
            second.wait_for(event("ADOPTED", "a"))
            os.kill(pid, signal.SIGKILL)
            exited = await asyncio.wait_for(c.next_signal(state_change("a", "EXITED")), 15)
            assert exited.body[4:] == [pid, 0, False]  # the status is unknown: 0, unexpected
    asyncio.run(main())


def test_adopted_while_starting_keeps_what_is_left_of_starttime(
        write_config: WriteConfig, daemons: Start, marker: str) -> None:
    config = write_config({"slow": sleeper(marker, starttime=60)})
    first = daemons(config)
    pid = first.wait_for(event("STARTING", "slow")).pid
    store = config.parent / "state" / "processes.json"
    wait_until("the store", lambda: store.exists() and f'"pid":{pid}'.encode() in store.read_bytes())
    sigkill(first)
    second = daemons(config)
    adopted = second.wait_for(event("ADOPTED", "slow"))
    assert adopted.pid == pid and "STARTING, RUNNING in " in adopted.message
    left = float(adopted.message.split("RUNNING in ")[1].split("s ")[0])
    assert 0 < left < 60  # counted from its start, not from the adoption
    assert not [ln for ln in second.lines if ln.kind in ("STARTING", "RUNNING")]
    assert second.terminate() == 0
