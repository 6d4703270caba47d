"""`taskctl attach` in a real terminal: tmux (Debian's), driven with
send-keys and read with capture-pane, attached to a real daemon's console
programs (issue 18). Every wait is for text on the screen, with a
timeout. The D-Bus side alone: tests/integration/test_console.py."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
PROMPT = "outer$ "
AT_PROMPT = re.escape(PROMPT.rstrip()) + r"\s*$"  # capture-pane trims the space, adds blank lines


class Tmux:
    """A tmux server of its own (socket in the test's directory) with one
    window running sh, where the test types."""

    def __init__(self, workdir: Path, width: int = 100, height: int = 30) -> None:
        self.socket = str(workdir / "tmux.sock")
        env = {**os.environ, "PS1": PROMPT, "ENV": "", "HOME": str(workdir)}
        env.pop("TMUX", None)
        subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", "new-session", "-d", "-s", "t",
                        "-x", str(width), "-y", str(height), "sh"], check=True, env=env, timeout=30)
        self.tmux("set-option", "-g", "history-limit", "5000")
        self.tmux("set-option", "-g", "status", "off")  # the pane is the whole window: sizes as given
        self.type(f"PS1='{PROMPT}'")  # (dash as root ignores PS1 from its environment)
        self.wait(re.escape(PROMPT))

    def tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def type(self, text: str, enter: bool = True) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", "t", "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "t", "-S", "-5000")

    def wait(self, pattern: str, timeout: float = 15.0, after: int = 0) -> str:
        """The screen once `pattern` (a regex) appears in it past character
        `after` of it; AssertionError with the screen after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if re.search(pattern, text[after:]):
                return text
            assert time.monotonic() < deadline, f"{pattern!r} never appeared; screen:\n{text}"
            time.sleep(0.05)  # sleep-ok: polling the pane, with a deadline

    def mark(self) -> int:
        """Where the screen's text ends now: wait(after=...) looks past it."""
        return len(self.screen().rstrip())

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-t", "t", "-x", str(width), "-y", str(height))

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux(workdir: Path) -> Iterator[Tmux]:
    t = Tmux(workdir)
    try:
        yield t
    finally:
        t.close()


def attach_command(bus_address: str, *args: str) -> str:
    return shlex.join([sys.executable, "-m", "taskctl", "--address", bus_address, "attach", *args])


def test_attach_type_detach_and_the_output_of_the_detached_time_is_replayed(
        write_config: WriteConfig, daemons: Start, bus_address: str, tmux: Tmux,
        workdir: Path) -> None:
    out = workdir / "repl.out"
    cfg = write_config({"repl": {"cmd": "python3 -i -q", "console": True, "starttime": 0,
                                 "stdout": str(out)}})
    d = daemons(cfg)
    pid = d.wait_for(event("RUNNING", "repl")).pid
    tmux.type(attach_command(bus_address, "repl"))
    tmux.wait(rf"attached to repl \(pid {pid}\); detach: Ctrl-\] d")
    tmux.wait(">>> ")
    mark = tmux.mark()
    tmux.type("1+1")
    tmux.wait(r"\n2\n>>> ", after=mark)
    # Something that prints while nobody is attached: a thread, 1 s later.
    tmux.type("import threading; threading.Timer(1.0, lambda: print('\\nwhile-away', 6*7)).start()")
    tmux.keys("C-]", "d")
    mark = tmux.mark()
    tmux.wait(r"detached from repl\n" + re.escape(PROMPT.rstrip()), after=mark - 40)
    deadline = time.monotonic() + 15
    while b"while-away 42" not in out.read_bytes():  # recorded with nobody attached
        assert time.monotonic() < deadline, out.read_bytes()[-300:]
        time.sleep(0.05)  # sleep-ok: polling the recording, with a deadline
    assert "while-away 42" not in tmux.screen()  # it was not shown: nobody was attached
    tmux.type("clear")
    tmux.type(attach_command(bus_address, "repl"))
    tmux.wait("while-away 42")  # replayed from the scrollback at the attach
    assert d.latest_pids()["repl"] == pid  # the process went on all along
    tmux.keys("C-]", "d")
    tmux.wait("detached from repl")


def test_a_resized_window_is_the_programs_new_size(
        write_config: WriteConfig, daemons: Start, bus_address: str, tmux: Tmux) -> None:
    cfg = write_config({"shell": {"cmd": "sh -i", "console": True, "starttime": 0,
                                  "env": {"PS1": "inner$ "}}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "shell"))
    tmux.type(attach_command(bus_address, "shell"))
    tmux.wait("attached to shell")
    tmux.type("")
    tmux.wait("inner\\$ ")
    mark = tmux.mark()
    tmux.type("stty size")
    tmux.wait(r"\n30 100\n", after=mark)  # tmux's window, forwarded at the attach
    tmux.resize(120, 40)
    mark = tmux.mark()
    tmux.type("stty size")
    tmux.wait(r"\n40 120\n", after=mark)  # SIGWINCH -> TIOCSWINSZ on the terminal
    tmux.keys("C-]", "d")
    tmux.wait("detached from shell")


def test_kill_9_while_attached_prints_the_exit_returns_and_the_program_restarts(
        write_config: WriteConfig, daemons: Start, bus_address: str, tmux: Tmux) -> None:
    cfg = write_config({"victim": {"cmd": "python3 -i -q", "console": True, "starttime": 0,
                                   "autorestart": "always"}})
    d = daemons(cfg)
    pid = d.wait_for(event("RUNNING", "victim")).pid
    tmux.type(attach_command(bus_address, "victim") + "; echo attach-exit=$?")
    tmux.wait(">>> ")
    os.kill(pid, signal.SIGKILL)
    screen = tmux.wait(r"attach-exit=\d+")
    assert re.search(r"victim exited: killed by SIGKILL", screen), screen
    tmux.wait(AT_PROMPT)  # back at the outer shell, its terminal sane
    again = d.wait_for(lambda ln: ln.kind == "RUNNING" and ln.process == "victim" and ln.pid != pid)
    mark = tmux.mark()
    tmux.type("stty -a | grep -o -- '-icanon\\|icanon' | head -1")  # cooked again: icanon
    tmux.wait(r"\nicanon\n", after=mark)
    tmux.type(attach_command(bus_address, "victim"))
    tmux.wait(rf"attached to victim \(pid {again.pid}\)")
    tmux.keys("C-]", "d")
    tmux.wait("detached from victim")


def test_attach_in_the_shell_detaches_back_to_its_prompt(
        write_config: WriteConfig, daemons: Start, bus_address: str, tmux: Tmux) -> None:
    cfg = write_config({"repl": {"cmd": "python3 -i -q", "console": True, "starttime": 0},
                        "plain": {"cmd": "sleep 100000", "starttime": 0}})
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 2)
    tmux.type(shlex.join([sys.executable, "-m", "taskctl", "--address", bus_address]))
    tmux.wait("taskmaster> ")
    tmux.type("attach repl")
    tmux.wait(">>> ")
    mark = tmux.mark()
    tmux.type("3*3")
    tmux.wait(r"\n9\n", after=mark)
    tmux.keys("C-]", "d")
    mark = tmux.mark()
    tmux.wait("detached from repl", after=mark - 40)
    tmux.type("attach plain")
    tmux.wait("plain does not run on a console")
    mark = tmux.mark()
    tmux.type("status repl")
    tmux.wait(r"repl\s+RUNNING", after=mark)  # the shell goes on
    tmux.type("quit")
    tmux.wait(AT_PROMPT)
