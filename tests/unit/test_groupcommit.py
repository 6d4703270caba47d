"""statestore/groupcommit.py: many files replaced atomically, made durable by
two flushes per batch (syncfs), errors per file. The flushes are counted
through a stand-in for libc's syncfs (the real one is used by every other
test of the tasks: the runner's and the daemon's writes)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from taskmasterd.statestore import groupcommit
from taskmasterd.statestore.groupcommit import save_all


class Flushes:
    """Counts syncfs calls; `fail_at` (1-based) makes that call fail with EIO."""

    def __init__(self, fail_at: int = 0) -> None:
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, fd: int) -> None:
        self.calls += 1
        os.fstat(fd)  # a real, open descriptor
        if self.calls == self.fail_at:
            raise OSError(errno.EIO, "Input/output error")


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Flushes]:
    def install(fail_at: int = 0) -> Flushes:
        fake = Flushes(fail_at)
        monkeypatch.setattr(groupcommit, "_syncfs", fake)
        return fake
    return install


def dirs(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        d = tmp_path / f"t{i}"
        d.mkdir()
        (d / "status.json").write_bytes(b"old")
        out.append(d)
    return out


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*.tmp"))


def test_libc_syncfs_is_found_and_works(tmp_path: Path) -> None:
    assert groupcommit._syncfs is not None  # glibc has had it since 2.14
    d = dirs(tmp_path, 3)
    assert save_all([(str(x), "status.json", b"new") for x in d]) == [None] * 3
    assert all((x / "status.json").read_bytes() == b"new" for x in d)


def test_a_batch_costs_two_flushes_whatever_its_size(tmp_path: Path, flushes) -> None:
    fake = flushes()
    d = dirs(tmp_path, 20)
    errors = save_all([(str(x), "status.json", f"new {i}".encode()) for i, x in enumerate(d)])
    assert errors == [None] * 20
    assert fake.calls == 2  # one file system: once before the renames, once after
    for i, x in enumerate(d):
        assert (x / "status.json").read_bytes() == f"new {i}".encode()
        assert stat.S_IMODE((x / "status.json").stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_one_file_is_the_state_stores_own_save(tmp_path: Path, flushes) -> None:
    """fsync of the file and its directory: syncfs would flush every other
    writer's dirty pages for the sake of one file."""
    fake = flushes()
    (d,) = dirs(tmp_path, 1)
    assert save_all([(str(d), "status.json", b"alone")]) == [None]
    assert fake.calls == 0
    assert (d / "status.json").read_bytes() == b"alone"


def test_a_new_file_in_a_new_directory(tmp_path: Path, flushes) -> None:
    flushes()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert save_all([(str(a), "status.json", b"1"), (str(b), "status.json", b"2")]) == [None, None]
    assert (a / "status.json").read_bytes() == b"1" and (b / "status.json").read_bytes() == b"2"


@pytest.mark.parametrize("swap", [False, True], ids=["temporary files", "swap mode"])
def test_a_file_that_cannot_be_written_fails_alone(tmp_path: Path, flushes, swap: bool) -> None:
    fake = flushes()
    good = dirs(tmp_path, 2)
    missing = tmp_path / "gone"
    errors = save_all([(str(good[0]), "status.json", b"a"), (str(missing), "status.json", b"b"),
                       (str(good[1]), "status.json", b"c")], swap=swap)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], FileNotFoundError)
    assert (good[0] / "status.json").read_bytes() == b"a"
    assert (good[1] / "status.json").read_bytes() == b"c"
    assert fake.calls == 2
    assert not missing.exists()


def test_a_rename_that_fails_keeps_the_old_file_and_no_temporary(tmp_path: Path, flushes) -> None:
    flushes()
    d = dirs(tmp_path, 2)
    (d[1] / "status.json").unlink()
    (d[1] / "status.json").mkdir()  # a directory in the way: rename(2) refuses
    (d[1] / "status.json" / "x").write_text("")
    errors = save_all([(str(x), "status.json", b"new") for x in d])
    assert errors[0] is None
    assert isinstance(errors[1], OSError)
    assert (d[0] / "status.json").read_bytes() == b"new"
    assert (d[1] / "status.json").is_dir()
    assert leftovers(tmp_path) == []


def test_a_failed_first_flush_fails_all_and_keeps_the_old_contents(tmp_path: Path, flushes) -> None:
    fake = flushes(fail_at=1)
    d = dirs(tmp_path, 3)
    errors = save_all([(str(x), "status.json", b"new") for x in d])
    assert all(isinstance(e, OSError) and e.errno == errno.EIO for e in errors)
    assert all((x / "status.json").read_bytes() == b"old" for x in d)  # nothing renamed
    assert leftovers(tmp_path) == []
    assert fake.calls == 1


