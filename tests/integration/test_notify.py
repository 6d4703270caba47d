"""sd_notify as systemd sees it: a datagram socket the test owns stands in
for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dgram import fill_queue
from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[dict[str, str]] = []

    def next(self, pred: Callable[[dict[str, str]], bool], timeout: float = 10) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no matching notification within {timeout}s; got {self.seen}")
            text = self.sock.recv(65536).decode()
            msg = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            self.seen.append(msg)
            if pred(msg):
                return msg


@pytest.fixture
def notify(workdir: Path) -> Iterator[NotifySocket]:
    n = NotifySocket(workdir / "notify.sock")
    yield n
    n.sock.close()


def test_ready_status_reload_and_stopping(
        write_config: WriteConfig, daemons: Start, notify: NotifySocket, bus_address: str) -> None:
    cfg = write_config({"web": {"cmd": "sleep 100000", "starttime": 0, "numprocs": 2},
                        "ghost": {"cmd": "/nonexistent", "startretries": 0, "autostart": False}})
    d = daemons(cfg, env={"NOTIFY_SOCKET": str(notify.path)})
    ready = notify.next(lambda m: "READY" in m)
    # READY=1 comes once the name is owned and autostart programs launched
    # (starttime 0: they are RUNNING by then, so its STATUS counts them).
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("2 running, 0 fatal, 0 backoff"), ready
    r = subprocess.run(["busctl", f"--address={bus_address}", "status",
                        "org.taskmaster.Taskmaster1"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    d.signal(signal.SIGHUP)
    assert notify.next(lambda m: "RELOADING" in m)["RELOADING"] == "1"
    assert notify.next(lambda m: "READY" in m)["READY"] == "1"
    subprocess.run(["busctl", f"--address={bus_address}", "call", "org.taskmaster.Taskmaster1",
                    "/org/taskmaster/Taskmaster1", "org.taskmaster.Taskmaster1.Manager", "Start",
                    "s", "ghost"], capture_output=True, timeout=30)
    assert "1 fatal" in notify.next(lambda m: "1 fatal" in m.get("STATUS", ""))["STATUS"]
    d.signal(signal.SIGTERM)
    stopping = notify.next(lambda m: "STOPPING" in m)
    assert stopping["STOPPING"] == "1"
    # systemd's stop timeout is stretched to cover stoptime (10 s default),
    # what follows once every program is down (1 s drain + 5 s log writer +
    # 5 s alerts) and a 5 s margin.
    assert stopping["EXTEND_TIMEOUT_USEC"] == str(26_000_000)
    assert d.terminate() == 0


def test_watchdog_pings_at_half_the_period(
        write_config: WriteConfig, daemons: Start, notify: NotifySocket) -> None:
    cfg = write_config({"web": {"cmd": "sleep 100000", "starttime": 0}})
    daemons(cfg, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    notify.next(lambda m: "READY" in m)
    # The pings keep coming (the interval itself, half of WATCHDOG_USEC, is
    # checked on the virtual clock: tests/unit/test_systemd_glue.py).
    pings = [notify.next(lambda m: "WATCHDOG" in m) for _ in range(3)]
    assert all(p["WATCHDOG"] == "1" for p in pings)


def test_a_missing_notify_socket_is_not_fatal(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({"web": {"cmd": "sleep 100000", "starttime": 0}})
    d = daemons(cfg, env={"NOTIFY_SOCKET": str(workdir / "gone.sock")})
    d.wait_for(event("RUNNING", "web"))
    d.wait_text("cannot reach systemd's notify socket")
    os.kill(d.latest_pids()["web"], signal.SIGKILL)
    d.wait_for(event("STARTING", "web"))  # still supervising
    assert d.terminate() == 0


def test_a_notify_socket_nobody_reads_never_freezes_the_daemon(
        write_config: WriteConfig, daemons: Start, notify: NotifySocket, bus_address: str) -> None:
    """The reader of NOTIFY_SOCKET falls behind and its queue is full
    (net.unix.max_dgram_qlen datagrams): sd_notify's send used to block the
    event loop at the next STATUS=. The daemon goes on; the messages wait,
    newer STATUS= replacing older, and arrive in order once read."""
    cfg = write_config({"web": {"cmd": "sleep 100000", "starttime": 0}})
    d = daemons(cfg, env={"NOTIFY_SOCKET": str(notify.path)})
    notify.next(lambda m: "READY" in m)
    filled = fill_queue(str(notify.path))
    manager = ["busctl", f"--address={bus_address}", "call", "org.taskmaster.Taskmaster1",
               "/org/taskmaster/Taskmaster1", "org.taskmaster.Taskmaster1.Manager"]
    for _ in range(5):  # 10 changes of the counts, each a STATUS=, none with room
        for member in ("Stop", "Start"):
            r = subprocess.run([*manager, member, "s", "web"], capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0, r.stderr  # answered: the loop never blocked
    d.wait_text("the notify socket's queue is full")
    # Read as a slow reader would, until the daemon says all waiting went out.
    got: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if select.select([notify.sock], [], [], 0.1)[0]:
            got.append(notify.sock.recv(65536).decode())
        elif any("the notify socket has room again" in raw for raw in d.raw):
            break
    while select.select([notify.sock], [], [], 0)[0]:
        got.append(notify.sock.recv(65536).decode())
    assert got[:len(filled)] == filled
    came = got[len(filled):]
    assert came and all(text.startswith("STATUS=") for text in came), came
    assert came[-1].startswith("STATUS=1 running"), came  # the last word is the current count
    assert len(came) < 10, came  # older STATUS= replaced while they waited
    assert d.terminate() == 0
