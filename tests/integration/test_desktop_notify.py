"""contrib/taskmaster-notify (docs/notify.md) against the real taskmasterd on
a private bus, showing its notifications on a second private bus standing for
the desktop's session bus: to a Notifications service of the test's that
records each Notify call, and to Debian's dunst under Xvfb when they are
installed. Also: the daemon leaving (a re-exec within --grace is not news),
coming back, and -H through a stand-in for ssh to systemd-stdio-bridge, whose
link is cut and made again.

The script runs as shipped (its #!/usr/bin/python3, Debian's jeepney) with
the tree on PYTHONPATH. Waits are on its stderr lines, the recorder's calls
and the daemon's log, with timeouts; never sleeps."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from jeepney import MatchRule, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

from taskctl.client import Client
from taskmasterd.busaddr import BusChoice
from tests.dbus_fixtures import session_bus
from tests.harness import Daemon, event
from tests.integration.conftest import WriteConfig

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "contrib" / "taskmaster-notify"
NAME = "org.freedesktop.Notifications"
CRITICAL, NORMAL = 2, 1
HOST = socket.gethostname()
GRACE = 4.0  # taskmaster-notify --grace: a re-exec is back within it, even on a loaded machine



def runs_as_shipped() -> bool:
    """Whether the script starts on Debian's python3 (python3-jeepney, -dbus-next, -yaml)."""
    try:
        return subprocess.run([SCRIPT, "--help"], capture_output=True, timeout=30,
                              env={**os.environ, "PYTHONPATH": str(REPO)}).returncode == 0
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not runs_as_shipped(), reason=(
    "needs Debian's /usr/bin/python3 with python3-jeepney, python3-dbus-next and python3-yaml "
    "(sh bootstrap setup installs them)"))


def programs() -> dict[str, dict[str, Any]]:
    unexpected = {"exitcodes": [0], "autorestart": "unexpected", "autostart": False}
    return {
        # exits while RUNNING: EXITED, autorestarted twice, then the start limit: FATAL
        "crashy": {"cmd": "sh -c 'exit 3'", "starttime": 0, "startlimit_burst": 2,
                   "startlimit_interval": 60, **unexpected},
        # exits before starttime: BACKOFF, one retry, BACKOFF then FATAL
        "flaky": {"cmd": "sh -c 'exit 3'", "starttime": 30, "startretries": 1, **unexpected},
        # cannot be spawned: no exit, only FATAL
        "ghost": {"cmd": "/nonexistent/ghost", "startretries": 0, **unexpected},
        "done": {"cmd": "true", "starttime": 0, **unexpected},  # an expected exit
        "calm": {"cmd": "sleep 100000", "starttime": 0, **unexpected},  # stopped
        "last": {"cmd": "sh -c 'exit 4'", "starttime": 0, **unexpected, "autorestart": "never"},
    }


class Shown(NamedTuple):
    id: int
    app: str
    replaces: int
    icon: str
    summary: str
    body: str
    urgency: int


