"""Fixtures of the booted-systemd tests: the cached root file system, the
Debian package under test, a container, and what to show when a test fails.

They run whenever the host can (root and the tools). A host that cannot
(not root, mmdebstrap or systemd-nspawn missing, no network for the first
rootfs build) skips them, and the run ends with one line saying so, why, and
how to run them (`-q` would otherwise show just "N skipped"); with CI=true
in the environment it is a failure instead, so that CI never passes by
skipping the one test that boots the real thing.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.e2e.container import (
    HOST_TOOLS,
    INSTALL_HINT,
    Container,
    Unavailable,
    require_host,
    rootfs_tarball,
)

REPO = Path(__file__).resolve().parents[2]
DEB_DIR = REPO / "build" / "deb"
# What goes into the package: a .deb older than any of these is rebuilt.
PACKAGED = ("taskmasterd", "taskctl", "dbus", "etc", "packaging", "pyproject.toml")
TIMINGS: dict[str, float] = {}
SKIPPED: dict[str, str] = {}  # e2e test id -> why it was skipped
HOW_TO_RUN = (f"to run it: as root, with `{INSTALL_HINT}`, "
              "`sh bootstrap test tests/e2e` (about a minute; CI=true fails instead of skipping)")


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"booted-systemd test cannot run here (CI=true, so this fails): {reason}",
                    pytrace=False)
    pytest.skip(f"booted-systemd test cannot run here: {reason}")


def _newest_source() -> float:
    newest = 0.0
    for name in PACKAGED:
        top = REPO / name
        paths = [top] if top.is_file() else (p for p in top.rglob("*") if p.is_file()
                                              and "__pycache__" not in p.parts)
        for p in paths:
            newest = max(newest, p.stat().st_mtime)
    return newest


def _built_deb() -> Path | None:
    found = sorted(DEB_DIR.glob("taskmasterd_*_all.deb"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def deb_package() -> Path:
    """The package under test: $TASKMASTER_E2E_DEB if set, else
    build/deb/taskmasterd_<version>_all.deb, (re)built with `make deb` when
    missing or older than the sources."""
    given = os.environ.get("TASKMASTER_E2E_DEB")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"TASKMASTER_E2E_DEB={given}: no such file", pytrace=False)
        return Path(given)
    deb = _built_deb()
    if deb is not None and deb.stat().st_mtime >= _newest_source():
        return deb
    try:
        require_host("make", "dpkg-buildpackage", "lintian")
    except Unavailable as exc:
        unavailable(f"{exc}; `make deb` needs them (sh bootstrap setup installs them)")
    started = time.monotonic()
    (REPO / "build").mkdir(exist_ok=True)
    with open(REPO / "build" / ".e2e-deb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # `make deb` starts with rm -rf build/deb
        deb = _built_deb()
        if deb is not None and deb.stat().st_mtime >= _newest_source():
            return deb  # another run built it meanwhile
        proc = subprocess.run(["make", "deb"], cwd=REPO, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=900)
        deb = _built_deb()
    TIMINGS["make deb"] = time.monotonic() - started
    if proc.returncode != 0 or deb is None:
        tail = "\n".join((proc.stdout + proc.stderr).rstrip().splitlines()[-40:])
        pytest.fail(f"`make deb` failed (exit {proc.returncode}):\n{tail}", pytrace=False)
    return deb


@pytest.fixture(scope="session")
def rootfs() -> Path:
    started = time.monotonic()
    try:
        path = rootfs_tarball()
    except Unavailable as exc:
        unavailable(str(exc))
    TIMINGS["rootfs (cached)" if time.monotonic() - started < 1 else "rootfs build"] = (
        time.monotonic() - started)
    return path


@pytest.fixture(scope="session")
def package() -> Path:
    """The .deb under test (see deb_package)."""
    return deb_package()


@pytest.fixture(scope="session")
def booted(rootfs: Path, package: Path) -> Iterator[Container]:
    """A container with the package installed, its unit disabled (the tests
    start it themselves), booted once for the run: each test module starts
    the unit itself and leaves it stopped, with the package under test
    installed (test_upgrade.py ends with it too)."""
    try:
        require_host(*HOST_TOOLS)
    except Unavailable as exc:
        unavailable(str(exc))
    with Container(rootfs) as box:
        box.install_deb(package)
        # The package enables the unit (Debian's norm): it would start at
        # boot. Disabled here so that the test's `systemctl start` is the start.
        box.chroot(["systemctl", "disable", "--quiet", "taskmasterd.service"])
        box.boot()
        yield box
    TIMINGS.update(box.timings)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    """A failing test gets the container's console and journal in its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        funcargs = getattr(item, "funcargs", {})
        box = next((v for v in funcargs.values() if isinstance(v, Container)), None)
        if box is not None:
            report.sections.append(("container diagnostics", box.diagnostics()))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: boots a real systemd in a container (root, minutes)")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "e2e" in report.keywords and isinstance(report.longrepr, tuple):
        SKIPPED[report.nodeid] = str(report.longrepr[2]).removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SKIPPED:
        reasons = sorted(set(SKIPPED.values()))
        terminalreporter.write_line(
            f"booted-systemd E2E SKIPPED ({len(SKIPPED)} tests): {'; '.join(reasons)} -- {HOW_TO_RUN}",
            yellow=True, bold=True)
    if TIMINGS:
        terminalreporter.write_line(
            "e2e timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))
