"""A GLib client (PyGObject: Gio.DBusObjectManagerClient, Gio.DBusProxy,
Gio.DBusNodeInfo) against a real daemon, as issue 12 checked by hand: it
sees every object and its properties, hears a reload add and remove
programs, and finds every argument named.

gi is Debian's python3-gi, for the system's python3 (not in the venv): the
client runs there, in a subprocess, and prints what it saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig

SYSTEM_PYTHON = "/usr/bin/python3"
SLEEPER = "sleep 100000"

CLIENT = textwrap.dedent('''
    import json, sys
    import gi
    gi.require_version("Gio", "2.0")
    from gi.repository import Gio, GLib

    NAME, ROOT = "org.taskmaster.Taskmaster1", "/org/taskmaster/Taskmaster1"
    PROGRAM = "org.taskmaster.Taskmaster1.Program"
    conn = Gio.DBusConnection.new_for_address_sync(
        sys.argv[1], Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
    manager = Gio.DBusObjectManagerClient.new_sync(
        conn, Gio.DBusObjectManagerClientFlags.NONE, NAME, ROOT, None, None, None)
    out = {"objects": {}, "added": [], "removed": [], "unnamed": [], "managers": []}
    for obj in manager.get_objects():
        iface = obj.get_interface(PROGRAM)
        processes = iface.get_cached_property("Processes")
        out["objects"][obj.get_object_path()] = {
            "name": iface.get_cached_property("Name").unpack(),
            "processes_type": processes.get_type_string(),
            "processes": processes.unpack()}

    for path in [ROOT] + sorted(out["objects"]):
        xml = conn.call_sync(NAME, path, "org.freedesktop.DBus.Introspectable", "Introspect",
                             None, GLib.VariantType("(s)"), Gio.DBusCallFlags.NONE, 10000,
                             None).unpack()[0]
        for iface in Gio.DBusNodeInfo.new_for_xml(xml).interfaces:
            if iface.name == "org.freedesktop.DBus.ObjectManager":
                out["managers"].append(path)
            members = [(m.name, list(m.in_args) + list(m.out_args)) for m in iface.methods]
            members += [(s.name, list(s.args)) for s in iface.signals]
            for member, args in members:
                out["unnamed"] += [f"{path} {iface.name}.{member}" for a in args if not a.name]

    loop = GLib.MainLoop()
    def done():
        if out["added"] and out["removed"]:
            loop.quit()
    manager.connect("object-added", lambda m, o: (out["added"].append(o.get_object_path()),
                                                  done()))
    manager.connect("object-removed", lambda m, o: (out["removed"].append(o.get_object_path()),
                                                    done()))
    conn.call_sync(NAME, ROOT, "org.taskmaster.Taskmaster1.Manager", "Reload", None,
                   GLib.VariantType("(asasas)"), Gio.DBusCallFlags.NONE, 10000, None)
    GLib.timeout_add_seconds(15, loop.quit)
    loop.run()
    print(json.dumps(out))
''')


def gi_available() -> bool:
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gio', '2.0')"],
                              capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not gi_available(), reason="needs python3-gi for /usr/bin/python3")
def test_a_glib_object_manager_client_sees_the_api(
        write_config: WriteConfig, daemons: Callable[..., Daemon], bus_address: str) -> None:
    programs: dict[str, dict[str, Any]] = {"web": {"cmd": SLEEPER, "starttime": 0},
                                           "old": {"cmd": SLEEPER, "starttime": 0}}
    cfg = write_config(programs)
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 2)
    del programs["old"]
    programs["new"] = {"cmd": SLEEPER, "starttime": 0}
    write_config(programs)  # read by the client's Reload
    r = subprocess.run([SYSTEM_PYTHON, "-c", CLIENT, bus_address], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    root = "/org/taskmaster/Taskmaster1"
    web = seen["objects"][f"{root}/program/web"]
    assert web["name"] == "web" and web["processes_type"] == "a(ssuutitb)"
    [[name, state, pid, restarts, started_us, *last_exit]] = web["processes"]
    assert (name, state, pid, restarts) == ("web", "RUNNING", d.latest_pids()["web"], 0)
    assert started_us > 0 and last_exit == [0, 0, False]
    assert set(seen["objects"]) == {f"{root}/program/web", f"{root}/program/old"}
    assert seen["added"] == [f"{root}/program/new"]
    assert seen["removed"] == [f"{root}/program/old"]
    assert seen["unnamed"] == [], "arguments without a name (GLib shows arg_0)"
    assert seen["managers"] == [root]
