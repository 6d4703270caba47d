"""dbus/*.xml is what the code declares and what a running daemon serves;
the whole nodes served are the frozen API of tests/golden/, whose digest the
latest changelog entry of docs/dbus-api.md names."""

from __future__ import annotations

import hashlib
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from taskmasterd.bus.introspect import canonical, interfaces, normalised
from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig

ROOT = Path(__file__).resolve().parents[2]
DBUS_DIR = ROOT / "dbus"
GOLDEN = ROOT / "tests" / "golden"
API_DOC = ROOT / "docs" / "dbus-api.md"
NAME = "org.taskmaster.Taskmaster1"
NODES = {"root.xml": "/org/taskmaster/Taskmaster1",
         "program.xml": "/org/taskmaster/Taskmaster1/program/web"}
# A task's and an activity's nodes (API 1.2): compared once the running
# daemon has a task and an activity (the root is compared before: it gains
# their child nodes); part of the digest.
TASK_NODES = ("task.xml", "activity.xml")
FILES = {"org.taskmaster.Taskmaster1.Manager": "/org/taskmaster/Taskmaster1",
         "org.taskmaster.Taskmaster1.Program": "/org/taskmaster/Taskmaster1/program/web"}
INTERFACES = [*FILES, "org.taskmaster.Taskmaster1.Task", "org.taskmaster.Taskmaster1.Activity"]


def checked_in(name: str) -> ET.Element:
    root = ET.parse(DBUS_DIR / f"{name}.xml").getroot()
    [iface] = [i for i in root.iter("interface") if i.get("name") == name]
    return iface


@pytest.mark.parametrize("name", sorted(INTERFACES))
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


def golden(name: str) -> str:
    return normalised((GOLDEN / name).read_text())


def golden_digest() -> str:
    return hashlib.sha256("".join(golden(n) for n in sorted([*NODES, *TASK_NODES])).encode()
                          ).hexdigest()[:12]


def served(bus_address: str, path: str) -> str:
    return subprocess.run(["busctl", f"--address={bus_address}", "introspect", "--xml-interface",
                           NAME, path], capture_output=True, text=True, timeout=30,
                          check=True).stdout


def submit(bus_address: str, member: str, *args: str) -> str:
    """The id a Manager.Submit* call answers (busctl's `s "id"`)."""
    out = subprocess.run(["busctl", f"--address={bus_address}", "call", NAME, NODES["root.xml"],
                          f"{NAME}.Manager", member, *args], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    kind, value = out.split()
    assert kind == "s", out
    return value.strip('"')


def test_running_daemon_serves_the_golden_api(
        write_config: WriteConfig, daemons: Callable[..., Daemon], bus_address: str) -> None:
    """Any change to what the daemon serves fails here until tests/golden/
    is edited on purpose (see test_the_changelog_names_the_golden_api)."""
    d = daemons(write_config({"web": {"cmd": "sleep 100000", "starttime": 0}}))
    d.wait_for(event("RUNNING", "web"))
    for name, path in NODES.items():
        assert normalised(served(bus_address, path)) == golden(name), (
            f"{path} no longer serves tests/golden/{name}: an API change must be deliberate "
            "(edit the golden file and add a changelog line to docs/dbus-api.md)")
    task = submit(bus_address, "SubmitTask", "a{sv}", "1", "command", "s", "sleep")
    activity = submit(bus_address, "SubmitActivity", "saa{sv}", "golden", "1", "1", "command", "s",
                      "true")
    paths = {"task.xml": f"{NODES['root.xml']}/task/{task}",
             "activity.xml": f"{NODES['root.xml']}/activity/{activity}"}
    for name, path in paths.items():
        assert normalised(served(bus_address, path)) == golden(name), (
            f"{path} no longer serves tests/golden/{name}: an API change must be deliberate "
            "(edit the golden file and add a changelog line to docs/dbus-api.md)")
    # What a GLib/Qt client shows: every argument named (no arg_0), and the
    # ObjectManager on the root only.
    for path in [*NODES.values(), *paths.values()]:
        shown = subprocess.run(["gdbus", "introspect", "--address", bus_address, "--dest", NAME,
                                "--object-path", path], capture_output=True, text=True,
                               timeout=30, check=True).stdout
        assert "arg_" not in shown, shown
        assert ("org.freedesktop.DBus.ObjectManager" in shown) == (path == NODES["root.xml"])


def test_the_changelog_names_the_golden_api() -> None:
    """The latest changelog entry carries the digest of tests/golden/: editing
    the golden files without a changelog line fails here."""
    text = API_DOC.read_text()
    entries = re.findall(r"^### (\S+).*?\n(.*?)(?=^### |^## |\Z)", text.split("## Changelog", 1)[1],
                         re.M | re.S)
    assert entries, "docs/dbus-api.md has no changelog entry (### VERSION)"
    _version, body = entries[0]
    assert f"golden digest `{golden_digest()}`" in body, (
        f"tests/golden/ changed: add a changelog entry to docs/dbus-api.md saying what changed, "
        f"ending with: golden digest `{golden_digest()}`")


def test_get_managed_objects_on_the_root_only(
        write_config: WriteConfig, daemons: Callable[..., Daemon], bus_address: str) -> None:
    d = daemons(write_config({"web": {"cmd": "sleep 100000", "starttime": 0}}))
    d.wait_for(event("RUNNING", "web"))

    def managed(path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["busctl", f"--address={bus_address}", "call", NAME, path,
                               "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"],
                              capture_output=True, text=True, timeout=30)
    root = managed(NODES["root.xml"])
    assert root.returncode == 0 and NODES["program.xml"] in root.stdout, root.stderr
    program = managed(NODES["program.xml"])
    assert program.returncode != 0 and "ObjectManager" in program.stderr, program
    assert d.proc.poll() is None and "Traceback" not in d.text()
