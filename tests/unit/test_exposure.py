"""taskmasterd.exposure: which configurations hold credentials, and who can read a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmasterd.config import parse_config
from taskmasterd.exposure import credentials, exposure_warning, readable_by_anyone

CONFIG = """\
programs:
  db:
    cmd: sleep 1
    env: {DB_PASSWORD: x, PGPASSWD: x, API_KEY: x, GITHUB_TOKEN: x, aws_secret_access_key: x,
          CREDENTIALS_FILE: x, HOME: /root, KEYBOARD: us, LANG: C}
  web:
    cmd: sleep 1
alerts:
  - url: "mailto://tm:PASSWORD@smtp.example.com?to=ops@example.com"
  - url: "jsons://hooks.example.com/taskmaster"
"""


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory everyone may search (pytest's tmp_path is 0700)."""
    with tempfile.TemporaryDirectory(prefix="tm-exposure-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


def test_credentials_are_named_by_where_they_are_never_by_value() -> None:
    config = parse_config(CONFIG, "/etc/taskmaster/taskmaster.yaml")
    found = credentials(config, [True, False])
    assert found == ["alerts[0].url", "programs.db.env.API_KEY", "programs.db.env.CREDENTIALS_FILE",
                     "programs.db.env.DB_PASSWORD", "programs.db.env.GITHUB_TOKEN",
                     "programs.db.env.PGPASSWD", "programs.db.env.aws_secret_access_key"]
    assert credentials(parse_config("programs:\n  web: {cmd: sleep 1, env: {HOME: /}}\n", "/x"),
                       []) == []


def test_readable_by_anyone(world: Path) -> None:
    f = world / "taskmaster.yaml"
    f.write_text("programs: {}\n")
    f.chmod(0o644)
    assert readable_by_anyone(str(f))
    f.chmod(0o640)
    assert not readable_by_anyone(str(f))
    # o+r on the file, but a directory above it others may not enter
    inner = world / "private"
    inner.mkdir(mode=0o750)
    inner.chmod(0o750)
    g = inner / "taskmaster.yaml"
    g.write_text("programs: {}\n")
    g.chmod(0o644)
    assert not readable_by_anyone(str(g))
    inner.chmod(0o711)  # searchable: the file can be read by name
    assert readable_by_anyone(str(g))
    assert not readable_by_anyone(str(world / "missing.yaml"))


def test_one_warning_naming_the_file_and_its_mode(world: Path) -> None:
    f = world / "taskmaster.yaml"
    f.write_text(CONFIG)
    f.chmod(0o644)
    config = parse_config(CONFIG, str(f))
    warning = exposure_warning(config, [True, False])
    assert warning is not None
    assert warning.startswith(f"{f} holds credentials (alerts[0].url, programs.db.env.API_KEY, "
                              "programs.db.env.CREDENTIALS_FILE and 4 more) and any user can read "
                              "it (mode 0644)")
    assert "PASSWORD@" not in warning and ": x" not in warning
    f.chmod(0o640)
    assert exposure_warning(config, [True, False]) is None
    f.chmod(0o644)
    no_secret = parse_config("programs:\n  web: {cmd: sleep 1}\n", str(f))
    assert exposure_warning(no_secret, [False]) is None
