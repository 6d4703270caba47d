"""taskctl's task commands (run, activity, tasks, activities, task, cancel)
as a user runs them, against tests/fake_tasks_service.py: the design's D-Bus
task API (issue 14) on the test's private bus, with tasks that really run.
Waits are on taskctl's own output or on fifos the tasks block on; never sleeps."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dbus_fixtures import bus_directory, session_bus, system_bus
from tests.harness import wait_until
from tests.integration.test_taskctl import (
    AS_NOBODY,
    read_terminal,
    run_on_a_terminal,
    taskctl,
)

ID = re.compile(r"^[0-9a-f]{8}\n$")


class Fake:
    def __init__(self, address: str, directory: Path) -> None:
        self.address = address
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_tasks_service", address, str(directory)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready" once the name is owned (or EOF)
        assert line == "ready\n", f"the fake task service did not start: {line!r}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def fake(workdir: Path, bus_address: str) -> Iterator[Fake]:
    f = Fake(bus_address, workdir)
    yield f
    f.stop()


def tc(fake: Fake, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return taskctl(fake.address, *args, **kw)  # type: ignore[arg-type]


def tasks_json(fake: Fake) -> dict[str, dict[str, object]]:
    r = tc(fake, "tasks", "--json")
    assert r.returncode == 0, r.stderr
    return {t["id"]: t for t in json.loads(r.stdout)}


def fifo(workdir: Path, name: str = "gate") -> Path:
    path = workdir / name
    os.mkfifo(path)
    return path


def release(path: Path) -> None:
    """Let a task blocked on `read x < path` go on (O_NONBLOCK fails until it reads)."""
    with open(path, "w") as f:
        f.write("go\n")


def test_run_prints_the_id_and_the_task_runs(fake: Fake) -> None:
    r = tc(fake, "run", "--", "true")
    assert r.returncode == 0 and ID.match(r.stdout) and r.stderr == "", r
    r = tc(fake, "run", "--json", "--", "true")
    assert r.returncode == 0
    obj = json.loads(r.stdout)
    assert set(obj) == {"id", "state"} and obj["state"] in ("queued", "running", "succeeded")
    r = tc(fake, "run", "--wait", "--name", "hello", "--env", "WHO=world", "--",
           "sh", "-c", 'echo "hello $WHO"; echo oops >&2; exit 0')
    assert r.returncode == 0 and ID.match(r.stdout) and r.stderr == "", r
    tid = r.stdout.strip()
    # its properties and the end of its output
    r = tc(fake, "task", tid)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^Id: +{tid}$", r.stdout, re.M)
    assert re.search(r"^Name: +hello$", r.stdout, re.M)
    assert "--- stdout (last 10 lines)\nhello world\n" in r.stdout
    assert "--- stderr (last 10 lines)\noops\n" in r.stdout


def test_run_wait_exits_with_the_tasks_status(fake: Fake) -> None:
    cases = [(["true"], 0, None), (["sh", "-c", "exit 3"], 3, "exited with status 3"),
             (["/nonexistent/tool"], 127, "ENOENT (spawn /nonexistent/tool)"),
             (["sh", "-c", "kill -KILL $$"], 128 + 9, "killed by SIGKILL")]
    for argv, code, why in cases:
        r = tc(fake, "run", "--wait", "--", *argv)
        assert r.returncode == code, (argv, r)
        assert ID.match(r.stdout), r.stdout  # the id first, at once
        if why is None:
            assert r.stderr == ""
        else:
            assert r.stderr.count("\n") == 1 and why in r.stderr, r.stderr
    r = tc(fake, "run", "--wait", "--", "/etc/hostname")  # not executable: EACCES
    assert r.returncode == 126, r
    r = tc(fake, "--json", "run", "--wait", "--", "sh", "-c", "exit 3")
    end = json.loads(r.stdout)
    assert (r.returncode, end["state"], end["exit_code"], end["exit_status"]) == (3, "failed", 3, 3)


def test_progress_on_a_terminal_only_and_the_wait_timeout(fake: Fake, workdir: Path) -> None:
    gate = fifo(workdir)
    proc, master = run_on_a_terminal(fake.address, "run", "--wait", "--",
                                     "sh", "-c", f"read x < {gate}; exit 4")
    try:
        screen = read_terminal(master, "waiting for task ")
        release(gate)
        screen += read_terminal(master, "\x00")  # to the end
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
    assert proc.returncode == 4 and ID.match(out.decode())
    assert re.search(r"\r\x1b\[Kwaiting for task [0-9a-f]{8} \(running\); \d+ s", screen)
    assert "\r\x1b[Ktaskctl: task " in screen  # the line is cleared before the outcome
    # On a pipe: no progress line; --wait-timeout gives up with 124, the task goes on.
    gate2 = fifo(workdir, "gate2")
    r = tc(fake, "run", "--wait", "--wait-timeout", "0.5", "--", "sh", "-c", f"read x < {gate2}")
    assert r.returncode == 124, r
    tid = r.stdout.strip()
    assert r.stderr == (f"taskctl: gave up waiting after 0.5 s: task {tid} is still running "
                        "(it goes on; taskctl task shows it)\n")
    assert tasks_json(fake)[tid]["state"] == "running"
    release(gate2)


def test_ctrl_c_stops_waiting_not_the_task(fake: Fake, workdir: Path) -> None:
    gate = fifo(workdir)
    proc, master = run_on_a_terminal(fake.address, "run", "--wait", "--",
                                     "sh", "-c", f"read x < {gate}")
    try:
        read_terminal(master, "waiting for task ")
        proc.send_signal(signal.SIGINT)
        screen = read_terminal(master, "\x00")
        out, _ = proc.communicate(timeout=10)
    finally:
        os.close(master)
    tid = out.decode().strip()
    assert proc.returncode == 130
    assert f"stopped waiting: task {tid} is still running (it goes on)" in screen
    assert tasks_json(fake)[tid]["state"] == "running"
    release(gate)


def test_tasks_table_and_json(fake: Fake) -> None:
    ok = tc(fake, "run", "--wait", "--name", "fine", "--", "true").stdout.strip()
    bad = tc(fake, "run", "--wait", "--", "sh", "-c", "exit 3").stdout.strip()
    gone = tc(fake, "run", "--wait", "--", "/nonexistent/tool").stdout.strip()
    r = tc(fake, "tasks")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "EXIT", "STARTED", "DURATION", "REASON"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert rows[ok][1:4] == ["fine", "succeeded", "0"]
    assert rows[bad][1:4] == ["sh", "failed", "3"]
    assert rows[bad][-4:] == ["exited", "with", "status", "3"]
    assert rows[gone][1:6] == ["tool", "failed", "ENOENT", "-", "-"]
    objs = tasks_json(fake)
    assert list(objs) == [ok, bad, gone]  # submission order
    keys = {"id", "name", "state", "command", "activity", "submitted", "started", "ended", "pid",
            "exit_code", "signal", "spawn_error", "reason"}
    assert all(set(o) == keys for o in objs.values())
    assert objs[bad]["exit_code"] == 3 and objs[bad]["reason"] == "exited with status 3"
    assert objs[gone]["spawn_error"] == {"code": "ENOENT", "syscall": "spawn /nonexistent/tool",
                                         "message": "No such file or directory"}
    assert objs[ok]["started"].endswith("Z")  # type: ignore[union-attr]  # status.json's times
    r = tc(fake, "tasks", "--json", "--state", "failed")
    assert [t["id"] for t in json.loads(r.stdout)] == [bad, gone]


def test_task_output_tail_is_the_last_lines(fake: Fake) -> None:
    tid = tc(fake, "run", "--wait", "--", "seq", "1", "100000").stdout.strip()
    r = tc(fake, "task", "-n", "3", tid)
    assert r.returncode == 0
    assert "--- stdout (last 3 lines)\n99998\n99999\n100000\n" in r.stdout
    assert "--- stderr: empty" in r.stdout
    r = tc(fake, "--json", "task", "-n", "2", tid)
    obj = json.loads(r.stdout)
    assert (obj["stdout"], obj["stderr"], obj["args"]) == ("99999\n100000\n", "", ["1", "100000"])


def test_cancel_a_task_and_an_activity(fake: Fake, workdir: Path) -> None:
    gate = fifo(workdir)
    tid = tc(fake, "run", "--", "sh", "-c", f"read x < {gate}").stdout.strip()
    r = tc(fake, "cancel", tid)
    assert (r.returncode, r.stdout) == (0, f"task {tid}: cancelled\n"), r.stderr
    wait_until("the task cancelled", lambda: tasks_json(fake)[tid]["state"] == "cancelled")
    r = tc(fake, "cancel", tid)  # already ended
    assert r.returncode == 1 and "ERROR (not running)" in r.stderr
    act = workdir / "act.json"
    act.write_text(json.dumps({"name": "deploy", "tasks": [
        {"command": "sh", "args": ["-c", f"read x < {gate}"]}, {"command": "true"}]}))
    aid = tc(fake, "activity", "--file", str(act)).stdout.strip()
    r = tc(fake, "cancel", aid)
    assert (r.returncode, r.stdout) == (0, f"activity {aid}: cancelled\n"), r.stderr
    r = tc(fake, "activities", "--json")
    [obj] = json.loads(r.stdout)
    assert (obj["id"], obj["state"], len(obj["tasks"])) == (aid, "cancelled", 2)


def test_activity_wait_exits_with_the_failing_tasks_code(fake: Fake, workdir: Path) -> None:
    good = workdir / "good.json"
    good.write_text(json.dumps({"name": "ok", "tasks": [{"command": "true"}] * 3}))
    r = tc(fake, "activity", "--file", str(good), "--wait")
    assert r.returncode == 0 and ID.match(r.stdout) and r.stderr == "", r
    bad = workdir / "bad.json"
    bad.write_text(json.dumps({"name": "deploy", "tasks": [
        {"command": "true"}, {"command": "sh", "args": ["-c", "exit 5"], "name": "migrate"},
        {"command": "true"}]}))
    r = tc(fake, "activity", "--file", str(bad), "--wait")
    aid = r.stdout.strip()
    assert r.returncode == 5, r
    assert r.stderr.startswith(f"taskctl: activity {aid} failed at task ")
    assert "(migrate) failed: exited with status 5" in r.stderr
    r = tc(fake, "tasks", "--json", "--activity", aid)
    assert [t["state"] for t in json.loads(r.stdout)] == ["succeeded", "failed", "cancelled"]
    r = tc(fake, "activities")
    assert r.stdout.splitlines()[0].split() == ["ID", "NAME", "STATE", "TASKS", "STARTED",
                                                "DURATION", "REASON"]
    r = tc(fake, "task", aid)  # an activity id: the activity, then its tasks
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[:3] == [aid, "deploy", "failed"]
    assert len(r.stdout.splitlines()) == 2 + 1 + 4
    # The daemon refuses a task for an ended activity (TaskInvalid): exit 2, its words.
    r = tc(fake, "run", "--activity", aid, "--", "true")
    assert r.returncode == 2 and r.stderr == (f"run: ERROR (invalid task): activity {aid} has "
                                              "ended (failed)\n"), r


@pytest.mark.parametrize(("text", "where"), [
    ('{"command": "true",\n  "args": [}', ":2:12: not valid JSON"),
    ('{"command": "true", "arg": []}', ": unknown key 'arg' (did you mean 'args'?)"),
    ('{"command": "true", "args": [1]}', ".args[0]: expected a string, got a number"),
])
def test_a_bad_task_file_is_named_and_nothing_is_submitted(fake: Fake, workdir: Path,
                                                           text: str, where: str) -> None:
    path = workdir / "task.json"
    path.write_text(text)
    r = tc(fake, "run", "--file", str(path))
    assert (r.returncode, r.stdout) == (2, ""), r
    assert r.stderr.startswith(f"taskctl: {path}{where}") and r.stderr.count("\n") == 1, r.stderr
    assert tasks_json(fake) == {}


def test_bad_usage_of_run(fake: Fake, workdir: Path) -> None:
    for args, words in ((["run"], "a command is needed"),
                        (["run", "--env", "NOEQUALS", "--", "true"], "expected NAME=VALUE"),
                        (["run", "--env", "1X=2", "--", "true"], "is not a variable name"),
                        (["run", "--file", str(workdir / "none.json")], "cannot read"),
                        (["run", "--workdir", "relative", "--", "true"], "absolute path")):
        r = tc(fake, *args)
        assert r.returncode == 2 and words in r.stderr, (args, r)
    assert tasks_json(fake) == {}


def test_unknown_ids_exit_4(fake: Fake) -> None:
    for args in (["task", "deadbeef"], ["cancel", "deadbeef"],
                 ["tasks", "--activity", "deadbeef"]):
        r = tc(fake, *args)
        assert (r.returncode, r.stdout) == (4, ""), (args, r)
        assert r.stderr == ("deadbeef: ERROR (no such task): no task or activity has the id "
                            "deadbeef (taskctl tasks lists them)\n")
    r = tc(fake, "run", "--activity", "deadbeef", "--", "true")  # the daemon's NoSuchTask
    assert r.returncode == 4 and "run: ERROR (no such task)" in r.stderr


def test_the_shell_completes_task_ids(fake: Fake) -> None:
    from taskctl.client import Client
    from taskctl.shell import Shell
    from taskmasterd.busaddr import BusChoice

    ids = [tc(fake, "run", "--wait", "--", "true").stdout.strip() for _ in range(3)]
    with Client(BusChoice("address", fake.address), timeout=10) as client:
        shell = Shell(client)
        assert shell.task_ids() == sorted(ids)
        from taskctl.shell import complete_words

        first = ids[0]
        assert complete_words("task ", first[:5], shell.names, shell.task_ids) == \
            [i for i in sorted(ids) if i.startswith(first[:5])]
        assert complete_words(f"cancel {first} ", "", shell.names, shell.task_ids) == \
            sorted(set(ids) - {first})
        assert complete_words("tasks --state ", "f", shell.names, shell.task_ids) == ["failed"]


TEST_POLICY = """<busconfig>
  <policy context="default">
    <deny own="org.taskmaster.Taskmaster1"/>
    <deny send_destination="org.taskmaster.Taskmaster1"/>
    <allow send_destination="org.taskmaster.Taskmaster1"
           send_interface="org.freedesktop.DBus.Properties" send_member="GetAll"/>
    <allow send_destination="org.taskmaster.Taskmaster1"
           send_interface="org.freedesktop.DBus.Properties" send_member="Get"/>
    <allow send_destination="org.taskmaster.Taskmaster1"
           send_interface="org.taskmaster.Taskmaster1.Manager" send_member="ListTasks"/>
    <allow send_destination="org.taskmaster.Taskmaster1"
           send_interface="org.taskmaster.Taskmaster1.Manager" send_member="ListActivities"/>
    <allow receive_sender="org.taskmaster.Taskmaster1"/>
  </policy>
  <policy user="root">
    <allow own="org.taskmaster.Taskmaster1"/>
    <allow send_destination="org.taskmaster.Taskmaster1"/>
  </policy>
