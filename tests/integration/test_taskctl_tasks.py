"""taskctl's task commands (run, activity, tasks, activities, task, cancel)
as a user runs them, against the real taskmasterd (a `tasks:` section in its
config) and its real task runner, on the test's private bus, with tasks that
really run. Waits are on taskctl's own output, on the daemon's state or on
fifos the tasks block on; never sleeps."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dbus_fixtures import bus_directory, session_bus, system_bus
from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_taskctl import (
    AS_NOBODY,
    Lines,
    interrupt,
    popen_taskctl,
    read_terminal,
    run_on_a_terminal,
    taskctl,
)
from tests.integration.test_tasks import with_tasks

ID = re.compile(r"^[0-9a-f]{8}\n$")
# The real bus policy, as installed (the .deb's /usr/share/dbus-1/system.d).
POLICY = Path(__file__).resolve().parents[2] / "taskmasterd" / "bus" / "org.taskmaster.Taskmaster1.conf"
FINAL = ("succeeded", "failed", "cancelled", "lost")


class Tm:
    """A running taskmasterd with tasks, and the address taskctl reaches it at."""

    def __init__(self, address: str, daemon: Daemon) -> None:
        self.address = address
        self.daemon = daemon

    def stop_tasks(self) -> None:
        """Cancel what still runs (a failed test may leave a task blocked on a
        fifo: the task runner would wait on it for ever)."""
        r = taskctl(self.address, "tasks", "--json")
        if r.returncode != 0:
            return
        ids = [t["id"] for t in json.loads(r.stdout) if t["state"] not in FINAL]
        if ids:
            taskctl(self.address, "cancel", *ids)


def start_daemon(config: Path, address: str) -> Daemon:
    d = Daemon(config, "--address", address)
    d.wait_for(event("DAEMON_START"))
    return d


@pytest.fixture
def tm(write_config: WriteConfig, daemons: Any, bus_address: str) -> Iterator[Tm]:
    d = daemons(with_tasks(write_config({}), max_parallel=4))
    d.wait_for(event("DAEMON_START"))
    t = Tm(bus_address, d)
    yield t
    if d.proc.poll() is None:
        t.stop_tasks()


def tc(tm: Tm, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return taskctl(tm.address, *args, **kw)  # type: ignore[arg-type]


def tasks_json(tm: Tm) -> dict[str, dict[str, object]]:
    r = tc(tm, "tasks", "--json")
    assert r.returncode == 0, r.stderr
    return {t["id"]: t for t in json.loads(r.stdout)}


def fifo(workdir: Path, name: str = "gate") -> Path:
    path = workdir / name
    os.mkfifo(path)
    return path


def release(path: Path) -> None:
    """Let a task blocked on `read x < path` go on: opened for writing once
    its reader has it open (ENXIO until then), with a timeout."""
    fds: list[int] = []

    def opened() -> bool:
        try:
            fds.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            return False
        return True
    wait_until(f"a reader of {path}", opened)
    try:
        os.write(fds[0], b"go\n")
    finally:
        os.close(fds[0])


def running(tm: Tm, tid: str) -> None:
    wait_until(f"task {tid} running", lambda: tasks_json(tm)[tid]["state"] == "running")


def test_run_prints_the_id_and_the_task_runs(tm: Tm) -> None:
    r = tc(tm, "run", "--", "true")
    assert r.returncode == 0 and ID.match(r.stdout) and r.stderr == "", r
    r = tc(tm, "run", "--json", "--", "true")
    assert r.returncode == 0
    obj = json.loads(r.stdout)
    assert set(obj) == {"id", "state"} and obj["state"] in ("queued", "running", "succeeded")
    r = tc(tm, "run", "--wait", "--name", "hello", "--env", "WHO=world", "--",
           "sh", "-c", 'echo "hello $WHO"; echo oops >&2; exit 0')
    assert r.returncode == 0 and ID.match(r.stdout) and r.stderr == "", r
    tid = r.stdout.strip()
    # its properties and the end of its output
    r = tc(tm, "task", tid)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^Id: +{tid}$", r.stdout, re.M)
    assert re.search(r"^Name: +hello$", r.stdout, re.M)
    assert "--- stdout (last 10 lines)\nhello world\n" in r.stdout
    assert "--- stderr (last 10 lines)\noops\n" in r.stdout


def test_run_wait_exits_with_the_tasks_status(tm: Tm, workdir: Path) -> None:
    cases = [(["true"], 0, None), (["sh", "-c", "exit 3"], 3, "exited with status 3"),
             (["/nonexistent/tool"], 127, "ENOENT (spawn /nonexistent/tool)"),
             (["sh", "-c", "kill -KILL $$"], 128 + 9, "killed by SIGKILL")]
    for argv, code, why in cases:
        r = tc(tm, "run", "--wait", "--", *argv)
        assert r.returncode == code, (argv, r)
        assert ID.match(r.stdout), r.stdout  # the id first, at once
        if why is None:
            assert r.stderr == ""
        else:
            assert r.stderr.count("\n") == 1 and why in r.stderr, r.stderr
    plain = workdir / "plain"
    plain.write_text("not a program\n")
    plain.chmod(0o644)  # no x bit: execve fails with EACCES, even for root
    r = tc(tm, "run", "--wait", "--", str(plain))
    assert r.returncode == 126 and f"EACCES (spawn {plain})" in r.stderr, r
    # Over its own timeout: the runner stops it (stopsignal); 124 as timeout(1)
    # and taskmasterd --run-task say.
    r = tc(tm, "run", "--wait", "--timeout", "0.2", "--", "sleep", "60")
    assert r.returncode == 124, r
    assert r.stderr.endswith("failed: timed out after 0.2 s (stopped with SIGTERM)\n"), r.stderr
    r = tc(tm, "--json", "run", "--wait", "--", "sh", "-c", "exit 3")
    end = json.loads(r.stdout)
    assert (r.returncode, end["state"], end["exit_code"], end["exit_status"]) == (3, "failed", 3, 3)


def test_progress_on_a_terminal_only_and_the_wait_timeout(tm: Tm, workdir: Path) -> None:
    gate = fifo(workdir)
    proc, master = run_on_a_terminal(tm.address, "run", "--wait", "--",
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
    r = tc(tm, "run", "--wait", "--wait-timeout", "0.5", "--", "sh", "-c", f"read x < {gate2}")
    assert r.returncode == 124, r
    tid = r.stdout.strip()
    assert re.fullmatch(f"taskctl: gave up waiting after 0.5 s: task {tid} is still "
                        r"(queued|running) \(it goes on; taskctl task shows it\)\n",
                        r.stderr), r.stderr
    running(tm, tid)  # it goes on
    release(gate2)
    # An activity's wait: --wait-timeout as run's (or --timeout, as start's).
    act = workdir / "act.json"
    act.write_text(json.dumps({"tasks": [{"command": "sh", "args": ["-c", f"read x < {gate2}"]}]}))
    for flag in ("--wait-timeout", "--timeout"):
        r = tc(tm, "activity", "--file", str(act), "--wait", flag, "0.5")
        aid = r.stdout.strip()
        assert r.returncode == 124 and ID.match(r.stdout), r
        assert re.fullmatch(f"taskctl: gave up waiting after 0.5 s: activity {aid} is still "
                            r"(queued|running) \(it goes on; taskctl activities shows it\)\n",
                            r.stderr), r.stderr
        release(gate2)


def test_ctrl_c_stops_waiting_not_the_task(tm: Tm, workdir: Path) -> None:
    gate = fifo(workdir)
    proc, master = run_on_a_terminal(tm.address, "run", "--wait", "--",
                                     "sh", "-c", f"read x < {gate}")
    try:
        read_terminal(master, "(running); ")  # the progress line, once it has started
        proc.send_signal(signal.SIGINT)
        screen = read_terminal(master, "\x00")
        out, _ = proc.communicate(timeout=10)
    finally:
        os.close(master)
    tid = out.decode().strip()
    assert proc.returncode == 130
    assert f"stopped waiting: task {tid} is still running (it goes on)" in screen
    assert tasks_json(tm)[tid]["state"] == "running"
    release(gate)


def test_tasks_table_and_json(tm: Tm) -> None:
    ok = tc(tm, "run", "--wait", "--name", "fine", "--", "true").stdout.strip()
    bad = tc(tm, "run", "--wait", "--", "sh", "-c", "exit 3").stdout.strip()
    gone = tc(tm, "run", "--wait", "--", "/nonexistent/tool").stdout.strip()
    r = tc(tm, "tasks")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "EXIT", "STARTED", "DURATION", "REASON"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert rows[ok][1:4] == ["fine", "succeeded", "0"]
    assert rows[bad][1:4] == ["sh", "failed", "3"]
    assert rows[bad][-4:] == ["exited", "with", "status", "3"]
    # (the runner tried to start it: it has a start time, and ran for no time)
    assert rows[gone][1:4] == ["tool", "failed", "ENOENT"]
    assert rows[gone][5] == "0:00:00"
    objs = tasks_json(tm)
    assert list(objs) == [ok, bad, gone]  # submission order
    keys = {"id", "name", "state", "command", "activity", "submitted", "started", "ended", "pid",
            "exit_code", "signal", "spawn_error", "reason"}
    assert all(set(o) == keys for o in objs.values())
    assert objs[bad]["exit_code"] == 3 and objs[bad]["reason"] == "exited with status 3"
    assert objs[gone]["spawn_error"] == {"code": "ENOENT", "syscall": "spawn /nonexistent/tool",
                                         "message": "No such file or directory"}
    assert objs[ok]["started"].endswith("Z")  # type: ignore[union-attr]  # status.json's times
    r = tc(tm, "tasks", "--json", "--state", "failed")
    assert [t["id"] for t in json.loads(r.stdout)] == [bad, gone]


def test_task_output_tail_is_the_last_lines(tm: Tm) -> None:
    tid = tc(tm, "run", "--wait", "--", "seq", "1", "100000").stdout.strip()
    r = tc(tm, "task", "-n", "3", tid)
    assert r.returncode == 0
    assert "--- stdout (last 3 lines)\n99998\n99999\n100000\n" in r.stdout
    assert "--- stderr: empty" in r.stdout
    r = tc(tm, "--json", "task", "-n", "2", tid)
    obj = json.loads(r.stdout)
    assert (obj["stdout"], obj["stderr"], obj["args"]) == ("99999\n100000\n", "", ["1", "100000"])


def test_cancel_a_task_and_an_activity(tm: Tm, workdir: Path) -> None:
    gate = fifo(workdir)
    tid = tc(tm, "run", "--", "sh", "-c", f"read x < {gate}").stdout.strip()
    running(tm, tid)  # stopped by the runner (a queued one: by the daemon, below)
    r = tc(tm, "cancel", tid)
    assert (r.returncode, r.stdout) == (0, f"task {tid}: cancelled\n"), r.stderr
    wait_until("the task cancelled", lambda: tasks_json(tm)[tid]["state"] == "cancelled")
    me = f"cancelled over D-Bus by uid {os.getuid()}"  # who asked, from the bus
    assert tasks_json(tm)[tid]["reason"] == me
    r = tc(tm, "cancel", tid)  # already ended
    assert r.returncode == 1 and r.stderr == (f"{tid}: ERROR (not running): task {tid} has "
                                              "already ended (cancelled)\n"), r
    act = workdir / "act.json"
    act.write_text(json.dumps({"name": "deploy", "tasks": [
        {"command": "sh", "args": ["-c", f"read x < {gate}"]}, {"command": "true"}]}))
    aid = tc(tm, "activity", "--file", str(act)).stdout.strip()
    # Its second task waits for the first: queued, no output file yet.
    [queued] = [t for t, o in tasks_json(tm).items() if o["activity"] == aid and
                o["name"] == "true"]
    r = tc(tm, "task", queued)
    assert r.returncode == 0 and r.stderr == "", r
    assert re.search(r"^State: +queued$", r.stdout, re.M) and re.search(
        rf"^Activity: +{aid}$", r.stdout, re.M), r.stdout
    assert "--- stdout: empty" in r.stdout and "--- stderr: empty" in r.stdout
    [first] = [t for t, o in tasks_json(tm).items() if o["activity"] == aid and t != queued]
    running(tm, first)
    r = tc(tm, "cancel", aid)
    assert (r.returncode, r.stdout) == (0, f"activity {aid}: cancelled\n"), r.stderr

    def activity() -> dict[str, Any]:
        [obj] = json.loads(tc(tm, "activities", "--json").stdout)
        return obj  # type: ignore[no-any-return]
    # (it ends once the runner has stopped its running task)
    wait_until("the activity cancelled", lambda: activity()["state"] == "cancelled")
    obj = activity()
    assert (obj["id"], obj["tasks"], obj["reason"]) == (aid, [first, queued], me), obj
    second = queued
    wait_until("its tasks cancelled", lambda: [tasks_json(tm)[t]["state"] for t in obj["tasks"]]
               == ["cancelled", "cancelled"])
    after = tasks_json(tm)
    assert after[first]["reason"] == after[second]["reason"] == me
    assert after[first]["signal"] == "SIGTERM"  # the default tasks.stopsignal
    r = tc(tm, "cancel", aid)  # already ended
    assert r.returncode == 1 and r.stderr == (f"{aid}: ERROR (not running): activity {aid} has "
                                              "already ended (cancelled)\n"), r


def test_activity_wait_exits_with_the_failing_tasks_code(tm: Tm, workdir: Path) -> None:
    good = workdir / "good.json"
    good.write_text(json.dumps({"name": "ok", "tasks": [{"command": "true"}] * 3}))
    r = tc(tm, "activity", "--file", str(good), "--wait")
    assert r.returncode == 0 and ID.match(r.stdout) and r.stderr == "", r
    bad = workdir / "bad.json"
    bad.write_text(json.dumps({"name": "deploy", "tasks": [
        {"command": "true"}, {"command": "sh", "args": ["-c", "exit 5"], "name": "migrate"},
        {"command": "true"}]}))
    r = tc(tm, "activity", "--file", str(bad), "--wait")
    aid = r.stdout.strip()
    assert r.returncode == 5, r
    assert r.stderr.startswith(f"taskctl: activity {aid} failed at task ")
    assert "(migrate) failed: exited with status 5" in r.stderr
    r = tc(tm, "tasks", "--json", "--activity", aid)
    assert [t["state"] for t in json.loads(r.stdout)] == ["succeeded", "failed", "cancelled"]
    r = tc(tm, "activities")
    assert r.stdout.splitlines()[0].split() == ["ID", "NAME", "STATE", "TASKS", "STARTED",
                                                "DURATION", "REASON"]
    r = tc(tm, "task", aid)  # an activity id: the activity, then its tasks
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[:3] == [aid, "deploy", "failed"]
    assert len(r.stdout.splitlines()) == 2 + 1 + 4
    # The daemon refuses a task for an ended activity (TaskInvalid): exit 2, its words.
    r = tc(tm, "run", "--activity", aid, "--", "true")
    assert r.returncode == 2 and r.stderr == (f"run: ERROR (invalid task): activity {aid} has "
                                              "ended (failed)\n"), r


def test_events_shows_tasks_and_activities(tm: Tm, workdir: Path) -> None:
    human = popen_taskctl(tm.address, "events")
    as_json = popen_taskctl(tm.address, "--json", "events")
    try:
        for p in (human, as_json):  # subscribed once this is said
            assert Lines(p.stderr).next().startswith("taskctl: following the events")
        act = workdir / "act.json"
        act.write_text(json.dumps({"name": "deploy", "tasks": [
            {"command": "true", "name": "first"},
            {"command": "sh", "args": ["-c", "exit 4"], "name": "second"}]}))
        r = tc(tm, "activity", "--file", str(act), "--wait")
        assert r.returncode == 4, r
        aid = r.stdout.strip()
        ids = [t for t, o in tasks_json(tm).items() if o["activity"] == aid]
        out = Lines(as_json.stdout)
        seen = [json.loads(out.next()) for _ in range(8)]
        got = [(e["event"], e["id"], e["old"], e["new"]) for e in seen]
        assert sorted(got) == sorted([
            ("TaskStateChanged", ids[0], "", "queued"), ("TaskStateChanged", ids[1], "", "queued"),
            ("ActivityStateChanged", aid, "queued", "running"),
            ("TaskStateChanged", ids[0], "queued", "running"),
            ("TaskStateChanged", ids[0], "running", "succeeded"),
            ("TaskStateChanged", ids[1], "queued", "running"),
            ("TaskStateChanged", ids[1], "running", "failed"),
            ("ActivityStateChanged", aid, "running", "failed")]), got
        # each task's changes in order, the activity's end after its task's
        for id in ids:
            assert [n for ev, i, _, n in got if i == id] == ["queued", "running", "failed"
                                                             if id == ids[1] else "succeeded"]
        assert got.index(("TaskStateChanged", ids[1], "running", "failed")) < \
            got.index(("ActivityStateChanged", aid, "running", "failed"))
        [end] = [e for e in seen if e["event"] == "TaskStateChanged" and e["new"] == "failed"]
        assert (end["exit_code"], end["reason"], end["activity"]) == (4, "exited with status 4", aid)
        text = Lines(human.stdout)
        lines = [text.next() for _ in range(8)]
        assert any(ln.endswith(f" task {ids[0]} first: queued") for ln in lines), lines
        assert any(ln.endswith(f" task {ids[1]} second: running -> failed (exited with status 4)")
                   for ln in lines), lines
        assert any(f" activity {aid} deploy: running -> failed (" in ln for ln in lines), lines
    finally:
        results = [interrupt(p) for p in (human, as_json)]
    assert all(code == 130 for code, _ in results), results


@pytest.mark.parametrize(("text", "where"), [
    ('{"command": "true",\n  "args": [}', ":2:12: not valid JSON"),
    ('{"command": "true", "arg": []}', ": unknown key 'arg' (did you mean 'args'?)"),
    ('{"command": "true", "args": [1]}', ".args[0]: expected a string, got a number"),
])
def test_a_bad_task_file_is_named_and_nothing_is_submitted(tm: Tm, workdir: Path,
                                                           text: str, where: str) -> None:
    path = workdir / "task.json"
    path.write_text(text)
    r = tc(tm, "run", "--file", str(path))
    assert (r.returncode, r.stdout) == (2, ""), r
    assert r.stderr.startswith(f"taskctl: {path}{where}") and r.stderr.count("\n") == 1, r.stderr
    assert tasks_json(tm) == {}


def test_bad_usage_of_run(tm: Tm, workdir: Path) -> None:
    for args, words in ((["run"], "a command is needed"),
                        (["run", "--env", "NOEQUALS", "--", "true"], "expected NAME=VALUE"),
                        (["run", "--env", "1X=2", "--", "true"], "is not a variable name"),
                        (["run", "--file", str(workdir / "none.json")], "cannot read"),
                        (["run", "--workdir", "relative", "--", "true"], "absolute path")):
        r = tc(tm, *args)
        assert r.returncode == 2 and words in r.stderr, (args, r)
    assert tasks_json(tm) == {}


def test_unknown_ids_exit_4(tm: Tm) -> None:
    for args in (["task", "deadbeef"], ["cancel", "deadbeef"],
                 ["tasks", "--activity", "deadbeef"]):
        r = tc(tm, *args)
        assert (r.returncode, r.stdout) == (4, ""), (args, r)
        assert r.stderr == ("deadbeef: ERROR (no such task): no task or activity has the id "
                            "deadbeef (taskctl tasks lists them)\n")
    # Appending to an unknown activity: the daemon finds the task invalid
    # (its `activity` key names nothing to append to), exit 2, its words.
    r = tc(tm, "run", "--activity", "deadbeef", "--", "true")
    assert (r.returncode, r.stdout) == (2, ""), r
    assert r.stderr == ("run: ERROR (invalid task): activity: no activity 'deadbeef' to append "
                        "the task to\n")
    assert tasks_json(tm) == {}


def test_the_shell_completes_task_ids(tm: Tm) -> None:
    from taskctl.client import Client
    from taskctl.shell import Shell
    from taskmasterd.busaddr import BusChoice

    ids = [tc(tm, "run", "--wait", "--", "true").stdout.strip() for _ in range(3)]
    with Client(BusChoice("address", tm.address), timeout=10) as client:
        shell = Shell(client)
        assert shell.task_ids() == sorted(ids)
        from taskctl.shell import complete_words

        first = ids[0]
        assert complete_words("task ", first[:5], shell.names, shell.task_ids) == \
            [i for i in sorted(ids) if i.startswith(first[:5])]
        assert complete_words(f"cancel {first} ", "", shell.names, shell.task_ids) == \
            sorted(set(ids) - {first})
        assert complete_words("tasks --state ", "f", shell.names, shell.task_ids) == ["failed"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv (to run taskctl as uid 65534)")
def test_unprivileged_users_may_look_not_submit_nor_read_output(write_config: WriteConfig) -> None:
    """The real policy file on a system-like bus: everyone lists and reads
    properties; submit, cancel and OpenOutput are root's and the group
    taskmaster's."""
    cfg = with_tasks(write_config({}))
    with bus_directory() as directory, system_bus(directory, POLICY) as address:
        d = start_daemon(cfg, address)
        try:
            nobody = tuple(AS_NOBODY)
            tid = taskctl(address, "run", "--wait", "--env", "X=hidden", "--",
                          "sh", "-c", 'echo "$X"').stdout.strip()
            r = taskctl(address, "run", "--", "true", prefix=nobody)
            assert (r.returncode, r.stdout) == (1, ""), r
            assert r.stderr.startswith("run: ERROR (access denied): only root and members "
                                       "of the group taskmaster"), r.stderr
            assert r.stderr.count("\n") == 1
            r = taskctl(address, "tasks", prefix=nobody)
            assert r.returncode == 0 and tid in r.stdout, r.stderr
            r = taskctl(address, "task", tid, prefix=nobody)
            assert r.returncode == 0 and re.search(r"^State: +succeeded$", r.stdout, re.M), r
            assert "hidden" not in r.stdout  # the output is root's and taskmaster's
            assert r.stderr == (f"taskctl: the output of task {tid} is not shown: only root "
                                "and members of the group taskmaster may read a task's "
                                "output\n")
            r = taskctl(address, "cancel", tid, prefix=nobody)
            assert r.returncode == 1 and "ERROR (access denied)" in r.stderr, r
            assert [t["id"] for t in json.loads(taskctl(address, "tasks", "--json").stdout)] \
                == [tid]  # nothing submitted by nobody
        finally:
            d.terminate()


def test_no_daemon_exits_7(workdir: Path) -> None:
    with session_bus(workdir) as address:
        r = taskctl(address, "tasks")
        assert r.returncode == 7 and "cannot reach taskmasterd" in r.stderr
