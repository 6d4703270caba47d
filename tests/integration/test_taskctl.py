"""taskctl as a user runs it (`python -m taskctl --address ...` subprocesses)
against a real taskmasterd on the test's private bus. Waits are on the
daemon's log lines or on taskctl's own output, with timeouts; never sleeps."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from tests.dbus_fixtures import bus_directory, system_bus
from tests.harness import Daemon, event, read_fifo
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
POLICY = Path(__file__).resolve().parents[2] / "dbus" / "org.taskmaster.Taskmaster1.conf"
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SLEEPER = "sleep 100000"
HINT = "start it with: "


def programs() -> dict[str, dict[str, Any]]:
    return {
        "web": {"cmd": "sh -c 'echo hello from web $TASKMASTER_PROCESS_NUM; exec sleep 100000'",
                "numprocs": 2, "starttime": 0},
        "crashy": {"cmd": "/nonexistent/crashy-command", "startretries": 0},
        "idle": {"cmd": SLEEPER, "autostart": False, "starttime": 0},
    }


def taskctl(address: str | None, *args: str, env: dict[str, str] | None = None,
            timeout: float = 30, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    where = ["--address", address] if address is not None else []
    r = subprocess.run([*prefix, sys.executable, "-m", "taskctl", *where, *args],
                       capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env={**os.environ, **(env or {})})
    assert "Traceback" not in r.stderr, r.stderr
    return r


def popen_taskctl(address: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "taskctl", "--address", address, *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


class Lines:
    """Lines of a pipe, read as they come with a timeout (select)."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        self.fd = stream.fileno()
        self.buf = b""
        self.seen: list[str] = []

    def next(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"no line within {timeout}s; so far: {self.seen}")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise AssertionError(f"end of output; so far: {self.seen} {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode()
        self.seen.append(text)
        return text

    def wait_for(self, pred: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.0, deadline - time.monotonic()))
            if pred(line):
                return line


