"""`taskctl -H USER@HOST:PORT` (issue 16): taskctl reaches taskmasterd on
another host through ssh, as `systemctl -H` does.

The "other host" is this one, through a real sshd on 127.0.0.1
(tests/sshd.py): taskctl spawns the `ssh` it finds on PATH, here a wrapper
that gives ssh the test's key and known_hosts. On the far side,
systemd-stdio-bridge (or, for tail, taskctl itself) runs as the logged in
user and talks to the real taskmasterd on a private system-like bus that
applies the project's policy (dbus/org.taskmaster.Taskmaster1.conf): a user in
the group taskmaster may act, another may only look.

Two users are made if missing and left in place: tm-remote-op (in the group
taskmaster) and tm-remote-ro (not). Everything is waited on (READY=1, a
FIFO, sshd's "Server listening" line), never slept for.
"""

from __future__ import annotations

import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dbus_fixtures import bus_directory, system_bus
from tests.harness import Daemon, alive, read_fifo, wait_until
from tests.integration.test_notify import NotifySocket
from tests.sshd import SSHServer, closed_port, leave_group, local_user, missing_tools, sshd

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "dbus" / "org.taskmaster.Taskmaster1.conf"
# The real taskctl, the venv's script (in CI: <clone>/.venv/bin/taskctl). On
# the far side it must be on the user's PATH too: sshd's SetEnv puts its
# directory there.
VENV_BIN = Path(sys.executable).parent
TASKCTL = VENV_BIN / "taskctl"
OPERATOR, READER = "tm-remote-op", "tm-remote-ro"
GROUP = "taskmaster"
KNOWN = "hello from the remote web"
TIMEOUT = 60.0  # one taskctl command, ssh included

_TOOLS = ("useradd", "usermod", "groupadd", "gpasswd", "dbus-daemon", "systemd-stdio-bridge")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs sshd, makes users, and "
                       "taskmasterd owns its name on a system-like bus"),
    pytest.mark.skipif(bool(missing_tools()) or not all(shutil.which(t) for t in _TOOLS),
                       reason="needs openssh-server (/usr/sbin/sshd), ssh, ssh-keygen, "
                       + ", ".join(_TOOLS)),
    pytest.mark.skipif(not os.access(TASKCTL, os.X_OK),
                       reason=f"needs the venv's taskctl script ({TASKCTL})"),
]


@dataclass
class Remote:
    address: str  # the bus where taskmasterd runs ("on the remote host")
    empty_address: str  # a bus of the same kind where nothing owns the name
    server: SSHServer
    daemon: Daemon
    fifo: Path  # web writes "ready" there once its line is in its stdout file

    def taskctl(self, user: str, *args: str, port: int | None = None,
                address: str | None = None) -> subprocess.CompletedProcess[str]:
        """`taskctl -H user@127.0.0.1:PORT --address ADDR ARGS...`, ssh wrapper first on PATH."""
        argv = [str(TASKCTL), "-H", self.server.destination(user, port),
                "--address", address or self.address, *args]
        return subprocess.run(argv, env=self.server.env(), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=TIMEOUT)

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        """taskctl here, as root, straight to the bus (no ssh)."""
        return subprocess.run([str(TASKCTL), "--address", self.address, *args],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=TIMEOUT)

    def web_pid(self) -> int:
        r = self.local("pid", "web")
        assert r.returncode == 0, r.stderr
        return int(r.stdout)


def status_json(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return {row["name"]: row for row in json.loads(r.stdout)}


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    # The group must exist before the bus starts: dbus-daemon resolves group
    # names when it loads its configuration.
    local_user(OPERATOR, [GROUP])
    local_user(READER)
    leave_group(READER, GROUP)
    session = {"PATH": f"{VENV_BIN}:/usr/bin:/bin",
               # the code under test on the far side too (a worktree's, not
               # only the one the venv was installed from)
               "PYTHONPATH": str(ROOT)}
    with bus_directory("tm-remote-") as d, system_bus(d, POLICY) as address, \
            bus_directory("tm-remote-empty-") as e, system_bus(e, POLICY) as empty, \
            sshd(setenv=session, users=[OPERATOR, READER]) as server:
        fifo = d / "ready"
        os.mkfifo(fifo)
        cfg = d / "taskmaster.yaml"
        cfg.write_text(yaml.safe_dump({
            "taskmasterd": {"logfile": str(d / "taskmasterd.log"), "logdir": str(d / "logs"),
                            "statedir": str(d / "state")},
            "programs": {"web": {
                "cmd": f"sh -c 'echo {KNOWN}; echo ready > {fifo}; exec sleep 100000'",
                "starttime": 0,
                # unbounded: web writes its stdout file itself, so the line is
                # there once it says ready
                "stdout_maxbytes": 0}},
        }, sort_keys=False))
        notify = NotifySocket(d / "notify.sock")
        daemon = Daemon(cfg, "--address", address, env={"NOTIFY_SOCKET": str(notify.path)})
        try:
            # READY=1: the name is owned and web launched
            assert notify.next(lambda m: "READY" in m, timeout=20)["READY"] == "1"
            assert read_fifo(fifo, timeout=20) == "ready\n"
            # the set-up itself: both users log in and can run the venv's taskctl
            for user in (OPERATOR, READER):
                r = server.ssh(user, "command -v taskctl && taskctl --version")
                assert r.returncode == 0 and r.stdout.startswith(f"{TASKCTL}\n"), (
                    f"{user} cannot run {TASKCTL} over ssh (every directory above the clone "
                    f"must be reachable by other users): {r.stdout}{r.stderr}\n{server.log()}")
            yield Remote(address, empty, server, daemon, fifo)
        finally:
            notify.sock.close()
            assert daemon.terminate() == 0


# ---- what the issue asks ---------------------------------------------------------------------


@pytest.mark.parametrize("user", [OPERATOR, READER])
def test_status_works_for_both_users(remote: Remote, user: str) -> None:
    pid = remote.web_pid()
    web = status_json(remote.taskctl(user, "--json", "status"))["web"]
    assert (web["state"], web["pid"]) == ("RUNNING", pid)
    r = remote.taskctl(user, "status", "web")
    assert r.returncode == 0, r.stderr
    [header, row] = r.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "STATE", "PID"]
    assert row.split()[:3] == ["web", "RUNNING", str(pid)]


