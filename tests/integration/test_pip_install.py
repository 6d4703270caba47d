"""A daemon installed with `pip install .` (not editable, a fresh venv) keeps
its D-Bus policy (issue 11, 4.): the policy is package data, and the private
bus includes it, so uid 65534 may read (ListProcesses) and not act (Restart).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmasterd import daemon as daemon_module
from taskmasterd.bus.embedded import read_address_file
from tests.dbus_fixtures import bus_directory

ROOT = Path(__file__).resolve().parents[2]
NAME = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
TIMEOUT = 30.0
# Debian's interpreter, nothing of the project's environment.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
             **{k: v for k, v in os.environ.items() if k.startswith("PIP_")}}


def run(*argv: str | Path, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, **kw)  # type: ignore[call-overload]


def copy_of_the_tree(target: Path) -> None:
    """The tracked and not-ignored files (as `make deb` takes them), symlinks kept."""
    files = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    assert files.returncode == 0, files.stderr
    target.mkdir()
    tar = subprocess.run(f"tar --null -T - -cf - | tar -xf - -C {target}", shell=True, cwd=ROOT,
                         input=files.stdout.encode(), capture_output=True)
    assert tar.returncode == 0, tar.stderr


def install(base: Path) -> Path:
    """A fresh venv of Debian's python3 with the tree pip-installed; its bin/ directory.

    Dependencies come from the configured package index; without one (offline),
    from Debian's packages (python3-dbus-next, ... which bootstrap installs)."""
    src = base / "src"
    copy_of_the_tree(src)
    venv = base / "venv"
    made = run("/usr/bin/python3", "-m", "venv", venv, env=CLEAN_ENV)
    assert made.returncode == 0, made.stderr
    pip = run(venv / "bin/pip", "install", "-q", src, env=CLEAN_ENV, cwd=base)
    if pip.returncode != 0:
        shutil.rmtree(venv)
        made = run("/usr/bin/python3", "-m", "venv", "--system-site-packages", venv, env=CLEAN_ENV)
        assert made.returncode == 0, made.stderr
        offline = run(venv / "bin/pip", "install", "-q", "--no-index", "--no-build-isolation",
                      "--no-deps", src, env=CLEAN_ENV, cwd=base)
        assert offline.returncode == 0, f"pip install failed:\n{pip.stderr}\noffline:\n{offline.stderr}"
    return venv / "bin"


def read_until(proc: subprocess.Popen[bytes], text: bytes, timeout: float = TIMEOUT) -> bytes:
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while text not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no {text!r} from taskmasterd:\n" + data.decode(errors="replace"))
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError("taskmasterd exited:\n" + data.decode(errors="replace"))
        data += chunk
    return data


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[Path, Path]]:
    with bus_directory("tm-pip-") as base:
        yield install(base), base


@pytest.mark.slow
def test_the_policy_is_installed_as_a_file(installed: tuple[Path, Path]) -> None:
    bin_dir, _ = installed
    where = run(bin_dir / "python", "-c", "import taskmasterd.bus, os; "
                "print(os.path.dirname(taskmasterd.bus.__file__))", env=CLEAN_ENV, cwd="/")
    assert where.returncode == 0, where.stderr
    package = Path(where.stdout.strip())
    assert package.is_relative_to(bin_dir.parent)  # the venv's, not the source tree's
    policy = package / f"{NAME}.conf"
    assert policy.is_file() and not policy.is_symlink()
    assert policy.read_bytes() == (ROOT / "dbus" / f"{NAME}.conf").read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: calls as uid 65534 (setpriv)")
@pytest.mark.skipif(not all(shutil.which(t) for t in ("dbus-daemon", "busctl", "setpriv")),
                    reason="needs dbus-daemon, busctl and setpriv")
