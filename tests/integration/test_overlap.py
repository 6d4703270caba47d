"""Overlapping restart (`restart: overlap`, issue 15) with the real daemon:
Debian's nginx sharing its port (reuseport) through 20 restarts under a
client loop that sees no failed request; a successor never ready (the
overlap abandoned, the old pid kept); a stop during an overlap (both
down); ProcessStateChanged showing only RUNNING -> RUNNING; and a daemon
SIGKILLed before or during the handover (the next one keeps the process
that serves and stops the other)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_readiness import environ_of
from tests.integration.test_real_programs import NGINX, free_port, nginx_conf, wait_port
from tests.integration.test_taskctl import taskctl

Start = Callable[..., Daemon]
MIGRATE = "/proc/sys/net/ipv4/tcp_migrate_req"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:  # gone (ENOENT, or ESRCH while reading)
        return False


def pid_of(address: str, name: str) -> int:
    out = taskctl(address, "pid", name)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def state_of(address: str, name: str) -> str:
    out = taskctl(address, "--json", "status", name)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    row = rows[0] if isinstance(rows, list) else rows
    return str(row.get("state") if isinstance(row, dict) else row)


# A program ready by READY=1 only on its first run (a marker file): any
# successor is never ready.
def once_ready(workdir: Path, **extra: object) -> dict[str, object]:
    marker = workdir / "ran-once"
    return {"cmd": f"sh -c 'if [ -e {marker} ]; then exec sleep 100000; fi; touch {marker}; "
                   "systemd-notify --ready; exec sleep 100000'",
            "ready": "notify", "starttime": 0, "restart": "overlap", "stoptime": 2,
            "stdout": None, "stderr": None, **extra}


def test_a_successor_never_ready_is_abandoned_and_the_old_pid_keeps_running(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    d = daemons(write_config({"web": once_ready(workdir, readytimeout=2)}))
    running = d.wait_for(event("RUNNING", "web"), timeout=15)
    old, since = running.pid, d.cursor
    out = taskctl(bus_address, "restart", "web")
    assert out.returncode == 1, out
    assert out.stderr.startswith("web: ERROR (overlap restart failed): pid "), out.stderr
    assert "overlap restart failed: the successor was not ready within 2 s (notify)" in out.stderr
    spawned = d.wait_for(event("OVERLAP", "web"))
    assert "successor pid" in spawned.message and spawned.pid != old
    failed = d.wait_for(event("OVERLAP_FAILED", "web"))
    assert failed.level == "WARNING"
    assert f"pid {old} keeps running" in failed.message and "not ready within 2 s" in failed.message
    wait_until("the successor is gone", lambda: not alive(spawned.pid), 10)
    assert alive(old) and pid_of(bus_address, "web") == old
    assert "RUNNING" in taskctl(bus_address, "status", "web").stdout
    # Nothing but that line was said of the process's state: it never left RUNNING.
    said = [ln for ln in d.lines[since:] if ln.process == "web"]
    assert [ln.kind for ln in said] == ["OVERLAP", "OVERLAP_FAILED"], d.text()


def test_a_stop_during_an_overlap_stops_both(write_config: WriteConfig, daemons: Start,
                                             bus_address: str, workdir: Path) -> None:
    d = daemons(write_config({"web": once_ready(workdir, readytimeout=60)}))
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    out = taskctl(bus_address, "restart", "--no-block", "web")
    assert out.returncode == 0, out.stderr
    new = d.wait_for(event("OVERLAP", "web")).pid
    assert alive(new) and new != old
    # A second restart meanwhile is refused, clearly.
    again = taskctl(bus_address, "restart", "web")
    assert again.returncode != 0 and "overlap restart is under way" in again.stderr, again
    out = taskctl(bus_address, "stop", "web")
    assert out.returncode == 0, out.stderr
    d.wait_for(event("STOPPED", "web"), timeout=10)
    wait_until("both processes gone", lambda: not alive(old) and not alive(new), 10)


def test_shutdown_during_an_overlap_leaves_no_successor(write_config: WriteConfig, daemons: Start,
                                                       bus_address: str, workdir: Path) -> None:
    d = daemons(write_config({"web": once_ready(workdir, readytimeout=60)}))
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    assert taskctl(bus_address, "restart", "--no-block", "web").returncode == 0
    new = d.wait_for(event("OVERLAP", "web")).pid
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    assert not alive(old) and not alive(new)


# -- nginx, the test ---------------------------------------------------

@pytest.fixture
def migrate_req() -> Iterator[None]:
    """net.ipv4.tcp_migrate_req=1 (Linux >= 5.14): connections queued on a
    reuseport listener that closes go to another listener of the group
    instead of being reset. Restored afterwards."""
    if not os.path.exists(MIGRATE) or os.geteuid() != 0:
        pytest.skip("needs root and net.ipv4.tcp_migrate_req (Linux >= 5.14)")
    before = Path(MIGRATE).read_text().strip()
    try:
        Path(MIGRATE).write_text("1\n")
    except OSError as exc:
        pytest.skip(f"cannot set net.ipv4.tcp_migrate_req: {exc}")
    yield
    Path(MIGRATE).write_text(before + "\n")


def nginx_program(workdir: Path, port: int) -> dict[str, object]:
    # The pid file: two masters write it during an overlap and the old one
    # removes it at exit; nothing reads it under taskmasterd.
    conf = nginx_conf(workdir, f"127.0.0.1:{port} reuseport", connections=256, keepalive=False)
    # A tcp probe of the shared port may be answered by the old nginx
    # (docs/readiness.md): the probe checks that the master started last
    # (its pid written just before its exec) has its own listeners.
    starting = workdir / "starting.pid"
    probe = (f"sh -c 'ss -Hltnp \"sport = :{port}\" | grep -q \"pid=$(cat {starting}),\"'")
    return {"cmd": f"sh -c 'echo $$ > {starting}; exec {NGINX} -p {workdir}/ "
                   f"-e {workdir}/nginx-error.log -c {conf} -g \"daemon off;\"'",
            "ready": {"cmd": probe}, "starttime": 0, "readytimeout": 10,
            "restart": "overlap", "stopsignal": "QUIT", "stoptime": 10}


class Client(threading.Thread):
    """Sequential GETs, one connection each (no keep-alive), until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200 and body == b"ok\n":
                    self.ok += 1
                else:
                    self.failures.append(f"{resp.status} {body[:40]!r}")
            except OSError as exc:
                self.failures.append(repr(exc))
            finally:
                conn.close()