def test_restart_by_the_operator_restarts(remote: Remote) -> None:
    before = remote.web_pid()
    r = remote.taskctl(OPERATOR, "restart", "web")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "web" in r.stdout
    after = remote.web_pid()
    assert after not in (0, before)
    assert read_fifo(remote.fifo) == "ready\n"  # the new web ran, and wrote its line again
    web = status_json(remote.local("--json", "status"))["web"]
    assert (web["state"], web["pid"]) == ("RUNNING", after)


def test_restart_by_a_user_outside_the_group_is_access_denied(remote: Remote) -> None:
    before = remote.web_pid()
    r = remote.taskctl(READER, "restart", "web")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    # taskctl's usual words for the bus policy's AccessDenied
    assert "access denied" in r.stderr.lower() or "AccessDenied" in r.stderr, r.stderr
    assert remote.web_pid() == before


def test_tail_runs_taskctl_there_and_returns_the_line(remote: Remote) -> None:
    r = remote.taskctl(OPERATOR, "tail", "web")
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    # one line per start of web (a restart by another test appends one)
    assert lines and set(lines) == {KNOWN}, r.stdout
    r = remote.taskctl(OPERATOR, "tail", "-c", "8", "web")  # the arguments get there
    assert (r.returncode, r.stdout) == (0, KNOWN[-7:] + "\n"), r.stderr


def test_tail_by_a_user_outside_the_group_is_refused_there(remote: Remote) -> None:
    """Task.OpenLog is for root and the group only: the taskctl run there says
    so, and its exit status comes back through ssh."""
    r = remote.taskctl(READER, "tail", "web")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "access denied" in r.stderr.lower() or "AccessDenied" in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("command", [["status"], ["restart", "web"], ["tail", "web"]])
def test_ssh_to_a_closed_port_is_one_line_and_exit_7(remote: Remote, command: list[str]) -> None:
    with closed_port() as port:
        r = remote.taskctl(OPERATOR, *command, port=port)
    assert r.returncode == 7, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("taskctl: ") and "Connection refused" in lines[0], lines
    if command[0] != "tail":  # the D-Bus path says how ssh was tried, as a person types it
        assert f"`ssh -p {port} {OPERATOR}@127.0.0.1`" in lines[0], lines
    assert r.stdout == ""


def test_no_taskmasterd_on_the_remote_bus_is_exit_7(remote: Remote) -> None:
    r = remote.taskctl(OPERATOR, "status", address=remote.empty_address)
    assert r.returncode == 7, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("taskctl: ") and "taskmasterd" in lines[0], lines
    assert "no owner" in lines[0] or "not running" in lines[0], lines
    assert r.stdout == ""


# ---- a followed tail that is interrupted -------------------------------------------------------


def processes_of(user: str, marker: str) -> list[int]:
    """Live (not zombie) processes of `user` whose command line holds `marker`."""
    uid = pwd.getpwnam(user).pw_uid
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and alive(int(entry)):
            found.append(int(entry))
    return found


def ssh_children(pid: int) -> list[int]:
    """Live ssh processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"/usr/bin/ssh" and int(stat[1]) == pid and alive(int(entry)):
            found.append(int(entry))
    return found


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_tail_f_leaves_nothing_running(remote: Remote, how: str) -> None:
    """No terminal here (a script, CI, `timeout 10 taskctl -H ... tail -f`):
    Ctrl-C (SIGINT to the process group) or SIGTERM to taskctl ends the tail
    there too, and no ssh is left here."""
    marker = remote.address.split(",")[0]  # in the remote command line
    argv = [str(TASKCTL), "-H", remote.server.destination(OPERATOR), "--address", remote.address,
            "tail", "-f", "web"]
    proc = subprocess.Popen(argv, env=remote.server.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    ssh: list[int] = []
    try:
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, "no output from tail -f"
        assert proc.stdout.readline().decode() == KNOWN + "\n"
        assert processes_of(OPERATOR, marker), "tail -f does not run there"
        ssh = ssh_children(proc.pid)  # the ones to watch (and kill if left), by pid
        assert ssh, "taskctl runs no ssh"
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: taskctl and ssh get it
            assert proc.wait(TIMEOUT) == 130
        else:
            proc.send_signal(signal.SIGTERM)  # what timeout(1) or a supervisor does
            proc.wait(TIMEOUT)
        wait_until("the tail there to end", lambda: not processes_of(OPERATOR, marker), 5)
        wait_until("no ssh here", lambda: not any(alive(p) for p in ssh), 5)
    finally:
        for pid in [*processes_of(OPERATOR, marker), *(p for p in ssh if alive(p))]:
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
