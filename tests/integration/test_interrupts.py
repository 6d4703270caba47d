"""Ctrl-C always stops `taskctl events` and `taskctl tail -f`, as commands and
in the shell (issue 11, section 8).

Two causes were found for a taskctl that did not exit after SIGINT, each
reproduced here deterministically:
- SIGINT ignored at start (a background job of a shell without job control:
  a script, `sh -c 'pytest ... &'`): Python keeps it ignored, and nothing
  but SIGTERM stopped `events`.
- SIGINT taken by another thread (`taskmasterd --shell` has the daemon's),
  or landing just before the blocking wait starts: the main thread, asleep in
  the wait, was never woken, and `events` hung until the next event.
Waits are on taskctl's output and exit, with timeouts; nothing sleeps to
wait for something."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskctl.client import Client
from taskctl.model import StateChange
from taskmasterd.busaddr import BusChoice
from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig
from tests.integration.test_shell import CTRL_C, Terminal
from tests.integration.test_taskctl import Lines, ctrl_c_while_waiting, interrupt, run_on_a_terminal

Start = Callable[..., Daemon]
# Runs taskctl with SIGINT ignored, as a shell without job control starts a
# background command (exec keeps an ignored disposition).
IGNORING_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, [sys.executable, '-m', 'taskctl', *sys.argv[1:]])")


@pytest.fixture
def tm(write_config: WriteConfig, daemons: Start) -> Daemon:
    d = daemons(write_config({
        "talker": {"cmd": "sh -c 'echo hello from talker; exec sleep 100000'", "starttime": 0},
    }))
    d.wait_for(event("RUNNING", "talker"))
    return d


def settle(client: Client) -> None:
    """Drop the signals of what happened before the test: the initial start's
    may reach a fresh subscriber after the log line the fixture waited on (two
    channels). A reply from the daemon comes after every signal it sent
    before it (the bus keeps one connection's messages in order), so after a
    call every earlier signal is in the client's queue."""
    client.list_processes()
    while client.next_event(timeout=0) is not None:
        pass


def spawn(address: str, *args: str, ignoring: bool = False) -> subprocess.Popen[bytes]:
    head = [sys.executable, "-c", IGNORING_SIGINT] if ignoring else [sys.executable, "-m", "taskctl"]
    return subprocess.Popen([*head, "--address", address, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigint_stops_events_and_tail_f_even_when_ignored_at_start(
        tm: Daemon, bus_address: str) -> None:
    events = spawn(bus_address, "events", ignoring=True)
    tail = spawn(bus_address, "tail", "-f", "talker", ignoring=True)
    try:
        assert Lines(events.stderr).next().startswith("taskctl: following the events")
        assert Lines(tail.stdout).next() == "hello from talker"
    finally:
        results = [interrupt(p) for p in (events, tail)]
    assert all(code == 130 and "Traceback" not in err for code, err in results), results


def test_sigint_stops_a_start_that_waits_even_when_ignored_at_start(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    """start waits for RUNNING (starttime 600 s here): SIGINT ends the wait
    (130, the start goes on), whatever the disposition taskctl started with."""
    d = daemons(write_config({"slower": {"cmd": "sleep 100000", "autostart": False,
                                         "starttime": 600}}))
    d.wait_for(lambda ln: ln.kind == "DAEMON_START")
    # stderr on a terminal: the progress line says when it waits
    waiting = run_on_a_terminal(bus_address, "start", "slower",
                                head=(sys.executable, "-c", IGNORING_SIGINT))
    code, screen = ctrl_c_while_waiting(*waiting, "slower")
    assert code == 130
    assert "stopped waiting: slower is still STARTING (the start goes on)" in screen
    assert "Traceback" not in screen


def test_ctrl_c_stops_events_in_the_shell_even_when_ignored_at_start(
        tm: Daemon, bus_address: str, workdir: Path) -> None:
    inputrc = workdir / "inputrc"
    inputrc.write_text("set enable-bracketed-paste off\nset bell-style none\n")
    env = {**os.environ, "TERM": "xterm", "INPUTRC": str(inputrc), "HOME": str(workdir),
           "TASKCTL_HISTFILE": str(workdir / "history")}
    t = Terminal([sys.executable, "-c", IGNORING_SIGINT, "--address", bus_address], env)
    try:
        t.prompt()
        for command in ("events", "tail -f talker"):
            t.send(command + "\r")
            t.expect("following the events" if command == "events" else "hello from talker")
            t.send(CTRL_C)
            t.prompt()
        t.send("exit\r")
        assert t.wait() == 0
    finally:
        t.close()


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """This process's SIGINT raises KeyboardInterrupt for the test (the suite
    may have been started with it ignored), and is put back after."""
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, saved)


def blocked_in_a_syscall(tid: int) -> bool:
    """Whether the thread sits in a system call (the same one, seen 3 times
    10 ms apart: not a passing one, such as taking the GIL)."""
    seen = []
    for _ in range(3):
        with open(f"/proc/self/task/{tid}/syscall") as f:
            seen.append(f.read().split()[0])
        time.sleep(0.01)  # sleep-ok: the sampling interval of the observation
    return seen[0] != "running" and len(set(seen)) == 1


def test_a_sigint_taken_by_another_thread_stops_the_wait_for_events(
        tm: Daemon, bus_address: str, sigint_raises: None) -> None:
    """The deterministic form of the race: the signal's C handler runs (in
    another thread here; in the main one just before its wait, under load)
    and the main thread is already asleep in the wait for events."""
    client = Client(BusChoice("address", bus_address))
    main = threading.get_native_id()
    interrupted = threading.Event()
    outcome: dict[str, bool] = {}

    def other_thread() -> None:
        deadline = time.monotonic() + 10
        while not blocked_in_a_syscall(main) and time.monotonic() < deadline:
            pass
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # taken by this thread
        outcome["woken by the signal"] = interrupted.wait(10)
        if not interrupted.is_set():  # unblock the main thread by an event
            subprocess.run([sys.executable, "-m", "taskctl", "--address", bus_address,
                            "restart", "talker"], capture_output=True, timeout=30)

    try:
        client.subscribe()
        settle(client)
        helper = threading.Thread(target=other_thread)
        helper.start()
        try:
            got = client.next_event()
        except KeyboardInterrupt:
            interrupted.set()
            got = None
        helper.join()
    finally:
        client.close()
    assert outcome == {"woken by the signal": True}, f"the wait ended with {got}"


def test_sigint_at_any_moment_of_the_wait_ends_taskctl(tm: Daemon, bus_address: str) -> None:
    """SIGINT at moments spread over the first 50 ms of following (the wait
    being entered, then asleep): taskctl always exits with 130, quietly.
    (Before Python has taken SIGINT at start-up, the default action kills it,
    as any program: not taskctl's to change.)"""
    rng = random.Random(11)
    for i in range(16):
        args = ("events",) if i % 2 else ("tail", "-f", "talker")
        p = spawn(bus_address, *args)
        first = Lines(p.stderr if args[0] == "events" else p.stdout).next()
        assert first
        time.sleep(rng.uniform(0, 0.05))  # sleep-ok: the moment itself is what varies
        code, err = interrupt(p)
        assert (code, "Traceback" in err) == (130, False), (args, err)


def test_events_still_come_after_the_wait_changes(tm: Daemon, bus_address: str) -> None:
    """The interruptible wait loses no event: a restart's four changes, in order."""
    client = Client(BusChoice("address", bus_address))
    try:
        client.subscribe()
        settle(client)
        subprocess.run([sys.executable, "-m", "taskctl", "--address", bus_address, "restart",
                        "talker"], capture_output=True, timeout=30, check=True)
        seen: list[tuple[str, str]] = []
        while len(seen) < 4:
            got = client.next_event(timeout=10)
            assert got is not None, seen
            if isinstance(got, StateChange):
                seen.append((got.old, got.new))
        assert client.next_event(timeout=0) is None
    finally:
        client.close()
    assert seen == [("RUNNING", "STOPPING"), ("STOPPING", "STOPPED"),
                    ("STOPPED", "STARTING"), ("STARTING", "RUNNING")]
