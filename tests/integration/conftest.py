from __future__ import annotations

import contextlib
import os
import signal
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
        kill_task_runners(d)


def kill_task_runners(under: str) -> None:
    """A test that failed while a task waited (on a fifo, a sleep) leaves its
    task runner and the task behind: the runner outlives daemons by design.
    SIGKILL the runners whose statedir is under `under`, and their tasks'
    process groups (each task leads its own)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"taskmasterd.tasks.runner" not in argv or \
                not any(a.startswith(os.fsencode(under)) for a in argv):
            continue
        runner = int(entry)
        for child in Path(f"/proc/{runner}/task/{runner}/children").read_text().split() \
                if os.path.exists(f"/proc/{runner}/task/{runner}/children") else []:
            with contextlib.suppress(OSError):
                os.killpg(int(child), signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(runner, signal.SIGKILL)


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
