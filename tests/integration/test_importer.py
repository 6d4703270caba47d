"""The importer's round trip (issue 19): import each real supervisord
configuration of tests/data/supervisord/, `--check-config` passes, and
taskmasterd started on the result runs the same processes as supervisord 4
started on the original (argv and working directory of each, from /proc).

Both daemons read the same runnable copy of each configuration, made in
the test's directory: the server binaries (nginx, php-fpm, celery,
gunicorn, php, sh...) are replaced by tests/data/supervisord/bin/fake-server
with the same arguments (it only waits for a signal); absolute paths under
/etc/supervisor, /var/log, /var/run, /run and /tmp, and every `directory=`,
are moved under the test's directory; `user=` lines are dropped (the test
runs as one user); [eventlistener:x] sections are dropped (one of them
kills supervisord on an event; the importer reports them as not carried
over). The imported taskmaster.yaml gets the test's statedir (and a logfile
and logdir when it has none), as every integration test's config does.

supervisord is Debian's (the supervisor package, which `sh bootstrap test`
installs with its service neither started nor enabled), else
bench/.venv-supervisor's (bench.drivers.ensure_supervisor()); without
either: skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness import Daemon, wait_until

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "supervisord"
FAKE = DATA / "bin" / "fake-server"
_MOVED_RE = re.compile(r"(?<![\w/.-])/(etc/supervisor|var/log|var/run|run|tmp)/")


def _supervisord() -> str | None:
    # Debian's (the supervisor package: `sh bootstrap test` installs it, its
    # service neither started nor enabled), else the bench's pip copy.
    mine = ROOT / "bench" / ".venv-supervisor" / "bin" / "supervisord"
    return shutil.which("supervisord") or (str(mine) if mine.exists() else None)


def _check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskmasterd", "--check-config", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, **(env or {})})


SUPERVISORD = _supervisord()
pytestmark = pytest.mark.skipif(SUPERVISORD is None,
                                reason="no supervisord 4 (Debian's supervisor package: sh bootstrap test)")

# name -> (the main file under DATA, the directory copied with it)
CASES = {
    "sample": ("supervisord.conf", "sample"),
    "debian": ("supervisord.conf", "debian"),
    "privatebin": ("privatebin.conf", "public/privatebin.conf"),
    "sitepilot": ("sitepilot.conf", "public/sitepilot.conf"),
    "groundx": ("groundx.conf", "public/groundx.conf"),
    "gunicorn": ("gunicorn.conf", "public/gunicorn.conf"),
    "laravel": ("supervisord.conf", "debian/conf.d/laravel-worker.conf"),
}


def runnable(text: str, base: Path) -> str:
    """The copy both daemons run (see the module docstring)."""
    out: list[str] = []
    section = ""
    for line in _MOVED_RE.sub(lambda m: f"{base}/{m.group(1)}/", text).split("\n"):
        head = re.match(r"\[(.+)\]", line.strip())
        if head:
            section = head.group(1)
        if section.startswith("eventlistener:"):
            continue
        if re.match(r"user\s*[=:]", line):
            continue
        m = re.match(r"(command\s*[=:]\s*)(\S+)(.*)$", line)
        if m and section.startswith("program:"):
            line = f"{m.group(1)}{FAKE}{m.group(3)}"
        m = re.match(r"(directory\s*[=:]\s*)(\S+)\s*$", line)
        if m and section.startswith("program:"):
            moved = Path(f"{base}{m.group(2)}")
            moved.mkdir(parents=True, exist_ok=True)
            line = f"{m.group(1)}{moved}"
        out.append(line)
    return "\n".join(out)


def make_copy(case: str, where: Path) -> Path:
    main, source = CASES[case]
    src = DATA / source
    if case == "debian":
        target = where / "etc" / "supervisor"
        shutil.copytree(src, target)
    elif case == "laravel":  # a conf.d file on its own: supervisord needs its section
        target = where / "laravel"
        target.mkdir(parents=True)
        (target / "supervisord.conf").write_text("[supervisord]\n" + src.read_text())
    elif src.is_dir():
        target = where / case
        shutil.copytree(src, target)
    else:
        target = where / case
        target.mkdir(parents=True)
        shutil.copy(src, target / main)
    for conf in target.rglob("*.conf"):
        conf.write_text(runnable(conf.read_text(), where))
    for d in ("var/log/supervisor", "var/log/celery", "var/run", "run", "tmp"):
        (where / d).mkdir(parents=True, exist_ok=True)
    return target / main


def fakes(pid: int) -> list[tuple[tuple[str, ...], str]]:
    """(argv, cwd) of the fake servers among pid's children, sorted."""
    found = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    for child in children:
        try:
            argv = tuple(Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")[:-1])
            cwd = os.readlink(f"/proc/{child}/cwd")
        except OSError:
            continue
        if len(argv) > 1 and argv[1] == str(FAKE):
            found.append((argv, cwd))
    return sorted(found)


@pytest.fixture
def supervisord() -> Iterator[Callable[[Path, Path, dict[str, str]], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(conf: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        assert SUPERVISORD is not None
        proc = subprocess.Popen([SUPERVISORD, "-n", "-c", str(conf)], cwd=cwd,
                                env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip(case: str, workdir: Path, daemons: Callable[..., Daemon],
                    supervisord: Callable[[Path, Path, dict[str, str]], subprocess.Popen[bytes]]) -> None:
    conf = make_copy(case, workdir / "src")
    out = workdir / "out"
    imported = subprocess.run([sys.executable, "-m", "taskmasterd", "--import-supervisord",
                               str(conf), "-o", str(out)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert imported.returncode == 0, imported.stderr
    main = out / "taskmaster.yaml"
    env = {"POD_NAME": "pod-7"}  # groundx's %(ENV_POD_NAME)s: the environment of both daemons
    checked = _check_config(main, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    doc = yaml.safe_load(main.read_text())
    settings = doc.setdefault("taskmasterd", {}) or {}
    doc["taskmasterd"] = settings
    settings["statedir"] = str(workdir / "state")
    settings.setdefault("logfile", str(workdir / "taskmasterd.log"))
    settings.setdefault("logdir", str(workdir / "logs"))
    main.write_text(yaml.safe_dump(doc, sort_keys=False))

    # in the same working directory as taskmasterd (the harness runs it in its
    # config's): a program without directory= runs there under both
    theirs = supervisord(conf, out, env)
    ours = daemons(main, env=env)

    # how many processes to wait for: the autostart programs' numprocs, as imported
    expected = 0
    for f in [main, *sorted(out.glob("conf.d/*.yaml"))]:
        for body in (yaml.safe_load(f.read_text()).get("programs") or {}).values():
            expected += body.get("numprocs", 1) if body.get("autostart", True) else 0

    def both_up() -> bool:
        if theirs.poll() is not None:
            raise AssertionError(f"supervisord exited ({theirs.returncode})")
        return len(fakes(theirs.pid)) == expected == len(fakes(ours.pid))

    try:
        wait_until(f"{expected} processes from each daemon ({case})", both_up, timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nsupervisord: {fakes(theirs.pid)}\n"
                             f"taskmasterd: {fakes(ours.pid)}\n{ours.text()}") from None
    assert fakes(ours.pid) == fakes(theirs.pid)
