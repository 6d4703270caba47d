"""`taskctl attach`'s pump (taskctl.console) with real descriptors: a pty
as the user's terminal (the test types into its master and reads what the
user would see), another pty as the console (its master is the terminal
taskmasterd would pass; its slave, read by the test, is the program), and a
socket pair as the output socket the daemon would feed."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from taskctl import console
from taskctl.console import End
from taskctl.detachkeys import DEFAULT, DetachFilter, parse

DETACH = b"\x1dd"
WAIT = 10.0  # seconds any one expected thing may take


def read_until(fd: int, expected: bytes, timeout: float = WAIT) -> bytes:
    """What `fd` gives until `expected` is in it (AssertionError after `timeout`)."""
    got = b""
    deadline = time.monotonic() + timeout
    while expected not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"{expected!r} not read within {timeout} s; got {got[-200:]!r}"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            got += chunk
    assert expected in got, f"{expected!r} not in {got[-200:]!r}"
    return got


def nothing_readable(fd: int) -> bool:
    r, _, _ = select.select([fd], [], [], 0)
    return not r


def size_of(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@dataclass
class Rig:
    user: int  # the user's terminal, master side: what the test types and sees
    stdin: int  # its slave: taskctl's stdin ...
    stdout: int  # ... and stdout (another fd of it)
    program: int  # the console's slave: what the program reads
    terminal: int  # the console's master, as passed by OpenConsole
    daemon: socket.socket  # the daemon's end of the output socket
    output: socket.socket  # taskctl's end
    fds: list[int] = field(default_factory=list)

    def type(self, data: bytes) -> None:
        os.write(self.user, data)


@pytest.fixture
def rig() -> Iterator[Rig]:
    user, stdin = os.openpty()
    terminal, program = os.openpty()
    tty.setraw(program)  # the program's terminal echoes nothing back (nobody reads the master)
    set_size(user, 24, 80)
    daemon, output = socket.socketpair()
    r = Rig(user, stdin, os.dup(stdin), program, terminal, daemon, output)
    r.fds = [user, stdin, r.stdout, program, terminal]
    yield r
    daemon.close()
    output.close()
    for fd in r.fds:
        os.close(fd)


def run_pump(rig: Rig, **kwargs: object) -> Callable[[], End]:
    """The pump in a thread (as taskctl would run it, but without signals:
    those need the main thread); returns a function waiting for its end."""
    result: list[End | BaseException] = []
    kwargs.setdefault("terminal", rig.terminal)
    kwargs.setdefault("resize", console.SizeForwarder(rig.stdin, kwargs["terminal"]))  # type: ignore[arg-type]
    kwargs.setdefault("stdin", rig.stdin)

    def body() -> None:
        try:
            with console.raw_mode(rig.stdin):
                result.append(console.pump(output=rig.output.fileno(), stdout=rig.stdout,
                                           detach=DetachFilter(parse(DEFAULT)),
                                           **kwargs))  # type: ignore[arg-type]
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()

    def wait(timeout: float = WAIT) -> End:
        thread.join(timeout)
        assert not thread.is_alive(), f"the pump did not end within {timeout} s"
        [outcome] = result
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    return wait


def raw_ready(fd: int) -> None:
    """Wait until the pump's thread has put the user's terminal in raw mode
    (keys typed before would be cooked: echoed, held until Enter)."""
    deadline = time.monotonic() + WAIT
    while termios.tcgetattr(fd)[3] & termios.ICANON:
        assert time.monotonic() < deadline, "never in raw mode"
        time.sleep(0.01)  # sleep-ok: polling step of a wait with a deadline


def test_keys_reach_the_program_and_output_reaches_the_user(rig: Rig) -> None:
    cooked = termios.tcgetattr(rig.stdin)
    wait = run_pump(rig)
    raw_ready(rig.stdin)
    rig.type(b"hello\r")
    read_until(rig.program, b"hello\r")
    rig.daemon.sendall(b"scrollback\r\nlive output\r\n")
    read_until(rig.user, b"scrollback\r\nlive output\r\n")
    rig.type(b"\x03\x1a")  # Ctrl-C, Ctrl-Z: bytes for the program, not signals for taskctl
    read_until(rig.program, b"\x03\x1a")
    rig.type(b"\x1d\x1d")  # the prefix twice: one literal prefix
    read_until(rig.program, b"\x1d")
    rig.type(b"before" + DETACH + b"after")
    end = wait()
    assert end.how == console.DETACHED and end.fresh
    assert read_until(rig.program, b"before").endswith(b"before")
    assert nothing_readable(rig.program)  # typed after the detach: not sent
    assert termios.tcgetattr(rig.stdin) == cooked  # the terminal restored


def test_a_detach_split_across_reads(rig: Rig) -> None:
    wait = run_pump(rig)
    raw_ready(rig.stdin)
    rig.type(b"x\x1d")
    read_until(rig.program, b"x")
    rig.daemon.sendall(b"meanwhile")  # the loop turns while the prefix is held
    read_until(rig.user, b"meanwhile")
    rig.type(b"d")
    assert wait().how == console.DETACHED
    assert nothing_readable(rig.program)  # the held prefix was never sent


def test_window_size_at_attach_and_on_change(rig: Rig) -> None:
    set_size(rig.user, 33, 101)
    wait = run_pump(rig)
    deadline = time.monotonic() + WAIT
    while size_of(rig.program) != (33, 101):  # copied at the start
        assert time.monotonic() < deadline, size_of(rig.program)
        time.sleep(0.01)  # sleep-ok: polling step of a wait with a deadline
    set_size(rig.user, 50, 132)  # without signals, the pump looks every SIZE_POLL s
    while size_of(rig.program) != (50, 132):
        assert time.monotonic() < deadline, size_of(rig.program)
        time.sleep(0.01)  # sleep-ok: polling step of a wait with a deadline
    raw_ready(rig.stdin)
    rig.type(DETACH)
    assert wait().how == console.DETACHED


def test_sigwinch_forwards_the_size_and_sigterm_ends(rig: Rig) -> None:
    """In the main thread, with the signals caught as taskctl does: the
    size follows SIGWINCH (not a poll), SIGTERM ends the pump, and the
    handlers from before are back after."""
    signals = console.Signals.install()
    assert signals is not None
    done: list[str] = []

    def user() -> None:  # the person at the terminal, and the window manager
        try:
            deadline = time.monotonic() + WAIT
            while size_of(rig.program) != (24, 80):
                assert time.monotonic() < deadline
                time.sleep(0.01)  # sleep-ok: polling step of a wait with a deadline
            set_size(rig.user, 40, 120)
            os.kill(os.getpid(), signal.SIGWINCH)
            while size_of(rig.program) != (40, 120):
                assert time.monotonic() < deadline
                time.sleep(0.01)  # sleep-ok: polling step of a wait with a deadline
            done.append("resized")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=user)
    try:
        helper.start()
        end = console.pump(output=rig.output.fileno(), stdout=rig.stdout, stdin=rig.stdin,
                           terminal=rig.terminal, detach=DetachFilter(parse(DEFAULT)),
                           signals=signals, resize=console.SizeForwarder(rig.stdin, rig.terminal))
    finally:
        signals.restore()
        helper.join(WAIT)
    assert done == ["resized"]
    assert end == End(console.SIGNALLED, True, signal.SIGTERM)
    assert signal.SIGWINCH in signals.seen
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd given back


def test_a_program_that_never_reads_does_not_hang_taskctl(rig: Rig) -> None:
    """The console's input fills up; the output still flows, and the detach
    keys, typed after far more than fits, still detach."""
    wait = run_pump(rig)
    raw_ready(rig.stdin)
    flood = b"y" * (4 * console.PENDING_MAX)
    os.set_blocking(rig.user, False)
    sent = 0
    deadline = time.monotonic() + WAIT
    while sent < len(flood):
        assert time.monotonic() < deadline, f"only {sent} bytes typed: taskctl stopped reading"
        try:
            sent += os.write(rig.user, flood[sent:sent + 4096])
        except BlockingIOError:
            select.select([], [rig.user], [], 0.1)
    rig.daemon.sendall(b"still here")
    read_until(rig.user, b"still here")
    os.set_blocking(rig.user, True)
    rig.type(DETACH)
    assert wait().how == console.DETACHED
    # the program, had it read, would have got the start of it
    assert read_until(rig.program, b"yyyy").startswith(b"yyyy")


def test_from_a_pipe_stdin_waits_for_the_program(rig: Rig) -> None:
    """stdin not a terminal (a script): not read while the program's buffer
    is full (nothing dropped); the output still flows; EOF of the output
    without a watcher ends the pump (CLOSED)."""
    r, w = os.pipe()
    rig.fds.append(r)
    wait = run_pump(rig, stdin=r, resize=None)
    script = b"z" * (1 << 20)  # far more than the pipe, the pump's buffer and the pty's hold

    def feed() -> None:
        with open(w, "wb") as pipe:  # buffered: write() writes it all
            pipe.write(script)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    rig.daemon.sendall(b"output flows")
    read_until(rig.user, b"output flows")
    assert writer.is_alive()  # held: the pump does not read what it cannot place
    got = b""
    os.set_blocking(rig.program, False)
    deadline = time.monotonic() + WAIT
    while len(got) < len(script):  # the program reads at last: everything arrives, in order
        assert time.monotonic() < deadline, f"{len(got)} of {len(script)}"
        select.select([rig.program], [], [], 0.1)
        try:
            got += os.read(rig.program, 65536)
        except BlockingIOError:
            pass
    assert got == script
    writer.join(WAIT)
    rig.daemon.sendall(b"no newline at the end")
    rig.daemon.close()
    end = wait()
    assert end == End(console.CLOSED, fresh=False)
    console.finish_output(rig.stdout, end)
    seen = read_until(rig.user, console.RESET_MODES + b"\r\r\n")  # restored: \n is \r\n
    assert seen.endswith(b"no newline at the end" + console.RESET_MODES + b"\r\r\n")


def test_read_only_sends_nothing_and_leaves_the_size(rig: Rig) -> None:
    set_size(rig.program, 10, 20)
    wait = run_pump(rig, terminal=None)
    raw_ready(rig.stdin)
    rig.type(b"ignored\r")
    rig.daemon.sendall(b"watching")
    read_until(rig.user, b"watching")
    rig.type(DETACH)
    assert wait().how == console.DETACHED
    assert nothing_readable(rig.program)
    assert size_of(rig.program) == (10, 20)


class FakeWatch:
    """The exit, told by the test through a pipe (the bus's part)."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()
        self.exited = False

    def fileno(self) -> int | None:
        return self.read

    def poll(self) -> bool:
        if select.select([self.read], [], [], 0)[0]:
            os.read(self.read, 1)
            self.exited = True
        return self.exited

    def say_exit(self) -> None:
        os.write(self.write, b"x")

    def close(self) -> None:
        os.close(self.read)
        os.close(self.write)


def test_an_exit_ends_once_the_output_is_drained(rig: Rig) -> None:
    watch = FakeWatch()
    try:
        wait = run_pump(rig, watcher=watch)
        raw_ready(rig.stdin)
        watch.say_exit()
        rig.daemon.sendall(b"last words\r\n")  # after the event: still shown
        end = wait()
    finally:
        watch.close()
    assert end == End(console.EXITED, fresh=True)
    read_until(rig.user, b"last words\r\n")


def test_output_end_then_the_exit_event(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    watch = FakeWatch()
    try:
        wait = run_pump(rig, watcher=watch)
        rig.daemon.sendall(b"bye")
        rig.daemon.close()  # the terminal closed first...
        read_until(rig.user, b"bye")
        watch.say_exit()  # ... then the event came, within EXIT_GRACE
        end = wait()
    finally:
        watch.close()
    assert end == End(console.EXITED, fresh=False)


def test_output_end_without_an_exit(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "EXIT_GRACE", 0.2)
    watch = FakeWatch()
    try:
        wait = run_pump(rig, watcher=watch)
        rig.daemon.close()  # dropped as a slow viewer, say: no exit follows
        end = wait()
    finally:
        watch.close()
    assert end.how == console.CLOSED and not watch.exited


def test_the_user_terminal_gone_ends_quietly(rig: Rig) -> None:
    wait = run_pump(rig, stdin=None, resize=None)
    raw_ready(rig.stdin)
    os.close(rig.user)  # the terminal emulator closed: writes to its slave fail (EIO)
    rig.fds.remove(rig.user)
    rig.daemon.sendall(b"to nobody")
    assert wait().how == console.HANGUP


def test_readline_keeps_its_sigwinch_handler() -> None:
    """readline catches SIGWINCH in C (Python's getsignal says SIG_DFL):
    after an attach, the shell's line editing must still follow resizes."""
    code = """if True:
        import readline, signal
        from taskctl.console import Signals
        def caught():
            for line in open("/proc/self/status"):
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGWINCH - 1)))
        assert caught(), "readline did not catch SIGWINCH"
        s = Signals.install()
        s.restore()
        assert caught(), "SIGWINCH lost its handler"
        """
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=30)
    assert r.returncode == 0, r.stderr
