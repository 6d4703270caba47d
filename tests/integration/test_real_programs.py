"""Real servers under taskmasterd: Debian's nginx (a master and 2 workers)
and redis-server, on loopback ports chosen free by the test, driven with
taskctl on the test's private bus.

Readiness is a TCP connect to the port with a timeout, never a sleep. An HTTP
loop (http.client in a thread, a new connection per request) counts the
requests nginx failed to answer. The re-adoption scenario: SIGKILL the
daemon, start it again on the same statedir and configuration: both servers
are taken back (same pids, no second copy, no failed request).
Whatever a test leaves running (the orphans of a killed daemon) is killed at
teardown by process group.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="nginx's master runs as root (workers: nobody)"),
    pytest.mark.skipif(not (os.access(NGINX, os.X_OK) and os.access(REDIS, os.X_OK)),
                       reason="nginx and redis-server are not installed (sh bootstrap setup)"),
]


# -- helpers -----------------------------------------------------------------

def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    def accepts() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True
    wait_until(f"127.0.0.1:{port} to accept connections", accepts, timeout)


def http_get(port: int, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def redis_ping(port: int) -> bytes:
    """PING in the inline protocol over a raw socket; redis answers +PONG."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state is [0], ppid [1],
    pgrp [2]); None for a process that is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else [x.decode() for x in fields]


