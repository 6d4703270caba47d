"""taskctl's interactive shell, typed at in a pseudo-terminal (the pty is the
shell's controlling terminal, so Ctrl-C and Ctrl-D behave as at a keyboard).
Every wait is for text to appear, with a timeout."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Daemon
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
PROMPT = "taskmaster> "
UP = "\x1b[A"
CTRL_C, CTRL_D, CTRL_U = "\x03", "\x04", "\x15"
# Terminal control sequences readline writes, removed before matching.
CONTROL = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Za-z0-9]|\x1b[=>]"
                     rb"|[\r\x07]")


def _take_terminal() -> None:  # in the child, after setsid(): the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A program on a pty; `expect` waits for text in what it wrote."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, preexec_fn=_take_terminal)
        os.close(slave)
        self.fd = master
        self.raw = b""
        self.pos = 0  # expect() looks at the text from here on
        self.eof = False

    def text(self) -> str:
        out: list[str] = []
        for c in CONTROL.sub(b"", self.raw).decode(errors="replace"):
            if c == "\b":  # readline moves back over what it rewrites
                if out and out[-1] != "\n":
                    out.pop()
            else:
                out.append(c)
        return "".join(out)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the other side is closed
            chunk = b""
        if chunk:
            self.raw += chunk
        else:
            self.eof = True

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait for `pattern` (a regex) after the cursor; the cursor moves past it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.text(), self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(f"{pattern!r} not seen within {timeout}s "
                                     f"(eof={self.eof}); screen so far:\n{self.text()[-3000:]}")
            self._read(left)

    def prompt(self, timeout: float = 15.0) -> None:
        self.expect(re.escape(PROMPT), timeout)

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 15.0) -> int:
        """Read until the end of output, then the exit status."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


@pytest.fixture
def tm(write_config: WriteConfig, daemons: Start) -> Daemon:
    d = daemons(write_config({
        "web": {"cmd": "sleep 100000", "numprocs": 2, "starttime": 0},
        "idle": {"cmd": "sleep 100000", "autostart": False},
        "launcher": {"cmd": "/nonexistent/launcher", "autostart": False, "startretries": 0},
        "slow": {"cmd": "sleep 100000", "autostart": False, "starttime": 2},
    }))
    d.wait_count(lambda ln: ln.kind == "RUNNING", 2)
    return d


@pytest.fixture
def shell_env(workdir: Path) -> dict[str, str]:
    inputrc = workdir / "inputrc"
    inputrc.write_text("set enable-bracketed-paste off\nset bell-style none\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    env.update(TERM="xterm", INPUTRC=str(inputrc), TASKCTL_HISTFILE=str(workdir / "hist" / "h"),
               HOME=str(workdir))
    return env


@pytest.fixture
def terminals(bus_address: str, shell_env: dict[str, str]) -> Iterator[Callable[[], Terminal]]:
    opened: list[Terminal] = []

    def open_one() -> Terminal:
        t = Terminal([sys.executable, "-m", "taskctl", "--address", bus_address], shell_env)
        opened.append(t)
        return t

    yield open_one
    for t in opened:
        t.close()


