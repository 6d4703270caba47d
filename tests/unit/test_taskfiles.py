"""Tasks and activities on disk (taskmasterd/tasks/taskfiles.py): atomic
and durable writes, modes, the scan at start-up, refused files kept aside
as `<id>.bad` and never read again."""

from __future__ import annotations

import array
import errno
import fcntl
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from taskmasterd.statestore.records import Refused
from taskmasterd.tasks.records import (
    ActivityState,
    ActivityStatus,
    TaskState,
    TaskStatus,
    encode_task,
    new_id,
)
from taskmasterd.tasks.spec import TaskSpec
from taskmasterd.tasks.taskfiles import (
    FS_IOC_GETFLAGS,
    FS_TOPDIR_FL,
    MAX_STATUS,
    NOTICED,
    NOTICED_XATTR,
    TaskDir,
    TaskFiles,
    spread_subdirectories,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1764650000.25


def task(id: str = "3df2bb24", seq: int = 1, **kw: object) -> TaskStatus:
    return TaskStatus(id=id, spec=TaskSpec(command="/bin/true", timeout=0.0),
                      state=TaskState.QUEUED, seq=seq, submitted=T0).replace(**kw)


def activity(id: str = "0a1b2c3d", seq: int = 1, **kw: object) -> ActivityStatus:
    return ActivityStatus(id=id, name="deploy", state=ActivityState.QUEUED, tasks=("3df2bb24",),
                          seq=seq, submitted=T0).replace(**kw)


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def files(tmp_path: Path) -> TaskFiles:
    return TaskFiles(str(tmp_path / "state"))


@pytest.fixture(autouse=True)
def umask_022() -> object:
    old = os.umask(0o022)  # a usual umask: the modes below must not depend on a strict one
    yield
    os.umask(old)


# ---- writing -------------------------------------------------------------------------


def test_create_task_dirs_0700_file_0600(files: TaskFiles) -> None:
    files.create_task(task())
    tdir = files.task_dir("3df2bb24")
    assert mode(files.statedir) == 0o700  # created here: a task's env may hold secrets
    assert mode(files.tasks_root) == 0o700
    assert mode(tdir.path) == 0o700
    assert mode(tdir.status_path) == 0o600
    assert files.read_task("3df2bb24") == task()
    assert sorted(os.listdir(tdir.path)) == ["status.json"]  # no temp file left


def test_write_activity_dirs_0700_file_0600(files: TaskFiles) -> None:
    """The activities root used to be made by makedirs as an intermediate
    directory (0755 with this umask: makedirs gives `mode` to the leaf only)."""
    files.write_activity(activity())
    assert mode(files.statedir) == 0o700
    assert mode(files.activities_root) == 0o700
    assert mode(files.activity_path("0a1b2c3d")) == 0o700
    assert mode(os.path.join(files.activity_path("0a1b2c3d"), "status.json")) == 0o600
    assert files.read_activity("0a1b2c3d") == activity()


def test_an_existing_statedir_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o750)
    os.chmod(tmp_path / "state", 0o750)
    TaskFiles(str(tmp_path / "state")).create_task(task())
    assert mode(tmp_path / "state") == 0o750  # the operator's choice; only ours are 0700


def test_create_task_twice_is_an_error(files: TaskFiles) -> None:
    files.create_task(task())
    with pytest.raises(FileExistsError):
        files.create_task(task(seq=2))
    assert files.read_task("3df2bb24") == task()


def test_write_replaces(files: TaskFiles) -> None:
    files.create_task(task())
    running = task(state=TaskState.RUNNING, started=T0 + 1, pid=42, runner_pid=41)
    files.write_task(running)
    assert files.read_task("3df2bb24") == running
    assert mode(files.task_dir("3df2bb24").status_path) == 0o600


_FAILING_WRITE = """
import resource, signal, sys
from taskmasterd.tasks.records import TaskState, TaskStatus
from taskmasterd.tasks.spec import TaskSpec
from taskmasterd.tasks.taskfiles import TaskDir
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
big = TaskStatus(id="3df2bb24", spec=TaskSpec(command="/bin/true", args=("x" * 4000,),
                 timeout=0.0), state=TaskState.RUNNING, seq=1, submitted=1.0)
try:
    TaskDir(sys.argv[1]).write(big)
except OSError as exc:
    print(exc.errno)
"""


