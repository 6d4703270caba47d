"""`python3 -m taskctl` / `-m taskmasterd` on a Python without our
dependencies (Debian's python3 in a clone, issue 12, 3.): one line saying
what to do, exit 1, no traceback. The missing module is simulated with a
None in sys.modules, which makes its import fail as if it were absent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, hidden: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = (f"import runpy, sys; sys.modules[{hidden!r}] = None; "
            f"sys.argv[0] = {module!r}; runpy.run_module({module!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent"})


def test_taskctl_without_jeepney_says_what_to_do() -> None:
    r = run_module("taskctl", "jeepney", "status")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"taskctl: {sys.executable} has no module 'jeepney': use the virtualenv, "
                        "`sh bootstrap setup` then .venv/bin/taskctl (in a clone), or install it: "
                        "apt install python3-jeepney\n")


@pytest.mark.parametrize(("module", "hidden", "args", "package"), [
    ("taskmasterd", "dbus_next", ["-c", "etc/taskmaster.yaml", "--bus", "private"],
     "python3-dbus-next"),
    ("taskmasterd", "yaml", ["--check-config", "etc/taskmaster.yaml"], "python3-yaml"),
])
def test_taskmasterd_without_a_dependency_says_what_to_do(
        module: str, hidden: str, args: list[str], package: str) -> None:
    r = run_module(module, hidden, *args)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines() == [
        f"taskmasterd: {sys.executable} has no module {hidden!r}: use the virtualenv, "
        f"`sh bootstrap setup` then .venv/bin/taskmasterd (in a clone), or install it: "
        f"apt install {package}"]


def test_another_missing_module_is_a_bug_and_keeps_its_traceback() -> None:
    r = run_module("taskctl", "taskctl.client", "status")
    assert r.returncode == 1 and "Traceback" in r.stderr and "ModuleNotFoundError" in r.stderr