def test_completion_commands_history_and_leaving(
        tm: Daemon, terminals: Callable[[], Terminal], shell_env: dict[str, str]) -> None:
    t = terminals()
    t.prompt()
    # Two commands start with "sta": a second TAB lists them.
    t.send("sta\t\t")
    t.expect(r"start +status *\n")
    t.send(CTRL_U + "stat\t")
    t.expect(re.escape(PROMPT) + "status $")
    # Program/process names complete too: web, web:0, web:1 share "web".
    t.send("we\t")
    t.expect("web")
    assert t.text().endswith(PROMPT + "status web")
    t.send("\r")
    t.expect(r"web:0\s+RUNNING\s+\d+\s+uptime")
    t.expect(r"web:1\s+RUNNING")
    t.prompt()
    # An error is printed; the shell goes on.
    t.send("stop nope\r")
    t.expect(r"nope: ERROR \(no such process\)")
    t.prompt()
    t.send("bogus\r")
    t.expect("unknown command 'bogus'")
    t.prompt()
    t.send("fg web:0\r")  # supervisorctl's word: what to type here instead
    t.expect(re.escape("supervisorctl's 'fg' is 'taskctl attach PROCESS' here"))
    t.prompt()
    t.send("help\r")
    t.expect(r"\n  tail \[-f\]")
    t.prompt()
    # Ctrl-C stops `events` and cancels a half-typed line, back to the prompt.
    t.send("events\r")
    t.expect("following the events of taskmasterd")
    t.send(CTRL_C)
    t.prompt()
    t.send("half a line" + CTRL_C)
    t.prompt()
    t.send("exit\r")
    assert t.wait() == 0

    history = Path(shell_env["TASKCTL_HISTFILE"]).read_text().splitlines()
    assert history == ["status web", "stop nope", "bogus", "fg web:0", "help", "events", "exit"]

    # A second shell finds the first one's history: UP recalls its last command.
    t = terminals()
    t.prompt()
    t.send(UP)
    t.expect("exit")
    t.send(UP * 6 + "\r")  # back to "status web"
    t.expect(r"web:1\s+RUNNING")
    t.prompt()
    t.send(CTRL_D)
    assert t.wait() == 0
    history = Path(shell_env["TASKCTL_HISTFILE"]).read_text().splitlines()
    assert history[-1] == "status web" and len(history) == 8


def test_json_in_the_shell_and_completion_after_reload(
        tm: Daemon, terminals: Callable[[], Terminal], write_config: WriteConfig) -> None:
    t = terminals()
    t.prompt()
    t.send("--json pid web:0\r")
    t.expect(r'"web:0": \d+')
    t.prompt()
    write_config({"web": {"cmd": "sleep 100000", "numprocs": 2, "starttime": 0},
                  "idle": {"cmd": "sleep 100000", "autostart": False},
                  "zebra": {"cmd": "sleep 100000", "autostart": False}})
    t.send("start ze\t")  # not known yet: nothing to complete
    t.send(CTRL_U + "reload\r")
    t.expect("added: zebra")
    t.prompt()
    t.send("start ze\t")
    t.expect("start zebra ")
    t.send("\r")
    t.expect("zebra: started")
    t.prompt()
    t.send("quit\r")
    assert t.wait() == 0


def test_start_and_stop_wait_in_the_shell_too(tm: Daemon, terminals: Callable[[], Terminal]
                                              ) -> None:
    t = terminals()
    t.prompt()
    t.send("start launcher\r")
    t.expect(r"launcher: ERROR \(spawn error\): ENOENT \(execve /nonexistent/launcher\)")
    t.prompt()
    t.send("start slow\r")  # starttime 2: RUNNING after it, the progress line meanwhile
    t.expect(r"waiting for slow \(STARTING\); \d s")
    t.expect("slow: started")
    t.prompt()
    t.send("stop slow\r")
    t.expect("slow: stopped")
    t.prompt()
    t.send("status slow\r")
    t.expect(r"slow\s+STOPPED")
    t.prompt()
    t.send("start --no-block slow\r")
    t.expect("slow: started")
    t.prompt()
    t.send("status slow\r")
    t.expect(r"slow\s+STARTING")
    t.prompt()
    t.send("exit\r")
    assert t.wait() == 0


def test_shutdown_from_the_shell_leaves_it(tm: Daemon, terminals: Callable[[], Terminal]) -> None:
    t = terminals()
    t.prompt()
    t.send("shutdown\r")
    t.expect("shutting down")
    assert t.wait() == 0
    assert tm.proc.wait(timeout=30) == 0


def test_commands_from_a_pipe(tm: Daemon, bus_address: str, shell_env: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "taskctl", "--address", bus_address],
                       input="status web\n\nstop nope\n# a comment\npid\n", capture_output=True,
                       text=True, timeout=30, env=shell_env)
    assert r.returncode == 0
    assert PROMPT not in r.stdout
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PID", "DESCRIPTION"]
    assert lines[-1] == str(tm.pid)
    assert "nope: ERROR (no such process)" in r.stderr and "Traceback" not in r.stderr
