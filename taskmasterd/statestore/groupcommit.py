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

Swap mode (`save_all(jobs, swap=True)`): the same steps, without freeing
a disk block. A rename over an existing file frees the old file's inode and
its data block; on an ext4 mounted with `discard` freeing a block issues a
synchronous discard: measured, a rename over a status cost 170-265 us of
wall time against 15-37 us for a rename that frees nothing, serially in the
writer thread, on the path of every task's end (the trial of this mode cut
the task runner's voluntary context switches by a quarter and its CPU by
~8%). So each file NAME keeps a spare beside it, `.NAME.spare` (created
0600 if missing), and an update is:

    1. the new content written into the spare in place (no O_TRUNC: pwrite
       at 0, then ftruncate when the spare was longer, so a shorter content
       leaves no tail; the spare's block is reused: while the contents stay
       within it, no block is allocated or freed)
    2. the spares made durable: syncfs for a batch, fsync of the spare for a
       file alone
    3. each spare exchanged with its file: renameat2(RENAME_EXCHANGE), one
       atomic step in which neither name is ever missing
    4. the exchanges made durable: syncfs, or fsync of the directory

After it the spare holds the previous content, the inode the next update
overwrites: a file's inode alternates between two. Crash safety is the
default mode's: a reader of NAME sees the old or the new version (the spare
is written while it is not NAME, and becomes NAME only once durable), and
on return every file written is durable. A spare left half-written by a
crash is not NAME and is overwritten whole by the next update. The
invariant behind it: a spare is never written while a not-yet-durable
exchange may still give it the name NAME on disk. Step 4 follows every
exchange before the next update begins, and when step 4 fails the spares
of that batch are removed (the next update starts from a new file, as the
default mode would).

One difference for readers: in the default mode a reader holding NAME open
keeps the version it opened for good; in swap mode only until the next
update (its inode becomes the spare, which the update after overwrites in
place). A reader that reads at once after opening sees the old or the new
version; one that holds the file across two updates may read a mixture.

Only one writer may use a file's spare at a time: the default mode's
temporary names are unique per process, a spare's is not (two updates
writing one spare at once would mix their contents and swap the mixture
in). Swap mode is for a writer that is the only one writing those files,
as the task runner is for the status of the tasks it holds; a batch naming
a file twice writes the last content only. Other writers may still replace
the file in the default mode at other times (it leaves the spare alone).

The first update of a file (no NAME yet: the exchange fails with ENOENT)
renames the spare to NAME, leaving no spare. Where the exchange is not
available (no renameat2 in libc: decided once per process; EINVAL, ENOSYS
or EOPNOTSUPP from the call: file systems without it, each time) the spare
is renamed over NAME: correct, only without the saving.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence

from taskmasterd.atomicfile import fsync_dir
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

_AT_FDCWD = -100
_RENAME_EXCHANGE = 1 << 1
_NO_EXCHANGE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def _load_exchange() -> Callable[[str, str], None] | None:
    """renameat2(2) with RENAME_EXCHANGE (glibc >= 2.28; Python has no
    binding), or None without it. The call releases the GIL (ctypes.CDLL)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def exchange(a: str, b: str) -> None:
        if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), a, None, b)
    return exchange


_exchange = _load_exchange()


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


def save_all(jobs: Sequence[Job], swap: bool = False) -> list[OSError | None]:
    """Replace each (directory, name) with its content; the error of each
    (None: written and durable). Never raises OSError. `swap`: through each
    file's spare (above; only for the one writer of those files)."""
    if swap:
        return _swap_all(jobs)
    if len(jobs) == 1 or _syncfs is None:
        return [_save_one(job) for job in jobs]
    errors: list[OSError | None] = [None] * len(jobs)
    temps: dict[int, str] = {}

    def write(i: int) -> int:
        directory, name, data = jobs[i]
        temps[i], dev = _write_temp(directory, name, data)
        return dev

    def rename(i: int) -> None:
        directory, name, _data = jobs[i]
        os.replace(temps[i], os.path.join(directory, name))

    _commit(jobs, range(len(jobs)), errors, write, rename,
            unwritten=lambda i: _discard(temps[i]), unrenamed=lambda i: None)
    return errors


