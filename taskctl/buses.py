"""Where taskctl looks for taskmasterd: the buses to try, in order, and
whether an --address is one taskctl can use (pure: no D-Bus here)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from taskmasterd.busaddr import SYSTEM_SOCKET, BusChoice, address_file, read_address


@dataclass(frozen=True)
class Candidate:
    """A bus to try: its choice, its address (None: cannot even be tried, see `why`)."""

    choice: BusChoice
    address: str | None
    why: str = ""


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def session_address(environ: Mapping[str, str]) -> Candidate:
    choice = BusChoice("user")
    if environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return Candidate(choice, environ["DBUS_SESSION_BUS_ADDRESS"])
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and _is_socket(os.path.join(runtime, "bus")):
        return Candidate(choice, "unix:path=" + os.path.join(runtime, "bus"))
    return Candidate(choice, None, "DBUS_SESSION_BUS_ADDRESS is not set and there is no "
                                   "$XDG_RUNTIME_DIR/bus")


def system_address(environ: Mapping[str, str]) -> Candidate:
    return Candidate(BusChoice("system"),
                     environ.get("DBUS_SYSTEM_BUS_ADDRESS") or f"unix:path={SYSTEM_SOCKET}")


def embedded_address(uid: int, environ: Mapping[str, str]) -> Candidate:
    path = address_file(uid, environ)
    address = read_address(path)
    return Candidate(BusChoice("private"), address, "" if address else f"no address in {path}")


def candidates(choice: BusChoice | None, uid: int | None = None,
               environ: Mapping[str, str] = os.environ) -> list[Candidate]:
    """The buses to try, in order. No choice (taskctl without a bus flag): the
    embedded bus if its address file exists, then (not root) the session bus
    if there is one, then the system bus. The first of them where
    taskmasterd owns its name wins (see Client._ensure): a user reaches the
    system-wide daemon without a flag."""
    uid = os.geteuid() if uid is None else uid
    if choice is None:
        out = []
        embedded = embedded_address(uid, environ)
        if embedded.address:
            out.append(embedded)
        if uid != 0:
            session = session_address(environ)
            if session.address:
                out.append(session)
        out.append(system_address(environ))
        return out
    if choice.kind == "system":
        return [system_address(environ)]
    if choice.kind == "user":
        return [session_address(environ)]
    if choice.kind == "address":
        return [Candidate(choice, choice.address or None, "empty address")]
    if choice.kind == "private":
        return [embedded_address(uid, environ)]
    raise ValueError(f"unknown bus kind {choice.kind!r}")


_ADDRESS_EXAMPLE = ("expected a D-Bus address like unix:path=/run/taskmaster/bus.socket "
                    "or unix:abstract=NAME")


def address_problem(address: str) -> str | None:
    """Why `address` is not a D-Bus address taskctl can connect to, or None.

    D-Bus addresses are `transport:key=value,...`, several separated by ';';
    taskctl (jeepney) connects over unix sockets only."""
    shown = repr(address if len(address) <= 80 else address[:77] + "...")
    usable = False
    for part in address.split(";"):
        transport, colon, info = part.partition(":")
        if not colon or not transport:
            return f"{shown} is not a D-Bus address; {_ADDRESS_EXAMPLE}"
        keys: dict[str, str] = {}
        for pair in info.split(",") if info else []:
            key, equals, value = pair.partition("=")
            if not equals or not key:
                return (f"{shown} is not a D-Bus address ({pair[:40]!r} is not key=value); "
                        f"{_ADDRESS_EXAMPLE}")
            keys[key] = value
        usable = usable or (transport == "unix" and any(keys.get(k) for k in ("path", "abstract")))
    if not usable:
        return (f"{shown} has no unix:path= or unix:abstract= part (taskctl connects over "
                f"unix sockets only); {_ADDRESS_EXAMPLE}")
    return None
