"""Faults (issue 11 §9), each with the real daemon: what it leans on goes
away — the bus daemon, systemd's notify socket, journald, an alert server,
room on the log disk — and supervision goes on, the condition logged once.

Each test supervises `crash`, a program that exits every ~0.3 s and is
restarted at once: its EXITED lines after the fault prove supervision goes on.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dbus_fixtures import DBUS_DAEMON, bus_directory, session_config
from tests.harness import Daemon, event

NAME = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
CRASH = {"cmd": "sh -c 'sleep 0.3; exit 3'", "starttime": 0, "autorestart": "always",
         "stoptime": 1, "startlimit_burst": 0}

needs_dbus = pytest.mark.skipif(not all(shutil.which(t) for t in ("dbus-daemon", "busctl")),
                                reason="needs dbus-daemon and busctl")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, unshare)")


def config(d: Path, **extra: str) -> Path:
    path = d / "taskmaster.yaml"
    lines = [f"taskmasterd: {{logfile: {extra.pop('logfile', d / 'taskmasterd.log')}, "
             f"logdir: {extra.pop('logdir', d / 'logs')}}}",
             "programs:",
             # startlimit_burst 0: `crash` must keep restarting for as long as a
             # test watches supervision go on (the start limit has its own tests).
             f"  crash: {{cmd: \"{CRASH['cmd']}\", starttime: 0, autorestart: always, stoptime: 1, "
             "startlimit_burst: 0}"]
    lines += extra.values()
    path.write_text("\n".join(lines) + "\n")
    return path


def restarts(daemon: Daemon, n: int = 3) -> None:
    """Supervision goes on: `crash` exits and is started again, n times."""
    daemon.wait_count(event("EXITED", "crash"), n, timeout=30)
    daemon.wait_for(event("RUNNING", "crash"), timeout=10)


def seen(daemon: Daemon, text: str, timeout: float = 10.0) -> None:
    """Wait for `text` anywhere in the output; later waits look at the lines after it."""
    daemon.wait_text(text, timeout)
    with daemon._cond:
        daemon.cursor = len(daemon.lines)


def tracebacks(daemon: Daemon) -> str:
    """The daemon's output, where no traceback may appear (not even asyncio's
    "Future exception was never retrieved" for a signal queued when the bus
    went away: issue 11 §7)."""
    return daemon.text()


def count(daemon: Daemon, text: str) -> int:
    return sum(text in line for line in daemon.text().splitlines())


# ---------------------------------------------------------------------------
# (a) the bus daemon dies


class Bus:
    """A dbus-daemon we can SIGKILL and start again on the same socket."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "bus.socket"
        self.conf = directory / "bus.conf"
        self.conf.write_text(session_config(self.socket))
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> str:
        self.socket.unlink(missing_ok=True)  # a SIGKILLed bus leaves its socket behind
        self.proc = subprocess.Popen([DBUS_DAEMON, "--nofork", "--print-address=1",
                                      f"--config-file={self.conf}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        assert ready, "dbus-daemon printed no address"
        self.address = self.proc.stdout.readline().decode().strip()
        return self.address

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def busctl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["busctl", f"--address={address}", "call", NAME, PATH, MANAGER, *args],
                          capture_output=True, text=True, timeout=30)


@needs_dbus
def test_bus_daemon_dies_supervision_goes_on_and_it_reconnects() -> None:
    with bus_directory() as d:
        bus = Bus(d)
        address = bus.start()
        daemon = Daemon(config(d), "--address", address)
        try:
            daemon.wait_for(event("RUNNING", "crash"))
            bus.kill()
            seen(daemon, "D-Bus: lost the connection to the bus")
            restarts(daemon)  # nobody to tell, supervision goes on
            bus.start()
            seen(daemon, "D-Bus: reconnected to the bus", timeout=20)
            listed = busctl(bus.address, "ListProcesses")
            assert listed.returncode == 0 and '"crash"' in listed.stdout, listed.stderr
            assert busctl(bus.address, "Stop", "s", "crash").returncode == 0
            daemon.wait_for(event("STOPPED", "crash"))
            assert count(daemon, "lost the connection") == 1
            assert count(daemon, "reconnected") == 1
        finally:
            code = daemon.terminate()
            bus.close()
        assert code == 0, daemon.text()[-3000:]
        assert "Traceback" not in tracebacks(daemon), daemon.text()


def _children(pid: int, comm: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
                if head.split("(", 1)[1] == comm and int(tail.split()[1]) == pid:
                    found.append(int(entry))
    return found


@needs_dbus
def test_private_bus_dies_it_is_restarted() -> None:
    """Our own dbus-daemon (--bus private) is SIGKILLed: a new one is
    started, its address published, and the name owned again."""
    with bus_directory() as d:
        runtime = d / "run"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        env["TASKMASTER_RUNTIME_DIR"] = str(runtime)
        env.pop("XDG_RUNTIME_DIR", None)
        daemon = Daemon(config(d), "--bus", "private", env=env)
        try:
            daemon.wait_for(event("RUNNING", "crash"))
            first = (runtime / "bus").read_text().strip()
            [bus_pid] = _children(daemon.pid, "dbus-daemon")
            os.kill(bus_pid, signal.SIGKILL)
            seen(daemon, "D-Bus: lost the connection to the private bus")
            seen(daemon, "D-Bus: reconnected to the private bus", timeout=20)
            second = (runtime / "bus").read_text().strip()
            assert second != first  # a new bus, a new guid, same socket
            assert second.startswith(f"unix:path={runtime}/bus.socket")
            listed = busctl(second, "ListProcesses")
            assert listed.returncode == 0 and '"crash"' in listed.stdout, listed.stderr
            restarts(daemon)
            assert len(_children(daemon.pid, "dbus-daemon")) == 1
        finally:
            code = daemon.terminate()
        assert code == 0, daemon.text()[-3000:]
        assert not (runtime / "bus").exists() and not (runtime / "bus.socket").exists()


# ---------------------------------------------------------------------------
# (b) the notify socket and journald vanish


class DatagramServer:
    """A unix datagram socket standing in for systemd's notify socket or journald's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)

    def receive(self, needle: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.sock], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"no datagram with {needle!r} on {self.path}")
            data = self.sock.recv(65536)
            if needle in data:
                return data

    def vanish(self) -> None:
        self.sock.close()
        self.path.unlink()


@needs_dbus
def test_notify_socket_vanishes(bus_address: str, workdir: Path) -> None:
    server = DatagramServer(workdir / "notify.socket")
    env = {"NOTIFY_SOCKET": str(server.path), "WATCHDOG_USEC": "200000"}
    daemon = Daemon(config(workdir), "--address", bus_address, env=env)
    try:
        server.receive(b"READY=1")
        server.receive(b"WATCHDOG=1")
        server.vanish()
        seen(daemon, "sd_notify: cannot reach systemd's notify socket")
        restarts(daemon)  # each transition would send a STATUS=, the watchdog pings go on too
        assert count(daemon, "sd_notify: cannot reach") == 1
    finally:
        code = daemon.terminate()
    assert code == 0 and "Traceback" not in tracebacks(daemon), daemon.text()[-3000:]


class NamespacedDaemon(Daemon):
    """taskmasterd in a mount namespace where /run/systemd/journal is `journal_dir`
    (bind-mounted over a private /run): a journald we control, the host's untouched."""

    def __init__(self, journal_dir: Path, config: Path, *extra: str) -> None:
        script = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
                  'mount --bind "$0" /run/systemd/journal && exec "$@"')
        super().__init__(config, *extra, unset=("JOURNAL_STREAM",), prefix=(
            "unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(journal_dir)))


@needs_dbus
@needs_root
@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare")
def test_journald_vanishes(bus_address: str, workdir: Path) -> None:
    journal_dir = workdir / "journal"
    journal_dir.mkdir()
    server = DatagramServer(journal_dir / "socket")
    daemon = NamespacedDaemon(journal_dir, config(workdir), "--address", bus_address)
    try:
        server.receive(b"TASKMASTER_EVENT=RUNNING")
        server.vanish()
        seen(daemon, "journal: cannot reach journald")
        restarts(daemon)
        assert count(daemon, "journal: cannot reach journald") == 1
        server = DatagramServer(journal_dir / "socket")  # journald is back
        seen(daemon, "journal: journald is reachable again")
        server.receive(b"TASKMASTER_EVENT=EXITED")
    finally:
        code = daemon.terminate()
        server.sock.close()
    assert code == 0 and "Traceback" not in tracebacks(daemon), daemon.text()[-3000:]


# ---------------------------------------------------------------------------
# (c) the alert server refuses


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on return: connections are refused


@needs_dbus
def test_alert_server_refuses(bus_address: str, workdir: Path) -> None:
    port = _refused_port()
    cfg = config(workdir, alerts=f"alerts:\n  - {{url: 'json://127.0.0.1:{port}/hook', "
                                 "events: [EXITED], rate: 0}")
    daemon = Daemon(cfg, "--address", bus_address)
    try:
        seen(daemon, "alert delivery failed (try 1 of 3, next in 2 s)")
        mark = len(daemon.lines)
        seen(daemon, "alert delivery failed (try 2 of 3, next in 10 s)", timeout=15)
        # the 2 s of the retry delay: crash restarted all along (every ~0.3 s)
        assert sum(ln.kind == "EXITED" for ln in daemon.since(mark)) >= 2
        restarts(daemon)
    finally:
        code = daemon.terminate(timeout=60)
    assert code == 0 and "Traceback" not in tracebacks(daemon), daemon.text()[-3000:]


# ---------------------------------------------------------------------------
# (d) the log disk is full


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(directory: Path) -> Path:
    path = directory / "filler"
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
    return path


@needs_dbus
@needs_root
@pytest.mark.skipif(not shutil.which("mount"), reason="needs mount")
def test_log_disk_full(bus_address: str, workdir: Path) -> None:
    with small_tmpfs(workdir / "small") as disk:
        logfile = disk / "taskmasterd.log"
        daemon = Daemon(config(workdir, logfile=str(logfile), logdir=str(disk / "logs")),
                        "--address", bus_address)
        try:
            daemon.wait_for(event("RUNNING", "crash"))
            filler = fill(disk)
            seen(daemon, f"log: cannot write the log file {logfile} (No space left on device)")
            restarts(daemon, 5)
            assert count(daemon, "log: cannot write") == 1
            filler.unlink()
            seen(daemon, f"log: the log file {logfile} is written again", timeout=15)
            restarts(daemon, 1)
            written = logfile.read_text(errors="replace")
            assert f"log: the log file {logfile} is written again" in written, \
                (written[:2000], daemon.text()[-3000:])
            lines = written.splitlines()
            assert lines[-1].startswith("20")  # whole lines again
            # a line cut short by the full disk is ended, not glued to the next one
            stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")
            assert not [ln for ln in lines if not stamp.match(ln) and stamp.search(ln)], lines
        finally:
            code = daemon.terminate()
        assert code == 0, daemon.text()[-3000:]
        assert "Traceback" not in tracebacks(daemon) and "Logging error" not in daemon.text(), \
            daemon.text()[-3000:]


# ---------------------------------------------------------------------------
# the bus refuses us the name


@needs_dbus
@needs_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv")
def test_not_allowed_to_own_the_name() -> None:
    """A user the policy does not let own the name (`taskmasterd --system`
    as uid 65534): one line saying so, exit 1, not a traceback."""
    from tests.dbus_fixtures import system_bus

    policy = Path(__file__).resolve().parents[2] / "dbus" / "org.taskmaster.Taskmaster1.conf"
    with bus_directory() as d, system_bus(d, policy) as address:
        os.chmod(d, 0o777)  # uid 65534 writes its log there
        cfg = config(d)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "taskmasterd", "-c", str(cfg), "--address", address],
                           capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
        assert r.returncode == 1, r.stderr
        assert "taskmasterd: not started: cannot own org.taskmaster.Taskmaster1: " \
               "Connection" in r.stderr and "not allowed to own" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# a configuration path that is not UTF-8 (the D-Bus fuzz's ConfigFile, by hand)


@needs_dbus
def test_config_path_not_utf8(bus_address: str, workdir: Path) -> None:
    """Its name reaches the log, the journal and D-Bus: written as \\udXXX
    escapes. It was a 'Logging error' traceback per log line and, for
    Get ConfigFile, a D-Bus error reply holding a traceback."""
    cfg = config(workdir)
    odd = workdir / os.fsdecode(b"t\xfe.yaml")
    cfg.rename(odd)
    daemon = Daemon(odd, "--address", bus_address)
    try:
        daemon.wait_for(event("RUNNING", "crash"))
        got = subprocess.run(["busctl", f"--address={bus_address}", "get-property", NAME, PATH,
                              MANAGER, "ConfigFile"], capture_output=True, text=True, timeout=30)
        assert got.returncode == 0 and "udcfe" in got.stdout, got.stderr
        assert busctl(bus_address, "ListProcesses").returncode == 0
        assert busctl(bus_address, "Reload").returncode == 0
        restarts(daemon, 1)
        text = (workdir / "taskmasterd.log").read_text()
        assert "t\\udcfe.yaml" in text
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.text()[-3000:]
    assert "Logging error" not in daemon.text() and "Traceback" not in tracebacks(daemon), \
        daemon.text()[-3000:]
