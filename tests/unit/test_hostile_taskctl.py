"""taskctl's checks of what the user typed (issue 11, section 3): pure parts."""

from __future__ import annotations

import signal

import pytest

from taskctl.client import address_problem
from taskmasterd import signames


@pytest.mark.parametrize("address", [
    "unix:path=/run/taskmaster/bus.socket",
    "unix:path=/tmp/x,guid=0123456789abcdef0123456789abcdef",
    "unix:abstract=/tmp/dbus-XYZ",
    "tcp:host=localhost,port=1;unix:path=/run/dbus/system_bus_socket",
])
def test_addresses_taskctl_can_use(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(("address", "phrase"), [
    ("garbage", "'garbage' is not a D-Bus address"),
    ("", "'' is not a D-Bus address"),
    (":path=/x", "is not a D-Bus address"),
    ("unix:path", "('path' is not key=value)"),
    ("unix:=x", "is not key=value"),
    ("unix:", "has no unix:path= or unix:abstract= part"),
    ("unix:path=", "has no unix:path="),
    ("tcp:host=localhost,port=1", "taskctl connects over unix sockets only"),
    ("x" * 500, "'xxxxxxxx"),
])
def test_malformed_addresses_are_explained(address: str, phrase: str) -> None:
    problem = address_problem(address)
    assert problem is not None and phrase in problem
    assert "expected a D-Bus address like unix:path=" in problem and len(problem) < 300


@pytest.mark.parametrize(("text", "expected"), [
    ("TERM", signal.SIGTERM), ("sigterm", signal.SIGTERM), (" HUP ", signal.SIGHUP),
    ("9", signal.SIGKILL), ("SIGUSR1", signal.SIGUSR1),
])
def test_signal_names_and_numbers(text: str, expected: signal.Signals) -> None:
    assert signames.parse(text) is expected


@pytest.mark.parametrize("text", [
    "\u0669",             # ARABIC-INDIC DIGIT NINE: int() reads it as 9 (SIGKILL)
    "\u0661\u0665",       # 15 in Arabic-Indic digits
    "\uff19",             # FULLWIDTH DIGIT NINE
    "\u017fIGKILL",       # LATIN SMALL LETTER LONG S: upper() gives "S"
    "K\u0131LL",          # LATIN SMALL LETTER DOTLESS I: upper() gives "I"
    "FOO", "SIG", "0", "9999999999", "",
])
def test_bad_signals_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="signal"):
        signames.parse(text)
