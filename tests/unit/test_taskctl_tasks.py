"""taskctl's task commands without a daemon: the output (taskctl.taskformat),
the exit status of a task's end, TaskWatch (the --wait logic), reading the
last lines of an output file, the grammar, the shell's completion of ids."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytest

from taskctl import taskformat as tf
from taskctl.model import ActivityChanged, ActivityRow, TaskChanged, TaskRow
from taskctl.parser import build_parser
from taskctl.shell import complete_words
from taskctl.tasks import Usage, last_lines, task_spec
from taskctl.taskwait import TaskWatch

NOW = 1_780_000_000.0
US = 1_000_000


def row(id: str = "3df2bb24", state: str = "succeeded", *, code: int = 0, sig: str = "",
        spawn: str = "", reason: str = "", activity: str = "", started: float = NOW - 65,
        ended: float = NOW - 5, name: str = "backup") -> TaskRow:
    return TaskRow(id, name, state, activity, "/usr/bin/backup", 0, code, sig, spawn, reason,
                   int((NOW - 100) * US), int(started * US), int(ended * US))


def act(id: str = "aaaa0001", state: str = "running", tasks: tuple[str, ...] = ("t1", "t2"),
        failed: str = "") -> ActivityRow:
    return ActivityRow(id, "deploy", state, tasks, failed, "", int(NOW * US), int(NOW * US), 0)


# ---- exit status of an end -----------------------------------------------------------


@pytest.mark.parametrize(("r", "code"), [
    (row(), 0),
    (row(state="failed", code=3, reason="exited with status 3"), 3),
    (row(state="failed", code=-1, sig="SIGKILL"), 137),
    # stopped for its timeout: 124 as timeout(1) (and taskmasterd --run-task)
    (row(state="failed", code=-1, sig="SIGTERM", reason="timed out after 30 s"), 124),
    (row(state="failed", code=-1, sig="SIGKILL",
         reason="timed out after 30 s (stopped with SIGTERM, SIGKILL after 10 s)"), 124),
    (row(state="failed", code=-1, sig="SIG77"), 128 + 77),
    (row(state="failed", code=-1, spawn="ENOENT (spawn x): No such file or directory"), 127),
    (row(state="failed", code=-1, spawn="EACCES (spawn x): Permission denied"), 126),
    (row(state="cancelled", code=-1, sig="SIGTERM", reason="cancelled"), 1),
    (row(state="lost", code=-1, reason="its task runner died"), 1),
    (row(state="failed", code=-1, reason="?"), 1),
])
def test_task_exit_code(r: TaskRow, code: int) -> None:
    assert tf.task_exit_code(r) == code


# ---- rendering -----------------------------------------------------------------------


def test_table_columns_and_cut_to_the_width() -> None:
    rows = [row(), row("0badc0de", "failed", code=3, reason="exited with status 3 " + "x" * 80),
            row("00000001", "queued", code=-1, started=0, ended=0),
            row("00000002", "failed", code=-1, started=0, spawn="ENOENT (spawn x): nope")]
    lines = tf.task_lines(rows, NOW)
    assert lines[0].split() == ["ID", "NAME", "STATE", "EXIT", "STARTED", "DURATION", "REASON"]
    cells = [ln.split() for ln in lines[1:]]
    assert cells[0][:4] == ["3df2bb24", "backup", "succeeded", "0"] and cells[0][5] == "0:01:00"
    assert cells[1][3] == "3" and lines[2].endswith("x")
    assert cells[2][3:7] == ["-", "-", "queued", "0:01:40"]  # never started: how long it waited
    assert cells[3][3:6] == ["ENOENT", "-", "-"]
    cut = tf.task_lines(rows, NOW, width=60)
    assert all(len(ln) <= 60 for ln in cut) and cut[2].endswith("…")
    assert tf.task_lines(rows, NOW, width=500) == lines


def test_json_uses_the_keys_and_formats_of_status_json() -> None:
    from taskmasterd.lifecycle import SpawnError
    from taskmasterd.tasks.records import TaskState, TaskStatus
    from taskmasterd.tasks.records import task_json as file_json
    from taskmasterd.tasks.spec import TaskSpec

    status = TaskStatus(id="0badc0de", spec=TaskSpec("/bin/x"), state=TaskState.FAILED, seq=1,
                        submitted=NOW - 100, started=0.0, ended=NOW - 5,
                        spawn_error=SpawnError("ENOENT", "spawn /bin/x", "No such file or directory"),
                        reason="could not be started")
    r = TaskRow("0badc0de", "x", "failed", "", "/bin/x", 0, -1, "",
                "ENOENT (spawn /bin/x): No such file or directory", "could not be started",
                int((NOW - 100) * US), 0, int((NOW - 5) * US))
    ours, theirs = tf.task_json(r), file_json(status)
    assert set(ours) <= set(theirs)
    for key in ours:
        if key in ("submitted", "ended"):  # µs on the bus: the same instant, same format
            assert ours[key][:19] == theirs[key][:19] and ours[key].endswith("Z")  # type: ignore[index]
        else:
            assert ours[key] == theirs[key], key


def test_spawn_error_text_back_to_an_object() -> None:
    assert tf.spawn_error_json("") is None
    assert tf.spawn_error_json("EACCES (chdir /srv): Permission denied") == {
        "code": "EACCES", "syscall": "chdir /srv", "message": "Permission denied"}
    assert tf.spawn_error_json("odd") == {"code": "", "syscall": "", "message": "odd"}


# ---- TaskWatch --------------------------------------------------------------------------


def changed(id: str, new: str, activity: str = "") -> TaskChanged:
    return TaskChanged(id, "n", activity, "running", new, -1, "", NOW)


def test_a_task_watch_ends_on_the_rows_after_a_final_event() -> None:
    w = TaskWatch("task", "t1")
    assert w.on_rows(([row("t1", "running", code=-1, ended=0)], [])) == []
    assert w.on_event(changed("other", "failed")) == [] and not w.recheck
    assert w.on_event(changed("t1", "failed")) == [] and w.recheck  # the rows decide
    [ended] = w.on_rows(([row("t1", "failed", code=-1, sig="SIGKILL")], []))
    assert (ended.code, ended.state, w.pending()) == (137, "failed", [])
    assert w.on_event(changed("t1", "failed")) == []


def test_a_task_that_disappears_ends_the_wait() -> None:
    w = TaskWatch("task", "t1")
    [ended] = w.on_rows(([], []))
    assert ended.gone and ended.code == 1


def test_an_activity_watch_waits_for_the_failing_tasks_final_row() -> None:
    """The tasks are listed before the activities: a row set where the
    activity has failed but its failing task still looks running asks for
    another look rather than guessing the exit code."""
    w = TaskWatch("activity", "aaaa0001")
    w.on_event(ActivityChanged("aaaa0001", "deploy", "running", "failed", "t2", "", NOW))
    assert w.recheck
    stale = [row("t1"), row("t2", "running", code=-1, ended=0)]
    assert w.on_rows((stale, [act(state="failed", failed="t2")])) == [] and w.recheck
    fresh = [row("t1"), row("t2", "failed", code=5, reason="exited with status 5")]
    [ended] = w.on_rows((fresh, [act(state="failed", failed="t2")]))
    assert (ended.code, ended.task and ended.task.id) == (5, "t2")


def test_an_activity_watch_progress_names_the_running_task() -> None:
    w = TaskWatch("activity", "aaaa0001")
    w.on_rows(([row("t1", "running", code=-1, ended=0, name="build")], [act()]))
    assert w.progress(3.2, None) == "waiting for activity aaaa0001 (running, task build); 3 s"
    w.on_event(TaskChanged("t2", "test", "aaaa0001", "queued", "running", -1, "", NOW))
    assert w.progress(4, 26.0) == ("waiting for activity aaaa0001 (running, task test); 4 s, "
                                   "gives up in 26 s")
    [ended] = w.on_rows(([row("t1"), row("t2")], [act(state="succeeded")]))
    assert ended.code == 0


def test_the_wait_loop_does_not_miss_an_end_between_two_list_calls() -> None:
    """`fetch` lists the tasks, then the activities: an ActivityStateChanged
    taken with those rows is never newer than the activity's row."""
    calls: list[str] = []

    class Client:
        def call(self, member: str, *a: object, **k: object) -> list[object]:
            calls.append(member)
            return [[]]

    TaskWatch("activity", "a").fetch(Client())  # type: ignore[arg-type]
    assert calls == ["ListTasks", "ListActivities"]


