"""The D-Bus service of a real daemon on a private bus: busctl and a dbus-next
client, as SPEC section 5 says. Waits are on signals or log lines with
timeouts; a client always subscribes before it acts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus

from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
NAME = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
SLEEPER = "sleep 100000"


def busctl(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["busctl", f"--address={address}", *args], capture_output=True, text=True,
                       timeout=30)
    if check:
        assert r.returncode == 0, r.stderr
    return r


class Client:
    """A dbus-next client that records every signal from the service."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.signals: asyncio.Queue[Message] = asyncio.Queue()
        self.history: list[Message] = []

    async def call(self, member: str, signature: str = "", body: list[Any] | None = None, *,
                   path: str = PATH, interface: str = MANAGER) -> Message:
        reply = await self.bus.call(Message(destination=NAME, path=path, interface=interface,
                                            member=member, signature=signature, body=body or []))
        assert reply is not None
        return reply

    async def ok(self, member: str, signature: str = "", body: list[Any] | None = None,
                 **kw: Any) -> Any:
        reply = await self.call(member, signature, body, **kw)
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
        return reply.body

    async def error(self, member: str, signature: str = "", body: list[Any] | None = None,
                    **kw: Any) -> tuple[str, str]:
        reply = await self.call(member, signature, body, **kw)
        assert reply.message_type is MessageType.ERROR, reply.body
        return reply.error_name or "", reply.body[0] if reply.body else ""

    async def next_signal(self, pred: Callable[[Message], bool], timeout: float = 10) -> Message:
        """The next matching signal; every signal taken is kept in `history`."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.signals.get()
                self.history.append(msg)
                if pred(msg):
                    return msg


@asynccontextmanager
async def client(address: str) -> AsyncIterator[Client]:
    bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    c = Client(bus)

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.sender != "org.freedesktop.DBus":
            c.signals.put_nowait(msg)
    bus.add_message_handler(on_message)
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                           body=[f"type='signal',sender='{NAME}'"]))
    try:
        yield c
    finally:
        bus.disconnect()


def state_change(process: str, new: str) -> Callable[[Message], bool]:
    return lambda m: m.member == "ProcessStateChanged" and m.body[0] == process and m.body[3] == new


@pytest.fixture
def vogsphere(write_config: WriteConfig, daemons: Start) -> Daemon:
    cfg = write_config({"vogsphere": {"cmd": SLEEPER, "starttime": 0.2, "numprocs": 2},
                        "web": {"cmd": SLEEPER, "starttime": 0}})
    d = daemons(cfg)
    d.wait_count(lambda ln: ln.kind == "RUNNING", 3)
    return d


def test_busctl_restart_introspect_and_properties(vogsphere: Daemon, bus_address: str) -> None:
    before = vogsphere.latest_pids()
    r = busctl(bus_address, "call", NAME, PATH, MANAGER, "Restart", "s", "vogsphere")
    assert r.stdout.split() == ["as", "2", '"vogsphere:0"', '"vogsphere:1"']
    vogsphere.wait_count(event("RUNNING"), 2)
    after = vogsphere.latest_pids()
    assert after["vogsphere:0"] != before["vogsphere:0"] and after["web"] == before["web"]
    intro = busctl(bus_address, "introspect", NAME, PATH).stdout
    assert MANAGER in intro and "org.freedesktop.DBus.ObjectManager" in intro
    assert ".ListProcesses" in intro and ".ProcessStateChanged" in intro
    prog = busctl(bus_address, "introspect", NAME, f"{PATH}/program/vogsphere").stdout
    assert "org.taskmaster.Taskmaster1.Program" in prog and ".Processes" in prog
    # The ObjectManager is the root's alone (issue 12).
    assert "org.freedesktop.DBus.ObjectManager" not in prog
    state = busctl(bus_address, "get-property", NAME, PATH, MANAGER, "State").stdout
    assert state.strip() == 's "running"'
    nprocs = busctl(bus_address, "get-property", NAME, f"{PATH}/program/vogsphere",
                    "org.taskmaster.Taskmaster1.Program", "NumProcs").stdout
    assert nprocs.strip() == "u 2"


def test_subscriber_sees_restart_in_order(vogsphere: Daemon, bus_address: str) -> None:
    async def main() -> None:
        async with client(bus_address) as c:
            old = vogsphere.latest_pids()["web"]
            assert await c.ok("Restart", "s", ["web"]) == [["web"]]
            seen = []
            while len(seen) < 4:
                msg = await c.next_signal(lambda m: m.member == "ProcessStateChanged"
                                          and m.body[0] == "web")
                seen.append((msg.body[2], msg.body[3]))
                if msg.body[3] == "STARTING":
                    assert msg.body[4] != old  # the new pid
            assert seen == [("RUNNING", "STOPPING"), ("STOPPING", "STOPPED"),
                            ("STOPPED", "STARTING"), ("STARTING", "RUNNING")]
            props = await c.next_signal(lambda m: m.member == "PropertiesChanged"
                                        and m.path == f"{PATH}/program/web")
            assert props.body[0] == "org.taskmaster.Taskmaster1.Program"
            # A transition sends what it changes; Command/NumProcs only on a reload.
            changed = props.body[1]
            assert set(changed) == {"State", "Processes"}
            [[name, state, _pid, _restarts, *_times]] = changed["Processes"].value
            assert name == "web" and state in ("STOPPING", "STOPPED", "STARTING", "RUNNING")
    asyncio.run(main())


def test_list_processes_struct_array(vogsphere: Daemon, bus_address: str) -> None:
    async def main() -> None:
        async with client(bus_address) as c:
            [rows] = await c.ok("ListProcesses")
            by_name = {r[0]: r for r in rows}
            assert set(by_name) == {"vogsphere:0", "vogsphere:1", "web"}
            (_name, program, state, pid, status, started_us, description, err, restarts,
             last_status, last_us, last_expected) = by_name["web"]
            assert (program, state, err, restarts) == ("web", "RUNNING", "", 0)
            assert pid == vogsphere.latest_pids()["web"] and status == 0
            assert started_us > 1_600_000_000 * 1_000_000
            assert description.startswith(f"pid {pid}, uptime")
            assert (last_status, last_us, last_expected) == (0, 0, False)  # never exited
    asyncio.run(main())


def test_last_exit_and_restarts_for_monitoring(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    """A crash (SIGKILL) is read back, after the automatic restart, from
    ListProcesses and from the program's Processes: status (here a signal),
    time, expected; restarts and the new start time."""
    d = daemons(write_config({"web": {"cmd": SLEEPER, "starttime": 0, "autorestart": True}}))
    first = d.wait_for(event("RUNNING", "web")).pid

    async def main() -> None:
        async with client(bus_address) as c:
            before = time.time()
            await c.ok("Signal", "ss", ["web", "KILL"])
            await c.next_signal(state_change("web", "EXITED"))
            await c.next_signal(state_change("web", "RUNNING"))
            after = time.time()
            [rows] = await c.ok("ListProcesses")
            [row] = rows
            assert row[2] == "RUNNING" and row[3] not in (0, first)
            assert row[8:10] == [1, -9] and row[11] is False  # NRestarts, killed by 9, unexpected
            assert before - 0.01 <= row[10] / 1e6 <= after + 0.01  # µs since the epoch
            assert row[10] <= row[5]  # exited, then started again
            [processes] = await c.ok("Get", "ss", ["org.taskmaster.Taskmaster1.Program",
                                                   "Processes"], path=f"{PATH}/program/web",
                                     interface="org.freedesktop.DBus.Properties")
            assert processes.signature == "a(ssuutitb)"
            assert processes.value == [[row[0], row[2], row[3], row[8], row[5], *row[9:]]]
    asyncio.run(main())


def test_reload_during_shutdown_is_refused(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    # Ignores SIGTERM: the shutdown lasts its stoptime (or until the test
    # kills it), time enough to try.
    d = daemons(write_config({"stubborn": {"cmd": "sh -c 'trap \"\" TERM; exec sleep 100000'",
                                           "starttime": 0, "stoptime": 60}}))
    d.wait_for(event("RUNNING", "stubborn"))

    async def main() -> None:
        async with client(bus_address) as c:
            await c.ok("Shutdown")
            name, text = await c.error("Reload")
            assert name == "org.taskmaster.Taskmaster1.Error.ShuttingDown", text
            assert "shutting down" in text
            os.kill(d.pid, signal.SIGHUP)  # the same refusal, logged
            d.wait_text("SIGHUP ignored: taskmasterd is shutting down")
    asyncio.run(main())
    os.killpg(d.latest_pids()["stubborn"], signal.SIGKILL)  # the shutdown ends with it
    assert d.terminate() == 0
    assert not [ln for ln in d.lines if ln.kind == "RELOAD"]
    assert "Traceback" not in d.text()


@pytest.mark.parametrize(("member", "signature", "body", "error", "phrase"), [
    ("Start", "s", ["nope"], "NoSuchProgram", "no such program"),
    ("Stop", "s", ["nope*"], "NoSuchProgram", "no program matches"),
    ("Restart", "s", ["web:1"], "NoSuchProgram", "numbered 0 to 0"),
    ("Restart", "s", ["web:one"], "BadName", "expected web:N"),
    ("Start", "s", ["x" * 100_000], "BadName", "at most"),
    ("Start", "s", [""], "BadName", "1 to 256"),
    ("Start", "s", ["web\u00e9\u0000"[:-1] + "\n"], "BadName", "control characters"),
    ("Signal", "ss", ["web", "SIGNOPE"], "BadName", "unknown signal"),
    ("Signal", "ss", ["web", "99"], "BadName", "99 is not a signal number"),
    ("Start", "s", ["web"], "AlreadyStarted", "already RUNNING"),
    ("OpenLog", "ss", ["web", "stdin"], "BadName", "stdout or stderr"),
    ("OpenLog", "ss", ["ghost", "stdout"], "NoSuchProgram", "no such process"),
])
def test_bad_calls_get_named_errors_and_the_daemon_keeps_serving(
        vogsphere: Daemon, bus_address: str, member: str, signature: str, body: list[Any],
        error: str, phrase: str) -> None:
    async def main() -> None:
        async with client(bus_address) as c:
            name, text = await c.error(member, signature, body)
            assert name == f"org.taskmaster.Taskmaster1.Error.{error}"
            assert phrase in text and "Traceback" not in text
            assert await c.ok("ListProcesses")
    asyncio.run(main())
    assert "Traceback" not in vogsphere.text()


def test_wrong_signature_is_refused_by_the_library_not_a_crash(
        vogsphere: Daemon, bus_address: str) -> None:
    r = busctl(bus_address, "call", NAME, PATH, MANAGER, "Restart", "u", "7", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    busctl(bus_address, "call", NAME, PATH, MANAGER, "ListProcesses")


def test_open_log_passes_a_readable_fd(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    # Unbounded: the child writes its file itself, so the line is there by
    # RUNNING (bounded output lands through the log writer, a moment later).
    cfg = write_config({"talker": {"cmd": "sh -c 'echo hello from talker; exec sleep 100000'",
                                   "starttime": 0, "stdout_maxbytes": 0},
                        "hidden": {"cmd": SLEEPER, "stdout": None, "starttime": 0}})
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 2)

    async def main() -> None:
        async with client(bus_address) as c:
            reply = await c.call("OpenLog", "ss", ["talker", "stdout"])
            assert reply.message_type is MessageType.METHOD_RETURN, reply.body
            fd = reply.unix_fds[reply.body[0]]
            with os.fdopen(fd, "rb") as f:
                assert f.read() == b"hello from talker\n"
            name, text = await c.error("OpenLog", "ss", ["hidden", "stdout"])
            assert name.endswith(".NotAFile") and "discarded" in text
            # The daemon closes its copy once the fd is sent: no leak.
            before = len(os.listdir(f"/proc/{d.pid}/fd"))
            for _ in range(50):
                reply = await c.call("OpenLog", "ss", ["talker", "stdout"])
                os.close(reply.unix_fds[0])
            await c.ok("ListProcesses")
            assert len(os.listdir(f"/proc/{d.pid}/fd")) <= before
    asyncio.run(main())


def test_reload_signals_and_object_manager_from_the_manager_path(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    programs: dict[str, dict[str, Any]] = {"a": {"cmd": SLEEPER, "starttime": 0},
                                           "b": {"cmd": SLEEPER, "starttime": 0}}
    cfg = write_config(programs)
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 2)

    async def main() -> None:
        async with client(bus_address) as c:
            [managed] = await c.ok("GetManagedObjects", interface="org.freedesktop.DBus.ObjectManager")
            assert {f"{PATH}/program/a", f"{PATH}/program/b"} <= set(managed)
            del programs["a"]
            programs["c-1"] = {"cmd": SLEEPER, "starttime": 0}
            programs["b"]["stoptime"] = 2
            write_config(programs)
            assert await c.ok("Reload") == [["c-1"], ["b"], ["a"]]
            reloaded = await c.next_signal(lambda m: m.member == "Reloaded")
            assert reloaded.body == [["c-1"], ["b"], ["a"]]
            [added] = [m for m in c.history if m.member == "InterfacesAdded"]
            assert added.path == PATH and added.body[0] == f"{PATH}/program/c_2d1"
            assert added.body[1]["org.taskmaster.Taskmaster1.Program"]["Name"].value == "c-1"
            # The objects exist before their processes' first state change,
            members = [m.member for m in c.history]
            assert members.index("InterfacesAdded") < members.index("Reloaded")
            # and disappear once their processes are down (issue 12).
            removed = await c.next_signal(lambda m: m.member == "InterfacesRemoved")
            assert removed.path == PATH and removed.body[0] == f"{PATH}/program/a"
            # (from Reloaded on: a's start-up signals may reach a fresh subscriber late)
            a_states = [m.body[3] for m in c.history[c.history.index(reloaded):]
                        if m.member == "ProcessStateChanged" and m.body[0] == "a"]
            assert a_states == ["STOPPING", "STOPPED"]
            if not any(map(state_change("c-1", "RUNNING"), c.history)):
                await c.next_signal(state_change("c-1", "RUNNING"))
            # b's config changed: its PropertiesChanged carries Command/NumProcs too
            # (and Readiness, 1.3: its ready check is part of the config).
            # (the first one after Reloaded: one from b's start may come before)
            def b_props(m: Message) -> bool:
                return m.member == "PropertiesChanged" and m.path == f"{PATH}/program/b"
            after = c.history[c.history.index(reloaded) + 1:]
            props = next(filter(b_props, after), None) or await c.next_signal(b_props)
            assert set(props.body[1]) == {"State", "Processes", "Command", "NumProcs", "Readiness"}
            assert props.body[1]["Command"].value == SLEEPER
            # An invalid file: a named error with file:line, nothing changes.
            cfg.write_text(cfg.read_text().replace("stoptime: 2", "stoptime: -2"))
            name, text = await c.error("Reload")
            assert name.endswith(".ConfigInvalid") and f"{cfg}:" in text and "stoptime" in text
            state = await c.ok("Get", "ss", [MANAGER, "State"],
                               interface="org.freedesktop.DBus.Properties")
            assert state[0].value == "running"
    asyncio.run(main())


def test_burst_of_500_processes_reaches_a_subscriber_whole(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    cfg = write_config({"swarm": {"cmd": SLEEPER, "starttime": 0, "numprocs": 500,
                                  "autostart": False}})
    d = daemons(cfg)
    d.wait_for(event("DAEMON_START"))

    async def main() -> None:
        async with client(bus_address) as c:
            names = await c.ok("Start", "s", ["swarm"])
            assert len(names[0]) == 500
            running: set[str] = set()
            async with asyncio.timeout(60):
                while len(running) < 500:
                    msg = await c.next_signal(lambda m: m.member == "ProcessStateChanged")
                    if msg.body[3] == "RUNNING":
                        running.add(msg.body[0])
            # Both connections are still up: the daemon answers this client.
            [rows] = await c.ok("ListProcesses")
            assert sum(1 for r in rows if r[2] == "RUNNING") == 500
    asyncio.run(main())
    assert d.proc.poll() is None


def test_shutdown_method_stops_everything(vogsphere: Daemon, bus_address: str) -> None:
    busctl(bus_address, "call", NAME, PATH, MANAGER, "Shutdown")
    assert vogsphere.terminate() == 0
    assert [ln.kind for ln in vogsphere.lines].count("STOPPED") == 3


def test_second_daemon_on_the_same_bus_refuses_to_start(
        vogsphere: Daemon, bus_address: str, write_config: WriteConfig) -> None:
    other = write_config({"x": {"cmd": SLEEPER}}, name="other.yaml",
                         logfile=str(vogsphere.config.parent / "other.log"))
    r = subprocess.run([sys.executable, "-m", "taskmasterd",
                        "-c", str(other), "--address", bus_address],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "org.taskmaster.Taskmaster1 is already owned" in r.stderr and "Traceback" not in r.stderr
    busctl(bus_address, "call", NAME, PATH, MANAGER, "ListProcesses")  # the first still serves


def test_clients_that_vanish_mid_call_do_no_harm(vogsphere: Daemon, bus_address: str) -> None:
    """Calls whose caller is gone before the reply (a reload, a restart, a
    list) are answered into the void; the daemon keeps serving."""
    async def main() -> None:
        for member, signature, body in [("Reload", "", []), ("Restart", "s", ["web"]),
                                         ("ListProcesses", "", []), ("OpenLog", "ss", ["web", "stdout"])]:
            bus = await MessageBus(bus_address=bus_address, negotiate_unix_fd=True).connect()
            await bus.send(Message(destination=NAME, path=PATH, interface=MANAGER, member=member,
                                   signature=signature, body=body))
            bus.disconnect()
        async with client(bus_address) as c:
            [rows] = await c.ok("ListProcesses")
            assert len(rows) == 3
    asyncio.run(main())
    vogsphere.wait_for(event("RUNNING", "web"))
    assert vogsphere.proc.poll() is None and "Traceback" not in vogsphere.text()
