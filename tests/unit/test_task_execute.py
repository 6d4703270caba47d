"""The decisions of a task's execution (taskmasterd/tasks/execute.py): which
status follows a spawn, a spawn error, an exit, a timeout, a cancel; the
task's environment and launch; the shell's exit status of --run-task. Pure:
no process is started here."""

from __future__ import annotations

import signal

import pytest

from taskmasterd.lifecycle import SpawnError
from taskmasterd.programschema import OutputKind
from taskmasterd.tasks.execute import (
    CANCEL,
    TIMEOUT,
    Stop,
    beat,
    cancelled_unstarted,
    ended,
    exit_status,
    launch_spec,
    running,
    spawn_error,
    spawn_failed,
    summary,
    task_env,
    timeout_reason,
)
from taskmasterd.tasks.records import TaskState, TaskStatus, decode_task, encode_task
from taskmasterd.tasks.spec import parse_task
from taskmasterd.tasks.taskfiles import TaskDir

QUEUED = TaskStatus(id="3df2bb24", spec=parse_task({"command": "backup", "args": ["--all"],
                                                     "env": {"TASKMASTER_TASK_ID": "spoof", "A": "1"},
                                                     "workingdir": "/srv", "timeout": 30}),
                    state=TaskState.QUEUED, seq=4, submitted=1000.0, timeout=30.0, activity="aa11bb22",
                    position=1)
RUNNING = running(QUEUED, pid=4242, start_ticks=777, runner_pid=99, now=1001.0)


def test_running_records_the_process_and_its_first_heartbeat() -> None:
    assert RUNNING.state is TaskState.RUNNING
    assert (RUNNING.pid, RUNNING.start_ticks, RUNNING.runner_pid) == (4242, 777, 99)
    assert RUNNING.started == RUNNING.heartbeat == 1001.0
    assert RUNNING.ended == 0.0 and RUNNING.exit_code is None and RUNNING.reason == ""
    assert beat(RUNNING, 1031.0).heartbeat == 1031.0
    assert beat(RUNNING, 1031.0).state is TaskState.RUNNING


@pytest.mark.parametrize(("returncode", "state", "code", "sig", "reason"), [
    (0, TaskState.SUCCEEDED, 0, None, ""),
    (3, TaskState.FAILED, 3, None, "exited with status 3"),
    (-9, TaskState.FAILED, None, signal.SIGKILL, "killed by SIGKILL"),
    (-15, TaskState.FAILED, None, signal.SIGTERM, "killed by SIGTERM"),
])
def test_an_exit_decides_the_end(returncode: int, state: TaskState, code: int | None,
                                 sig: int | None, reason: str) -> None:
    end = ended(RUNNING, returncode, 1010.0)
    assert (end.state, end.exit_code, end.signal, end.reason, end.ended) == \
        (state, code, sig, reason, 1010.0)
    assert end.pid == 4242  # the process it was stays recorded


def test_a_timeout_fails_the_task_whatever_its_exit() -> None:
    stop = Stop(TIMEOUT, "", signal.SIGTERM, 10.0)
    end = ended(RUNNING, 0, 1031.0, stop)
    assert end.state is TaskState.FAILED and end.exit_code == 0
    assert end.reason == "timed out after 30 s (stopped with SIGTERM)"
    killed = ended(RUNNING, -9, 1041.0, Stop(TIMEOUT, "", signal.SIGTERM, 10.0, killed=True))
    assert killed.reason == "timed out after 30 s (stopped with SIGTERM, SIGKILL after 10 s)"
    assert killed.signal == signal.SIGKILL
    assert timeout_reason(0.5, Stop(TIMEOUT, "", signal.SIGINT, 2.5, killed=True)) == \
        "timed out after 0.5 s (stopped with SIGINT, SIGKILL after 2.5 s)"


