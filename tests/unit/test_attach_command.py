"""`taskctl attach` as a command (taskctl.attach) against a stand-in client:
the order of the requests, the lines and exit codes, the exit seen on the
bus, errors; and its grammar (help, detach keys, completion)."""

from __future__ import annotations

import io
import os
import select
import socket
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from taskctl import attach, cli, console
from taskctl.commands import execute
from taskctl.model import CallError, Event, OwnerChanged, ProcessRow, StateChange, Unreachable
from taskctl.parser import build_parser, help_text
from taskctl.shell import complete_words

WAIT = 10.0
ERR = "org.taskmaster.Taskmaster1.Error."


def row(name: str, state: str = "RUNNING", pid: int = 42) -> ProcessRow:
    return ProcessRow(name, name.partition(":")[0], state, pid, 0, 1, "", "", 0)


class FakeClient:
    """The Client methods attach uses; the bus is a pipe the test writes a
    byte into when it queues an event."""

    host = None

    def __init__(self, rows: list[ProcessRow], refuse: dict[str, CallError] | None = None) -> None:
        self.rows = rows
        self.refuse = refuse or {}
        self.calls: list[str] = []
        self.events: deque[Event] = deque()
        self.bus_read, self.bus_write = os.pipe()
        self.daemon, self.output = socket.socketpair()
        self.terminal, self.program = os.openpty()
        tty.setraw(self.program)
        self.subscribed = False

    @contextmanager
    def subscription(self) -> Iterator[FakeClient]:
        self.calls.append("subscribe")
        self.subscribed = True
        try:
            yield self
        finally:
            self.subscribed = False
            self.calls.append("unsubscribe")

    def _fd(self, member: str, fd: int) -> int:
        self.calls.append(member)
        assert self.subscribed, f"{member} before subscribing"
        if member in self.refuse:
            raise self.refuse[member]
        return os.dup(fd)

    def watch_console(self, process: str) -> int:
        return self._fd("WatchConsole", self.output.fileno())

    def open_console(self, process: str) -> int:
        return self._fd("OpenConsole", self.terminal)

    def list_processes(self) -> list[ProcessRow]:
        self.calls.append("ListProcesses")
        return self.rows

    def bus_fd(self) -> int:
        return self.bus_read

    def next_event(self, timeout: float | None = None) -> Event | None:
        assert timeout == 0
        if select.select([self.bus_read], [], [], 0)[0]:
            os.read(self.bus_read, 1)
        return self.events.popleft() if self.events else None

    def send(self, event: Event) -> None:
        self.events.append(event)
        os.write(self.bus_write, b".")

    def gone(self, reason: str) -> Unreachable:
        return Unreachable("the session bus", reason, kind="user", cause=Unreachable.LOST)

    def close(self) -> None:
        self.daemon.close()
        self.output.close()
        for fd in (self.bus_read, self.bus_write, self.terminal, self.program):
            os.close(fd)


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """taskctl's stdin: a pipe (not a terminal: no raw mode); the test
    writes into the fd yielded."""
    r, w = os.pipe()
    fake = open(r, encoding="utf-8")  # noqa: SIM115  closed below
    monkeypatch.setattr(sys, "stdin", fake)
    yield w
    os.close(w)
    fake.close()


@pytest.fixture
def screen() -> Iterator[tuple[Any, int]]:
    """taskctl's stdout (a pipe) and the end the test reads."""
    r, w = os.pipe()
    out = open(w, "w", encoding="utf-8")  # noqa: SIM115  closed below
    yield out, r
    out.close()
    os.close(r)


class Run:
    """`taskctl ARGS` with the client in a thread; `err` collects stderr."""

    def __init__(self, client: FakeClient, out: Any, argv: list[str]) -> None:
        self.err = io.StringIO()
        args = build_parser().parse_args(argv)
        self.code: list[int | BaseException] = []

        def body() -> None:
            try:
                self.code.append(execute(client, args, out=out, err=self.err))  # type: ignore[arg-type]
            except BaseException as exc:
                self.code.append(exc)
        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()

    def said(self, text: str) -> None:
        deadline = time.monotonic() + WAIT
        while text not in self.err.getvalue():
            assert time.monotonic() < deadline, self.err.getvalue()
            assert self.thread.is_alive() or text in self.err.getvalue(), self.err.getvalue()
            time.sleep(0.01)  # sleep-ok: polling step of a wait with a deadline

    def result(self) -> int:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "attach did not end"
        [code] = self.code
        if isinstance(code, BaseException):
            raise code
        return code


