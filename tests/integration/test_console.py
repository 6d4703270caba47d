"""Consoles (issue 18, docs/console.md) at the D-Bus level: a real daemon
on a private bus, programs on pseudo-terminals, OpenConsole and
WatchConsole through taskctl's client (fd passing). `taskctl attach` in a
real terminal (tmux) is tests/integration/test_attach_tmux.py."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taskctl.buses import BusChoice
from taskctl.client import CallError, Client
from taskmasterd.terminal import get_size, set_size
from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
PYTHON_REPL = "python3 -i -q"


def read_until(sock: socket.socket, needle: bytes, timeout: float = 10.0) -> bytes:
    """What the output socket gives until `needle` has come (or EOF)."""
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never came; got {got[-400:]!r}"
        if select.select([sock], [], [], left)[0]:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no end of the output; got {got[-400:]!r}"
        if select.select([sock], [], [], left)[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk


@pytest.fixture
def client(bus_address: str) -> Client:
    c = Client(BusChoice("address", bus_address))
    return c


def watch(client: Client, process: str) -> socket.socket:
    return socket.socket(fileno=client.call_fd("WatchConsole", "s", [process]))


def test_keystrokes_reach_the_program_and_its_output_every_viewer(
        write_config: WriteConfig, daemons: Start, client: Client, workdir: Path) -> None:
    cfg = write_config({"repl": {"cmd": PYTHON_REPL, "console": True, "starttime": 0,
                                 "stdout": str(workdir / "repl.out")}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "repl"))
    first = watch(client, "repl")
    read_until(first, b">>> ")  # the prompt, replayed from the scrollback
    second = watch(client, "repl")
    read_until(second, b">>> ")
    terminal = client.call_fd("OpenConsole", "s", ["repl"])
    try:
        os.write(terminal, b"6*7\r")
        assert b"42" in read_until(first, b"42")
        assert b"42" in read_until(second, b"42")
        # The program has a controlling terminal and sees it as one.
        # (/dev/tty opens only with a controlling terminal; the program leads
        # its foreground process group, so ^C from a viewer reaches it.)
        os.write(terminal, b"import os; print(os.isatty(0), os.close(os.open('/dev/tty', os.O_RDWR)) "
                           b"is None, os.tcgetpgrp(0) == os.getpgrp(), os.environ['TERM'])\r")
        assert b"True True True xterm-256color" in read_until(first, b"xterm-256color\r\n")
    finally:
        os.close(terminal)
        first.close()
        second.close()
    # Everything is in its file too, as the terminal showed it.
    assert b"42" in (workdir / "repl.out").read_bytes()


def test_output_while_nobody_watches_is_recorded_and_replayed(
        write_config: WriteConfig, daemons: Start, client: Client, workdir: Path) -> None:
    out = workdir / "talker.out"
    cfg = write_config({"talker": {
        "cmd": "sh -c 'echo line-one; read x; echo got-$x; exec sleep 100000'",
        "console": True, "starttime": 0, "stdout": str(out)}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "talker"))
    terminal = client.call_fd("OpenConsole", "s", ["talker"])
    os.write(terminal, b"two\r")  # typed with nobody watching
    os.close(terminal)
    deadline = time.monotonic() + 10
    while b"got-two" not in (out.read_bytes() if out.exists() else b""):
        assert time.monotonic() < deadline, out.read_bytes()
        time.sleep(0.02)  # sleep-ok: polling the file, with a deadline
    viewer = watch(client, "talker")
    replay = read_until(viewer, b"got-two")
    assert b"line-one" in replay  # scrollback: from before anybody attached
    viewer.close()


def test_window_size_set_on_the_terminal_reaches_the_program(
        write_config: WriteConfig, daemons: Start, client: Client) -> None:
    cfg = write_config({"sizes": {
        "cmd": "python3 -c \"import signal, os, sys\n"
               "signal.signal(signal.SIGWINCH, lambda *a: print('size', *os.get_terminal_size(0), flush=True))\n"
               "print('ready', *os.get_terminal_size(0), flush=True)\n"
               "while True: signal.pause()\"",
        "console": True, "starttime": 0}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "sizes"))
    viewer = watch(client, "sizes")
    assert b"ready 80 24" in read_until(viewer, b"ready 80 24")  # until a viewer says its size
    terminal = client.call_fd("OpenConsole", "s", ["sizes"])
    set_size(terminal, 50, 132)
    assert get_size(terminal) == (50, 132)
    assert b"size 132 50" in read_until(viewer, b"size 132 50")
    os.close(terminal)
    viewer.close()


def test_a_viewer_sees_the_end_when_the_process_dies_and_the_restart_has_a_new_terminal(
        write_config: WriteConfig, daemons: Start, client: Client) -> None:
    cfg = write_config({"victim": {"cmd": "sh -c 'echo alive-$$; exec sleep 100000'",
                                   "console": True, "starttime": 0, "autorestart": "always"}})
    d = daemons(cfg)
    running = d.wait_for(event("RUNNING", "victim"))
    viewer = watch(client, "victim")
    read_until(viewer, f"alive-{running.pid}".encode())
    os.kill(running.pid, signal.SIGKILL)
    read_to_eof(viewer)  # the terminal closed: the viewer is told by its end
    viewer.close()
    again = d.wait_for(lambda ln: ln.kind == "RUNNING" and ln.process == "victim"
                       and ln.pid != running.pid)
    second = watch(client, "victim")
    assert f"alive-{again.pid}".encode() in read_until(second, f"alive-{again.pid}".encode())
    second.close()


def test_named_errors(write_config: WriteConfig, daemons: Start, client: Client) -> None:
    cfg = write_config({"plain": {"cmd": "sleep 100000", "starttime": 0},
                        "many": {"cmd": "sleep 100000", "console": True, "numprocs": 2,
                                 "starttime": 0},
                        "idle": {"cmd": "sleep 100000", "console": True, "autostart": False}})
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 3)
    for member in ("OpenConsole", "WatchConsole"):
        for target, name, phrase in [("plain", "NoConsole", "console: true"),
                                     ("ghost", "NoSuchProgram", "ghost"),
                                     ("many", "BadName", "many:0"),
                                     ("idle", "NotRunning", "not running")]:
            with pytest.raises(CallError) as info:
                client.call_fd(member, "s", [target])
            assert info.value.name == name, (member, target, info.value)
            assert phrase in info.value.message
    # many:1 is one process: it works.
    os.close(client.call_fd("OpenConsole", "s", ["many:1"]))
    assert "Traceback" not in d.text()