def _commit(jobs: Sequence[Job], todo: Iterable[int], errors: list[OSError | None],
            write: Callable[[int], int], rename: Callable[[int], None], *,
            unwritten: Callable[[int], None], unrenamed: Callable[[int], None]) -> None:
    """The four steps for the jobs `todo` (indexes in `jobs`), each job's
    error in `errors`: `write` each (its st_dev), one flush per file
    system, `rename` each, one flush again. What a failure leaves is
    undone: `unwritten` (a file written, not renamed), `unrenamed` (renamed,
    its flush failed)."""
    written: list[int] = []
    devices: dict[int, str] = {}
    for i in todo:
        try:
            dev = write(i)
        except OSError as exc:
            errors[i] = exc
            continue
        written.append(i)
        devices.setdefault(dev, jobs[i][0])
    if not written:
        return
    try:
        _flush(devices)
    except OSError as exc:  # nothing renamed: the old contents stay
        for i in written:
            unwritten(i)
            errors[i] = exc
        return
    renamed = []
    for i in written:
        try:
            rename(i)
        except OSError as exc:
            unwritten(i)
            errors[i] = exc
            continue
        renamed.append(i)
    try:
        _flush(devices)
    except OSError as exc:
        for i in renamed:
            unrenamed(i)
            errors[i] = exc


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


# ---- swap mode --------------------------------------------------------------

_SPARE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


def spare_name(name: str) -> str:
    return f".{name}.spare"


def _swap_all(jobs: Sequence[Job]) -> list[OSError | None]:
    # A file named twice: its last content only (two writes into one spare
    # would swap the old content back in); the others share its result.
    last = {os.path.join(directory, name): i for i, (directory, name, _data) in enumerate(jobs)}
    todo = sorted(last.values())
    errors: list[OSError | None] = [None] * len(jobs)
    if len(todo) == 1 or _syncfs is None:
        for i in todo:
            errors[i] = _swap_one(jobs[i])
    else:
        _swap_batch(jobs, todo, errors)
    return [errors[last[os.path.join(directory, name)]] for directory, name, _data in jobs]


def _swap_batch(jobs: Sequence[Job], todo: list[int], errors: list[OSError | None]) -> None:
    def spare(i: int) -> str:
        directory, name, _data = jobs[i]
        return os.path.join(directory, spare_name(name))

    def write(i: int) -> int:
        return _write_spare(spare(i), jobs[i][2], sync=False)

    def swap(i: int) -> None:
        directory, name, _data = jobs[i]
        _swap_in(spare(i), os.path.join(directory, name))

    # A spare not swapped in stays, for the next write to overwrite; one
    # swapped in whose flush failed goes (see the invariant above).
    _commit(jobs, todo, errors, write, swap, unwritten=lambda i: None,
            unrenamed=lambda i: _discard(spare(i)))


def _swap_one(job: Job) -> OSError | None:
    """A file alone: fsync of the spare and of the directory (syncfs would
    flush every other writer's dirty pages for one file)."""
    directory, name, data = job
    spare = os.path.join(directory, spare_name(name))
    try:
        _write_spare(spare, data, sync=True)
        _swap_in(spare, os.path.join(directory, name))
    except OSError as exc:
        return exc
    try:
        fsync_dir(directory)
    except OSError as exc:
        _discard(spare)  # see the invariant above
        return exc
    return None


def _write_spare(spare: str, data: bytes, sync: bool) -> int:
    """`data` written over the spare in place (created 0600 if missing); its
    st_dev. The spare is not the file: a failure here leaves the file as it
    was (and the spare for the next write to overwrite)."""
    fd = os.open(spare, _SPARE_FLAGS, 0o600)
    try:
        st = os.fstat(fd)
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], done)
        if st.st_size > len(data):  # the previous content was longer: no tail
            os.ftruncate(fd, len(data))
        if sync:
            os.fsync(fd)
        return st.st_dev
    finally:
        os.close(fd)


def _swap_in(spare: str, target: str) -> None:
    """The spare becomes `target`; `target`'s old inode the spare."""
    if _exchange is None:
        os.replace(spare, target)
        return
    try:
        _exchange(spare, target)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # no target yet (a first write): the spare becomes it
            os.rename(spare, target)
        elif exc.errno in _NO_EXCHANGE:  # a file system without the exchange
            os.replace(spare, target)
        else:
            raise
