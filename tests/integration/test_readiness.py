"""Readiness, the watchdog and health checks with real processes and the
real daemon (issue 15): `ready: notify` through Debian's systemd-notify,
tcp and cmd probes, a process never ready, a watchdog that stops being fed,
a health check that starts failing (with its alert), and the daemon's own
NOTIFY_SOCKET never leaking into a program."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_alerts import SmtpSink, free_port, mail_text, smtp_sink, with_alerts
from tests.integration.test_taskctl import taskctl

Start = type(lambda *a, **k: Daemon)  # the daemons fixture's type, loosely

QUIET = {"stdout": None, "stderr": None}
__all__ = ["smtp_sink"]  # the fixture, shared with the alert tests


def environ_of(pid: int) -> dict[str, str]:
    """The environment `pid` was exec'd with. Read until it is not empty:
    execve() switches to the new memory map (and closes the CLOEXEC pipe
    that tells subprocess the exec worked: the daemon's STARTING follows)
    before it lays out the new stack, and in that window
    /proc/PID/environ reads empty (a CI run met it)."""
    def read() -> bytes:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    wait_until(f"process {pid}'s environment", lambda: bool(read()))
    items = read().split(b"\0")
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


def test_notify_ready_after_two_seconds_then_status_shown(write_config: WriteConfig, daemons: Start,
                                                         bus_address: str) -> None:
    """STARTING until systemd-notify --ready (2 s in), RUNNING then; STATUS=
    shows in taskctl status."""
    cfg = write_config({"slow": {
        "cmd": "sh -c 'sleep 2; systemd-notify --ready --status=\"serving 3 clients\"; "
               "exec sleep 100000'",
        "ready": "notify", "starttime": 0.5, **QUIET}})
    d = daemons(cfg)
    starting = d.wait_for(event("STARTING", "slow"))
    env = environ_of(starting.pid)
    assert env["NOTIFY_SOCKET"].startswith("/") and os.path.exists(env["NOTIFY_SOCKET"])
    running = d.wait_for(event("RUNNING", "slow"), timeout=20)
    assert running.timestamp - starting.timestamp >= 1.9  # not before its READY=1
    assert "ready (notify)" in running.message
    out = taskctl(bus_address, "status", "slow")
    assert "RUNNING" in out.stdout and "serving 3 clients" in out.stdout, out.stdout
    # D-Bus (1.3): the Readiness property of the program
    got = subprocess.run(["busctl", f"--address={bus_address}", "get-property",
                          "org.taskmaster.Taskmaster1", "/org/taskmaster/Taskmaster1/program/slow",
                          "org.taskmaster.Taskmaster1.Program", "Readiness"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert got.strip() == 'a(sssssu) 1 "slow" "notify" "serving 3 clients" "" "" 0', got


def test_never_ready_is_stopped_then_fatal_after_its_retries(write_config: WriteConfig,
                                                             daemons: Start) -> None:
    cfg = write_config({"mute": {"cmd": "sleep 100000", "ready": "notify", "starttime": 0,
                                 "readytimeout": 1, "startretries": 1, "stoptime": 2}})
    d = daemons(cfg)
    first = d.wait_for(event("STARTING", "mute"))
    stopping = d.wait_for(event("STOPPING", "mute"), timeout=10)
    assert "not ready within 1 s (notify)" in stopping.message
    assert stopping.timestamp - first.timestamp >= 0.95
    d.wait_for(event("BACKOFF", "mute"))
    d.wait_for(event("STARTING", "mute"))
    d.wait_for(event("STOPPING", "mute"), timeout=10)
    fatal = d.wait_for(event("FATAL", "mute"), timeout=10)
    assert "not ready within 1 s" in fatal.message


def test_tcp_and_cmd_readiness(write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    """tcp: RUNNING once the port accepts (the server binds after 1 s); cmd:
    RUNNING once the command exits 0 (the file appears after 1 s)."""
    port = free_port()
    server = workdir / "late_server.py"
    server.write_text(textwrap.dedent(f"""
        import socket, time
        time.sleep(1)  # sleep-ok: the program under test binds its port late on purpose
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", {port})); s.listen(8)
        while True:
            s.accept()[0].close()
    """))
    flag = workdir / "warm"
    cfg = write_config({
        "tcpd": {"cmd": f"{sys.executable} {server}", "ready": {"tcp": f"127.0.0.1:{port}"},
                 "starttime": 0, **QUIET},
        "cmdd": {"cmd": f"sh -c 'sleep 1; touch {flag}; exec sleep 100000'",
                 "ready": {"cmd": f"test -e {flag}"}, "starttime": 0, **QUIET},
    })
    d = daemons(cfg)
    for name, what in (("tcpd", f"tcp 127.0.0.1:{port}"), ("cmdd", f"cmd test -e {flag}")):
        d.cursor = 0
        ready = d.wait_for(event("RUNNING", name), timeout=20)
        start = next(ln for ln in d.lines if ln.kind == "STARTING" and ln.process == name)
        assert ready.timestamp - start.timestamp >= 0.95, name
        assert what in ready.message


def test_watchdog_restarts_a_process_that_stops_pinging(write_config: WriteConfig,
                                                        daemons: Start) -> None:
    script = ("systemd-notify --ready; for i in 1 2 3 4; do systemd-notify WATCHDOG=1; "
              "sleep 0.5; done; exec sleep 100000")
    cfg = write_config({"dog": {"cmd": f"sh -c '{script}'", "ready": "notify", "starttime": 0,
                                "watchdog": 2, "stoptime": 2, **QUIET}})
    d = daemons(cfg)
    running = d.wait_for(event("RUNNING", "dog"), timeout=15)
    assert environ_of(running.pid)["WATCHDOG_USEC"] == "2000000"
    stopping = d.wait_for(event("STOPPING", "dog"), timeout=15)
    # fed for ~2 s, then 2 s of silence: never before the pings stopped
    assert stopping.timestamp - running.timestamp >= 3.0
    assert "watchdog: no WATCHDOG=1 for 2 s" in stopping.message and "SIGABRT" in stopping.message
    exited = d.wait_for(event("EXITED", "dog"))
    assert exited.fields["status"] == "-6"  # SIGABRT
    again = d.wait_for(event("STARTING", "dog"))
    assert again.pid != running.pid


HEALTH_SERVER = """
import http.server, os, sys
flag = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if os.path.exists(flag) else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_failing_health_check_restarts_and_alerts(write_config: WriteConfig, daemons: Start,
                                                  workdir: Path, smtp_sink: SmtpSink,
                                                  bus_address: str) -> None:
    port = free_port()
    server = workdir / "health_server.py"
    server.write_text(HEALTH_SERVER)
    healthy = workdir / "healthy"
    healthy.touch()
    url = f"http://127.0.0.1:{port}/health"
    cfg = with_alerts(write_config({"api": {
        "cmd": f"{sys.executable} {server} {port} {healthy}",
        "ready": {"tcp": f"127.0.0.1:{port}"}, "starttime": 0,
        "health": {"http": url, "interval": 0.5, "timeout": 0.4, "failures": 3}, **QUIET}}),
        [{"url": smtp_sink.url(), "events": ["UNHEALTHY"]}])
    d = daemons(cfg)
    running = d.wait_for(event("RUNNING", "api"), timeout=15)
    healthy.unlink()  # from now on: 503
    unhealthy = d.wait_for(event("UNHEALTHY", "api"), timeout=15)
    assert unhealthy.pid == running.pid
    assert f"failed 3 time(s) in a row (HTTP 503 from {url})" in unhealthy.message
    d.wait_for(event("STOPPING", "api"))
    d.wait_for(event("EXITED", "api"))
    healthy.touch()  # the new process is healthy: no second verdict
    again = d.wait_for(event("RUNNING", "api"), timeout=15)
    assert again.pid != running.pid

    def readiness() -> str:
        return subprocess.run(
            ["busctl", f"--address={bus_address}", "get-property", "org.taskmaster.Taskmaster1",
             "/org/taskmaster/Taskmaster1/program/api", "org.taskmaster.Taskmaster1.Program",
             "Readiness"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    wait_until("a healthy check on D-Bus", lambda: '"healthy"' in readiness())
    assert readiness() == (f'a(sssssu) 1 "api" "tcp 127.0.0.1:{port}" "" "healthy" '
                           f'"HTTP 200 from {url}" 0')
    assert "; healthy" in taskctl(bus_address, "status", "api").stdout
    [msg] = smtp_sink.wait(1, timeout=30)
    text = mail_text(msg)
    assert "api" in text and "UNHEALTHY" in text and "HTTP 503" in text, text


def test_the_daemons_own_notify_socket_never_reaches_a_program(write_config: WriteConfig,
                                                               daemons: Start, workdir: Path) -> None:
    """Under systemd the daemon has NOTIFY_SOCKET and WATCHDOG_USEC of its
    own: a program's sd_notify() must not speak to systemd in its name."""
    cfg = write_config({"plain": {"cmd": "sleep 100000", "starttime": 0},
                        "mine": {"cmd": "sleep 100000", "ready": {"cmd": "true"}, "starttime": 0}})
    d = daemons(cfg, env={"NOTIFY_SOCKET": str(workdir / "systemd-notify.sock"),
                          "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    for name in ("plain", "mine"):
        pid = d.wait_for(event("RUNNING", name), timeout=15).pid
        d.cursor = 0
        env = environ_of(pid)
        assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & env.keys(), name


def test_a_notify_message_from_outside_the_process_group_is_ignored(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    """Credentials are checked: READY=1 sent to a process's socket by
    another process (this test) does not make it RUNNING."""
    import socket

    cfg = write_config({"strict": {"cmd": "sleep 100000", "ready": "notify", "starttime": 0,
                                   "readytimeout": 3, "startretries": 0, "stoptime": 1}})
    d = daemons(cfg)
    pid = d.wait_for(event("STARTING", "strict")).pid
    path = environ_of(pid)["NOTIFY_SOCKET"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", path)
    wait_until("the refusal in the log", lambda: "notify message ignored" in d.text())
    assert f"sender pid {os.getpid()}" in d.text()
    d.wait_for(event("FATAL", "strict"), timeout=15)  # never RUNNING
    assert not any(ln.kind == "RUNNING" and ln.process == "strict" for ln in d.lines)
