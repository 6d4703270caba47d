"""Which bus to use (SPEC section 5), shared by taskmasterd and taskctl.

Pure apart from looking at a few paths; never imports dbus-next, so taskctl
can decide where to connect without paying for it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

SYSTEM_SOCKET = "/run/dbus/system_bus_socket"


@dataclass(frozen=True)
class BusChoice:
    kind: str  # "system" | "user" | "address" | "private"
    address: str | None = None  # for "address"

    def describe(self) -> str:
        if self.kind == "address":
            return f"the bus at {self.address}"
        if self.kind == "user":
            return "the session bus"
        return f"the {self.kind} bus"


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def system_bus_reachable(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(environ.get("DBUS_SYSTEM_BUS_ADDRESS")) or _is_socket(SYSTEM_SOCKET)


def session_bus_reachable(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return True
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    return bool(runtime) and _is_socket(os.path.join(runtime, "bus"))


def runtime_dir(uid: int | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """Where the embedded bus's socket and address file live.

    TASKMASTER_RUNTIME_DIR overrides it (tests, several instances)."""
    if environ.get("TASKMASTER_RUNTIME_DIR"):
        return environ["TASKMASTER_RUNTIME_DIR"]
    if (os.geteuid() if uid is None else uid) == 0:
        return "/run/taskmaster"
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return os.path.join(runtime, "taskmaster")
    return f"/tmp/taskmaster-{os.geteuid() if uid is None else uid}"


def address_file(uid: int | None = None, environ: Mapping[str, str] = os.environ) -> str:
    return os.path.join(runtime_dir(uid, environ), "bus")


def daemon_default(uid: int | None = None, environ: Mapping[str, str] = os.environ) -> BusChoice:
    """root: the system bus if there is one; others: the session bus; else private."""
    if (os.geteuid() if uid is None else uid) == 0:
        return BusChoice("system") if system_bus_reachable(environ) else BusChoice("private")
    return BusChoice("user") if session_bus_reachable(environ) else BusChoice("private")


def read_address(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = f.readline().strip()
    except OSError:
        return None
    return value or None