def test_a_cancel_ends_cancelled_with_the_callers_reason_and_the_real_exit() -> None:
    stop = Stop(CANCEL, "cancelled by taskctl cancel (uid 0)", signal.SIGTERM, 10.0)
    end = ended(RUNNING, -15, 1005.0, stop)
    assert end.state is TaskState.CANCELLED
    assert end.reason == "cancelled by taskctl cancel (uid 0)"
    assert end.signal == signal.SIGTERM and end.exit_code is None


def test_a_spawn_error_fails_the_task_in_taskds_style() -> None:
    end = spawn_failed(QUEUED, SpawnError("ENOENT", "execve backup", "No such file or directory"),
                       runner_pid=99, now=1001.0)
    assert end.state is TaskState.FAILED
    assert end.spawn_error == SpawnError("ENOENT", "spawn backup", "No such file or directory")
    assert end.reason == "could not be started: ENOENT (spawn backup): No such file or directory"
    assert end.started == end.ended == 1001.0 and end.pid == 0 and end.runner_pid == 99
    # chdir/open/setuid keep spawn.py's text
    chdir = SpawnError("ENOENT", "chdir /srv", "No such file or directory")
    assert spawn_error(chdir, "backup") == chdir
    assert decode_task(encode_task(end)) == end  # the file holds all of it


def test_the_task_env_carries_its_identity_over_its_own_variables() -> None:
    env = task_env(QUEUED)
    assert env == {"TASKMASTER_TASK_ID": "3df2bb24", "A": "1", "TASKMASTER_TASK_NAME": "backup",
                   "TASKMASTER_ACTIVITY": "aa11bb22"}


def test_the_launch_spec_appends_output_to_the_task_dir() -> None:
    spec = launch_spec(QUEUED, TaskDir("/state/tasks/3df2bb24"), {"PATH": "/bin"})
    assert spec.argv == ("backup", "--all")
    assert spec.cwd == "/srv" and spec.umask is None and spec.user is None
    assert spec.stdout.kind is OutputKind.FILE and spec.stdout.path == "/state/tasks/3df2bb24/stdout"
    assert spec.stderr.path == "/state/tasks/3df2bb24/stderr"
    assert spec.stdout_limit == (0, 0)  # the task holds its files itself: no pipe, no log writer
    assert spec.base_env == {"PATH": "/bin"} and spec.env["TASKMASTER_TASK_ID"] == "3df2bb24"


@pytest.mark.parametrize(("status", "code"), [
    (ended(RUNNING, 0, 1.0), 0),
    (ended(RUNNING, 3, 1.0), 3),
    (ended(RUNNING, -9, 1.0), 137),
    (ended(RUNNING, -15, 1.0, Stop(TIMEOUT, "", 15, 1.0)), 124),
    (ended(RUNNING, 0, 1.0, Stop(TIMEOUT, "", 15, 1.0)), 124),
    # cancelled: 1, as taskctl run --wait says (--run-task exits 128+n for the
    # signal it received itself: standalone.py)
    (ended(RUNNING, -15, 1.0, Stop(CANCEL, "x", 15, 1.0)), 1),
    (spawn_failed(QUEUED, SpawnError("ENOENT", "execve x", "m"), 1, 1.0), 127),
    (spawn_failed(QUEUED, SpawnError("EACCES", "execve x", "m"), 1, 1.0), 126),
    (spawn_failed(QUEUED, SpawnError("ENOENT", "chdir /srv", "m"), 1, 1.0), 127),
])
def test_the_shell_exit_status_of_a_task(status: TaskStatus, code: int) -> None:
    assert exit_status(status) == code


def test_one_line_summaries() -> None:
    assert summary(ended(RUNNING, 0, 1.0)) == "task 3df2bb24 (backup) succeeded"
    assert summary(ended(RUNNING, 3, 1.0)) == "task 3df2bb24 (backup) failed: exited with status 3"


def test_a_task_given_to_a_stopping_runner_is_cancelled_unstarted() -> None:
    end = cancelled_unstarted(QUEUED, "the task runner was stopped (SIGTERM)", 99, 5.0)
    assert end.state is TaskState.CANCELLED and end.started == 0.0 and end.ended == 5.0
