"""The dbus-next pin (taskmasterd/bus/pinned.py): one clear line, no traceback,
when another version than 0.2.3 is installed — from the daemon's start and
from TaskmasterBus itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskmasterd.bus import pinned

ROOT = Path(__file__).resolve().parents[2]


def test_the_required_version_is_accepted_and_is_installed_here() -> None:
    assert pinned.problem("0.2.3") is None
    assert pinned.found_version() == pinned.REQUIRED == "0.2.3"
    pinned.check_installed()


@pytest.mark.parametrize("found", ["0.2.2", "0.2.4", "1.0.0"])
def test_another_version_is_named_with_what_to_do(found: str) -> None:
    message = pinned.problem(found)
    assert message is not None and "\n" not in message
    assert message.startswith(f"dbus-next {found} is installed, taskmasterd needs exactly 0.2.3")
    assert "pip install 'dbus-next==0.2.3'" in message and "python3-dbus-next" in message


def test_no_dbus_next_at_all() -> None:
    message = pinned.problem(None)
    assert message is not None and message.startswith("dbus-next is not installed, ")


def test_taskmaster_bus_refuses_another_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskmasterd.bus.messagebus import TaskmasterBus

    monkeypatch.setattr(pinned, "found_version", lambda: "0.2.4")
    # Refused before any connection is tried (the address does not exist).
    with pytest.raises(pinned.WrongDbusNext, match=r"^dbus-next 0\.2\.4 is installed, "):
        TaskmasterBus(bus_address="unix:path=/nonexistent/bus")


def fake_dbus_next(where: Path, version: str) -> Path:
    """A dist-info claiming dbus-next `version`, found before the real one on sys.path."""
    info = where / f"dbus_next-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: dbus-next\nVersion: {version}\n")
    return where


def test_the_daemon_does_not_start_with_another_version(tmp_path: Path) -> None:
    site = fake_dbus_next(tmp_path / "site", "0.2.4")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    r = subprocess.run([sys.executable, "-m", "taskmasterd", "-c", str(ROOT / "etc/taskmaster.yaml")],
                       capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "taskmasterd: not started: " + (pinned.problem("0.2.4") or "")], r.stderr
    assert r.stdout == ""


def test_the_bus_service_reports_it_as_a_bus_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cli.main's check (another caller), still one line, not a traceback."""
    import asyncio

    from taskmasterd.bus.service import BusService, BusUnavailable

    monkeypatch.setattr(pinned, "found_version", lambda: "0.2.4")
    service = BusService(controller=None)  # type: ignore[arg-type]  # never reached
    with pytest.raises(BusUnavailable, match=r"^dbus-next 0\.2\.4 is installed, "):
        asyncio.run(service.connect(address="unix:path=/nonexistent/bus"))
