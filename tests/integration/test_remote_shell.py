"""taskctl -H and the shell's `connect`, over a stand-in for ssh that runs
the remote command here (the real sshd, users and policy are
test_remote.py's): the D-Bus path through systemd-stdio-bridge, signals
included, tail run there, and the shell switching daemons with the host in
its prompt and completion, a Ctrl-C at the prompt not ending the link."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Daemon
from tests.integration.conftest import WriteConfig
from tests.integration.test_shell import CTRL_C, PROMPT, Terminal

pytestmark = pytest.mark.skipif(not shutil.which("systemd-stdio-bridge"),
                                reason="needs systemd-stdio-bridge (package systemd)")

# Stands in for ssh: logs its arguments, then runs the remote command here
# with sh, as the login shell there would; host "unreachable" fails as ssh does.
FAKE_SSH = """#!/bin/sh
echo "$*" >> "$SSH_LOG"
while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift; host=$1; shift
if [ "$host" = unreachable ]; then
    echo "ssh: connect to host unreachable port 22: Connection refused" >&2
    exit 255
fi
exec sh -c "$*"
"""


@pytest.fixture
def far_env(workdir: Path) -> dict[str, str]:
    bindir = workdir / "fakebin"
    bindir.mkdir()
    (bindir / "ssh").write_text(FAKE_SSH)
    (bindir / "ssh").chmod(0o755)
    (workdir / ".ssh").mkdir()
    (workdir / ".ssh" / "known_hosts").write_text("[far.example]:2200 ssh-ed25519 AAAA\n")
    inputrc = workdir / "inputrc"
    inputrc.write_text("set enable-bracketed-paste off\nset bell-style none\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    # `taskctl` there is this one: the venv's bin first on PATH
    env.update(PATH=f"{bindir}:{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
               SSH_LOG=str(workdir / "ssh.log"), HOME=str(workdir), TERM="xterm",
               INPUTRC=str(inputrc), TASKCTL_HISTFILE=str(workdir / "hist"))
    return env


@pytest.fixture
def web(write_config: WriteConfig, daemons: Callable[..., Daemon], workdir: Path) -> Daemon:
    d = daemons(write_config({"web": {"cmd": "sh -c 'echo web-says-hello; exec sleep 100000'",
                                      "stdout": str(workdir / "web.out")}}))
    d.wait_count(lambda ln: ln.kind == "RUNNING", 1)
    return d


def _taskctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskctl", *args], env=env, text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def _bridges(bus: str) -> list[int]:
    r = subprocess.run(["pgrep", "-f", f"bus-path={bus}"], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def test_commands_over_the_bridge(web: Daemon, bus_address: str, far_env: dict[str, str],
                                  workdir: Path) -> None:
    far = ["-H", "tm@far.example:2200", "--address", bus_address]
    r = _taskctl(far_env, *far, "status")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^web\s+RUNNING", r.stdout, re.M)
    log = (workdir / "ssh.log").read_text()
    assert "-xT -p 2200 -l tm -- far.example" in log and "systemd-stdio-bridge" in log

    # restart waits for RUNNING through ProcessStateChanged signals: they cross the bridge
    def pid() -> str:  # asked here, not over the bridge
        return _taskctl(far_env, "--address", bus_address, "pid", "web").stdout.strip()
    before = pid()
    r = _taskctl(far_env, *far, "restart", "web")
    assert r.returncode == 0, r.stderr
    assert pid() not in ("", before)

    # tail runs taskctl there (descriptors do not cross ssh); its exit status comes back
    r = _taskctl(far_env, *far, "tail", "web")
    assert r.returncode == 0 and "web-says-hello" in r.stdout, r.stderr
    assert f"taskctl --address {bus_address} tail web" in (workdir / "ssh.log").read_text()
    r = _taskctl(far_env, *far, "tail", "nope")
    assert r.returncode == 4 and "no such" in r.stderr.lower()

    # nothing owns the name there: one line, exit 7, what to do
    other = workdir / "other-bus"
    with subprocess.Popen(["dbus-daemon", "--session", f"--address=unix:path={other}",
                           "--nofork", "--print-address"], stdout=subprocess.PIPE) as bus:
        assert bus.stdout is not None and bus.stdout.readline()
        r = _taskctl(far_env, "-H", "far.example", "--address", f"unix:path={other}", "status")
        bus.terminate()
    assert r.returncode == 7 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "has no owner" in r.stderr and "start it there" in r.stderr

    r = _taskctl(far_env, "-H", "unreachable", "status")
    assert r.returncode == 7 and r.stderr.count("\n") == 1
    assert "Connection refused" in r.stderr and "unreachable" in r.stderr
    assert _bridges(bus_address) == []  # every link ended with its command


@pytest.fixture
def terminal(far_env: dict[str, str], bus_address: str) -> Iterator[Terminal]:
    t = Terminal([sys.executable, "-m", "taskctl", "--address", bus_address], far_env)
    yield t
    t.close()


def test_shell_connects_to_a_host_and_back(web: Daemon, bus_address: str, terminal: Terminal,
                                           workdir: Path) -> None:
    t = terminal
    far_prompt = "taskmaster@tm@far.example:2200> "
    t.expect(re.escape(PROMPT))
    t.send(f"connect --address {bus_address} tm@far.example:2200\r")
    t.expect(r"connected to taskmasterd \S+ on tm@far.example:2200")
    t.expect(re.escape(far_prompt))
    t.send("status\r")
    t.expect(r"web\s+RUNNING")
    t.expect(re.escape(far_prompt))
    # A Ctrl-C at the prompt cancels the line, not the link under it.
    t.send("half a line" + CTRL_C)
    t.expect(re.escape(far_prompt))
    t.send("status\r")
    t.expect(r"web\s+RUNNING")
    t.expect(re.escape(far_prompt))
    assert (workdir / "ssh.log").read_text().count("systemd-stdio-bridge") == 1
    t.send("tail web\r")
    t.expect("web-says-hello")
    t.expect(re.escape(far_prompt))
    # Hosts complete from ~/.ssh/known_hosts and the ones connected to.
    t.send("connect far.ex\t")
    t.expect("connect far.example:2200 $")
    t.send("\x15")  # Ctrl-U: drop the line
    t.send("connect unreachable\r")
    t.expect(r"cannot reach taskmasterd .*unreachable.*Connection refused")
    t.expect(re.escape(far_prompt))  # still connected to the one before
    t.send("connect local\r")
    t.expect(r"connected to taskmasterd on the bus at unix:path=")
    t.expect(re.escape(PROMPT))
    assert _bridges(bus_address) == []  # the link ended with the switch
    t.send("status\r")
    t.expect(r"web\s+RUNNING")
    t.send("exit\r")
    assert t.wait() == 0