def processes(where: Callable[[list[str]], bool]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and where(fields):
                found.append(int(entry))
    return sorted(found)


def children(pid: int) -> list[int]:
    return processes(lambda f: f[1] == str(pid))


def in_group(pgid: int) -> list[int]:
    return processes(lambda f: f[2] == str(pgid))


@dataclass
class HttpLoop:
    """GET / in a loop from a thread until stopped; every failure is kept
    (when, what) so that a test can say when nginx did not answer."""
    port: int
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HttpLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        wait_until("the HTTP loop's first answer", lambda: self.ok > 0 or bool(self.failures))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = http_get(self.port)
                if status == 200 and body == b"ok\n":
                    self.ok += 1
                else:
                    self.failures.append(f"{time.monotonic():.3f} HTTP {status} {body[:40]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{time.monotonic():.3f} {type(exc).__name__}: {exc}")
            self._stop.wait(0.02)  # pacing, not a wait for something


def taskctl(address: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "taskctl", "--address", address, *args],
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stderr, r.stderr
    return r


NO_DAEMON = 7  # taskctl's exit status when nobody owns the bus name (yet)


def status(address: str) -> dict[str, dict[str, object]]:
    """By name; {} while no daemon owns the bus name (a daemon just started)."""
    r = taskctl(address, "--json", "status")
    if r.returncode == NO_DAEMON:
        return {}
    assert r.returncode in (0, 3), r.stderr
    return {row["name"]: row for row in json.loads(r.stdout)}


def wait_running(address: str, names: tuple[str, ...], timeout: float = 20.0, *,
                 not_pids: dict[str, int] | None = None) -> dict[str, int]:
    """Wait until each is RUNNING (with a pid other than not_pids'); their pids."""
    seen: dict[str, dict[str, object]] = {}

    def check() -> bool:
        seen.clear()
        seen.update(status(address))
        for name in names:
            row = seen.get(name, {})
            if row.get("state") != "RUNNING" or not row.get("pid"):
                return False
            if not_pids and row["pid"] == not_pids.get(name):
                return False
        return True
    try:
        wait_until(f"{names} RUNNING", check, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status: {seen}") from None
    return {name: int(str(seen[name]["pid"])) for name in names}


# -- fixtures ------------------------------------------------------------------

@dataclass
class Servers:
    config: Path
    statedir: Path
    http: int
    redis: int
    nginx_conf: Path


def nginx_conf(workdir: Path, listen: str, *, connections: int, keepalive: bool = True) -> Path:
    """A minimal nginx.conf in `workdir` (its pid file, temp paths and error
    log there too: never /dev/null, which nginx unlinks at exit) serving
    "ok" on `listen` (e.g. "127.0.0.1:8080 reuseport")."""
    tmp = workdir / "nginx-tmp"
    tmp.mkdir()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    {"" if keepalive else "keepalive_timeout 0;"}
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {listen};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
    return conf


@pytest.fixture
def servers(workdir: Path, write_config: WriteConfig) -> Servers:
    http_port, redis_port = free_port(), free_port()
    while redis_port == http_port:
        redis_port = free_port()
    conf = nginx_conf(workdir, f"127.0.0.1:{http_port}", connections=64)
    statedir = workdir / "state"
    config = write_config({
        "nginx": {"cmd": f"{NGINX} -p {workdir}/ -e {workdir}/nginx-error.log -c {conf} "
                         "-g 'daemon off;'",
                  "starttime": 1, "stoptime": 10},
        "redis": {"cmd": f"{REDIS} --port {redis_port} --bind 127.0.0.1 --daemonize no "
                         f"--save '' --appendonly no --dir {workdir}",
                  "starttime": 1, "stoptime": 10},
    }, statedir=str(statedir))
    return Servers(config, statedir, http_port, redis_port, conf)


@pytest.fixture
def reaper(daemons: Start) -> Iterator[set[int]]:
    """Process groups (nginx's, redis's, the log writer's) to SIGKILL at
    teardown: a killed daemon leaves them orphaned, and they hold its stderr
    pipe open. Torn down before `daemons` (which it depends on), so that the
    harness then reads that pipe to its end."""
    groups: set[int] = set()
    yield groups
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def start_daemon(daemons: Start, servers: Servers, address: str, reaper: set[int]
                 ) -> tuple[Daemon, dict[str, int]]:
    d = daemons(servers.config)
    pids = wait_running(address, ("nginx", "redis"))
    reaper.update(pids.values())  # each is its own process group's leader
    wait_port(servers.http)
    wait_port(servers.redis)
    return d, pids


def nginx_workers(master: int, n: int = 2, *, not_in: set[int] | None = None) -> list[int]:
    """nginx's n workers (children of the master), once all are there (and
    none of `not_in`: after a reload the old ones take a moment to go)."""
    found: list[int] = []

    def ready() -> bool:
        found[:] = children(master)
        return len(found) == n and not (set(found) & (not_in or set()))
    wait_until(f"{n} nginx workers of {master} (not {sorted(not_in or ())})", ready, 15)
    return found


def assert_serving(servers: Servers) -> None:
    wait_port(servers.http)
    assert http_get(servers.http) == (200, b"ok\n")


# -- what works today -----------------------------------------------------------

def test_nginx_and_redis_run_and_serve(servers: Servers, daemons: Start, bus_address: str,
                                       reaper: set[int]) -> None:
    _, pids = start_daemon(daemons, servers, bus_address, reaper)
    assert_serving(servers)
    assert redis_ping(servers.redis) == b"+PONG\r\n"
    # Each runs in a process group of its own, the nginx workers inside it.
    workers = nginx_workers(pids["nginx"])
    assert in_group(pids["nginx"]) == sorted([pids["nginx"], *workers])
    assert in_group(pids["redis"])[:1] == [pids["redis"]]


def test_restart_gives_nginx_a_new_master_that_serves(servers: Servers, daemons: Start,
                                                       bus_address: str, reaper: set[int]) -> None:
    _, pids = start_daemon(daemons, servers, bus_address, reaper)
    old_workers = nginx_workers(pids["nginx"])
    r = taskctl(bus_address, "restart", "nginx")
    assert r.returncode == 0, r.stderr
    new = wait_running(bus_address, ("nginx",), not_pids=pids)["nginx"]
    reaper.add(new)
    assert stat_fields(pids["nginx"]) is None
    assert not [p for p in old_workers if stat_fields(p) is not None], "old workers left"
    nginx_workers(new)
    assert_serving(servers)
    assert wait_running(bus_address, ("redis",))["redis"] == pids["redis"]


def test_hup_reloads_nginx_same_master_new_workers(servers: Servers, daemons: Start,
                                                   bus_address: str, reaper: set[int]) -> None:
    _, pids = start_daemon(daemons, servers, bus_address, reaper)
    old_workers = set(nginx_workers(pids["nginx"]))
    with HttpLoop(servers.http) as loop:
        r = taskctl(bus_address, "signal", "HUP", "nginx")
        assert r.returncode == 0, r.stderr
        nginx_workers(pids["nginx"], not_in=old_workers)
        wait_until("old workers gone", lambda: not [p for p in old_workers
                                                    if stat_fields(p) is not None], 15)
        assert_serving(servers)
    assert loop.failures == [], loop.failures  # a reload is graceful
    assert wait_running(bus_address, ("nginx",))["nginx"] == pids["nginx"]


def test_stop_leaves_no_nginx_worker(servers: Servers, daemons: Start, bus_address: str,
                                     reaper: set[int]) -> None:
    _, pids = start_daemon(daemons, servers, bus_address, reaper)
    master = pids["nginx"]
    nginx_workers(master)
    r = taskctl(bus_address, "stop", "nginx")
    assert r.returncode == 0, r.stderr
    assert status(bus_address)["nginx"]["state"] == "STOPPED"
    assert in_group(master) == [], "processes left in nginx's former group"
    with pytest.raises(OSError):
        http_get(servers.http, timeout=1)


# -- after a daemon crash: re-adoption -----------------------------------------

def assert_kept(servers: Servers, address: str, pids: dict[str, int], workers: set[int]) -> None:
    """Both servers RUNNING with their old pids (as soon as the daemon
    answers), nginx's workers the same, redis answering; then SIGHUP reaches
    the master taken back: same master, new workers."""
    rows: dict[str, dict[str, object]] = {}
    wait_until("the daemon's status", lambda: bool(rows.update(status(address)) or rows), 15)
    assert {n: (rows[n]["state"], rows[n]["pid"]) for n in pids} == {
        n: ("RUNNING", pid) for n, pid in pids.items()}, "not taken back"
    assert set(children(pids["nginx"])) == workers
    assert redis_ping(servers.redis) == b"+PONG\r\n"
    r = taskctl(address, "signal", "HUP", "nginx")
    assert r.returncode == 0, r.stderr
    nginx_workers(pids["nginx"], not_in=workers)


def test_a_restarted_daemon_adopts_nginx_and_redis(servers: Servers, daemons: Start,
                                                   bus_address: str, reaper: set[int]) -> None:
    first, pids = start_daemon(daemons, servers, bus_address, reaper)
    workers = set(nginx_workers(pids["nginx"]))
    reaper.update(children(first.pid))  # its log writer too: each leads a group of its own
    with HttpLoop(servers.http) as loop:
        first.proc.kill()  # SIGKILL: no chance to stop anything
        first.proc.wait()
        daemons(servers.config)  # the same configuration, so the same statedir
        # Adopted at start: RUNNING (up longer than starttime) with the old pids at once.
        assert_kept(servers, bus_address, pids, workers)
        loop.stop()
    assert loop.ok > 0
    assert loop.failures == [], "nginx did not answer across the daemon's restart"

    # restart acts on the adopted process: it is gone, a new master serves.
    r = taskctl(bus_address, "restart", "nginx")
    assert r.returncode == 0, r.stderr
    new = wait_running(bus_address, ("nginx",), not_pids=pids)["nginx"]
    reaper.add(new)
    assert in_group(pids["nginx"]) == [], "the adopted nginx left processes behind"
    assert_serving(servers)

    # stop leaves no worker behind.
    new_workers = nginx_workers(new)
    r = taskctl(bus_address, "stop", "nginx")
    assert r.returncode == 0, r.stderr
    assert in_group(new) == [] and not [p for p in new_workers if stat_fields(p) is not None]
    assert wait_running(bus_address, ("redis",))["redis"] == pids["redis"]


# -- an upgrade in place: daemon-reexec ------------------------------------------

def test_daemon_reexec_keeps_nginx_and_redis(servers: Servers, daemons: Start,
                                             bus_address: str, reaper: set[int]) -> None:
    """The same after `taskctl daemon-reexec`: the daemon is the same process
    running its code again, the servers its children still (real exit
    statuses), nothing restarted, no failed request."""
    daemon, pids = start_daemon(daemons, servers, bus_address, reaper)
    workers = set(nginx_workers(pids["nginx"]))
    with HttpLoop(servers.http) as loop:
        r = taskctl(bus_address, "daemon-reexec")
        assert r.returncode == 0, r.stderr
        assert_kept(servers, bus_address, pids, workers)
        loop.stop()
    assert loop.ok > 0
    assert loop.failures == [], "nginx did not answer across the re-exec"
    assert daemon.proc.poll() is None  # the same process

    # Still our children: stop is a real exit status (SIGQUIT's graceful stop
    # or TERM, as configured), and nothing is left in nginx's group.
    new_workers = nginx_workers(pids["nginx"])
    r = taskctl(bus_address, "stop", "nginx")
    assert r.returncode == 0, r.stderr
    stopped = daemon.wait_for(event("STOPPED", "nginx"))
    assert stopped.fields.get("status") not in (None, "unknown")
    assert in_group(pids["nginx"]) == [] and not [
        p for p in new_workers if stat_fields(p) is not None]
    assert wait_running(bus_address, ("redis",))["redis"] == pids["redis"]