</busconfig>
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv (to run taskctl as uid 65534)")
def test_unprivileged_users_may_look_not_submit_nor_read_output() -> None:
    """The design's policy: everyone lists and reads properties; submit,
    cancel and OpenOutput are root's and the group taskmaster's."""
    with bus_directory() as directory:
        policy = directory / "policy.conf"
        policy.write_text(TEST_POLICY)
        with system_bus(directory, policy) as address:
            fake = Fake(address, directory)
            try:
                nobody = tuple(AS_NOBODY)
                tid = taskctl(address, "run", "--wait", "--env", "X=hidden", "--",
                              "sh", "-c", 'echo "$X"').stdout.strip()
                r = taskctl(address, "run", "--", "true", prefix=nobody)
                assert (r.returncode, r.stdout) == (1, ""), r
                assert r.stderr.startswith("run: ERROR (access denied): only root and members "
                                           "of the group taskmaster")
                assert r.stderr.count("\n") == 1
                r = taskctl(address, "tasks", prefix=nobody)
                assert r.returncode == 0 and tid in r.stdout, r.stderr
                r = taskctl(address, "task", tid, prefix=nobody)
                assert r.returncode == 0 and re.search(r"^State: +succeeded$", r.stdout, re.M)
                assert "hidden" not in r.stdout  # the output is root's and taskmaster's
                assert r.stderr == (f"taskctl: the output of task {tid} is not shown: only root "
                                    "and members of the group taskmaster may read a task's "
                                    "output\n")
                r = taskctl(address, "cancel", tid, prefix=nobody)
                assert r.returncode == 1 and "ERROR (access denied)" in r.stderr
            finally:
                fake.stop()


def test_no_daemon_exits_7(workdir: Path) -> None:
    with session_bus(workdir) as address:
        r = taskctl(address, "tasks")
        assert r.returncode == 7 and "cannot reach taskmasterd" in r.stderr