def test_a_failing_write_leaves_the_old_file(tmp_path: Path) -> None:
    """A real failure (the file size limit: EFBIG half-way through the
    temporary file's write) in another process: the old status stays whole,
    no temporary file is left."""
    tdir = TaskDir(str(tmp_path))
    tdir.write(task())
    before = Path(tdir.status_path).read_bytes()
    r = subprocess.run([sys.executable, "-c", _FAILING_WRITE, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "27", r.stderr  # EFBIG
    assert Path(tdir.status_path).read_bytes() == before
    assert os.listdir(tmp_path) == ["status.json"]
    assert tdir.read() == task()


def test_task_dir_outputs(tmp_path: Path) -> None:
    tdir = TaskDir(str(tmp_path))
    assert tdir.output("stdout") == str(tmp_path / "stdout")
    assert tdir.output("stderr") == str(tmp_path / "stderr")
    with pytest.raises(ValueError, match=r"'status\.json' is not stdout or stderr"):
        tdir.output("status.json")


def test_standalone_dir_is_any_directory(tmp_path: Path) -> None:
    """`--run-task` uses the current directory as the task's directory."""
    tdir = TaskDir(str(tmp_path))
    cli = task(id="cli", state=TaskState.SUCCEEDED, exit_code=0, ended=T0 + 1)
    tdir.write(cli)
    assert tdir.read() == cli
    assert json.loads((tmp_path / "status.json").read_text())["id"] == "cli"


# ---- reading ---------------------------------------------------------------------------


def test_read_refusals(files: TaskFiles, tmp_path: Path) -> None:
    assert files.read_task("3df2bb24") == Refused("no status.json")
    tdir = files.task_dir("3df2bb24")
    os.makedirs(tdir.status_path)  # a directory where the file should be
    result = files.read_task("3df2bb24")
    assert isinstance(result, Refused) and result.reason.startswith("cannot read it: ")
    os.rmdir(tdir.status_path)
    Path(tdir.status_path).write_bytes(b" " * (MAX_STATUS + 1))
    assert files.read_task("3df2bb24") == Refused(f"larger than {MAX_STATUS} bytes")
    Path(tdir.status_path).write_bytes(b'{"format": "taskmaster-task", "version": 9}')
    assert files.read_task("3df2bb24") == Refused("version 9 is not 1")
    assert files.read_activity("0a1b2c3d") == Refused("no status.json")


def test_a_status_swapped_out_while_it_was_read_is_read_again(
        files: TaskFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner swaps statuses in (groupcommit's swap mode): a reader that
    opened the file just before may read it while it is rewritten as the
    spare. What it read is not believed: neither a mixture that does not
    decode, nor a status from a file no longer named status.json."""
    from taskmasterd.tasks import taskfiles

    files.create_task(task())
    real = taskfiles._read
    torn = iter([(b'{"format": "taskmaster-task", "ver', True),  # a mixture
                 (encode_task(task(state=TaskState.RUNNING)), False)])  # swapped out meanwhile
    calls = []

    def reading(path: str) -> tuple[bytes | Refused, bool]:
        calls.append(path)
        return next(torn, None) or real(path)
    monkeypatch.setattr(taskfiles, "_read", reading)
    assert files.read_task("3df2bb24") == task()
    assert len(calls) == 3

    monkeypatch.setattr(taskfiles, "_read", lambda path: (b"{not json", True))
    got = files.read_task("3df2bb24")
    assert isinstance(got, Refused) and "double quotes" in got.reason  # after READ_TRIES, believed


def test_a_read_says_whether_the_path_still_names_the_file_read(
        files: TaskFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskmasterd.tasks import taskfiles

    files.create_task(task())
    path = files.task_dir("3df2bb24").status_path
    assert taskfiles._read(path) == (encode_task(task()), True)
    real_stat = os.stat
    monkeypatch.setattr(taskfiles.os, "stat", lambda p: os.stat_result(
        (0, real_stat(p).st_ino + 1, *real_stat(p)[2:10])))
    assert taskfiles._read(path) == (encode_task(task()), False)


# ---- scanning ----------------------------------------------------------------------------


def test_scan_order_is_seq_not_name(files: TaskFiles) -> None:
    ids = ["ffffffff", "00000000", "80000000", "12345678"]
    for seq, id in zip([3, 4, 1, 2], ids, strict=True):
        files.create_task(task(id, seq))
    good, bad = files.scan_tasks()
    assert [s.id for s in good] == ["80000000", "12345678", "ffffffff", "00000000"]
    assert bad == []


def test_scan_of_nothing(files: TaskFiles) -> None:
    assert files.scan_tasks() == ([], [])
    assert files.scan_activities() == ([], [])


def test_refused_tasks_are_renamed_bad_and_not_read_again(
        files: TaskFiles, caplog: pytest.LogCaptureFixture) -> None:
    files.create_task(task("aaaaaaaa", 1))
    files.create_task(task("bbbbbbbb", 2))
    Path(files.task_dir("bbbbbbbb").status_path).write_text("{not json")
    files.create_task(task("cccccccc", 3))
    Path(files.task_dir("cccccccc").status_path).write_bytes(encode_task(task("dddddddd", 3)))
    os.makedirs(files.task_dir("eeeeeeee").path)  # mkdir done, first status never written
    with caplog.at_level(logging.WARNING, logger="taskmasterd"):
        good, bad = files.scan_tasks()
    assert [s.id for s in good] == ["aaaaaaaa"]
    assert bad == [("bbbbbbbb", "Expecting property name enclosed in double quotes: line 1 "
                                "column 2 (char 1)"),
                   ("cccccccc", "its status names another id (dddddddd)"),
                   ("eeeeeeee", "no status.json")]
    assert sorted(os.listdir(files.tasks_root)) == ["aaaaaaaa", "bbbbbbbb.bad", "cccccccc.bad",
                                                    "eeeeeeee.bad"]
    assert "task bbbbbbbb: status.json refused (Expecting property name" in caplog.text
    assert f"kept as {files.tasks_root}/bbbbbbbb.bad, not read again" in caplog.text
    # kept for inspection, never read again
    assert Path(files.tasks_root, "bbbbbbbb.bad", "status.json").read_text() == "{not json"
    again = files.scan_tasks()
    assert [s.id for s in again[0]] == ["aaaaaaaa"] and again[1] == []


def test_a_refused_dir_that_cannot_be_renamed_is_logged_as_such(
        files: TaskFiles, caplog: pytest.LogCaptureFixture) -> None:
    """`<id>.bad` already there (not empty): the rename fails; the log must
    not claim it was kept as .bad."""
    os.makedirs(files.task_dir("bbbbbbbb").path)
    os.makedirs(os.path.join(files.tasks_root, "bbbbbbbb.bad", "old"))
    with caplog.at_level(logging.WARNING, logger="taskmasterd"):
        good, bad = files.scan_tasks()
    assert good == [] and bad == [("bbbbbbbb", "no status.json")]
    assert "could not be renamed" in caplog.text and "kept as" not in caplog.text
    assert os.path.isdir(files.task_dir("bbbbbbbb").path)


def test_scan_ignores_what_is_not_an_id(files: TaskFiles) -> None:
    files.create_task(task("aaaaaaaa", 1))
    for name in ("README", "AAAAAAAA", "aaaaaaa", "aaaaaaaa.bad", ".tmp", "aaaaaaaa\n"):
        os.makedirs(os.path.join(files.tasks_root, name), exist_ok=True)
    Path(files.tasks_root, "ffffffff").write_text("a file, not a directory")  # an id: refused
    good, bad = files.scan_tasks()
    assert [s.id for s in good] == ["aaaaaaaa"]
    assert [id for id, _ in bad] == ["ffffffff"]


def test_scan_activities(files: TaskFiles, caplog: pytest.LogCaptureFixture) -> None:
    files.write_activity(activity("0000000b", 2))
    files.write_activity(activity("0000000a", 5))
    files.write_activity(activity("0000000c", 1))
    Path(files.activity_path("0000000c"), "status.json").write_bytes(
        encode_task(task("0000000c")))  # a task's file where an activity's should be
    good, bad = files.scan_activities()
    assert [a.id for a in good] == ["0000000b", "0000000a"]
    assert bad == [("0000000c", "format is 'taskmaster-task', not 'taskmaster-activity'")]
    assert os.path.isdir(files.activity_path("0000000c") + ".bad")
    assert files.scan_activities()[1] == []


# ---- removing, ids ---------------------------------------------------------------------------


def test_remove(files: TaskFiles) -> None:
    files.create_task(task())
    Path(files.task_dir("3df2bb24").output("stdout")).write_text("out")
    files.write_activity(activity())
    files.remove_task("3df2bb24")
    files.remove_activity("0a1b2c3d")
    assert not os.path.exists(files.task_dir("3df2bb24").path)
    assert not os.path.exists(files.activity_path("0a1b2c3d"))
    files.remove_task("3df2bb24")  # gone already: no error
    files.remove_activity("0a1b2c3d")


def test_taken_covers_tasks_activities_and_bad_ones(files: TaskFiles) -> None:
    assert not files.taken("3df2bb24")
    files.create_task(task())
    files.write_activity(activity())
    os.makedirs(os.path.join(files.tasks_root, "0badbad0.bad"))
    os.makedirs(os.path.join(files.activities_root, "1badbad1.bad"))
    os.symlink("/nonexistent", os.path.join(files.tasks_root, "2dead2ee"))  # dangling: taken
    for id in ("3df2bb24", "0a1b2c3d", "0badbad0", "1badbad1", "2dead2ee"):
        assert files.taken(id), id
    assert not files.taken("4eea0011")


def test_new_id_skips_ids_on_disk(files: TaskFiles) -> None:
    files.create_task(task())
    got = new_id(files.taken)
    assert got != "3df2bb24" and not files.taken(got)


# ---- the noticed mark ------------------------------------------------------------------


def user_xattrs(path: Path) -> bool:
    try:
        os.setxattr(path, "user.taskmaster.probe", b"")
    except OSError:
        return False
    os.removexattr(path, "user.taskmaster.probe")
    return True


def test_the_noticed_mark_is_an_attribute_of_the_directory(files: TaskFiles) -> None:
    files.create_task(task())
    path = Path(files.task_dir("3df2bb24").path)
    if not user_xattrs(path):
        pytest.skip("this file system takes no user extended attributes")
    assert not files.noticed("3df2bb24")
    files.mark_noticed("3df2bb24")
    assert files.noticed("3df2bb24")
    assert os.getxattr(path, NOTICED_XATTR) == b""
    assert sorted(os.listdir(path)) == ["status.json"]  # no file: no inode per task


def test_a_noticed_file_is_the_mark_where_attributes_are_refused(
        files: TaskFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    files.create_task(task())
    path = Path(files.task_dir("3df2bb24").path)

    def refuse(*_args: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")
    monkeypatch.setattr(os, "setxattr", refuse)
    monkeypatch.setattr(os, "getxattr", refuse)
    files.mark_noticed("3df2bb24")
    assert (path / NOTICED).exists() and mode(path / NOTICED) == 0o600
    assert files.noticed("3df2bb24")


def test_the_file_an_earlier_daemon_left_still_counts(files: TaskFiles) -> None:
    files.create_task(task())
    (Path(files.task_dir("3df2bb24").path) / NOTICED).write_text("")
    assert files.noticed("3df2bb24")


def test_marking_a_task_removed_meanwhile_is_no_error(files: TaskFiles) -> None:
    files.mark_noticed("3df2bb24")  # no directory (removed by the clean-up)
    assert not files.noticed("3df2bb24")


# ---- the Orlov hint on the roots -----------------------------------------------------


def test_the_tasks_root_spreads_its_subdirectories(files: TaskFiles, tmp_path: Path) -> None:
    """chattr +T on statedir/tasks (ext2/3/4): each task's directory is
    placed as a top-level one, not in its parent's block group."""
    files.create_task(task())
    root = tmp_path / "state" / "tasks"
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        try:
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        except OSError:
            pytest.skip("this file system has no inode flags (not ext*)")
    finally:
        os.close(fd)
    assert flags[0] & FS_TOPDIR_FL
    assert "T" in subprocess.run(["lsattr", "-d", str(root)], capture_output=True, text=True,
                                 check=True).stdout.split()[0]


def test_a_file_system_without_the_flag_is_no_error(files: TaskFiles,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
    monkeypatch.setattr(fcntl, "ioctl", refuse)
    files.create_task(task())  # written all the same
    assert isinstance(files.read_task("3df2bb24"), TaskStatus)
    assert not spread_subdirectories(files.tasks_root)