# ---- reading the end of an output file ---------------------------------------------------


@pytest.mark.parametrize(("data", "n", "expected"), [
    (b"", 3, ""),
    (b"a\nb\nc\n", 2, "b\nc\n"),
    (b"a\nb\nc", 2, "b\nc"),
    (b"a\nb\n", 5, "a\nb\n"),
    (b"".join(b"%d\n" % i for i in range(100000)), 3, "99997\n99998\n99999\n"),
    (b"x" * 20000 + b"\nlast\n", 1, "last\n"),
    (b"x" * 20000 + b"\nlast\n", 2, "x" * 20000 + "\nlast\n"),
    (b"\xff\n", 1, "\ufffd\n"),
])
def test_last_lines(tmp_path: Path, data: bytes, n: int, expected: str) -> None:
    path = tmp_path / "out"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert last_lines(fd, n) == expected
    finally:
        os.close(fd)


def test_last_lines_reads_only_the_end(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: reading it whole would take seconds
        f.seek(0, os.SEEK_END)
        f.write(b"\none\ntwo\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        started = time.monotonic()
        assert last_lines(fd, 2) == "one\ntwo\n"
        assert time.monotonic() - started < 1.0
    finally:
        os.close(fd)


# ---- the grammar --------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_run_takes_the_command_after_its_options() -> None:
    spec = task_spec(parse("run", "--name", "b", "--env", "A=1", "--env", "B=x=y", "--timeout",
                           "30", "--workdir", "/srv", "--", "ls", "-l", "--name"))
    assert (spec.command, spec.args, spec.name, spec.env, spec.timeout, spec.workingdir) == \
        ("ls", ("-l", "--name"), "b", (("A", "1"), ("B", "x=y")), 30.0, "/srv")
    # without --: from the first word that is not one of run's options, all of it
    spec = task_spec(parse("run", "--name", "l", "ls", "-l", "--name", "x"))
    assert (spec.command, spec.args, spec.name) == ("ls", ("-l", "--name", "x"), "l")


def test_run_usage_errors() -> None:
    with pytest.raises(Usage, match="a command is needed"):
        task_spec(parse("run", "--name", "x"))
    with pytest.raises(Usage, match="--file gives the whole task: --name, a command"):
        task_spec(parse("run", "--file", "t.json", "--name", "x", "--", "true"))
    with pytest.raises(SystemExit):
        parse("run", "--env", "novalue", "--", "true")


@pytest.mark.parametrize(("data", "error"), [
    (b"[" * 100_000 + b"]" * 100_000, ": not valid JSON: maximum recursion depth"),
    (b'{"command": "true", "timeout": ' + b"9" * 5000 + b"}", "(4300 digits)"),
    (b'{"command": "true", "command": "rm"}', ": key 'command' given twice in one object"),
    (b'{"command": "tr\xffue"}', ": not valid JSON: 'utf-8' codec can't decode byte 0xff"),
    (b'{"command": "true", "timeout": NaN}', ".timeout: expected 0 (no limit) or a positive"),
    (b'{"command": "true", "timeout": 1e400}', "got inf"),
    (b'{"command": "x"}' + b" " * (16 * 1024 * 1024), "bytes; at most 16777216 are accepted"),
])
def test_run_file_refuses_a_hostile_file(tmp_path: Path, data: bytes, error: str) -> None:
    """taskctl run --file: a usage error naming the file and what is wrong
    (nothing is sent), never a traceback."""
    path = tmp_path / "t.json"
    path.write_bytes(data)
    with pytest.raises(Usage) as info:
        task_spec(parse("run", "--file", str(path)))
    assert str(info.value).startswith(str(path)) and error in str(info.value), info.value


def test_activity_needs_a_file() -> None:
    with pytest.raises(SystemExit):
        parse("activity")
    args = parse("activity", "--file", "a.json", "--wait", "--timeout", "60")
    assert (args.wait, args.wait_timeout) == (True, 60.0)
    # run's name for it works too
    args = parse("activity", "--file", "a.json", "--wait", "--wait-timeout", "6")
    assert (args.wait, args.wait_timeout) == (True, 6.0)


# ---- the shell --------------------------------------------------------------------------


def test_completion_of_task_ids() -> None:
    ids = ["3df2bb24", "3df90000", "aaaa0001"]

    def names() -> list[str]:
        raise AssertionError("no program names wanted here")

    assert complete_words("task ", "3df", names, lambda: ids) == ["3df2bb24", "3df90000"]
    assert complete_words("task 3df2bb24 ", "", names, lambda: ids) == []
    assert complete_words("task -n 5 ", "a", names, lambda: ids) == ["aaaa0001"]
    assert complete_words("cancel 3df2bb24 ", "", names, lambda: ids) == ["3df90000", "aaaa0001"]
    assert complete_words("tasks --activity ", "a", names, lambda: ids) == ["aaaa0001"]
    assert complete_words("tasks --state ", "c", names, lambda: ids) == ["cancelled"]
    assert complete_words("run ", "--w", names, lambda: ids) == ["--workdir", "--wait",
                                                                     "--wait-timeout"]
    assert {"run", "activity", "tasks", "activities", "task", "cancel"} <= \
        set(complete_words("", "", names, lambda: ids))


# ---- the signals, as events -----------------------------------------------------------------


def test_task_signals_become_events_and_lines() -> None:
    from jeepney import DBusAddress, HeaderFields, new_signal

    from taskctl.connection import event_of
    from taskctl.format import event_json, event_line
    from taskmasterd.bus.names import MANAGER_IFACE, MANAGER_PATH

    manager = DBusAddress(MANAGER_PATH, interface=MANAGER_IFACE)
    msg = new_signal(manager, "TaskStateChanged", "sssssis",
                     ("3df2bb24", "backup", "", "running", "failed", 3, "exited with status 3"))
    msg.header.fields[HeaderFields.path] = MANAGER_PATH
    event = event_of(msg, NOW)
    assert event == TaskChanged("3df2bb24", "backup", "", "running", "failed", 3,
                                "exited with status 3", NOW)
    assert event_line(event).endswith(
        " task 3df2bb24 backup: running -> failed (exited with status 3)")
    assert event_json(event)["event"] == "TaskStateChanged"
    assert event_json(event)["exit_code"] == 3 and event_json(event)["activity"] is None
    msg = new_signal(manager, "ActivityStateChanged", "ssssss",
                     ("aaaa0001", "deploy", "running", "succeeded", "", ""))
    event = event_of(msg, NOW)
    assert isinstance(event, ActivityChanged) and event.new == "succeeded"
    assert event_line(event).endswith(" activity aaaa0001 deploy: running -> succeeded")
    assert event_json(event)["failed_task"] is None
    # A new task's first change has no old state (""): just the new one.
    new = TaskChanged("3df2bb24", "backup", "", "", "queued", -1, "", NOW)
    assert event_line(new).endswith(" task 3df2bb24 backup: queued")
    assert event_line(ActivityChanged("aaaa0001", "deploy", "", "queued", "", "", NOW)) \
        .endswith(" activity aaaa0001 deploy: queued")
    wrong = new_signal(manager, "TaskStateChanged", "sssssss", ("a",) * 7)  # not the design's
    assert event_of(wrong, NOW) is None
