from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dbus_fixtures import session_bus
from tests.harness import Daemon

WriteConfig = Callable[..., Path]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A 0755 directory (pytest's tmp_path is 0700: `user: nobody` could not enter it)."""
    with tempfile.TemporaryDirectory(prefix="tm-test-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


@pytest.fixture
def write_config(workdir: Path) -> WriteConfig:
    def write(programs: dict[str, dict[str, Any]], name: str = "taskmaster.yaml",
              **daemon: Any) -> Path:
        doc = {
            "taskmasterd": {"logfile": str(workdir / "taskmasterd.log"),
                            "logdir": str(workdir / "logs"),
                            # the test's own: a store shared between tests would have
                            # one test's daemon re-adopt (or stop) another's processes
                            "statedir": str(workdir / "state"), **daemon},
            "programs": programs,
        }
        path = workdir / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path
    return write


@pytest.fixture
def bus_address(workdir: Path) -> Iterator[str]:
    """A private session-like dbus-daemon for this test only."""
    with session_bus(workdir) as address:
        yield address


@pytest.fixture
def daemons(bus_address: str) -> Iterator[Callable[..., Daemon]]:
    """Start daemons on the test's private bus; any still running at the end
    are terminated."""
    started: list[Daemon] = []

    def start(config: Path, *extra: str, **kw: Any) -> Daemon:
        d = Daemon(config, "--address", bus_address, *extra, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.terminate()
        else:
            d.close()
