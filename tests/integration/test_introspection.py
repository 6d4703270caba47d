"""dbus/*.xml is what the code declares and what a running daemon serves."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from taskmasterd.bus.introspect import canonical, interfaces
from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig

DBUS_DIR = Path(__file__).resolve().parents[2] / "dbus"
FILES = {"org.taskmaster.Taskmaster1.Manager": "/org/taskmaster/Taskmaster1",
         "org.taskmaster.Taskmaster1.Program": "/org/taskmaster/Taskmaster1/program/web"}


def checked_in(name: str) -> ET.Element:
    root = ET.parse(DBUS_DIR / f"{name}.xml").getroot()
    [iface] = [i for i in root.iter("interface") if i.get("name") == name]
    return iface


@pytest.mark.parametrize("name", sorted(FILES))
def test_checked_in_xml_matches_the_code(name: str) -> None:
    assert canonical(checked_in(name)) == canonical(interfaces()[name]), (
        "dbus/ is stale: run `python -m taskmasterd.bus.introspect dbus`")


def test_running_daemon_serves_the_checked_in_xml(
        write_config: WriteConfig, daemons: Callable[..., Daemon], bus_address: str) -> None:
    d = daemons(write_config({"web": {"cmd": "sleep 100000", "starttime": 0}}))
    d.wait_for(event("RUNNING", "web"))
    for name, path in FILES.items():
        xml = subprocess.run(["busctl", f"--address={bus_address}", "introspect", "--xml-interface",
                              "org.taskmaster.Taskmaster1", path],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        served = [i for i in ET.fromstring(xml).iter("interface") if i.get("name") == name]
        assert served, f"{path} does not serve {name}"
        assert canonical(served[0]) == canonical(checked_in(name))
