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

import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.e2e import debs
from tests.e2e.container import (
    HOST_TOOLS,
    INSTALL_HINT,
    Container,
    Unavailable,
    require_host,
    rootfs_tarball,
)

REPO = Path(__file__).resolve().parents[2]
TIMINGS: dict[str, float] = {}
SKIPPED: dict[str, str] = {}  # e2e test id -> why it was skipped
HOW_TO_RUN = (f"to run it: as root, with `{INSTALL_HINT}`, "
              "`sh bootstrap test tests/e2e` (about a minute; CI=true fails instead of skipping)")


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"booted-systemd test cannot run here (CI=true, so this fails): {reason}",
                    pytrace=False)
    pytest.skip(f"booted-systemd test cannot run here: {reason}")


def deb_package() -> Path:
    """The package under test (tests.e2e.debs), its build timed."""
    started = time.monotonic()
    try:
        deb, built = debs.deb_package()
    except Unavailable as exc:
        unavailable(str(exc))
    except debs.BuildFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    if built:
        TIMINGS["make deb"] = time.monotonic() - started
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
