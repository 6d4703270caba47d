"""atomicfile.replace_file: the old file or the new one, never half; the
fsyncs only when durable; no temporary file left behind by a failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from taskmasterd import atomicfile
from taskmasterd.atomicfile import replace_file


def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What os.fsync is called on, by path, from now on."""
    calls: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(atomicfile.os, "fsync", fsync)
    return calls


def test_replaces_the_file_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    path.write_text("old\n")
    replace_file(str(path), b"new\n", mode=0o644)
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    replace_file(str(path), b"private\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["bus"]


def test_durable_syncs_the_file_then_its_directory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = synced(monkeypatch)
    path = tmp_path / "processes.json"
    replace_file(str(path), b"{}", durable=True)
    assert len(calls) == 2
    assert os.path.basename(calls[0]).startswith(".processes.json.")  # before the rename
    assert calls[1] == str(tmp_path)


def test_not_durable_syncs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = synced(monkeypatch)
    replace_file(str(tmp_path / "f"), b"x")
    assert calls == []
    assert (tmp_path / "f").read_bytes() == b"x"


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.mkdir()  # a directory: the rename over it fails
    (path / "inside").write_text("kept")
    with pytest.raises(IsADirectoryError):
        replace_file(str(path), b"x")
    assert os.listdir(tmp_path) == ["taken"]
    assert (path / "inside").read_text() == "kept"


def test_a_relative_path_is_written_in_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    replace_file("here", b"x", durable=True)
    assert (tmp_path / "here").read_bytes() == b"x"