def test_a_failed_second_flush_reports_the_renamed_files(tmp_path: Path, flushes) -> None:
    """They were renamed (a reader sees the new content) but may not be
    durable: the caller is told, as an fsync error would tell it."""
    flushes(fail_at=2)
    d = dirs(tmp_path, 2)
    errors = save_all([(str(x), "status.json", b"new") for x in d])
    assert all(isinstance(e, OSError) and e.errno == errno.EIO for e in errors)
    assert all((x / "status.json").read_bytes() == b"new" for x in d)


def test_without_syncfs_each_file_is_saved_alone(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(groupcommit, "_syncfs", None)
    d = dirs(tmp_path, 3)
    assert save_all([(str(x), "status.json", b"new") for x in d]) == [None] * 3
    assert all((x / "status.json").read_bytes() == b"new" for x in d)


def test_nothing_to_write() -> None:
    assert save_all([]) == []


def test_a_leftover_temporary_file_of_the_same_name_is_passed_by(
        tmp_path: Path, flushes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary names are PID-N: a crashed writer of another boot may have
    left one with the name this write would take."""
    flushes()
    d = dirs(tmp_path, 2)
    monkeypatch.setattr(groupcommit, "_serial", iter([7, 8]))
    left = d[0] / f".status.json.{os.getpid()}-7.tmp"
    left.write_bytes(b"a crash's")
    assert save_all([(str(x), "status.json", b"new") for x in d]) == [None, None]
    assert all((x / "status.json").read_bytes() == b"new" for x in d)
    assert left.read_bytes() == b"a crash's"  # not ours to remove here (the owner's load does)


# ---- swap mode: through each file's spare, exchanged (renameat2) ------------

SPARE = ".status.json.spare"


def test_libc_renameat2_is_found() -> None:
    assert groupcommit._exchange is not None  # glibc has had it since 2.28


def test_swap_mode_writes_a_batch(tmp_path: Path, flushes) -> None:
    fake = flushes()
    d = dirs(tmp_path, 5)
    errors = save_all([(str(x), "status.json", f"new {i}".encode()) for i, x in enumerate(d)],
                      swap=True)
    assert errors == [None] * 5
    assert fake.calls == 2  # as the default mode: once before the exchanges, once after
    for i, x in enumerate(d):
        assert (x / "status.json").read_bytes() == f"new {i}".encode()
        assert stat.S_IMODE((x / "status.json").stat().st_mode) == 0o600  # the spare, made 0600
        assert (x / SPARE).read_bytes() == b"old"  # the previous content
    assert leftovers(tmp_path) == []


def test_swap_mode_writes_one_file_with_fsyncs(tmp_path: Path, flushes,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake = flushes()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(groupcommit.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    (d,) = dirs(tmp_path, 1)
    assert save_all([(str(d), "status.json", b"alone")], swap=True) == [None]
    assert fake.calls == 0
    assert len(synced) == 2  # the spare, then the directory
    assert (d / "status.json").read_bytes() == b"alone"
    assert (d / SPARE).read_bytes() == b"old"


@pytest.mark.parametrize("n", [1, 3])
def test_swap_mode_alternates_two_inodes(tmp_path: Path, flushes, n: int) -> None:
    """No new inode per write (nothing freed: no discard); the spare holds
    the previous content."""
    flushes()
    d = dirs(tmp_path, n)
    inodes: list[int] = []
    previous = b"old"
    for k in range(6):
        content = f"write {k}".encode() * (k + 1)
        assert save_all([(str(x), "status.json", content) for x in d], swap=True) == [None] * n
        for x in d:
            assert (x / "status.json").read_bytes() == content
            assert (x / SPARE).read_bytes() == previous
        inodes.append((d[0] / "status.json").stat().st_ino)
        previous = content
    assert len(set(inodes)) == 2
    assert inodes[0::2] == [inodes[0]] * 3 and inodes[1::2] == [inodes[1]] * 3
    assert sorted(p.name for p in d[0].iterdir()) == [SPARE, "status.json"]


@pytest.mark.parametrize("n", [1, 2])
def test_swap_mode_a_shorter_content_leaves_no_tail(tmp_path: Path, flushes, n: int) -> None:
    flushes()
    d = dirs(tmp_path, n)
    for content in (b"a long status " * 50, b"mid " * 20, b"short", b"x" * 300, b"s"):
        assert save_all([(str(x), "status.json", content) for x in d], swap=True) == [None] * n
        assert all((x / "status.json").read_bytes() == content for x in d)


@pytest.mark.parametrize("n", [1, 2])
def test_swap_mode_first_write_leaves_no_spare(tmp_path: Path, flushes, n: int) -> None:
    flushes()
    d = [tmp_path / f"t{i}" for i in range(n)]
    for x in d:
        x.mkdir()
    assert save_all([(str(x), "status.json", b"first") for x in d], swap=True) == [None] * n
    for x in d:
        assert (x / "status.json").read_bytes() == b"first"
        assert stat.S_IMODE((x / "status.json").stat().st_mode) == 0o600
        assert not (x / SPARE).exists()
    assert save_all([(str(x), "status.json", b"second") for x in d], swap=True) == [None] * n
    assert all((x / "status.json").read_bytes() == b"second" for x in d)
    assert all((x / SPARE).read_bytes() == b"first" for x in d)


def _unsupported(a: str, b: str) -> None:
    raise OSError(errno.EINVAL, "Invalid argument")


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("exchange", [_unsupported, None], ids=["EINVAL", "no renameat2"])
def test_swap_mode_without_the_exchange_renames_over(
        tmp_path: Path, flushes, monkeypatch: pytest.MonkeyPatch, n: int,
        exchange: Callable[[str, str], None] | None) -> None:
    flushes()
    monkeypatch.setattr(groupcommit, "_exchange", exchange)
    d = dirs(tmp_path, n)
    for content in (b"new, longer", b"newer"):
        assert save_all([(str(x), "status.json", content) for x in d], swap=True) == [None] * n
        for x in d:
            assert (x / "status.json").read_bytes() == content
            assert not (x / SPARE).exists()  # renamed over: the spare is gone


def test_swap_mode_other_exchange_errors_fail_that_file(tmp_path: Path, flushes,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    flushes()
    d = dirs(tmp_path, 2)
    real = groupcommit._exchange
    assert real is not None

    def exchange(a: str, b: str) -> None:
        if a.startswith(str(d[1])):
            raise OSError(errno.EACCES, "Permission denied")
        real(a, b)
    monkeypatch.setattr(groupcommit, "_exchange", exchange)
    errors = save_all([(str(x), "status.json", b"new") for x in d], swap=True)
    assert errors[0] is None
    assert isinstance(errors[1], OSError) and errors[1].errno == errno.EACCES
    assert (d[0] / "status.json").read_bytes() == b"new"
    assert (d[1] / "status.json").read_bytes() == b"old"


def test_swap_mode_a_failed_first_flush_keeps_the_old_contents(tmp_path: Path, flushes) -> None:
    fake = flushes(fail_at=1)
    d = dirs(tmp_path, 3)
    errors = save_all([(str(x), "status.json", b"new") for x in d], swap=True)
    assert all(isinstance(e, OSError) and e.errno == errno.EIO for e in errors)
    assert all((x / "status.json").read_bytes() == b"old" for x in d)  # nothing swapped
    assert fake.calls == 1
    fake.fail_at = 0  # the next write goes through the spares left
    assert save_all([(str(x), "status.json", b"next") for x in d], swap=True) == [None] * 3
    assert all((x / "status.json").read_bytes() == b"next" for x in d)


def test_swap_mode_a_failed_fsync_of_one_file_keeps_the_old_content(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (d,) = dirs(tmp_path, 1)

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(groupcommit.os, "fsync", failing)
    (error,) = save_all([(str(d), "status.json", b"new")], swap=True)
    assert isinstance(error, OSError) and error.errno == errno.EIO
    assert (d / "status.json").read_bytes() == b"old"


def test_swap_mode_a_failed_second_flush_removes_the_spares(tmp_path: Path, flushes) -> None:
    """Swapped (a reader sees the new content) but maybe not durable: the
    old inode, maybe still the file's on disk, is not written in place next
    time: the next write starts from a new spare."""
    flushes(fail_at=2)
    d = dirs(tmp_path, 2)
    errors = save_all([(str(x), "status.json", b"new") for x in d], swap=True)
    assert all(isinstance(e, OSError) and e.errno == errno.EIO for e in errors)
    assert all((x / "status.json").read_bytes() == b"new" for x in d)
    assert not any((x / SPARE).exists() for x in d)


def test_swap_mode_a_half_written_spare_never_shows(tmp_path: Path, flushes) -> None:
    """A crash while a spare was written leaves it with anything in it: the
    next write overwrites it whole."""
    flushes()
    d = dirs(tmp_path, 2)
    for x in d:
        (x / SPARE).write_bytes(b"\x00garbage{" * 100)
    assert save_all([(str(x), "status.json", b'{"state": "running"}') for x in d],
                    swap=True) == [None, None]
    assert all((x / "status.json").read_bytes() == b'{"state": "running"}' for x in d)
    (d[0] / SPARE).write_bytes(b"half a stat")
    assert save_all([(str(d[0]), "status.json", b'{"state": "ok"}')], swap=True) == [None]
    assert (d[0] / "status.json").read_bytes() == b'{"state": "ok"}'


def test_swap_mode_a_file_named_twice_gets_its_last_content(tmp_path: Path, flushes) -> None:
    flushes()
    d = dirs(tmp_path, 2)
    jobs = [(str(d[0]), "status.json", b"first"), (str(d[1]), "status.json", b"other"),
            (str(d[0]), "status.json", b"last")]
    assert save_all(jobs, swap=True) == [None] * 3
    assert (d[0] / "status.json").read_bytes() == b"last"
    assert (d[1] / "status.json").read_bytes() == b"other"


def test_swap_mode_nothing_to_write() -> None:
    assert save_all([], swap=True) == []