class Recorder:
    """org.freedesktop.Notifications on a bus: records every Notify call,
    answers it with a new id (1, 2, ...)."""

    def __init__(self, address: str) -> None:
        self.conn: DBusConnection = open_dbus_connection(address)
        reply = self.conn.send_and_get_reply(message_bus.RequestName(NAME), timeout=10)
        assert reply.body == (1,), reply.body  # primary owner
        self.shown: list[Shown] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                msg = self.conn.receive()
            except (OSError, EOFError, ValueError):
                return  # closed
            if msg.header.message_type is not MessageType.method_call:
                continue
            if msg.header.fields.get(3) != "Notify":  # 3: MEMBER
                self.conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))
                continue
            app, replaces, icon, summary, body, _actions, hints, _timeout = msg.body
            with self.cond:
                shown = Shown(len(self.shown) + 1, app, replaces, icon, summary, body,
                              hints.get("urgency", ("y", -1))[1])
                self.shown.append(shown)
                self.cond.notify_all()
            self.conn.send(new_method_return(msg, "u", (shown.id,)))

    def wait(self, n: int, timeout: float = 15.0) -> list[Shown]:
        """The first n notifications, once they are there."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.shown) >= n, timeout):
                raise AssertionError(f"{len(self.shown)} notifications, not {n}: {self.shown}")
            return self.shown[:n]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
        self.conn.close()


class Notifier:
    """contrib/taskmaster-notify as a subprocess, its stderr read line by line."""

    def __init__(self, bus: str, desktop: str, *extra: str, env: dict[str, str] | None = None
                 ) -> None:
        self.proc = subprocess.Popen(
            [str(SCRIPT), "--address", bus, *extra], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO), "DBUS_SESSION_BUS_ADDRESS": desktop,
                 **(env or {})})
        self.buf = b""
        self.lines: list[str] = []

    def wait_line(self, pred: Callable[[str], bool], timeout: float = 15.0) -> str:
        """The next line of stderr that matches (lines before it are skipped)."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode()
                self.lines.append(line)
                if pred(line):
                    return line
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"{'end of output' if ready else 'timed out'}; "
                                     f"stderr so far: {self.lines} {self.buf!r}")
            self.buf += chunk

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: its exit code and the rest of its stderr."""
        self.proc.send_signal(signal.SIGINT)
        _out, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, (self.buf + err).decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def desktop(workdir: Path) -> Iterator[str]:
    """A second private session bus: the desktop's, where notifications go."""
    (workdir / "desktop").mkdir()
    with session_bus(workdir / "desktop") as address:
        yield address


@contextlib.contextmanager
def notifier(bus: str, desktop: str) -> Iterator[Notifier]:
    n = Notifier(bus, desktop, "--grace", str(GRACE))
    try:
        yield n
    finally:
        n.close()


def following(line: str) -> bool:
    return "following taskmasterd on " in line


def serving(tm: Daemon) -> None:
    """Until the daemon has started (DAEMON_START): it owns its name and
    answers calls a moment before it sends signals, and a Start in that
    moment is never signalled (daemon.serve subscribes the bus service to
    the events after service.connect has requested the name)."""
    tm.wait_for(event("DAEMON_START"))


def test_one_notification_per_unexpected_exit_and_a_critical_one_for_fatal(
        write_config: WriteConfig, bus_address: str, desktop: str,
        daemons: Callable[..., Daemon]) -> None:
    config = write_config(programs())
    recorder = Recorder(desktop)
    client = Client(BusChoice("address", bus_address))
    try:
        with notifier(bus_address, desktop) as n:
            # Started before the daemon: it waits for it, and follows it once there.
            n.wait_line(lambda ln: "taskmasterd is not on the bus at" in ln)
            tm = daemons(config)
            n.wait_line(following)
            serving(tm)

            client.start("crashy")
            assert [(s.summary, s.urgency) for s in recorder.wait(4)] == \
                [("crashy exited unexpectedly", NORMAL)] * 3 + [("crashy is FATAL", CRITICAL)]
            assert len([ln for ln in tm.since(0) if ln.process == "crashy"
                        and ln.kind == "EXITED"]) == 3  # one per exit
            client.start("flaky")
            assert [(s.summary, s.urgency) for s in recorder.wait(7)[4:]] == \
                [("flaky exited unexpectedly", NORMAL)] * 2 + [("flaky is FATAL", CRITICAL)]
            client.start("ghost")
            recorder.wait(8)
            # Nothing for an expected exit, nor for a stop.
            client.start("done")
            tm.wait_for(event("EXITED", "done"))
            client.start("calm")
            tm.wait_for(event("RUNNING", "calm"))
            client.stop("calm")
            tm.wait_for(event("STOPPED", "calm"))
            client.start("last")  # signals come in order: once this one is told, so are those
            shown = recorder.wait(9)

            assert [s.summary for s in shown] == [
                *["crashy exited unexpectedly"] * 3, "crashy is FATAL",
                *["flaky exited unexpectedly"] * 2, "flaky is FATAL",
                "ghost is FATAL", "last exited unexpectedly"]
            assert {s.app for s in shown} == {"taskmaster"}
            assert all(s.body.endswith(f"(on {HOST})") for s in shown)
            assert shown[0].body.startswith("exit status 3") and "exit status 3" in shown[3].body
            assert "exit status 3" in shown[6].body and "ENOENT" in shown[7].body
            assert shown[8].body.startswith("exit status 4")
            # Each replaces the process's previous notification: one bubble per process.
            assert [s.replaces for s in shown] == [0, 1, 2, 3, 0, 5, 6, 0, 0]
            assert shown[3].icon == "dialog-error" and shown[0].icon == "dialog-warning"

            # A re-exec leaves the bus for a moment: not news (within --grace).
            client.call("Reexecute")
            n.wait_line(lambda ln: "taskmasterd left " in ln)
            n.wait_line(following)
            serving(tm)
            client.start("last")
            [after] = recorder.wait(10)[9:]
            assert after.summary == "last exited unexpectedly" and after.replaces == 9

            # The daemon leaves for good: said once, after the grace.
            tm.terminate()
            left = time.monotonic()
            [gone] = recorder.wait(11, timeout=GRACE + 15)[10:]
            assert time.monotonic() - left >= GRACE - 1
            assert gone.summary == "taskmasterd is gone" and bus_address in gone.body
            # It comes back: followed again.
            tm = daemons(config)
            n.wait_line(following)
            serving(tm)
            client.start("last")
            [again] = recorder.wait(12)[11:]
            assert again.summary == "last exited unexpectedly" and again.replaces == 10

            code, rest = n.interrupt()
            assert code == 0 and "Traceback" not in rest, rest
            assert len(recorder.shown) == 12, recorder.shown[12:]
    finally:
        client.close()
        recorder.close()