def read_until(fd: int, expected: bytes) -> bytes:
    got = b""
    deadline = time.monotonic() + WAIT
    while expected not in got:
        assert time.monotonic() < deadline, got
        if select.select([fd], [], [], 0.1)[0]:
            got += os.read(fd, 65536)
    return got


@pytest.fixture
def client() -> Iterator[FakeClient]:
    c = FakeClient([row("web:0"), row("web:1", pid=43), row("db", "STOPPED", 0)])
    yield c
    c.close()


def test_type_then_detach(client: FakeClient, stdin: int, screen: tuple[Any, int],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKCTL_DETACH_KEYS", raising=False)
    out, seen = screen
    run = Run(client, out, ["attach", "web:0"])
    run.said("attached to web:0 (pid 42); detach: Ctrl-] d\n")
    client.daemon.sendall(b"$ ")
    read_until(seen, b"$ ")
    os.write(stdin, b"uptime\r")
    read_until(client.program, b"uptime\r")
    os.write(stdin, b"\x1dd")
    assert run.result() == 0
    assert run.err.getvalue().endswith("detached from web:0\n")
    assert client.calls == ["subscribe", "WatchConsole", "OpenConsole", "ListProcesses",
                            "unsubscribe"]
    assert read_until(seen, b"\n") == b"\n"  # after "$ ": taskctl's last words on a fresh line


def test_the_process_exits(client: FakeClient, stdin: int, screen: tuple[Any, int]) -> None:
    out, seen = screen
    run = Run(client, out, ["attach", "--read-only", "--detach-keys", "ctrl-p,ctrl-q",
                            "web:1"])
    run.said("attached to web:1 (pid 43), read-only; detach: Ctrl-P Ctrl-Q\n")
    client.send(StateChange("web:1", "web", "RUNNING", "STOPPING", 43, 0, False, 0))
    client.send(StateChange("web:0", "web", "RUNNING", "EXITED", 42, 1, False, 0))  # another
    client.daemon.sendall(b"shutting down\r\n")
    read_until(seen, b"shutting down\r\n")
    assert run.thread.is_alive()  # STOPPING: not down yet; web:0's exit is not ours
    client.send(StateChange("web:1", "web", "STOPPING", "STOPPED", 43, -9, False, 0))
    assert run.result() == 0
    assert run.err.getvalue().endswith("web:1 exited: killed by SIGKILL\n")
    assert "OpenConsole" not in client.calls  # read-only: watching only


def test_the_console_closes_without_an_exit(client: FakeClient, stdin: int,
                                            screen: tuple[Any, int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "EXIT_GRACE", 0.2)
    out, _seen = screen
    run = Run(client, out, ["attach", "web:0"])
    run.said("attached to")
    client.daemon.close()  # dropped as a slow viewer
    assert run.result() == 1
    assert run.err.getvalue().endswith("web:0: the console closed\n")


def test_the_daemon_leaves(client: FakeClient, stdin: int, screen: tuple[Any, int],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "EXIT_GRACE", 0.2)
    out, _seen = screen
    run = Run(client, out, ["attach", "web:0"])
    run.said("attached to")
    client.send(OwnerChanged("", 0))
    client.daemon.close()
    assert run.result() == 7
    assert "taskmasterd left the bus while taskctl was attached" in run.err.getvalue()


@pytest.mark.parametrize(("refuse", "argv", "code", "line"), [
    ({"WatchConsole": CallError(ERR + "NoConsole", "db has no console: true")}, ["attach", "db"],
     1, "db: ERROR (no console): db has no console: true\n"),
    ({"WatchConsole": CallError(ERR + "NotRunning", "db is not running")}, ["attach", "db"],
     1, "db: ERROR (not running): db is not running\n"),
    ({"OpenConsole": CallError("org.freedesktop.DBus.Error.AccessDenied", "")},
     ["attach", "web:0"], 1, "web:0: ERROR (access denied): only root and members"),
    ({"WatchConsole": CallError(ERR + "BadName", "web names 2 processes, each with its own "
                                "console: name one, e.g. web:0")}, ["attach", "web"],
     4, "web: ERROR (bad name): web names 2 processes, each with its own console: name one, "
        "e.g. web:0\n"),
    ({"WatchConsole": CallError(ERR + "NoSuchProgram", "no process nope")}, ["attach", "nope"],
     4, "nope: ERROR (no such process): no process nope\n"),
])
def test_refusals(refuse: dict[str, CallError], argv: list[str], code: int, line: str,
                  screen: tuple[Any, int], stdin: int) -> None:
    c = FakeClient([row("web:0"), row("web:1", pid=43), row("db", "STOPPED", 0)], refuse)
    try:
        run = Run(c, screen[0], argv)
        assert run.result() == code
        assert line in run.err.getvalue()
        assert "attached" not in run.err.getvalue()
        assert c.calls[-1] == "unsubscribe"
    finally:
        c.close()


def test_detach_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert attach.chosen_keys(None, {}) == b"\x1dd"
    assert attach.chosen_keys(None, {"TASKCTL_DETACH_KEYS": "ctrl-a,d"}) == b"\x01d"
    assert attach.chosen_keys(b"\x11", {"TASKCTL_DETACH_KEYS": "ctrl-a,d"}) == b"\x11"
    with pytest.raises(ValueError, match=r"\$TASKCTL_DETACH_KEYS: key 1 of 'alt-x'"):
        attach.chosen_keys(None, {"TASKCTL_DETACH_KEYS": "alt-x"})


def test_bad_detach_keys_are_bad_usage(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.main(["attach", "--detach-keys", "ctrl-1", "web:0"]) == 2
    assert "'ctrl-1', is neither ctrl-X" in capsys.readouterr().err
    monkeypatch.setenv("TASKCTL_DETACH_KEYS", "ctrl-a,,d")
    err = io.StringIO()
    args = build_parser().parse_args(["attach", "web:0"])
    assert execute(FakeClientNeverCalled(), args, out=io.StringIO(), err=err) == 2  # type: ignore[arg-type]
    assert err.getvalue() == ("taskctl: $TASKCTL_DETACH_KEYS: key 2 of 'ctrl-a,,d' is empty "
                              "(keys are separated by one comma)\n")


class FakeClientNeverCalled:
    host = None

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} called")


def test_is_exit() -> None:
    def change(new: str, pid: int = 42, process: str = "web:0") -> StateChange:
        return StateChange(process, "web", "RUNNING", new, pid, 0, True, 0)
    assert attach.is_exit(change("EXITED"), "web:0", 42)
    assert attach.is_exit(change("BACKOFF"), "web:0", 42)
    assert attach.is_exit(change("STOPPED"), "web:0", 0)  # pid unknown: any end
    assert not attach.is_exit(change("STOPPING"), "web:0", 42)
    assert not attach.is_exit(change("RUNNING"), "web:0", 42)
    assert not attach.is_exit(change("EXITED", pid=7), "web:0", 42)  # an earlier process
    assert not attach.is_exit(change("EXITED", process="web:1"), "web:0", 42)
    assert not attach.is_exit(OwnerChanged("", 0), "web:0", 42)


def test_lines() -> None:
    assert attach.attached_line("web:0", 1234, b"\x1dd", False) == \
        "attached to web:0 (pid 1234); detach: Ctrl-] d"
    assert attach.attached_line("db", 0, b"\x10\x11", True) == \
        "attached to db, read-only; detach: Ctrl-P Ctrl-Q"


def test_help_and_completion() -> None:
    assert "attach [--read-only] [--detach-keys KEYS] PROCESS" in help_text()
    text = " ".join(help_text("attach").split())
    for words in ("--read-only", "--detach-keys", "console: true", "Exit status"):
        assert words in text
    names = lambda: ["all", "db", "web", "web:0", "web:1"]  # noqa: E731
    assert complete_words("attach ", "web:", names) == ["web:0", "web:1"]
    assert complete_words("attach web:0 ", "", names) == []
    assert complete_words("attach --detach-keys ", "", names) == []
    assert complete_words("attach --detach-keys ctrl-a,d ", "d", names) == ["db"]
    assert complete_words("attach --read-only ", "d", names) == ["db"]
    assert complete_words("attach ", "--r", names) == ["--read-only"]
    assert complete_words("", "att", names) == ["attach"]
    assert complete_words("tail -c 100 ", "d", names) == ["db"]
