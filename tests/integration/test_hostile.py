"""Hostile input against a running daemon (issue 11, section 3): refused
with a named, located error; the daemon keeps running what it ran."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus

from taskmasterd import hostcheck
from tests.harness import Daemon, alive, event, wait_until
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
NAME = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
ERROR = "org.taskmaster.Taskmaster1.Error."
SLEEPER = "sleep 100000"
DEEP = "[" * 1000 + "]" * 1000


def call(address: str, member: str, signature: str = "", body: list[Any] | None = None
         ) -> Message:
    async def run() -> Message:
        bus = await MessageBus(bus_address=address).connect()
        try:
            async with asyncio.timeout(20):  # a stalled daemon fails the test, not hangs it
                reply = await bus.call(Message(destination=NAME, path=PATH, interface=MANAGER,
                                               member=member, signature=signature,
                                               body=body or []))
            assert reply is not None
            return reply
        finally:
            bus.disconnect()
    return asyncio.run(run())


def taskctl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "taskctl", "--address", address, *args],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                       cwd="/")
    assert "Traceback" not in r.stderr, r.stderr
    return r


def running(write_config: WriteConfig, daemons: Start, **extra: dict[str, Any]
            ) -> tuple[Path, Daemon, int]:
    cfg = write_config({"web": {"cmd": SLEEPER, "starttime": 0}, **extra})
    d = daemons(cfg)
    pid = int(d.wait_for(event("RUNNING", "web")).fields["pid"])
    return cfg, d, pid


def test_deep_nesting_fails_a_reload_by_sighup_and_by_dbus_with_a_located_error(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    cfg, d, pid = running(write_config, daemons)
    good = cfg.read_text()
    cfg.write_text(good + "alerts: " + DEEP + "\n")
    line = cfg.read_text().count("\n")

    failed = d.reload()  # SIGHUP
    assert failed.kind == "RELOAD_FAILED"
    assert f"{cfg}:{line}:" in d.text() and "nested more than 100 levels deep" in d.text()

    reply = call(bus_address, "Reload")
    assert reply.message_type is MessageType.ERROR
    assert reply.error_name == ERROR + "ConfigInvalid", reply.body
    assert f"{cfg}:{line}:" in reply.body[0] and "nested more than 100" in reply.body[0]
    d.wait_for(lambda ln: ln.kind == "RELOAD_FAILED")
    assert d.proc.poll() is None and alive(pid)
    assert "Traceback" not in d.text()


@pytest.mark.skipif(hostcheck.journal_present(), reason="this host has journald: 'stdout: "
                    "journal' is valid here (the refusal is unit-tested with an injected check)")
def test_reload_refuses_journal_output_on_a_host_without_journald(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    cfg, d, pid = running(write_config, daemons)
    cfg.write_text(cfg.read_text().replace("starttime: 0", "starttime: 0\n    stdout: journal"))
    failed = d.reload()
    assert failed.kind == "RELOAD_FAILED"
    assert f"{cfg}:" in d.text() and "programs.web.stdout: no journal on this host" in d.text()
    reply = call(bus_address, "Reload")
    assert reply.error_name == ERROR + "ConfigInvalid" and "no journal on this host" in reply.body[0]
    assert alive(pid)


def test_tail_of_a_process_that_never_ran_says_there_is_no_output_yet(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    out = workdir / "never.out"
    _cfg, _d, _pid = running(write_config, daemons,
                             never={"cmd": SLEEPER, "autostart": False, "stdout": str(out)})
    reply = call(bus_address, "OpenLog", "ss", ["never", "stdout"])
    assert reply.error_name == ERROR + "NoOutput", (reply.error_name, reply.body)
    assert str(out) in reply.body[0] and "no stdout output yet" in reply.body[0]
    r = taskctl(bus_address, "tail", "never")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [f"never: ERROR (no output yet): {reply.body[0]}"]


def test_a_fifo_as_output_file_does_not_stall_openlog(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    fifo = workdir / "out.fifo"
    os.mkfifo(fifo)
    running(write_config, daemons, piped={"cmd": SLEEPER, "autostart": False, "stdout": str(fifo)})
    reply = call(bus_address, "OpenLog", "ss", ["piped", "stdout"])
    assert reply.error_name == ERROR + "NotAFile" and "not a regular file" in reply.body[0]


@pytest.mark.parametrize("sig", ["\u0669", "\u017fIGKILL", "K\u0131LL"])
def test_non_ascii_signals_are_refused_everywhere(
        write_config: WriteConfig, daemons: Start, bus_address: str, sig: str) -> None:
    _cfg, d, pid = running(write_config, daemons)
    reply = call(bus_address, "Signal", "ss", ["all", sig])
    assert reply.error_name == ERROR + "BadName" and "ASCII" in reply.body[0]
    r = taskctl(bus_address, "signal", sig, "all")
    assert r.returncode == 2 and "ASCII" in r.stderr and r.stdout == ""
    assert alive(pid) and not any(ln.kind == "SIGNALLED" for ln in d.lines)


def test_a_bad_signal_name_in_taskctl_is_bad_usage(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    _cfg, d, pid = running(write_config, daemons)
    r = taskctl(bus_address, "signal", "FOO", "web")
    assert r.returncode == 2 and "unknown signal 'FOO'" in r.stderr
    assert alive(pid)
    r = taskctl(bus_address, "signal", "USR1", "web")  # a good one still goes through
    assert r.returncode == 0 and r.stdout == "web: signalled\n"
    d.wait_for(lambda ln: ln.process == "web" and ln.fields.get("status") == str(-signal.SIGUSR1))


@pytest.mark.parametrize("address", ["garbage", "unix:nopath", "tcp:host=localhost,port=1", ""])
def test_a_malformed_address_is_one_line_of_bad_usage(address: str) -> None:
    r = taskctl(address, "status")
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith("taskctl: --address: ") and "unpack" not in line
    assert "expected a D-Bus address like unix:path=" in line


def test_fds_sent_with_a_call_that_takes_none_are_closed(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    from jeepney import DBusAddress, new_method_call
    from jeepney import MessageType as JType
    from jeepney.io.blocking import open_dbus_connection

    _cfg, d, _pid = running(write_config, daemons)
    manager = DBusAddress(PATH, bus_name=NAME, interface=MANAGER)
    before = len(os.listdir(f"/proc/{d.pid}/fd"))
    with open_dbus_connection(bus=bus_address, enable_fds=True) as conn, \
            open(os.devnull) as devnull:
        for member, signature, body in [("ListProcesses", "h", ()), ("Start", "sh", ("web",)),
                                        ("Nope", "h", ())] * 20:
            reply = conn.send_and_get_reply(new_method_call(
                manager, member, signature, (*body, devnull.fileno())),
                timeout=20)
            assert reply.header.message_type is JType.error
            assert reply.header.fields[4] == "org.freedesktop.DBus.Error.UnknownMethod"
        ok = conn.send_and_get_reply(new_method_call(manager, "ListProcesses"), timeout=20)
        assert ok.header.message_type is JType.method_return
    # A leak stays; an fd open for a moment (a status file read off the
    # loop, a directory listed) does not.
    wait_until("the daemon's fds back to their number",
               lambda: len(os.listdir(f"/proc/{d.pid}/fd")) <= before, timeout=10)


def test_a_fifo_or_device_as_config_file_fails_a_reload_and_a_start_at_once(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    cfg, d, pid = running(write_config, daemons)
    cfg.unlink()
    os.mkfifo(cfg)  # nobody will ever write it: reading it would hang the daemon
    failed = d.reload()
    assert failed.kind == "RELOAD_FAILED"
    assert f"{cfg}:1:1: cannot read the config file: it is a FIFO" in d.text()
    reply = call(bus_address, "Reload")
    assert reply.error_name == ERROR + "ConfigInvalid" and "it is a FIFO" in reply.body[0]
    assert alive(pid)
    r = subprocess.run([sys.executable, "-m", "taskmasterd", "-c", "/dev/zero",
                        "--address", bus_address], capture_output=True, text=True,
                       timeout=30, cwd="/")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "/dev/zero:1:1: cannot read the config file: it is a character device" in r.stderr