def test_a_pip_installed_daemon_lets_nobody_read_and_not_act(installed: tuple[Path, Path]) -> None:
    bin_dir, base = installed
    runtime = base / "run"  # bus_directory: 0755 all the way, so uid 65534 can reach the socket
    config = base / "taskmaster.yaml"
    config.write_text(f"taskmasterd: {{logfile: {base}/t.log, logdir: {base}/logs}}\n"
                      "programs:\n  web: {cmd: sleep 100000, starttime: 0}\n")
    proc = subprocess.Popen([bin_dir / "taskmasterd", "-c", config, "--bus", "private"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**CLEAN_ENV, "TASKMASTER_RUNTIME_DIR": str(runtime)}, cwd=base)
    try:
        err = read_until(proc, b" web RUNNING ")
        assert b"no D-Bus policy" not in err
        address = read_address_file(str(runtime))
        assert address is not None
        call = ["busctl", f"--address={address}", "call", NAME, PATH, MANAGER]
        listed = run(*AS_NOBODY, *call, "ListProcesses", timeout=TIMEOUT)
        assert listed.returncode == 0, listed.stderr
        assert '"web" "web" "RUNNING"' in listed.stdout
        restart = run(*AS_NOBODY, *call, "Restart", "s", "web", timeout=TIMEOUT)
        assert restart.returncode != 0 and "Access denied" in restart.stderr, restart
        root = run(*call, "ListProcesses", timeout=TIMEOUT)
        assert root.returncode == 0, root.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0


def test_no_policy_found_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("taskmasterd")
    logger.addHandler(handler)
    try:
        monkeypatch.setattr(daemon_module, "__file__", str(tmp_path / "taskmasterd" / "daemon.py"))
        assert daemon_module._policy_file(str(tmp_path / "missing.conf")) is None
    finally:
        logger.removeHandler(handler)
    [warning] = [r for r in records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert "no D-Bus policy for org.taskmaster.Taskmaster1" in message
    assert str(tmp_path / "missing.conf") in message and "every other caller is refused" in message


def test_the_shipped_policy_is_found_beside_the_package(tmp_path: Path) -> None:
    found = daemon_module._policy_file(str(tmp_path / "missing.conf"))
    assert found == str(ROOT / "taskmasterd" / "bus" / f"{NAME}.conf")
    assert Path(found).read_bytes() == (ROOT / "dbus" / f"{NAME}.conf").read_bytes()


@pytest.mark.slow
def test_another_dbus_next_is_refused_by_pip_and_by_the_daemon(tmp_path: Path) -> None:
    """dbus-next is pinned to 0.2.3 (its internals are overridden): with 0.2.4 in the
    venv, `pip install .` refuses, and a `--no-deps` install does not start. Offline:
    Debian's packages (system site) and no package index or config."""
    src = tmp_path / "src"
    copy_of_the_tree(src)
    venv = tmp_path / "venv"
    made = run("/usr/bin/python3", "-m", "venv", "--system-site-packages", venv, env=CLEAN_ENV)
    assert made.returncode == 0, made.stderr
    purelib = run(venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                  env=CLEAN_ENV).stdout.strip()
    info = Path(purelib) / "dbus_next-0.2.4.dist-info"  # found before Debian's 0.2.3
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dbus-next\nVersion: 0.2.4\n")
    (info / "RECORD").write_text("")
    env = {**CLEAN_ENV, "PIP_CONFIG_FILE": os.devnull}
    pip = [venv / "bin/pip", "install", "--no-index", "--no-build-isolation"]

    refused = run(*pip, src, env=env, cwd=tmp_path)
    assert refused.returncode != 0
    assert "dbus-next==0.2.3 (from taskmaster)" in refused.stderr, refused.stderr

    forced = run(*pip, "--no-deps", src, env=env, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    started = run(venv / "bin/taskmasterd", "-c", src / "etc/taskmaster.yaml", env=CLEAN_ENV,
                  cwd=tmp_path, timeout=TIMEOUT)
    assert started.returncode == 1
    assert started.stderr.splitlines() == [
        "taskmasterd: not started: dbus-next 0.2.4 is installed, taskmasterd needs exactly 0.2.3 "
        "(it extends that version's internals): pip install 'dbus-next==0.2.3', "
        "or on Debian 12: apt install python3-dbus-next"], started.stderr