# ---- a real notification daemon: dunst under Xvfb ----------------------------------------


@contextlib.contextmanager
def xvfb(workdir: Path) -> Iterator[str]:
    """An X server of its own (display number chosen by Xvfb); yields DISPLAY."""
    read, write = os.pipe()
    with open(workdir / "xvfb.log", "wb") as log:
        proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-nolisten", "tcp",
                                 "-screen", "0", "640x480x24"], pass_fds=(write,),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 15)
        number = os.read(read, 64).decode().strip() if ready else ""
        assert number.isdigit(), f"Xvfb gave no display: {(workdir / 'xvfb.log').read_text()}"
        yield f":{number}"
    finally:
        os.close(read)
        proc.terminate()
        proc.wait(10)


def wait_owner(address: str, name: str, proc: subprocess.Popen[bytes], timeout: float = 15.0
               ) -> None:
    """Until `name` has an owner on the bus (NameOwnerChanged, subscribed before looking)."""
    with open_dbus_connection(address) as conn:
        rule = MatchRule(type="signal", sender="org.freedesktop.DBus",
                         member="NameOwnerChanged")
        rule.add_arg_condition(0, name)
        with conn.filter(rule) as changes:
            conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=10)
            if conn.send_and_get_reply(message_bus.NameHasOwner(name), timeout=10).body[0]:
                return
            deadline = time.monotonic() + timeout
            while True:
                try:
                    msg = conn.recv_until_filtered(changes, timeout=1.0)
                except TimeoutError:
                    assert proc.poll() is None, f"it exited ({proc.returncode})"
                    assert time.monotonic() < deadline, f"no {name} within {timeout}s"
                    continue
                if msg.body[2]:
                    return


@pytest.mark.skipif(not (shutil.which("dunst") and shutil.which("dunstctl")
                         and shutil.which("Xvfb")),
                    reason="needs Debian's dunst and xvfb (apt-get install --no-install-recommends "
                           "dunst xvfb)")
