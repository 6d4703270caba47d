"""Consoles (issue 18, docs/console.md) at the D-Bus level: a real daemon
on a private bus, programs on pseudo-terminals, OpenConsole and
WatchConsole through taskctl's client (fd passing). `taskctl attach` in a
real terminal (tmux) is tests/integration/test_attach_tmux.py."""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taskctl.buses import BusChoice
from taskctl.client import Client
from taskctl.model import CallError
from taskmasterd.terminal import get_size, set_size
from tests.harness import Daemon, event, wait_until
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
               "size = lambda: os.get_terminal_size(0)\n"
               "signal.signal(signal.SIGWINCH, lambda *a: print('size', *size(), flush=True))\n"
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


def test_a_daemon_killed_and_started_again_keeps_the_console_and_its_viewers(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """The terminal's master is the log writer's, which outlives the daemon:
    the program never sees a hang-up, an attached viewer goes on, and the
    next daemon re-adopts the process and hands its terminal out again."""
    from tests.integration.test_output_rotation import killed_at_end, writers_of

    env = {"TASKMASTER_RUNTIME_DIR": str(workdir / "run")}
    cfg = write_config({"repl": {"cmd": PYTHON_REPL, "console": True, "starttime": 0}},
                       statedir=str(workdir / "state"))
    d1 = daemons(cfg, env=env)
    program = d1.wait_for(event("RUNNING", "repl")).pid
    wait_until("a log writer", lambda: len(writers_of(d1.pid)) == 1)
    [writer] = writers_of(d1.pid)
    with killed_at_end(program, writer):
        viewer = watch(Client(BusChoice("address", bus_address)), "repl")
        read_until(viewer, b">>> ")
        os.kill(d1.pid, signal.SIGKILL)
        d1.proc.wait(timeout=10)
        d2 = daemons(cfg, env=env)
        assert d2.wait_for(event("ADOPTED", "repl")).pid == program
        d2.wait_text(f"re-attached the log writer (pid {writer})")
        client = Client(BusChoice("address", bus_address))
        terminal = client.call_fd("OpenConsole", "s", ["repl"])
        os.write(terminal, b"print('still', 6*7)\r")
        assert b"still 42" in read_until(viewer, b"still 42")  # the old viewer too
        late = watch(client, "repl")
        assert b"still 42" in read_until(late, b"still 42")  # the scrollback survived
        os.close(terminal)
        viewer.close()
        late.close()
        assert d2.terminate() == 0


def test_a_flood_with_nobody_attached_never_blocks_the_program(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    """1 MB/s of output for 30 s into a console nobody watches: the program
    never waits on its terminal (it measures its own writes) and the daemon
    and the log writer that drains it stay under 10 % of a core."""
    from tests.harness import cpu_seconds
    from tests.integration.test_output_rotation import writers_of

    script = workdir / "flood.py"
    script.write_text(
        "import os, sys, time\n"
        "line = b'x' * 1023 + b'\\n'\n"
        "start = time.monotonic(); slowest = 0.0\n"
        "for second in range(30):\n"
        "    for _ in range(1024):\n"
        "        t = time.monotonic(); os.write(1, line); slowest = max(slowest, time.monotonic() - t)\n"
        "    time.sleep(max(0.0, start + second + 1 - time.monotonic()))  # sleep-ok: its pace\n"
        "with open(sys.argv[1], 'w') as f: f.write(f'{slowest:.3f} {time.monotonic() - start:.2f}')\n"
        "time.sleep(3600)  # sleep-ok: stays, so its terminal stays open\n")
    result = workdir / "result"
    out = workdir / "flood.out"
    cfg = write_config({"flood": {"cmd": f"{sys.executable} {script} {result}", "console": True,
                                  "starttime": 0, "stdout": str(out), "stdout_maxbytes": "8MB",
                                  "stdout_backups": 2}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "flood"))
    wait_until("a log writer", lambda: len(writers_of(d.pid)) == 1)
    [writer] = writers_of(d.pid)
    cpu0 = cpu_seconds(d.pid) + cpu_seconds(writer)
    wait_start = time.monotonic()
    while not result.exists():
        assert time.monotonic() - wait_start < 60, "the flood did not end"
        time.sleep(0.2)  # sleep-ok: polling for the program's own report, with a deadline
    cpu = cpu_seconds(d.pid) + cpu_seconds(writer) - cpu0
    slowest, took = map(float, result.read_text().split())
    assert slowest < 0.5, f"a write waited {slowest} s on the terminal"
    assert took < 33, f"30 s of output took {took} s: the program was held up"
    assert cpu < 0.10 * took, f"daemon + log writer used {cpu:.2f} CPU-s in {took:.1f} s"
    # It was all recorded (rotated at 8 MB: 2 backups keep the last 24 MB at most).
    recorded = sum(p.stat().st_size for p in workdir.glob("flood.out*"))
    assert recorded >= 20 * 1024 * 1024, recorded


def test_a_daemon_reexec_keeps_the_console(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    from tests.integration.test_taskctl import taskctl

    cfg = write_config({"repl": {"cmd": PYTHON_REPL, "console": True, "starttime": 0}})
    d = daemons(cfg)
    program = d.wait_for(event("RUNNING", "repl")).pid
    client = Client(BusChoice("address", bus_address))
    terminal = client.call_fd("OpenConsole", "s", ["repl"])
    os.write(terminal, b"print('before', 6*7)\r")
    os.close(terminal)
    read_until(watch(client, "repl"), b"before 42")
    r = taskctl(bus_address, "daemon-reexec")
    assert r.returncode == 0, r.stderr
    client = Client(BusChoice("address", bus_address))
    assert d.latest_pids()["repl"] == program
    terminal = client.call_fd("OpenConsole", "s", ["repl"])
    viewer = watch(client, "repl")
    os.write(terminal, b"print('after', 6*7)\r")
    got = read_until(viewer, b"after 42")
    assert b"before 42" in got  # the scrollback is the writer's: it outlived the old image
    os.close(terminal)
    viewer.close()


def test_an_overlapping_restart_hands_the_console_to_the_successor(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    from tests.integration.test_taskctl import taskctl

    cfg = write_config({"svc": {"cmd": "sh -c 'echo I am $$; exec sleep 100000'", "console": True,
                                "starttime": 0, "restart": "overlap"}})
    d = daemons(cfg)
    old = d.wait_for(event("RUNNING", "svc")).pid
    r = taskctl(bus_address, "restart", "svc")
    assert r.returncode == 0, r.stderr
    new = d.wait_for(lambda ln: ln.kind == "RUNNING" and ln.process == "svc" and ln.pid != old).pid
    client = Client(BusChoice("address", bus_address))
    viewer = watch(client, "svc")
    assert f"I am {new}".encode() in read_until(viewer, f"I am {new}".encode())
    viewer.close()


def test_a_console_without_a_file_keeps_its_scrollback_and_tail_reads_its_recording(
        write_config: WriteConfig, daemons: Start, client: Client, workdir: Path) -> None:
    cfg = write_config({"quiet": {"cmd": "sh -c 'echo not-in-a-file; exec sleep 100000'",
                                  "console": True, "starttime": 0, "stdout": None},
                        "loud": {"cmd": "sh -c 'echo in-the-file; exec sleep 100000'",
                                 "console": True, "starttime": 0}})
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 2)
    assert b"not-in-a-file" in read_until(watch(client, "quiet"), b"not-in-a-file")
    # No stdout key: the recording is a file in logdir (even under journald).
    read_until(watch(client, "loud"), b"in-the-file")
    with os.fdopen(client.open_log("loud", "stdout"), "rb") as f:
        assert f.read() == b"in-the-file\r\n"  # as the terminal wrote it: CR LF
    with pytest.raises(CallError) as info:
        client.open_log("loud", "stderr")
    assert info.value.name == "NotAFile" and "is its terminal" in info.value.message
    with pytest.raises(CallError) as info:
        client.open_log("quiet", "stdout")
    assert info.value.name == "NotAFile"


def test_viewers_are_bounded_per_console(
        write_config: WriteConfig, daemons: Start, client: Client) -> None:
    from taskmasterd.consolefan import MAX_VIEWERS, turned_away

    cfg = write_config({"repl": {"cmd": PYTHON_REPL, "console": True, "starttime": 0}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "repl"))
    viewers = [watch(client, "repl") for _ in range(MAX_VIEWERS)]
    for v in viewers:
        read_until(v, b">>> ")
    extra = watch(client, "repl")
    # Turned away: a line saying why, then the end at once.
    assert read_to_eof(extra) == turned_away("repl")
    assert b"repl has 16 viewers already; try again once one leaves" in turned_away("repl")
    d.wait_text(f"has {MAX_VIEWERS} viewers already")
    viewers.pop().close()  # one leaves: there is room again (once the writer saw it go)
    deadline = time.monotonic() + 10
    while True:
        again = watch(client, "repl")
        if b">>> " in read_until(again, b">>> "):
            break
        again.close()
        assert time.monotonic() < deadline, "no room after a viewer left"
    for v in [*viewers, again, extra]:
        v.close()
