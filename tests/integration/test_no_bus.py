"""No system or session bus: the daemon starts its own and taskctl finds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
