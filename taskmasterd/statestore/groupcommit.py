"""Many small files replaced atomically and durably at once (group commit).

`StateStore.save_bytes` makes one file durable with two flushes of the
disk's cache (fsync of the file, then of its directory): ~0.4-0.8 ms each on
a virtual disk. A burst of task statuses (16 lanes of short tasks end
together, or a client submits a batch) paid that per file, one after
another: the writer thread, not the CPU, bounded how fast tasks went.

`save_all(jobs)` does what a database's group commit does:

    1. every file's new content to its own temporary file (no flush)
    2. syncfs(): one flush makes all of them durable
    3. each temporary file renamed over its file
    4. syncfs(): one flush makes the renames (and new directories) durable

A crash at any point leaves each file old or new, never half of one, as a
single save does; on return every file written is durable. A batch of one
file is `save_bytes` itself (fsync of the file and its directory): syncfs
flushes every dirty page of the file system, other writers' too, and for a
single file that costs more than it saves. The cost of a batch is two
flushes whatever its size; the price is that a batch waits for whatever
else is dirty on that file system (a task writing gigabytes there slows the
status writes of that moment, as fsync does on ext4 in data=ordered mode).

Errors are per file: a file that cannot be written is reported and the
others go on; a failed flush fails every file of the batch not renamed yet
(their temporary files are removed: the old content stays) and, after the
renames, every file of the batch (renamed, maybe not durable).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import tempfile
from collections.abc import Callable, Sequence

from taskmasterd.statestore.store import StateStore

Job = tuple[str, str, bytes]  # (directory, file name, content)


def _load_syncfs() -> Callable[[int], None] | None:
    """libc's syncfs(2) (Python has no os.syncfs), or None without it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return syncfs


_syncfs = _load_syncfs()


def _flush(dirs: dict[int, str]) -> None:
    """Make every file system of `dirs` (st_dev -> a directory on it) durable."""
    for path in dirs.values():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _syncfs is None:
                raise OSError(errno.ENOSYS, "syncfs is not available")
            _syncfs(fd)
        finally:
            os.close(fd)


_serial = itertools.count()
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _open_temp(directory: str, name: str) -> tuple[int, str]:
    """A new 0600 file beside `name`: `.NAME.PID-N.tmp` (unique among this
    process's writes; what mkstemp does, without its random names, a third
    of a small write's cost), mkstemp's if a leftover has that name."""
    tmp = os.path.join(directory, f".{name}.{os.getpid()}-{next(_serial)}.tmp")
    try:
        return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
    except FileExistsError:
        return tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")


def _write_temp(directory: str, name: str, data: bytes) -> tuple[str, int]:
    """(path, st_dev) of a new 0600 temporary file holding `data`, not flushed."""
    fd, tmp = _open_temp(directory, name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        dev = os.fstat(fd).st_dev
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    return tmp, dev


def save_all(jobs: Sequence[Job]) -> list[OSError | None]:
    """Replace each (directory, name) with its content; the error of each
    (None: written and durable). Never raises OSError."""
    if len(jobs) == 1 or _syncfs is None:
        return [_save_one(job) for job in jobs]
    errors: list[OSError | None] = [None] * len(jobs)
    temps: list[str | None] = [None] * len(jobs)
    devices: dict[int, str] = {}
    for i, (directory, name, data) in enumerate(jobs):
        try:
            temps[i], dev = _write_temp(directory, name, data)
        except OSError as exc:
            errors[i] = exc
            continue
        devices.setdefault(dev, directory)
    if not devices:
        return errors
    try:
        _flush(devices)
    except OSError as exc:
        for i, tmp in enumerate(temps):
            if tmp is not None:
                _discard(tmp)
                errors[i] = exc
        return errors
    renamed = []
    for i, (directory, name, _data) in enumerate(jobs):
        tmp = temps[i]
        if tmp is None:
            continue
        try:
            os.replace(tmp, os.path.join(directory, name))
        except OSError as exc:
            _discard(tmp)
            errors[i] = exc
            continue
        renamed.append(i)
    try:
        _flush(devices)
    except OSError as exc:
        for i in renamed:
            errors[i] = exc
    return errors


def _save_one(job: Job) -> OSError | None:
    directory, name, data = job
    try:
        StateStore(directory, name=name).save_bytes(data)
    except OSError as exc:
        return exc
    return None


def _discard(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)
