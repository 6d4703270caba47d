"""`taskmasterd --shell`: the daemon with taskctl's shell on its terminal (a pty)."""

from __future__ import annotations

import ctypes
import os
import platform
import pty
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.harness import processes_with_env, wait_until
from tests.integration.conftest import WriteConfig

SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine(), 234)


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the program
            os.execve(argv[0], argv, env)
        self.out = b""

    def expect(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"no {text!r} within {timeout}s; screen:\n"
                                     + self.out.decode(errors="replace"))
            try:
                self.out += os.read(self.fd, 65536)
            except OSError:  # EIO: the program has gone
                raise AssertionError(f"exited before {text!r}; screen:\n"
                                     + self.out.decode(errors="replace")) from None
        return self.out.decode(errors="replace")

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode())

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                raise AssertionError("taskmasterd --shell did not exit")
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.out += os.read(self.fd, 65536)
                except OSError:
                    pass  # EIO once it has closed the terminal; keep waiting for the exit


def test_shell_mode_serves_the_bus_and_shutdown_stops_everything(
        write_config: WriteConfig, bus_address: str, workdir: Path) -> None:
    marker = f"TM_SHELL_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    cfg = write_config({"web": {"cmd": "sleep 100000", "numprocs": 2, "starttime": 0,
                                "env": {key: value}}})
    env = {**os.environ, "TASKCTL_HISTFILE": str(workdir / "history"), "TERM": "dumb"}
    term = Terminal([sys.executable, "-m", "taskmasterd", "--shell", "-c", str(cfg),
                     "--address", bus_address], env)
    term.expect("taskmaster> ")
    term.type("status\r")
    screen = term.expect("web:1")
    assert "RUNNING" in screen
    # D-Bus clients are served meanwhile.
    r = subprocess.run(["busctl", f"--address={bus_address}", "call", "org.taskmaster.Taskmaster1",
                        "/org/taskmaster/Taskmaster1", "org.taskmaster.Taskmaster1.Manager",
                        "ListProcesses"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and '"web:0"' in r.stdout
    assert len(processes_with_env(marker)) == 2
    term.type("shutdown\r")
    assert term.wait() == 0
    assert processes_with_env(marker) == []
    # Nothing of the daemon's log went to the terminal: it belongs to the shell.
    assert "STARTING pid=" not in term.out.decode(errors="replace")
    assert "web:0 STARTING" in (workdir / "taskmasterd.log").read_text()


def test_ctrl_d_stops_everything_too(write_config: WriteConfig, bus_address: str,
                                     workdir: Path) -> None:
    marker = f"TM_SHELL_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    cfg = write_config({"web": {"cmd": "sleep 100000", "starttime": 0, "env": {key: value}}})
    env = {**os.environ, "TASKCTL_HISTFILE": str(workdir / "history"), "TERM": "dumb"}
    term = Terminal([sys.executable, "-m", "taskmasterd", "--shell", "-c", str(cfg),
                     "--address", bus_address], env)
    term.expect("taskmaster> ")
    term.type("\x04")
    assert term.wait() == 0
    assert processes_with_env(marker) == []


def test_sigusr2_reopens_the_log_file_in_shell_mode_too(write_config: WriteConfig, bus_address: str,
                                                         workdir: Path) -> None:
    cfg = write_config({"web": {"cmd": "sleep 100000", "starttime": 0}})
    env = {**os.environ, "TASKCTL_HISTFILE": str(workdir / "history"), "TERM": "dumb"}
    term = Terminal([sys.executable, "-m", "taskmasterd", "--shell", "-c", str(cfg),
                     "--address", bus_address], env)
    term.expect("taskmaster> ")
    log = workdir / "taskmasterd.log"
    log.rename(workdir / "taskmasterd.log.1")
    # To the main thread (tgkill), where Python runs signal handlers, once it
    # waits for input in readline's select(): a signal that comes while it is
    # elsewhere (another thread, or just before that select) waits for the next
    # key -- as SIGHUP and SIGTERM do in this mode. What is tested here is
    # that it is handled at all: its default action would end the process.
    wait_until("the shell to wait for input", lambda: Path(f"/proc/{term.pid}/wchan").read_text()
               .startswith(("poll_schedule", "do_select")), timeout=20)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(SYS_TGKILL, term.pid, term.pid, signal.SIGUSR2) == 0, ctypes.get_errno()
    wait_until("the log file to be reopened", lambda: "SIGUSR2: reopened the log file"
               in (log.read_text() if log.exists() else ""), timeout=20)
    term.type("shutdown\r")
    assert term.wait() == 0