def test_dunst_shows_the_notification(write_config: WriteConfig, bus_address: str,
                                      desktop: str, workdir: Path,
                                      daemons: Callable[..., Daemon]) -> None:
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": desktop,
           "XDG_CONFIG_HOME": str(workdir / "config"), "HOME": str(workdir)}
    tm = daemons(write_config(programs()))
    serving(tm)
    with xvfb(workdir) as display:
        with open(workdir / "dunst.log", "wb") as log:
            dunst = subprocess.Popen(["dunst"], env={**env, "DISPLAY": display},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=log)
        try:
            wait_owner(desktop, NAME, dunst)
            with notifier(bus_address, desktop) as n:
                n.wait_line(following)
                with Client(BusChoice("address", bus_address)) as client:
                    client.start("ghost")
                try:
                    n.wait_line(lambda ln: "ghost is FATAL: " in ln and "not shown" not in ln)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\ntaskmasterd:\n{tm.text()}\ndunst:\n"
                                         f"{(workdir / 'dunst.log').read_text()}") from None
                tm.wait_for(event("FATAL", "ghost"))
            # What is on screen goes to the history once closed.
            close = subprocess.run(["dunstctl", "close-all"], env=env, capture_output=True,
                                   text=True, timeout=10)
            assert close.returncode == 0, close.stderr
            r = subprocess.run(["dunstctl", "history"], env=env, capture_output=True, text=True,
                               timeout=10)
            assert r.returncode == 0, r.stderr
            [history] = json.loads(r.stdout)["data"]
            [shown] = [{k: v["data"] for k, v in item.items()} for item in history]
            assert shown["summary"] == "ghost is FATAL" and shown["appname"] == "taskmaster"
            # Critical: dunst keeps it until it is closed (its default timeout, 0; normal: 10 s).
            assert shown["timeout"] == 0 and "ENOENT" in shown["body"]
            assert shown["body"].endswith(f"(on {HOST})")
        finally:
            dunst.terminate()
            dunst.wait(10)


# ---- another host: -H, over ssh (a stand-in) to systemd-stdio-bridge ------------------------

FAKE_SSH = """#!/bin/sh
# ssh's stand-in: the options up to "--", the host, then the command runs here
# (as ssh has the login shell there run it); its pid is kept, to cut the link.
echo $$ >> "$SSH_PIDS"
while [ "$1" != "--" ]; do shift; done
shift 2
exec sh -c "exec $*"
"""


@pytest.mark.skipif(not shutil.which("systemd-stdio-bridge"),
                    reason="needs systemd-stdio-bridge (Debian's systemd)")
def test_a_remote_host_over_ssh_and_a_dropped_link(
        write_config: WriteConfig, bus_address: str, desktop: str, workdir: Path,
        daemons: Callable[..., Daemon]) -> None:
    (workdir / "bin").mkdir()
    (workdir / "bin" / "ssh").write_text(FAKE_SSH)
    (workdir / "bin" / "ssh").chmod(0o755)
    pids = workdir / "ssh.pids"
    serving(daemons(write_config(programs())))
    recorder = Recorder(desktop)
    n = Notifier(bus_address, desktop, "-H", "operator@faraway:2222", env={
        "PATH": f"{workdir / 'bin'}:{os.environ['PATH']}", "SSH_PIDS": str(pids)})
    try:
        with Client(BusChoice("address", bus_address)) as client:
            assert "of faraway" in n.wait_line(following)
            client.start("last")
            [shown] = recorder.wait(1)
            assert shown.summary == "last exited unexpectedly"
            assert shown.body == "exit status 4 (on faraway)"
            # The link drops (the network, ssh): connected again, nothing missed after.
            os.kill(int(pids.read_text().split()[-1]), signal.SIGTERM)
            n.wait_line(lambda ln: "connection lost" in ln and "trying again" in ln)
            n.wait_line(following)
            assert len(pids.read_text().split()) == 2
            client.start("last")
            [again] = recorder.wait(2)[1:]
            assert again.summary == "last exited unexpectedly" and again.replaces == 1
        code, rest = n.interrupt()
        assert code == 0 and "Traceback" not in rest, rest
        assert len(recorder.shown) == 2, recorder.shown
    finally:
        n.close()
        recorder.close()
