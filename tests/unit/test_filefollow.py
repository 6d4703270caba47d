"""taskctl/filefollow.py: `tail -f` across growth, truncation and rotation,
on real files (what `taskctl tail -f` and the web page's follow share)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskctl.filefollow import FOLLOW_POLL, REOPEN_AFTER, FileFollow

POLLS_TO_REOPEN = round(REOPEN_AFTER / FOLLOW_POLL)


def test_reads_what_is_added_in_bounded_chunks(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"old\n")
    f = FileFollow(os.open(path, os.O_RDONLY))
    f.seek(4)
    assert f.read() == b""
    with open(path, "ab") as w:
        w.write(b"x" * 200_000)
    assert f.read(max_chunks=1) == b"x" * 65536  # a bounded caller gets the rest later
    assert f.read() == b"x" * (200_000 - 65536)
    assert f.pos == 200_004
    f.close()


def test_quiet_asks_for_the_file_again_every_reopen_after(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"")
    f = FileFollow(os.open(path, os.O_RDONLY))
    asks = [f.quiet() for _ in range(3 * POLLS_TO_REOPEN)]
    assert [i for i, ask in enumerate(asks) if ask] == [POLLS_TO_REOPEN - 1, 2 * POLLS_TO_REOPEN - 1,
                                                       3 * POLLS_TO_REOPEN - 1]
    path.write_bytes(b"new")  # news resets the count
    for _ in range(POLLS_TO_REOPEN - 2):
        assert not f.quiet()
    assert f.read() == b"new"
    assert not any(f.quiet() for _ in range(POLLS_TO_REOPEN - 1))
    f.close()


def test_a_truncated_file_is_read_from_the_top(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"0123456789")
    f = FileFollow(os.open(path, os.O_RDONLY))
    assert f.read() == b"0123456789"
    path.write_bytes(b"ab")  # truncated in place (0 backups), then written again
    assert f.read() == b""  # the offset is past the end
    f.quiet()
    assert f.read() == b"ab"
    f.close()


def test_a_rotated_file_is_finished_then_the_new_one_read(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"one\n")
    f = FileFollow(os.open(path, os.O_RDONLY))
    assert f.read() == b"one\n"
    assert f.switch(os.open(path, os.O_RDONLY)) == (False, b"")  # the same file: kept
    assert f.switch(None) == (False, b"")  # the daemon had none: kept
    with open(path, "ab") as w:
        w.write(b"two\n")  # written before the rotation
    old_fd = f.fd
    os.rename(path, tmp_path / "out.1")
    path.write_bytes(b"three\n")
    assert f.switch(os.open(path, os.O_RDONLY)) == (True, b"two\n")
    assert f.fd != old_fd and f.pos == 0
    with pytest.raises(OSError):  # the rotated file's fd is closed
        os.fstat(old_fd)
    assert f.read() == b"three\n"
    f.close()
