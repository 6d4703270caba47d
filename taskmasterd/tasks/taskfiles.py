"""Tasks and activities on disk (blocking I/O; no asyncio): one directory each.

    statedir/tasks/<id>/status.json      records.encode_task
    statedir/tasks/<id>/stdout, stderr   the task's output (it holds them, O_APPEND)
    statedir/activities/<id>/status.json records.encode_activity

`TaskDir` is one task's directory (the standalone `--run-task` uses the
current directory as one); `TaskFiles` is the tree. Every status write is
atomic and durable (temp file + fsync + rename + fsync of the directory,
the state store's `save_bytes`): a crash leaves the old status or the new
one. Directories are 0700 and files 0600: a task's environment may hold
secrets. A status file that cannot be trusted is refused with a reason and
its directory renamed `<id>.bad` (kept for inspection, never read again).
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from taskmasterd.statestore.groupcommit import save_all
from taskmasterd.statestore.records import Refused
from taskmasterd.statestore.store import StateStore
from taskmasterd.tasks.records import (
    ActivityStatus,
    TaskStatus,
    decode_activity,
    decode_task,
    encode_activity,
    encode_task,
)
from taskmasterd.tasks.spec import ID_RE

log = logging.getLogger("taskmasterd")
R = TypeVar("R", TaskStatus, ActivityStatus)

STATUS = "status.json"
# Set by the daemon once it has published a task's end (its event, its
# alerts): a task that ended while no daemon ran has none, and the next
# daemon publishes that end at start-up, once. An extended attribute of the
# task's directory (no new inode per task: creating one cost more than the
# rest of the mark); the empty file NOTICED where the file system takes no
# user attributes (earlier daemons always made the file: still read).
NOTICED = "noticed"
NOTICED_XATTR = "user.taskmaster.noticed"
_NO_XATTR = (errno.ENOTSUP, errno.EPERM)  # (EOPNOTSUPP is ENOTSUP on Linux)
STREAMS = ("stdout", "stderr")
MAX_STATUS = 4 * 1024 * 1024  # a status is a few KB; args and env are bounded (spec.py)


# Reads of a task's status.json before one is believed refused. The task
# runner swaps each new status in (statestore/groupcommit.py, swap mode):
# the file a reader opened becomes the spare at the next write, and the one
# after rewrites it in place. A reader caught across both reads a mixture.
READ_TRIES = 3


def _read(path: str) -> tuple[bytes | Refused, bool]:
    """(its bytes, or why not; whether the file read is still the one the
    path names: False when a swap moved it away meanwhile)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATUS + 1)
            inode = os.fstat(f.fileno()).st_ino
        current = os.stat(path).st_ino == inode
    except FileNotFoundError:
        return Refused("no status.json"), True
    except OSError as exc:
        return Refused(f"cannot read it: {exc.strerror}"), True
    if len(data) > MAX_STATUS:
        return Refused(f"larger than {MAX_STATUS} bytes"), current
    return data, current


def read_task_file(path: str) -> TaskStatus | Refused:
    """A task's status.json, read again while what was read was swapped out
    meanwhile or is refused (a mixture of two statuses), READ_TRIES at most."""
    got: TaskStatus | Refused = Refused("not read")
    for _ in range(READ_TRIES):
        data, current = _read(path)
        got = data if isinstance(data, Refused) else decode_task(data)
        if current and not isinstance(got, Refused):
            return got
    return got


# <linux/fs.h>: the inode flags ioctls (_IOR/_IOW('f', 1/2, long)) and the
# Orlov allocator's "top of a directory hierarchy" flag (chattr +T).
_LONG = struct.calcsize("l")
FS_IOC_GETFLAGS = (2 << 30) | (_LONG << 16) | (ord("f") << 8) | 1
FS_IOC_SETFLAGS = (1 << 30) | (_LONG << 16) | (ord("f") << 8) | 2
FS_TOPDIR_FL = 0x00020000


def spread_subdirectories(path: str) -> bool:
    """`chattr +T path`: ext2/3/4 then place each subdirectory as a top-level
    one (in the block group with the most room), not beside its parent.
    Tasks' directories are unrelated hierarchies, and together in one group
    they made every new file slow on ext4 without a journal: an inode
    allocation there scans past every inode freed in the last minutes,
    thousands after a clean-up (a burst of 1000 tasks spent a quarter of its
    CPU there). Elsewhere (tmpfs, xfs, btrfs...) the ioctl is refused: no
    matter. Whether the flag is set."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & FS_TOPDIR_FL:
            flags[0] |= FS_TOPDIR_FL
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
        return True
    except OSError:  # ENOTTY/EOPNOTSUPP: not ext*; EPERM: not the owner
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TaskDir:
    """One task's directory: its status file and its two output files."""

    path: str

    @property
    def status_path(self) -> str:
        return os.path.join(self.path, STATUS)

    def output(self, stream: str) -> str:
        if stream not in STREAMS:
            raise ValueError(f"{stream!r} is not stdout or stderr")
        return os.path.join(self.path, stream)

    def write(self, status: TaskStatus) -> None:
        """Replace status.json atomically and durably (raises OSError)."""
        StateStore(self.path, name=STATUS).save_bytes(encode_task(status))

    def read(self) -> TaskStatus | Refused:
        return read_task_file(self.status_path)


