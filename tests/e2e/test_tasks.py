"""One-shot tasks under a real systemd, from the installed .deb (issue 14,
docs/tasks.md): Debian's python3 runs the daemon, the task runner it starts
(`python3 -m taskmasterd.tasks.runner`) and `taskmasterd --run-task`, so a
module missing from the package shows here.

The tests run in order on the container of the whole run (conftest.booted),
each on the state the previous one left; the first starts the unit, the last
leaves it stopped with nothing in its control group. In order: a failing
task as root (its files private, `taskctl tasks` agreeing) · an outsider
may list but not run · a member of the group taskmaster runs tasks as
itself, not as root · tasks and an activity survive `systemctl restart`
and `taskctl daemon-reexec` (same pids, TASK_ADOPTED, real exit statuses,
the activity's next task runs) · a task that ends while systemd restarts a SIGKILLed daemon keeps
its real exit status, its event published once · `systemctl stop` for good
kills the runner and its task (taskmasterd-cleanup.service), and the next
start records it `lost` with the reason (its activity fails, the rest is
cancelled) · `taskmasterd --run-task`.

Tasks wait on fifos the test opens (`gate`): no sleeps, no timing guesses.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskmasterd.journal import MESSAGE_IDS
from tests.e2e.container import Container, wait_until
from tests.e2e.helpers import (
    UNIT,
    alive,
    assert_nothing_left,
    drop_in,
    journal_entry,
    systemctl_show,
    taskctl,
    unit_pids,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASKS = "/var/lib/taskmaster/tasks"
GATES = "/root/e2e-gates"
STATE: dict[str, Any] = {}  # what a test leaves to the next ones


def task_rows(box: Container, user: str | None = None) -> dict[str, dict[str, Any]]:
    proc = taskctl(box, "--json", "tasks", user=user)
    assert proc.returncode == 0, f"taskctl tasks: exit {proc.returncode}: {proc.stderr}"
    return {row["id"]: row for row in json.loads(proc.stdout)}


def activities(box: Container) -> dict[str, dict[str, Any]]:
    proc = taskctl(box, "--json", "activities")
    assert proc.returncode == 0, f"taskctl activities: exit {proc.returncode}: {proc.stderr}"
    return {row["id"]: row for row in json.loads(proc.stdout)}


def wait_task(box: Container, id: str, state: str, timeout: float = 20) -> dict[str, Any]:
    def check() -> dict[str, Any]:
        row = task_rows(box).get(id)
        assert row is not None and row["state"] == state, f"task {id}: {row}"
        return row
    return wait_until(check, timeout, f"task {id} to be {state}")


def status_file(box: Container, id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(box.read_file(f"{TASKS}/{id}/status.json"))
    return data


def gated(name: str, code: int) -> list[str]:
    """A task that waits until the test opens its fifo, then exits `code`."""
    return ["sh", "-c", f'read go < "$0"; echo "{name} released"; exit {code}', f"{GATES}/{name}"]


def make_gate(box: Container, name: str) -> None:
    box.run(["sh", "-c", f'mkdir -p {GATES} && rm -f "$0" && mkfifo "$0"', f"{GATES}/{name}"])


def release(box: Container, name: str) -> None:
    """Open the fifo for writing: blocks until the task has it open for reading."""
    box.run(["sh", "-c", 'echo go > "$0"', f"{GATES}/{name}"], timeout=20)


def submit(box: Container, *argv: str) -> str:
    proc = taskctl(box, "run", "--", *argv)
    assert proc.returncode == 0, f"taskctl run: exit {proc.returncode}: {proc.stderr}"
    return proc.stdout.strip()


def events(box: Container, kind: str, id: str, since: int) -> list[dict[str, Any]]:
    """The journal entries of event `kind` for task `id` since the mark."""
    return [e for e in box.journal(f"TASKMASTER_TASK={id}", since=since)
            if e.get("MESSAGE_ID") == MESSAGE_IDS[kind]]


# -- the tests, in order -------------------------------------------------------

def test_a_task_as_root_exits_with_its_status_and_its_files_are_private(
        booted: Container) -> None:
    box = booted
    box.run(["systemctl", "start", UNIT], timeout=60)
    proc = taskctl(box, "run", "--wait", "--", "sh", "-c", "echo to-stderr >&2; exit 3")
    assert proc.returncode == 3, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    id = proc.stdout.split()[0]
    assert "exited with status 3" in proc.stderr, proc.stderr

    modes = box.run(["stat", "-c", "%n %a %U", f"{TASKS}/{id}", f"{TASKS}/{id}/status.json",
                     f"{TASKS}/{id}/stdout", f"{TASKS}/{id}/stderr"]).stdout.split("\n")
    assert [m.split()[1:] for m in modes if m] == [
        ["700", "root"], ["600", "root"], ["600", "root"], ["600", "root"]], modes
    assert box.read_file(f"{TASKS}/{id}/stderr") == "to-stderr\n"
    # The runner's socket: it runs tasks as root, so root's alone.
    sockets = box.run(["sh", "-c", "stat -c '%a %U %F' /run/taskmaster/taskrunner-*.sock"]).stdout
    assert sockets == "600 root socket\n", sockets

    on_disk = status_file(box, id)
    row = task_rows(box)[id]
    assert (on_disk["id"], on_disk["state"], on_disk["exit_code"], on_disk["reason"]) == (
        id, "failed", 3, "exited with status 3"), on_disk
    for key in ("state", "exit_code", "signal", "spawn_error", "reason", "submitted", "started",
                "ended", "command", "activity"):
        assert row[key] == on_disk[key], f"{key}: taskctl {row[key]!r}, status.json {on_disk[key]!r}"


def test_an_outsider_may_list_tasks_but_not_run_one(booted: Container) -> None:
    """nobody is not in the group taskmaster: ListTasks yes, SubmitTask no (bus policy)."""
    box = booted
    before = task_rows(box)
    assert task_rows(box, user="nobody") == before
    table = taskctl(box, "tasks", user="nobody")
    assert table.returncode == 0 and all(id in table.stdout for id in before), table
    proc = taskctl(box, "run", "--", "true", user="nobody")
    assert proc.returncode == 1, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert proc.stdout == ""
    assert proc.stderr == ("run: ERROR (access denied): only root and members of the group "
                           "taskmaster may do this (refused by the bus policy)\n"), proc.stderr
    assert task_rows(box) == before  # nothing queued


def test_a_member_of_the_group_runs_tasks_as_itself_not_as_root(booted: Container) -> None:
    """The group taskmaster controls the daemon; it does not become root
    through it: uid 65534 with the group's gid gets its task run as 65534."""
    box = booted
    gid = box.run(["getent", "group", "taskmaster"]).stdout.split(":")[2]
    member = ["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups", "taskctl",
              "--system", "run"]
    proc = box.run([*member, "--wait", "--", "id", "-u"], check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    id = proc.stdout.split()[0]
    assert box.read_file(f"{TASKS}/{id}/stdout") == "65534\n"
    assert status_file(box, id)["user"] == "nobody"
    before = task_rows(box)
    proc = box.run([*member, "--user", "root", "--", "id", "-u"], check=False)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert proc.stderr == ("run: ERROR (invalid task): task.user: 'root' is not you (uid 65534, "
                           "nobody): only root may submit a task that runs as another user\n")
    assert task_rows(box) == before  # nothing queued
    proc = box.run([*member[:-1], "activity", "--wait", "--file", "-"], check=False, input=(
        json.dumps({"name": "e2e-member", "tasks": [{"command": "id", "args": ["-u"]}]})))
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    id, = activities(box)[proc.stdout.split()[0]]["tasks"]
    assert box.read_file(f"{TASKS}/{id}/stdout") == "65534\n"


def test_tasks_and_an_activity_survive_systemctl_restart(booted: Container) -> None:
    box = booted
    for gate in ("lone", "first"):
        make_gate(box, gate)
    lone = submit(box, *gated("lone", 7))
    activity = {"name": "e2e-restart", "tasks": [
        {"command": gated("first", 0)[0], "args": gated("first", 0)[1:]},
        {"command": "sh", "args": ["-c", "echo second ran"]}]}
    box.write_file("/root/activity.json", json.dumps(activity))
    proc = taskctl(box, "activity", "--file", "/root/activity.json")
    assert proc.returncode == 0, proc.stderr
    act = proc.stdout.strip()
    first, second = activities(box)[act]["tasks"]
    running = {id: wait_task(box, id, "running")["pid"] for id in (lone, first)}
    assert task_rows(box)[second]["state"] == "queued"
    runner = status_file(box, lone)["runner_pid"]
    assert runner in unit_pids(box)  # where the cleanup unit would find it

    # A restart by hand (a new daemon process), then an in-place upgrade (the
    # same process, a new image: what the package's postinst does).
    for how in (["systemctl", "restart", UNIT], ["taskctl", "daemon-reexec"]):
        daemon = systemctl_show(box, "MainPID")
        since = box.journal_mark()
        box.run(how, timeout=60)
        if how[0] == "systemctl":
            assert systemctl_show(box, "MainPID") not in ("0", daemon)
        else:
            assert systemctl_show(box, "MainPID") == daemon
        assert alive(box, [runner, *running.values()]) == sorted([runner, *running.values()])
        for id, pid in running.items():
            adopted = journal_entry(
                box, f"TASK_ADOPTED of {id} after {' '.join(how)}", f"TASKMASTER_TASK={id}",
                since=since, where=lambda e: e.get("MESSAGE_ID") == MESSAGE_IDS["TASK_ADOPTED"])
            assert adopted["SYSLOG_IDENTIFIER"] == "taskmasterd"
            assert adopted.get("TASKMASTER_EVENT") == "TASK_ADOPTED", adopted
            assert wait_task(box, id, "running")["pid"] == pid
        assert task_rows(box)[second]["state"] == "queued"

    release(box, "lone")
    release(box, "first")
    row = wait_task(box, lone, "failed")
    assert (row["exit_code"], row["reason"]) == (7, "exited with status 7"), row
    assert wait_task(box, first, "succeeded")["exit_code"] == 0
    assert wait_task(box, second, "succeeded")["exit_code"] == 0
    assert box.read_file(f"{TASKS}/{second}/stdout") == "second ran\n"
    assert box.read_file(f"{TASKS}/{first}/stdout") == "first released\n"
    assert activities(box)[act]["state"] == "succeeded", activities(box)[act]


def test_a_task_ending_while_systemd_restarts_a_killed_daemon_keeps_its_status(
        booted: Container) -> None:
    """KillMode=process spares the runner; the task ends during the restart
    delay (made 3 s here so that it surely ends then); the new daemon finds
    the status the runner wrote and publishes its end once."""
    box = booted
    with drop_in(box, "[Service]\nRestartSec=3\n"):
        make_gate(box, "crash")
        id = submit(box, *gated("crash", 9))
        pid = wait_task(box, id, "running")["pid"]
        restarts = int(systemctl_show(box, "NRestarts"))
        daemon = systemctl_show(box, "MainPID")
        since = box.journal_mark()
        box.run(["systemctl", "kill", "-s", "KILL", "--kill-whom=main", UNIT])
        wait_until(lambda: systemctl_show(box, "SubState") == "auto-restart", 10,
                   "SubState=auto-restart")
        release(box, "crash")

        def ended_on_disk() -> dict[str, Any]:
            data = status_file(box, id)
            assert data["state"] == "failed", data
            return data
        on_disk = wait_until(ended_on_disk, 10, "the runner to write the task's end")
        assert (on_disk["exit_code"], on_disk["reason"]) == (9, "exited with status 9"), on_disk
        assert systemctl_show(box, "SubState") == "auto-restart", "it ended after the restart"
        assert alive(box, [pid]) == []

        def restarted() -> bool:
            assert int(systemctl_show(box, "NRestarts")) == restarts + 1
            assert systemctl_show(box, "ActiveState") == "active"
            assert systemctl_show(box, "MainPID") not in ("0", daemon)
            return True
        wait_until(restarted, 20, "systemd to restart the unit")
    row = wait_task(box, id, "failed")
    assert (row["exit_code"], row["reason"], row["pid"]) == (9, "exited with status 9", pid), row
    journal_entry(box, f"TASK_FAILED of {id}", f"TASKMASTER_TASK={id}", since=since,
                  where=lambda e: e.get("MESSAGE_ID") == MESSAGE_IDS["TASK_FAILED"])
    STATE["crash"] = (id, since)


def test_a_stop_for_good_kills_running_tasks_and_the_next_start_says_lost(
        booted: Container) -> None:
    box = booted
    make_gate(box, "stop")
    activity = {"name": "e2e-stop", "tasks": [
        {"command": gated("stop", 0)[0], "args": gated("stop", 0)[1:]},
        {"command": "true"}]}
    box.write_file("/root/activity.json", json.dumps(activity))
    proc = taskctl(box, "activity", "--file", "/root/activity.json")
    assert proc.returncode == 0, proc.stderr
    act = proc.stdout.strip()
    id, after = activities(box)[act]["tasks"]
    pid = wait_task(box, id, "running")["pid"]
    runner = status_file(box, id)["runner_pid"]
    everyone = [*unit_pids(box), pid, runner]
    since = box.journal_mark()
    box.run(["systemctl", "stop", UNIT], timeout=60)
    assert_nothing_left(box, everyone, "after a stop for good with a task running")
    assert status_file(box, id)["state"] == "running"  # nobody could record its end
    assert status_file(box, after)["state"] == "queued"

    box.run(["systemctl", "start", UNIT], timeout=60)
    row = wait_task(box, id, "lost")
    assert row["reason"].startswith("its task runner died while it ran (last heartbeat "), row
    assert status_file(box, id)["reason"] == row["reason"]
    # Its activity fails there; the task after it never runs.
    row = wait_task(box, after, "cancelled")
    assert row["reason"] == f"activity {act} failed at task {id}", row
    ended = activities(box)[act]
    assert (ended["state"], ended["failed_task"]) == ("failed", id), ended
    journal_entry(box, f"TASK_LOST of {id}", f"TASKMASTER_TASK={id}", since=since,
                  where=lambda e: e.get("MESSAGE_ID") == MESSAGE_IDS["TASK_LOST"])
    # The task that ended while systemd restarted the daemon: its end was
    # published once, by the daemon that came next, not again by this one.
    crash, crash_since = STATE["crash"]
    assert len(events(box, "TASK_FAILED", crash, crash_since)) == 1
    everyone = [*unit_pids(box)]
    box.run(["systemctl", "stop", UNIT], timeout=60)
    assert_nothing_left(box, everyone, "after the last stop")


def test_run_task_from_the_installed_package(booted: Container) -> None:
    """No daemon, no bus: the files in the current directory, its exit status."""
    box = booted
    task = {"command": "sh", "args": ["-c", "echo out; echo err >&2; exit 4"]}
    box.write_file("/root/task.json", json.dumps(task))
    proc = box.run(["sh", "-c", "rm -rf /root/run1 && mkdir /root/run1 && cd /root/run1 && "
                    "exec taskmasterd --run-task /root/task.json"], check=False, timeout=30)
    assert proc.returncode == 4, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert box.read_file("/root/run1/stdout") == "out\n"
    assert box.read_file("/root/run1/stderr") == "err\n"
    data = json.loads(box.read_file("/root/run1/status.json"))
    assert (data["id"], data["state"], data["exit_code"]) == ("cli", "failed", 4), data
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "inactive"