@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="nginx's master runs as root (workers: nobody)")
def test_nginx_twenty_overlapping_restarts_fail_no_request(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path,
        migrate_req: None) -> None:
    port = free_port()
    d = daemons(write_config({"web": nginx_program(workdir, port)}))
    first = d.wait_for(event("RUNNING", "web"), timeout=20).pid
    wait_port(port)
    events = subprocess.Popen([sys.executable, "-m", "taskctl", "--address", bus_address, "--json",
                               "events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    seen: list[dict[str, object]] = []
    reader = threading.Thread(target=lambda: seen.extend(
        json.loads(line) for line in events.stdout or () if line.strip()), daemon=True)
    reader.start()
    client = Client(port)
    pids = [first]
    try:
        wait_until("taskctl events is following", lambda: events.stderr is not None and bool(
            events.stderr.readline()), 10)
        client.start()
        wait_until("the client got answers", lambda: client.ok > 0, 10)
        for _ in range(20):
            out = taskctl(bus_address, "restart", "web")
            assert out.returncode == 0, (out.stdout, out.stderr)
            pid = pid_of(bus_address, "web")
            assert pid != pids[-1], "taskctl restart returned before the pid changed"
            pids.append(pid)
        wait_until("the last old nginx is gone", lambda: not alive(pids[-2]), 15)
    finally:
        client.halt.set()
        client.join(10)
        events.terminate()
        events.wait(10)
        reader.join(10)
    assert client.failures == [], (client.failures[:5], client.ok)
    assert client.ok > 20
    assert len(set(pids)) == 21  # 20 restarts, 20 new masters
    assert not any(alive(p) for p in pids[:-1])
    # D-Bus: the process never showed anything but RUNNING -> RUNNING, each with the new pid.
    changes = [e for e in seen if e.get("process") == "web"]
    assert changes, seen
    assert {(e["old"], e["new"], e["expected"]) for e in changes} == {("RUNNING", "RUNNING", True)}, \
        changes
    assert [e["pid"] for e in changes] == pids[1:]
    took_over = [ln for ln in d.lines if ln.process == "web" and ln.kind == "RUNNING"][1:]
    assert [ln.message for ln in took_over] == [f"took over from pid {p} (overlap restart)"
                                                for p in pids[:-1]]


def test_the_old_process_dying_during_an_overlap_hands_over_at_once(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """The successor takes the slot though not ready yet: RUNNING ->
    STARTING (its pid), then RUNNING when it is ready, as any start."""
    marker = workdir / "ran-once"
    d = daemons(write_config({"web": {
        "cmd": f"sh -c 'if [ -e {marker} ]; then sleep 2; fi; touch {marker}; "
               "systemd-notify --ready; exec sleep 100000'",
        "ready": "notify", "starttime": 0, "restart": "overlap", "stoptime": 2,
        "stdout": None, "stderr": None}}))
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    assert taskctl(bus_address, "restart", "--no-block", "web").returncode == 0
    new = d.wait_for(event("OVERLAP", "web")).pid
    os.kill(old, signal.SIGKILL)
    starting = d.wait_for(event("STARTING", "web"))
    assert starting.pid == new and f"pid {old} exited (killed by SIGKILL)" in starting.message, \
        starting.raw
    running = d.wait_for(event("RUNNING", "web"), timeout=10)
    assert running.pid == new and pid_of(bus_address, "web") == new


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def test_a_reexec_during_an_overlap_gives_it_up_and_keeps_the_old_process(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """The handed-over state has one record per process: the successor is
    killed and reaped before the exec (no zombie, no copy left running),
    the old process kept and taken back."""
    d = daemons(write_config({"web": once_ready(workdir, readytimeout=60)}))
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    assert taskctl(bus_address, "restart", "--no-block", "web").returncode == 0
    new = d.wait_for(event("OVERLAP", "web")).pid
    out = taskctl(bus_address, "daemon-reexec")
    assert out.returncode == 0, out.stderr
    failed = d.wait_for(event("OVERLAP_FAILED", "web"))
    assert "taskmasterd re-executes itself" in failed.message and f"pid {old} keeps running" in \
        failed.message
    assert not alive(new) and not zombies_of(d.pid)
    d.wait_for(lambda ln: ln.kind == "DAEMON_START")
    assert alive(old) and pid_of(bus_address, "web") == old
    assert "RUNNING" in taskctl(bus_address, "status", "web").stdout
    # Still supervised: a stop stops it.
    assert taskctl(bus_address, "stop", "web").returncode == 0
    assert not alive(old)


def test_a_reload_changing_a_launch_setting_overlaps(write_config: WriteConfig, daemons: Start,
                                                     bus_address: str) -> None:
    """Without `ready:` the successor is RUNNING after starttime; the
    configuration change costs no downtime."""
    program = {"cmd": "sleep 100000", "starttime": 1, "restart": "overlap", "env": {"V": "1"},
               "stdout": None, "stderr": None}
    cfg = write_config({"web": program})
    d = daemons(cfg)
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    since = d.cursor
    write_config({"web": {**program, "env": {"V": "2"}}})
    assert taskctl(bus_address, "reload").returncode == 0
    took = d.wait_for(event("RUNNING", "web"), timeout=15)
    assert took.message == f"took over from pid {old} (overlap restart)" and took.pid != old
    assert environ_of(took.pid)["V"] == "2" and not alive(old)
    said = [ln.kind for ln in d.lines[since:] if ln.process == "web"]
    assert said == ["OVERLAP", "OVERLAP", "RUNNING"], d.text()


def slow_to_stop(workdir: Path, successor_fails: bool) -> dict[str, object]:
    """Ready at once; the first run takes 3 s to stop on SIGTERM (the later
    ones stop at once: a teardown need not wait). The second run (the
    successor) dies 1 s after it was ready if `successor_fails`."""
    count, script = workdir / "runs", workdir / "slow-to-stop.sh"
    fail = "if [ $n = 2 ]; then sleep 1; exit 3; fi" if successor_fails else ""
    script.write_text(f"""#!/bin/sh
n=$(cat {count} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {count}
systemd-notify --ready
{fail}
if [ $n = 1 ]; then trap 'sleep 3; exit 0' TERM; fi
while :; do sleep 0.2; done
""")
    script.chmod(0o755)
    return {"cmd": str(script), "ready": "notify", "starttime": 0, "restart": "overlap",
            "stoptime": 10, "stdout": None, "stderr": None}


def test_a_successor_dying_after_it_was_ready_restarts_the_process_stop_start(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """The old process was already told to stop: the restart asked for
    still happens, visibly (STOPPING, STOPPED, STARTING, RUNNING)."""
    d = daemons(write_config({"web": slow_to_stop(workdir, successor_fails=True)}))
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    since = d.cursor
    out = taskctl(bus_address, "restart", "web")
    assert out.returncode == 0, out.stderr
    failed = d.wait_for(event("OVERLAP_FAILED", "web"))
    assert "the successor exited after it was ready (exit status 3)" in failed.message
    assert f"pid {old} was already told to stop: restarting it stop-start" in failed.message
    running = d.wait_for(event("RUNNING", "web"), timeout=15)
    assert running.pid not in (0, old) and pid_of(bus_address, "web") == running.pid
    said = [ln.kind for ln in d.lines[since:] if ln.process == "web"]
    assert said == ["OVERLAP", "OVERLAP", "OVERLAP_FAILED", "STOPPING", "STOPPED", "STARTING",
                    "RUNNING"], d.text()


def test_a_reexec_during_the_handover_completes_it(write_config: WriteConfig, daemons: Start,
                                                   bus_address: str, workdir: Path) -> None:
    """The successor is ready and the old process stopping: the old one is
    killed, the successor takes over, and the new image takes it back."""
    d = daemons(write_config({"web": slow_to_stop(workdir, successor_fails=False)}))
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    assert taskctl(bus_address, "restart", "--no-block", "web").returncode == 0
    d.wait_for(event("OVERLAP", "web"))
    handover = d.wait_for(event("OVERLAP", "web"))
    assert f"stopping pid {old}" in handover.message, handover.raw
    out = taskctl(bus_address, "daemon-reexec")
    assert out.returncode == 0, out.stderr
    took = d.wait_for(event("RUNNING", "web"))
    assert took.message == f"took over from pid {old} (overlap restart)" and took.pid == handover.pid
    d.wait_for(lambda ln: ln.kind == "DAEMON_START")
    assert not alive(old) and not zombies_of(d.pid)
    assert pid_of(bus_address, "web") == took.pid
    assert taskctl(bus_address, "stop", "web").returncode == 0
    assert not alive(took.pid)


def kill_daemon(d: Daemon) -> None:
    """SIGKILL, as a crash (its processes outlive it)."""
    os.kill(d.pid, signal.SIGKILL)
    d.proc.wait(timeout=10)
    d.close()


def test_a_crash_before_the_handover_leaves_no_successor_behind(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """The state store records the successor as a leftover (`web~next`): the
    next daemon takes back the old process and stops the successor."""
    cfg = write_config({"web": once_ready(workdir, readytimeout=60)})
    d = daemons(cfg)
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    assert taskctl(bus_address, "restart", "--no-block", "web").returncode == 0
    new = d.wait_for(event("OVERLAP", "web")).pid
    state = workdir / "state" / "processes.json"
    wait_until("the successor in the state store",
               lambda: "web~next" in state.read_text() and str(new) in state.read_text())
    kill_daemon(d)
    assert alive(old) and alive(new)
    again = daemons(cfg)
    again.wait_for(event("DAEMON_START"), timeout=15)
    stopped = again.wait_for(event("STOPPED", "web~next"), timeout=15)
    assert stopped.pid == new and not alive(new)
    assert alive(old) and pid_of(bus_address, "web") == old
    assert "RUNNING" in taskctl(bus_address, "status", "web").stdout


def test_a_crash_during_the_handover_keeps_the_successor_as_the_process(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """From the handover on, the successor is recorded as the process and
    the old one (stopping) as the leftover (`web~old`): the next daemon takes
    back the successor and finishes stopping the old one."""
    cfg = write_config({"web": slow_to_stop(workdir, successor_fails=False)})
    d = daemons(cfg)
    old = d.wait_for(event("RUNNING", "web"), timeout=15).pid
    assert taskctl(bus_address, "restart", "--no-block", "web").returncode == 0
    d.wait_for(event("OVERLAP", "web"))
    handover = d.wait_for(event("OVERLAP", "web"))
    assert f"stopping pid {old}" in handover.message, handover.raw
    new = handover.pid
    state = workdir / "state" / "processes.json"

    def recorded_as_the_process() -> bool:
        records = json.loads(state.read_text())["processes"]
        return {(r["process"], r["pid"]) for r in records} >= {("web", new), ("web~old", old)}
    wait_until("the handover in the state store", recorded_as_the_process)
    kill_daemon(d)
    again = daemons(cfg)
    again.wait_for(event("DAEMON_START"), timeout=15)
    wait_until("the old process stopped", lambda: not alive(old), 15)
    assert alive(new) and pid_of(bus_address, "web") == new
    assert "RUNNING" in taskctl(bus_address, "status", "web").stdout
