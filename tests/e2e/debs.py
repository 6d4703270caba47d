"""The Debian package under test, shared by the booted-systemd tests and the
bench's `remote` measure: $TASKMASTER_E2E_DEB if set, else
build/deb/taskmasterd_<version>_all.deb, (re)built with `make deb` when
missing or older than the sources (under a lock: `make deb` starts with
rm -rf build/deb, and two runs may want it at once)."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from tests.e2e.container import Unavailable, require_host

REPO = Path(__file__).resolve().parents[2]
DEB_DIR = REPO / "build" / "deb"
# What goes into the package: a .deb older than any of these is rebuilt.
PACKAGED = ("taskmasterd", "taskctl", "dbus", "etc", "packaging", "contrib", "pyproject.toml")


class BuildFailed(RuntimeError):
    """`make deb` failed, or the given package does not exist: the message says how."""


def _newest_source() -> float:
    newest = 0.0
    for name in PACKAGED:
        top = REPO / name
        if not top.exists():
            continue
        paths = [top] if top.is_file() else (p for p in top.rglob("*") if p.is_file()
                                              and "__pycache__" not in p.parts)
        for p in paths:
            newest = max(newest, p.stat().st_mtime)
    return newest


def _built_deb() -> Path | None:
    found = sorted(DEB_DIR.glob("taskmasterd_*_all.deb"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _fresh() -> Path | None:
    deb = _built_deb()
    return deb if deb is not None and deb.stat().st_mtime >= _newest_source() else None


def deb_package() -> tuple[Path, bool]:
    """The package, and whether it was built now. Unavailable: the tools to
    build it are missing; BuildFailed: the build failed (its output's end)."""
    given = os.environ.get("TASKMASTER_E2E_DEB")
    if given:
        if not Path(given).is_file():
            raise BuildFailed(f"TASKMASTER_E2E_DEB={given}: no such file")
        return Path(given), False
    deb = _fresh()
    if deb is not None:
        return deb, False
    try:
        require_host("make", "dpkg-buildpackage", "lintian")
    except Unavailable as exc:
        raise Unavailable(f"{exc}; `make deb` needs them (sh bootstrap setup installs them)") \
            from None
    (REPO / "build").mkdir(exist_ok=True)
    with open(REPO / "build" / ".e2e-deb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        deb = _fresh()
        if deb is not None:
            return deb, False  # another run built it meanwhile
        proc = subprocess.run(["make", "deb"], cwd=REPO, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=900)
        deb = _built_deb()
    if proc.returncode != 0 or deb is None:
        tail = "\n".join((proc.stdout + proc.stderr).rstrip().splitlines()[-40:])
        raise BuildFailed(f"`make deb` failed (exit {proc.returncode}):\n{tail}")
    return deb, True
