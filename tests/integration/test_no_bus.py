"""No system or session bus: the daemon starts its own and taskctl finds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskmasterd.busaddr import system_bus_reachable
from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig


def test_daemon_and_taskctl_meet_on_the_embedded_bus(
        write_config: WriteConfig, workdir: Path) -> None:
    runtime = workdir / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env["TASKMASTER_RUNTIME_DIR"] = str(runtime)
    env.pop("XDG_RUNTIME_DIR", None)  # no session bus to find either
    cfg = write_config({"web": {"cmd": "sleep 100000", "starttime": 0}})
    # Where the machine has a system bus, ask for the embedded one explicitly.
    extra = ["--bus", "private"] if os.geteuid() == 0 and system_bus_reachable() else []
    d = Daemon(cfg, *extra, env=env)
    try:
        d.wait_for(event("RUNNING", "web"))
        address = (runtime / "bus").read_text().strip()
        assert address.startswith(f"unix:path={runtime}/bus.socket")
        r = subprocess.run([sys.executable, "-m", "taskctl", "--json", "status"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert [(p["name"], p["state"]) for p in rows] == [("web", "RUNNING")]
    finally:
        assert d.terminate() == 0
    assert not (runtime / "bus").exists() and not (runtime / "bus.socket").exists()


def test_taskctl_gives_up_on_a_bus_that_never_answers_hello(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket that authenticates like a bus and then stays silent: taskctl
    reports it unreachable after CONNECT_TIMEOUT instead of hanging."""
    import socket
    import threading

    from taskctl import client as client_module
    from taskctl import link
    from taskctl.model import Unreachable
    from taskmasterd.busaddr import BusChoice

    path = str(workdir / "silent.socket")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    stop = threading.Event()

    def silent_bus() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while not stop.is_set():
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
                while b"\r\n" in data:
                    line, data = data.split(b"\r\n", 1)
                    if line.lstrip(b"\0").startswith(b"AUTH"):
                        conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
                    elif line == b"NEGOTIATE_UNIX_FD":
                        conn.sendall(b"AGREE_UNIX_FD\r\n")
                    elif line.startswith(b"BEGIN"):
                        data = b""  # then Hello comes, and is never answered
    thread = threading.Thread(target=silent_bus, daemon=True)
    thread.start()
    monkeypatch.setattr(link, "CONNECT_TIMEOUT", 0.5)
    client = client_module.Client(BusChoice("address", f"unix:path={path}"), timeout=5)
    try:
        with pytest.raises(Unreachable) as caught:
            client.list_processes()
        # Ended by the Hello watchdog (CONNECT_TIMEOUT), not by the call's 5 s
        # limit (that one says "no reply to ... within").
        assert "timed out" in str(caught.value)
    finally:
        stop.set()
        client.close()
        server.close()