def interrupt(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Ctrl-C: SIGINT, then the exit status and what is left on stderr."""
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


@pytest.fixture
def tm(write_config: WriteConfig, daemons: Start) -> Daemon:
    d = daemons(write_config(programs()))
    ready = {("web:0", "RUNNING"), ("web:1", "RUNNING"), ("crashy", "FATAL")}
    d.wait_count(lambda ln: (ln.process, ln.kind) in ready, 3)
    return d


def table(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PID", "DESCRIPTION"]
    return {ln.split()[0]: ln.split(None, 3)[1:] for ln in lines[1:]}


def json_pids(address: str) -> dict[str, int | None]:
    r = taskctl(address, "--json", "status")
    return {p["name"]: p["pid"] for p in json.loads(r.stdout)}


# ---- status --------------------------------------------------------------------------------


def test_status_table_and_exit_3_when_something_is_not_running(
        tm: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "status")
    assert r.returncode == 3, r.stderr
    rows = table(r.stdout)
    assert list(rows) == ["web:0", "web:1", "crashy", "idle"]
    pids = tm.latest_pids()
    for name in ("web:0", "web:1"):
        state, pid, description = rows[name]
        assert (state, int(pid)) == ("RUNNING", pids[name])
        assert re.fullmatch(r"uptime \d+:\d\d:\d\d", description)
    assert rows["crashy"][:2] == ["FATAL", "-"]
    assert rows["crashy"][2].startswith("spawn error: ENOENT")
    assert rows["idle"] == ["STOPPED", "-", "not started"]
    assert r.stderr == ""


def test_status_of_targets(tm: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "status", "web")
    assert r.returncode == 0 and list(table(r.stdout)) == ["web:0", "web:1"]
    r = taskctl(bus_address, "status", "web:1")
    assert r.returncode == 0 and list(table(r.stdout)) == ["web:1"]
    r = taskctl(bus_address, "status", "w*", "idle")
    assert r.returncode == 3 and list(table(r.stdout)) == ["web:0", "web:1", "idle"]
    r = taskctl(bus_address, "status", "web", "nope")
    assert r.returncode == 4 and list(table(r.stdout)) == ["web:0", "web:1"]
    assert r.stderr.strip() == "nope: ERROR (no such process)"


def test_status_json(tm: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "status", "--json")
    assert r.returncode == 3
    data = json.loads(r.stdout)
    by = {p["name"]: p for p in data}
    assert [p["name"] for p in data] == ["web:0", "web:1", "crashy", "idle"]
    assert by["web:0"]["pid"] == tm.latest_pids()["web:0"] and by["web:0"]["program"] == "web"
    assert by["web:0"]["state"] == "RUNNING" and by["web:0"]["uptime"] >= 0
    assert by["web:0"]["started_at"] == pytest.approx(time.time(), abs=60)
    assert by["crashy"]["state"] == "FATAL" and by["crashy"]["pid"] is None
    assert by["crashy"]["spawn_error"].startswith("ENOENT")
    assert by["idle"] == {**by["idle"], "state": "STOPPED", "pid": None, "started_at": None}


# ---- start / stop / restart / signal ---------------------------------------------------------


def test_start_then_start_again_is_already_started(tm: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "start", "idle")
    assert (r.returncode, r.stdout, r.stderr) == (0, "idle: started\n", "")
    tm.wait_for(event("RUNNING", "idle"))
    r = taskctl(bus_address, "start", "idle")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("idle: ERROR (already started): ") and "RUNNING" in r.stderr
    r = taskctl(bus_address, "--json", "start", "idle")
    assert r.returncode == 1
    assert json.loads(r.stdout) == [{"target": "idle", "ok": False, "error": "AlreadyStarted",
                                     "message": "idle is already RUNNING"}]


def test_no_such_program_exits_4(tm: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "stop", "nope")
    assert r.returncode == 4 and r.stdout == ""
    assert r.stderr.startswith("nope: ERROR (no such process): ") and "nope" in r.stderr[6:]
    r = taskctl(bus_address, "restart", "web:one")
    assert r.returncode == 4 and "ERROR (bad name)" in r.stderr
    # One call per target: the good one is done, the code says what failed.
    r = taskctl(bus_address, "stop", "idle", "nope")
    assert r.returncode == 4 and "nope: ERROR (no such process)" in r.stderr
    assert "idle: ERROR (not running)" in r.stderr


def test_restart_changes_the_pid(tm: Daemon, bus_address: str) -> None:
    before = json_pids(bus_address)
    r = taskctl(bus_address, "restart", "web:1")
    assert (r.returncode, r.stdout) == (0, "web:1: restarted\n")
    tm.wait_for(event("RUNNING", "web:1"))
    r = taskctl(bus_address, "pid", "web:1")
    assert r.returncode == 0
    new = int(r.stdout)
    assert new not in (0, before["web:1"]) and new == tm.latest_pids()["web:1"]
    assert json_pids(bus_address)["web:0"] == before["web:0"]


def test_signal(tm: Daemon, bus_address: str) -> None:
    old = tm.latest_pids()["web:0"]
    r = taskctl(bus_address, "signal", "TERM", "web:0")
    assert (r.returncode, r.stdout) == (0, "web:0: signalled\n")
    exited = tm.wait_for(event("EXITED", "web:0"))
    assert exited.pid == old
    r = taskctl(bus_address, "signal", "HUP", "idle")
    assert r.returncode == 1 and r.stderr.startswith("idle: ERROR (not running)")
    r = taskctl(bus_address, "signal", "NOPE", "web")
    assert r.returncode == 2 and "unknown signal" in r.stderr  # bad usage (issue 11)


def test_pid(tm: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "pid")
    assert (r.returncode, r.stdout) == (0, f"{tm.pid}\n")
    r = taskctl(bus_address, "--json", "pid")
    assert json.loads(r.stdout) == {"pid": tm.pid}
    pids = tm.latest_pids()
    r = taskctl(bus_address, "pid", "web")
    assert r.stdout.split() == [str(pids["web:0"]), str(pids["web:1"])]
    r = taskctl(bus_address, "pid", "--json", "all")
    assert json.loads(r.stdout) == {"web:0": pids["web:0"], "web:1": pids["web:1"],
                                    "crashy": None, "idle": None}
    assert taskctl(bus_address, "pid", "nope").returncode == 4


# ---- reload ---------------------------------------------------------------------------------


def test_reload_prints_what_changed(
        tm: Daemon, bus_address: str, write_config: WriteConfig) -> None:
    progs = programs()
    del progs["idle"]
    progs["extra"] = {"cmd": SLEEPER, "starttime": 0}
    progs["crashy"]["cmd"] = "/nonexistent/other-command"
    write_config(progs)
    r = taskctl(bus_address, "reload")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["added: extra", "changed: crashy", "removed: idle"]
    tm.wait_for(event("RUNNING", "extra"))
    r = taskctl(bus_address, "reload")
    assert (r.returncode, r.stdout) == (0, "no changes\n")
    del progs["extra"]
    progs["web"]["stoptime"] = 3
    write_config(progs)
    r = taskctl(bus_address, "--json", "reload")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"added": [], "changed": ["web"], "removed": ["extra"],
                                    "settings": []}


def test_reload_with_an_invalid_config(tm: Daemon, bus_address: str, write_config: WriteConfig
                                       ) -> None:
    progs = programs()
    progs["web"]["stoptime"] = -2
    cfg = write_config(progs)
    r = taskctl(bus_address, "reload")
    assert r.returncode == 1 and r.stdout == ""
    assert re.search(re.escape(str(cfg)) + r":\d+", r.stderr), r.stderr
    assert "stoptime" in r.stderr
    # Still serving the old configuration.
    assert list(table(taskctl(bus_address, "status").stdout)) == ["web:0", "web:1", "crashy",
                                                                  "idle"]


# ---- tail -----------------------------------------------------------------------------------


def test_tail(write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    fifo = workdir / "ready"
    os.mkfifo(fifo)
    cfg = write_config({
        "talker": {"cmd": "sh -c 'echo hello from talker; echo oops on stderr >&2; "
                          f"echo ready > {fifo}; exec sleep 100000'", "starttime": 0,
                   # Unbounded: the child writes its files itself, so its output
                   # is there once it says ready (bounded output goes through the
                   # log writer: test_output_rotation.py tails that).
                   "stdout_maxbytes": 0, "stderr_maxbytes": 0},
        "hidden": {"cmd": SLEEPER, "stdout": None, "starttime": 0},
    })
    d = daemons(cfg)
    assert read_fifo(fifo) == "ready\n"  # its output is written by now
    r = taskctl(bus_address, "tail", "talker")
    assert (r.returncode, r.stdout) == (0, "hello from talker\n")
    r = taskctl(bus_address, "tail", "--stderr", "talker")
    assert (r.returncode, r.stdout) == (0, "oops on stderr\n")
    r = taskctl(bus_address, "tail", "-c", "6", "talker")
    assert r.stdout == "alker\n"
    r = taskctl(bus_address, "tail", "hidden")
    assert r.returncode == 1 and "discarded" in r.stderr
    r = taskctl(bus_address, "tail", "ghost")
    assert r.returncode == 4

    follower = popen_taskctl(bus_address, "tail", "-f", "talker")
    try:
        out = Lines(follower.stdout)
        assert out.next() == "hello from talker"
        r = taskctl(bus_address, "restart", "talker")
        assert r.returncode == 0
        assert out.next() == "hello from talker"  # what the new process wrote, followed
        assert read_fifo(fifo) == "ready\n"
    finally:
        code, err = interrupt(follower)
    assert code == 130 and "Traceback" not in err
    d.wait_for(event("RUNNING", "talker"))


# ---- start / stop / restart wait for the outcome ---------------------------------------------


@pytest.fixture
def waits(write_config: WriteConfig, daemons: Start, workdir: Path) -> Daemon:
    d = daemons(write_config({
        "slow": {"cmd": SLEEPER, "autostart": False, "starttime": 2},
        # Long enough that a Ctrl-C always lands while it starts, however loaded the machine.
        "slower": {"cmd": SLEEPER, "autostart": False, "starttime": 600},
        "launcher": {"cmd": "/nonexistent/launcher", "autostart": False, "startretries": 1},
        "quick": {"cmd": "sh -c 'exit 3'", "autostart": False, "startretries": 1,
                  "starttime": 1},
        # Ignores SIGTERM: its stop lasts stoptime, then SIGKILL. Started by
        # the tests that stop it only (every teardown would wait its stoptime).
        "stubborn": {"cmd": "sh -c 'trap \"\" TERM; exec sleep 100000'", "starttime": 0,
                     "stoptime": 1.5, "autostart": False},
        "web": {"cmd": SLEEPER, "numprocs": 3, "starttime": 0},
    }))
    d.wait_count(lambda ln: ln.kind == "RUNNING", 3)
    return d


def state_of(address: str, name: str) -> str:
    r = taskctl(address, "--json", "status", name)
    [row] = json.loads(r.stdout)
    return str(row["state"])


def test_start_waits_until_running(waits: Daemon, bus_address: str) -> None:
    began = time.monotonic()
    r = taskctl(bus_address, "start", "slow")
    assert (r.returncode, r.stdout, r.stderr) == (0, "slow: started\n", "")
    assert time.monotonic() - began >= 2  # starttime: RUNNING only after it
    assert state_of(bus_address, "slow") == "RUNNING"
    r = taskctl(bus_address, "restart", "web")
    assert r.returncode == 0 and r.stderr == ""
    assert sorted(r.stdout.splitlines()) == [f"web:{i}: restarted" for i in range(3)]


def test_a_spawn_error_exits_1_with_the_reason(waits: Daemon, bus_address: str) -> None:
    for command in ("start", "restart"):
        r = taskctl(bus_address, command, "launcher")
        assert (r.returncode, r.stdout) == (1, ""), r.stderr
        assert r.stderr.startswith("launcher: ERROR (spawn error): ENOENT (execve "
                                   "/nonexistent/launcher)"), r.stderr
        assert state_of(bus_address, "launcher") == "FATAL"  # after the retries, not BACKOFF


def test_a_program_that_exits_at_once_ends_fatal_exit_1(waits: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "start", "quick")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("quick: ERROR (abnormal termination): exited too quickly "
                        "(exit status 3), gave up\n")
    r = taskctl(bus_address, "--json", "start", "quick", "slow")
    assert r.returncode == 1
    quick, slow = json.loads(r.stdout)
    assert quick["ok"] is False and quick["outcome"] == [{
        "process": "quick", "ok": False, "state": "FATAL", "error": "abnormal termination",
        "message": "exited too quickly (exit status 3), gave up"}]
    assert slow["ok"] is True and slow["outcome"][0]["state"] == "RUNNING"


def test_a_start_stopped_by_someone_else_meanwhile_exits_1(waits: Daemon, bus_address: str
                                                           ) -> None:
    starting = popen_taskctl(bus_address, "start", "slow")
    try:
        waits.wait_for(event("STARTING", "slow"))  # requested: it waits for RUNNING (2 s)
        r = taskctl(bus_address, "stop", "slow")
        assert (r.returncode, r.stdout) == (0, "slow: stopped\n")
        out, err = starting.communicate(timeout=30)
    finally:
        if starting.poll() is None:
            starting.kill()
            starting.wait()
    assert (starting.returncode, out) == (1, b"")
    assert err.decode().startswith("slow: ERROR (stopped): STOPPED before reaching RUNNING")


def test_no_block_returns_at_once(waits: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "start", "--no-block", "slow")
    assert (r.returncode, r.stdout, r.stderr) == (0, "slow: started\n", "")
    assert state_of(bus_address, "slow") == "STARTING"
    waits.wait_for(event("RUNNING", "slow"))
    assert taskctl(bus_address, "start", "stubborn").returncode == 0
    r = taskctl(bus_address, "stop", "--no-block", "stubborn")
    assert (r.returncode, r.stdout) == (0, "stubborn: stopped\n")
    assert state_of(bus_address, "stubborn") == "STOPPING"


def test_stop_waits_until_it_is_down(waits: Daemon, bus_address: str) -> None:
    assert taskctl(bus_address, "start", "stubborn").returncode == 0
    r = taskctl(bus_address, "stop", "stubborn")
    assert (r.returncode, r.stdout, r.stderr) == (0, "stubborn: stopped\n", "")
    assert state_of(bus_address, "stubborn") == "STOPPED"
    waits.wait_for(event("KILLED", "stubborn"), timeout=0)  # it took the SIGKILL


def test_timeout_exits_124_and_says_what_is_pending(waits: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "start", "--timeout", "0.3", "slow")
    assert (r.returncode, r.stdout) == (124, "")
    assert r.stderr == ("taskctl: gave up waiting after 0.3 s: slow is still STARTING "
                        "(the start goes on; taskctl status shows where it is)\n")
    waits.wait_for(event("RUNNING", "slow"))  # it went on


def run_on_a_terminal(address: str, *args: str,
                      head: Sequence[str] = (sys.executable, "-m", "taskctl"),
                      ) -> tuple[subprocess.Popen[bytes], int]:
    """taskctl (run as `head`) with its stderr on a pseudo-terminal (stdout a
    pipe); the pty's master."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*head, "--address", address, *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    return proc, master


def read_terminal(fd: int, until: str, timeout: float = 15.0) -> str:
    """What was written on the terminal, up to `until` (or its end)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while until.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"{until!r} not seen within {timeout}s: {seen!r}")
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child has gone
            chunk = b""
        if not chunk:
            break
        seen += chunk
    return seen.decode()


def test_progress_on_a_terminal_only(waits: Daemon, bus_address: str) -> None:
    proc, master = run_on_a_terminal(bus_address, "start", "slow")
    try:
        screen = read_terminal(master, "\x00")  # to the end
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
    assert proc.returncode == 0 and out == b"slow: started\n"
    assert re.search(r"\r\x1b\[Kwaiting for slow \(STARTING\); \d s, gives up in 29\d s", screen)
    assert screen.endswith("\r\x1b[K")  # the line is cleared before taskctl ends
    # The same on a pipe: nothing but the outcome.
    r = taskctl(bus_address, "restart", "slow")
    assert (r.returncode, r.stdout, r.stderr) == (0, "slow: restarted\n", "")


def ctrl_c_while_waiting(proc: subprocess.Popen[bytes], master: int, process: str
                         ) -> tuple[int, str]:
    """SIGINT once taskctl's progress line says it waits for `process`; its
    exit status and all it wrote on the terminal."""
    try:
        read_terminal(master, f"waiting for {process}")  # it is waiting now
        proc.send_signal(signal.SIGINT)
        screen = read_terminal(master, "\x00")  # to the end
        proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, screen


def test_ctrl_c_stops_waiting_not_the_start(waits: Daemon, bus_address: str) -> None:
    code, screen = ctrl_c_while_waiting(*run_on_a_terminal(bus_address, "start", "slower"), "slower")
    assert code == 130
    assert "taskctl: stopped waiting: slower is still STARTING (the start goes on)" in screen
    assert state_of(bus_address, "slower") == "STARTING"  # the start went on


def test_tail_of_a_program_with_several_processes_names_them(
        waits: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "tail", "web")
    assert (r.returncode, r.stdout) == (4, "")
    assert r.stderr == ("web: ERROR (no such process): web has 3 processes: web:0 web:1 web:2; "
                        "tail one of them (taskctl tail web:0)\n")


# ---- events ----------------------------------------------------------------------------------


def test_events_follow_a_restart(tm: Daemon, bus_address: str) -> None:
    as_json = popen_taskctl(bus_address, "--json", "events")
    human = popen_taskctl(bus_address, "events")
    try:
        for p in (as_json, human):  # subscribed once this is said
            line = Lines(p.stderr).next()
            assert line.startswith(f"taskctl: following the events of taskmasterd (pid {tm.pid})")
        old = tm.latest_pids()["web:0"]
        assert taskctl(bus_address, "restart", "web:0").returncode == 0
        out = Lines(as_json.stdout)
        seen = [json.loads(out.next()) for _ in range(4)]
        assert [(e["event"], e["process"], e["old"], e["new"]) for e in seen] == [
            ("ProcessStateChanged", "web:0", "RUNNING", "STOPPING"),
            ("ProcessStateChanged", "web:0", "STOPPING", "STOPPED"),
            ("ProcessStateChanged", "web:0", "STOPPED", "STARTING"),
            ("ProcessStateChanged", "web:0", "STARTING", "RUNNING")]
        assert seen[0]["pid"] == old and seen[1]["exit_status"] == -signal.SIGTERM
        assert seen[3]["pid"] not in (None, old) and seen[3]["program"] == "web"
        text = Lines(human.stdout)
        assert text.next().endswith(f" web:0: RUNNING -> STOPPING (pid {old})")
        assert text.next().endswith(f" web:0: STOPPING -> STOPPED (pid {old}, killed by SIGTERM)")
    finally:
        results = [interrupt(p) for p in (as_json, human)]
    assert all(code == 130 and "Traceback" not in err for code, err in results), results


# ---- unreachable, usage, shutdown -------------------------------------------------------------


def test_no_daemon_on_the_bus_exits_7_with_a_hint(bus_address: str) -> None:
    for args in (["status"], ["start", "web"], ["pid"], ["events"], ["reload"]):
        r = taskctl(bus_address, *args)
        assert r.returncode == 7, (args, r)
        assert r.stdout == ""
        assert r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"taskctl: cannot reach taskmasterd on the bus at {bus_address}")
        assert "org.taskmaster.Taskmaster1 has no owner" in r.stderr and HINT in r.stderr


def test_no_bus_exits_7(workdir: Path) -> None:
    r = taskctl(f"unix:path={workdir}/no-such.socket", "status")
    assert r.returncode == 7 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "No such file or directory" in r.stderr
    assert HINT in r.stderr
    env = {"DBUS_SESSION_BUS_ADDRESS": "", "XDG_RUNTIME_DIR": str(workdir)}
    r = taskctl(None, "--user", "status", env=env)
    assert r.returncode == 7 and r.stderr.count("\n") == 1
    assert "session bus" in r.stderr and "systemctl --user start taskmasterd" in r.stderr


@pytest.mark.parametrize("args", [["frob"], ["start"], ["signal", "TERM"], ["--user", "--system",
                                                                            "status"]])
def test_bad_usage_exits_2(args: list[str]) -> None:
    r = taskctl(None, *args)
    assert r.returncode == 2 and "usage: taskctl" in r.stderr


def test_shutdown(tm: Daemon, bus_address: str) -> None:
    r = taskctl(bus_address, "shutdown")
    assert r.returncode == 0 and "shutting down" in r.stdout
    assert tm.proc.wait(timeout=30) == 0
    assert taskctl(bus_address, "status").returncode == 7



@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv (to run taskctl as uid 65534)")
def test_access_denied_by_the_bus_policy(write_config: WriteConfig) -> None:
    """On a system-like bus with our policy, anyone may look, only root and
    the group taskmaster may act: taskctl says so with exit status 1."""
    cfg = write_config(programs())
    with bus_directory() as directory, system_bus(directory, POLICY) as address:
        d = Daemon(cfg, "--address", address)
        try:
            d.wait_count(event("RUNNING"), 2)
            nobody = tuple(AS_NOBODY)
            r = taskctl(address, "status", "web", prefix=nobody)
            assert r.returncode == 0 and list(table(r.stdout)) == ["web:0", "web:1"], r.stderr
            r = taskctl(address, "pid", prefix=nobody)
            assert (r.returncode, r.stdout) == (0, f"{d.pid}\n")
            r = taskctl(address, "start", "idle", prefix=nobody)
            assert r.returncode == 1 and r.stdout == ""
            assert r.stderr.startswith("idle: ERROR (access denied): ") and r.stderr.count("\n") == 1
            r = taskctl(address, "reload", prefix=nobody)
            assert r.returncode == 1 and "ERROR (access denied)" in r.stderr
            r = taskctl(address, "start", "idle")  # root may
            assert (r.returncode, r.stdout) == (0, "idle: started\n")
        finally:
            d.terminate()


def test_client_in_process_events_cancel_and_reconnect(tm: Daemon, bus_address: str) -> None:
    """The Client API the shell and taskmasterd --shell use: events in order,
    cancel() from another thread interrupts a blocked wait, and the next
    request connects again."""
    import threading

    from taskctl.client import Client
    from taskctl.model import StateChange
    from taskmasterd.busaddr import BusChoice

    with Client(BusChoice("address", bus_address), timeout=10) as client:
        assert {r.name for r in client.list_processes()} >= {"web:0", "web:1", "crashy"}
        with client.subscription():
            assert client.restart("web:0") == ["web:0"]
            seen = []
            while len(seen) < 4:
                ev = client.next_event(timeout=10)
                assert ev is not None, seen
                if isinstance(ev, StateChange) and ev.process == "web:0":
                    seen.append(ev.new)
            assert seen == ["STOPPING", "STOPPED", "STARTING", "RUNNING"]
            assert client.next_event(timeout=0.05) is None  # nothing more: a timeout, not an error

            # cancel() from another thread, until the blocked wait gives up
            done = threading.Event()

            def canceller() -> None:
                while not done.wait(0.05):  # sleep-ok: retries until the main thread is blocked
                    client.cancel()
            thread = threading.Thread(target=canceller)
            thread.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    client.next_event(timeout=20)
            finally:
                done.set()
                thread.join()
        # the connection was dropped by the interrupt; the next request makes a new one
        assert client.state() == "running"
        assert client.daemon_pid() == tm.pid