class TaskFiles:
    def __init__(self, statedir: str) -> None:
        self.statedir = statedir
        self.tasks_root = os.path.join(statedir, "tasks")
        self.activities_root = os.path.join(statedir, "activities")
        self._spread: set[str] = set()  # roots given the Orlov hint by this process

    # ---- tasks --------------------------------------------------------------

    def task_dir(self, id: str) -> TaskDir:
        return TaskDir(os.path.join(self.tasks_root, id))

    def create_task(self, status: TaskStatus) -> None:
        """Its directory (0700) and its first status, durably."""
        path = self.task_dir(status.id).path
        self._root(self.tasks_root)
        os.mkdir(path, 0o700)
        self.task_dir(status.id).write(status)

    def make_task_dirs(self, statuses: list[TaskStatus],
                       pick: Callable[[Callable[[str], bool]], str]) -> list[TaskStatus]:
        """A new directory (0700) for each status, its id picked by `pick`
        (records.new_id) among those not `taken`, the statuses returned with
        their ids; none written yet (`write_new_tasks`). On an error the
        directories made are removed and the OSError raised."""
        self._root(self.tasks_root)
        out: list[TaskStatus] = []
        try:
            for status in statuses:
                while True:
                    id = pick(self.taken)
                    try:
                        os.mkdir(self.task_dir(id).path, 0o700)
                    except FileExistsError:  # made since `taken` looked: pick again
                        continue
                    break
                out.append(status.replace(id=id))
        except OSError:
            for made in out:
                self.remove_task(made.id)
            raise
        return out

    def write_new_tasks(self, statuses: list[TaskStatus]) -> list[OSError | None]:
        """The first status of each task whose directory was made, all durable
        at once (statestore/groupcommit.py); the error of each."""
        return save_all([(self.task_dir(s.id).path, STATUS, encode_task(s)) for s in statuses])

    def write_task(self, status: TaskStatus) -> None:
        self.task_dir(status.id).write(status)

    def read_task(self, id: str) -> TaskStatus | Refused:
        return self.task_dir(id).read()

    def scan_tasks(self) -> tuple[list[TaskStatus], list[tuple[str, str]]]:
        """Every task on disk, by seq; and (id, reason) of each refused one,
        whose directory is now `<id>.bad`."""
        good, bad = self._scan(self.tasks_root, self.read_task, "task")
        return sorted(good, key=lambda s: s.seq), bad

    def mark_noticed(self, id: str) -> None:
        """Not fsynced: losing it to a power cut repeats one event, no more."""
        path = self.task_dir(id).path
        try:
            os.setxattr(path, NOTICED_XATTR, b"")
            return
        except FileNotFoundError:  # removed meanwhile (keep)
            return
        except OSError as exc:
            if exc.errno not in _NO_XATTR:
                raise
        with contextlib.suppress(FileNotFoundError):
            os.close(os.open(os.path.join(path, NOTICED), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                             0o600))

    def noticed(self, id: str) -> bool:
        path = self.task_dir(id).path
        try:
            os.getxattr(path, NOTICED_XATTR)
            return True
        except OSError:  # ENODATA: not set; ENOTSUP: the file says
            return os.path.exists(os.path.join(path, NOTICED))

    def remove_task(self, id: str) -> None:
        shutil.rmtree(self.task_dir(id).path, ignore_errors=True)

    # ---- activities -----------------------------------------------------------

    def activity_path(self, id: str) -> str:
        return os.path.join(self.activities_root, id)

    def write_activity(self, activity: ActivityStatus) -> None:
        path = self.activity_path(activity.id)
        self._root(self.activities_root)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        StateStore(path, name=STATUS).save_bytes(encode_activity(activity))

    def read_activity(self, id: str) -> ActivityStatus | Refused:
        data, _current = _read(os.path.join(self.activity_path(id), STATUS))  # the daemon's: renamed over
        return data if isinstance(data, Refused) else decode_activity(data)

    def scan_activities(self) -> tuple[list[ActivityStatus], list[tuple[str, str]]]:
        good, bad = self._scan(self.activities_root, self.read_activity, "activity")
        return sorted(good, key=lambda a: a.seq), bad

    def remove_activity(self, id: str) -> None:
        shutil.rmtree(self.activity_path(id), ignore_errors=True)

    # ---- both -------------------------------------------------------------------

    def _root(self, root: str) -> None:
        """statedir and `root` made 0700 if missing, each as the last
        directory of its own makedirs: makedirs gives `mode` to the last one
        only, the others get 0777 minus the umask. An existing statedir keeps
        the mode its owner gave it."""
        for path in (self.statedir, root):
            os.makedirs(path, mode=0o700, exist_ok=True)
        if root not in self._spread:
            self._spread.add(root)
            spread_subdirectories(root)

    def taken(self, id: str) -> bool:
        """Whether a task or an activity has that id (for records.new_id)."""
        return any(os.path.lexists(os.path.join(root, id)) or
                   os.path.lexists(os.path.join(root, id + ".bad"))
                   for root in (self.tasks_root, self.activities_root))

    def _scan(self, root: str, read: Callable[[str], R | Refused],
              what: str) -> tuple[list[R], list[tuple[str, str]]]:
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return [], []
        good: list[R] = []
        bad: list[tuple[str, str]] = []
        for name in names:
            if not ID_RE.match(name):
                continue  # <id>.bad, and whatever else someone put there
            result = read(name)
            if isinstance(result, Refused) or result.id != name:
                reason = result.reason if isinstance(result, Refused) else \
                    f"its status names another id ({result.id})"
                bad.append((name, reason))
                path = os.path.join(root, name)
                try:
                    os.replace(path, path + ".bad")
                except OSError as exc:  # e.g. an <id>.bad already there, not empty
                    log.warning("%s %s: %s refused (%s); %s could not be renamed %s.bad (%s): "
                                "it will be refused again at the next start", what, name, STATUS,
                                reason, path, name, exc.strerror)
                else:
                    log.warning("%s %s: %s refused (%s); kept as %s.bad, not read again", what,
                                name, STATUS, reason, path)
                continue
            good.append(result)
        return good, bad
