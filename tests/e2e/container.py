"""Boot a real systemd in a throw-away container, for end-to-end tests.

The recipe is the one verified in ../shared/E2E-NOTES.md: a Debian minbase
root file system built once by mmdebstrap and cached as a zstd tarball,
extracted into a fresh directory per container, the package under test
installed with `dpkg -i` in a chroot, then booted by `systemd-nspawn --boot`
from a shell that first moved itself into its own cgroup (so that the host's
cgroup setup and the container's systemd do not fight) and mounted a tmpfs
on /run/systemd in a private mount namespace (so that nspawn does not think
the host runs systemd). Commands run inside with `nsenter -t PID1 -a`.

Nothing here sleeps to wait for something: every wait retries a check until
a deadline (`wait_until`) or reads output as it comes (`Background`).

    with Container(rootfs_tarball()) as box:
        box.install_deb(Path("build/deb/taskmasterd_0.1.0_all.deb"))
        box.boot()
        box.run(["systemctl", "start", "taskmasterd"])

A host that cannot do this (not root, a tool missing, no network for the
first build) raises `Unavailable`; the caller decides whether that is a skip
or a failure (tests/e2e/conftest.py: a failure when CI=true).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

SUITE = "bookworm"
# What the root file system holds besides minbase: systemd as init, the
# system bus, the package's runtime dependencies (dpkg -i does not fetch
# them: packaging/debian/control's Depends, adduser included), and the tools
# the tests use inside (pgrep, ip).
PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "dbus", "procps", "python3", "python3-systemd",
    "python3-dbus-next", "python3-jeepney", "python3-yaml", "apprise", "adduser", "iproute2",
    "python3-aiohttp", "python3-prometheus-client",  # taskmaster-web (its Recommends)
)
# minbase already leaves Recommends out (mmdebstrap's default).
MMDEBSTRAP_OPTIONS: tuple[str, ...] = (
    "--variant=minbase", "--mode=root", "--format=tar", '--aptopt=Acquire::Retries "3"',
)
BUILD_TIMEOUT = 900.0
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
HOST_TOOLS = ("tar", "zstd", "chroot", "unshare", "nsenter", "systemd-nspawn", "pgrep")
INSTALL_HINT = "apt-get install --no-install-recommends mmdebstrap systemd-container zstd"

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

T = TypeVar("T")


class Unavailable(Exception):
    """This host cannot build or boot the container: not root, a tool
    missing, no network for the first build. Not a bug of the code under test."""


class CommandFailed(subprocess.CalledProcessError):
    """A command in the container exited non-zero; says what it printed."""

    def __str__(self) -> str:
        def tail(text: str | bytes | None) -> str:
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            return "\n".join((text or "").rstrip().splitlines()[-30:])
        return (f"{' '.join(map(str, self.cmd))} exited with {self.returncode}\n"
                f"--- stdout:\n{tail(self.stdout)}\n--- stderr:\n{tail(self.stderr)}")


def wait_until(check: Callable[[], T | None], timeout: float, what: str, *,
               interval: float = 0.1) -> T:
    """Call `check` until it returns something true (returned) or the deadline
    passes (TimeoutError naming `what` and the last result or error). A check
    may also signal "not yet" by raising AssertionError or CommandFailed."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
        except (AssertionError, CommandFailed) as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}; last: {last}")
        time.sleep(interval)  # sleep-ok: bounded retry


def require_host(*tools: str) -> None:
    """Raise Unavailable unless we are root and every tool is on PATH."""
    if os.geteuid() != 0:
        raise Unavailable("the booted-systemd test needs root (mmdebstrap --mode=root, "
                          "systemd-nspawn, nsenter)")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise Unavailable(f"missing on this host: {', '.join(missing)} ({INSTALL_HINT})")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taskmaster-e2e"


def rootfs_key(packages: Sequence[str] = PACKAGES, suite: str = SUITE) -> str:
    """Names the cached tarball: it changes with anything that changes its content."""
    recipe = "\n".join([suite, *MMDEBSTRAP_OPTIONS, *sorted(packages)])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def rootfs_tarball(packages: Sequence[str] = PACKAGES, suite: str = SUITE) -> Path:
    """The cached root file system (build it first if needed, ~40 s):
    `~/.cache/taskmaster-e2e/rootfs-<key>.tar.zst`. Written to a temporary
    file then renamed, under a lock: never a partial tarball in the cache."""
    path = cache_dir() / f"rootfs-{rootfs_key(packages, suite)}.tar.zst"
    if path.is_file():
        return path
    require_host("mmdebstrap", "zstd")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same one
        if path.is_file():
            return path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as out:
                _build_rootfs(packages, suite, out)
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return path


def _build_rootfs(packages: Sequence[str], suite: str, out: Any) -> None:
    argv = ["mmdebstrap", *MMDEBSTRAP_OPTIONS, f"--include={','.join(packages)}", suite, "-"]
    with tempfile.TemporaryFile() as errors:
        mm = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=errors, start_new_session=True)
        assert mm.stdout is not None
        zstd = subprocess.Popen(["zstd", "-q", "-T0", "-c"], stdin=mm.stdout, stdout=out,
                                stderr=errors)
        mm.stdout.close()  # zstd holds the read end now
        try:
            zstd.wait(timeout=BUILD_TIMEOUT)
            mm.wait(timeout=30)
        except BaseException as exc:  # timeout or Ctrl-C: leave no build behind
            _stop_build(mm, zstd)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise Unavailable(f"building the root file system took over {BUILD_TIMEOUT:g} s "
                                  f"(slow network?): {' '.join(argv)}") from None
            raise
        if mm.returncode != 0 or zstd.returncode != 0:
            errors.seek(0)
            log = errors.read().decode(errors="replace").rstrip().splitlines()[-25:]
            raise Unavailable(
                f"building the root file system failed (mmdebstrap exit {mm.returncode}, "
                f"zstd exit {zstd.returncode}; no network?):\n  {' '.join(argv)}\n"
                + "\n".join(log))
        out.flush()
        os.fsync(out.fileno())


def _stop_build(mm: subprocess.Popen[bytes], zstd: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets mmdebstrap unmount and remove its temporary root; its
    process group (apt, dpkg) gets SIGKILL if that takes too long."""
    zstd.kill()
    mm.terminate()
    try:
        mm.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(mm.pid, signal.SIGKILL)
        mm.wait()
    zstd.wait()


class Background:
    """A command running inside the container whose output (stdout and
    stderr merged) is read line by line as it comes, with deadlines."""

    def __init__(self, proc: subprocess.Popen[bytes], argv: Sequence[str]) -> None:
        self.proc = proc
        self.argv = list(argv)
        self.lines: list[str] = []
        self.cursor = 0  # wait_for_line looks at lines from here on
        self._partial = b""
        self._eof = False

    def _read(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        if not ready:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            self._eof = True
            chunk = b"\n" if self._partial else b""
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self.lines.extend(line.decode(errors="replace") for line in complete)

    def wait_for_line(self, match: Callable[[str], bool], timeout: float, what: str) -> str:
        """The first line from the cursor on for which `match` is true; the
        cursor moves past it."""
        deadline = time.monotonic() + timeout
        while True:
            while self.cursor < len(self.lines):
                line = self.lines[self.cursor]
                self.cursor += 1
                if match(line):
                    return line
            remaining = deadline - time.monotonic()
            if self._eof or remaining <= 0:
                state = "it exited" if self._eof else f"timed out after {timeout:g} s"
                raise TimeoutError(f"{' '.join(self.argv)}: no line with {what} ({state}); "
                                   "output:\n" + "\n".join(self.lines[-40:]))
            self._read(remaining)

    def stop(self) -> None:
        """SIGTERM to the whole process group (nsenter forks to enter the
        PID namespace: its child is in the group too), SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the forked child, if still there
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Container:
    """A Debian root file system booted with systemd as PID 1.

    `Container(tarball)` as a context manager extracts the tarball into a
    fresh directory; `install_deb` before `boot`; `run`, `spawn`,
    `write_file`, `read_file`, `journal` once booted; leaving the `with`
    powers it off and removes everything. An exception escaping the `with`
    carries the console log and the end of the journal as a note.
    """

    def __init__(self, tarball: Path, *, workdir: Path | None = None,
                 keep: bool | None = None) -> None:
        self.tarball = tarball
        self.workdir = workdir
        self.keep = os.environ.get("TASKMASTER_E2E_KEEP") == "1" if keep is None else keep
        self.dir: Path | None = None
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        self.cgroups: list[Path] = []
        self.boot_state: str | None = None  # running | degraded
        self.timings: dict[str, float] = {}

    # -- life cycle --------------------------------------------------------

    @property
    def root(self) -> Path:
        if self.dir is None:
            raise RuntimeError("the container is not extracted (use it as a context manager)")
        return self.dir / "root"

    @property
    def console_log(self) -> Path:
        return self.root.parent / "console.log"

    def __enter__(self) -> Container:
        require_host(*HOST_TOOLS)
        self.dir = Path(tempfile.mkdtemp(prefix="taskmaster-e2e-", dir=self.workdir))
        try:
            self.extract()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            with contextlib.suppress(Exception):
                exc.add_note(self.diagnostics())
        try:
            self.poweroff()
        except Exception:
            if exc is None:
                raise  # else do not hide the first error

    def extract(self) -> None:
        started = time.monotonic()
        self.root.mkdir(mode=0o755)
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                        "-I", "zstd", "-xpf", str(self.tarball), "-C", str(self.root)],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
        os.chmod(self.root, 0o755)  # mkdtemp's 0700 would lock `nobody` out of /
        self.timings["extract"] = time.monotonic() - started

    def chroot(self, cmd: Sequence[str], *, timeout: float = 300.0
               ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in a chroot of the root directory, before boot (no
        systemd, no bus: `systemctl enable/disable` work, `start` does not)."""
        if self.pid1 is not None:
            raise RuntimeError("chroot() is for before boot(); use run()")
        argv = ["chroot", str(self.root), *cmd]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env={**CONTAINER_ENV, "DEBIAN_FRONTEND": "noninteractive"},
                              timeout=timeout)
        if proc.returncode != 0:
            raise CommandFailed(proc.returncode, list(cmd), proc.stdout, proc.stderr)
        return proc

    def install_deb(self, deb: Path) -> None:
        """`dpkg -i` the package in a chroot, before boot (dpkg does not
        fetch dependencies: they must be in PACKAGES)."""
        started = time.monotonic()
        shutil.copyfile(deb, self.root / "root" / deb.name)
        self.chroot(["dpkg", "-i", f"/root/{deb.name}"])
        self.timings["install_deb"] = time.monotonic() - started

    def boot(self, timeout: float = 60.0) -> None:
        """Start systemd-nspawn in the background and wait until the
        container's systemd says running (or degraded)."""
        started = time.monotonic()
        cgroup = self.root.parent.name
        for hierarchy in self._cgroup_hierarchies():
            self.cgroups.append(hierarchy / cgroup)
        # The shell moves itself into its own cgroup(s) first, then becomes
        # unshare, then sh, then systemd-nspawn: the same pid all along.
        script = (
            'for cg in "$@"; do case $cg in --) break;; esac; '
            'mkdir -p "$cg" && echo $$ > "$cg/cgroup.procs" || exit 1; done; '
            'while [ "$1" != -- ]; do shift; done; shift; '
            "exec unshare --mount --propagation private sh -c "
            "'mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && "
            'exec systemd-nspawn "$@"\' sh "$@"'
        )
        nspawn_args = ["-q", "-D", str(self.root), "--boot", "--register=no", "--keep-unit",
                       "--private-network", "--console=read-only", "--machine", "taskmaster-e2e"]
        with open(self.console_log, "wb") as log:
            self.nspawn = subprocess.Popen(
                ["sh", "-c", script, "sh", *map(str, self.cgroups), "--", *nspawn_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

        def pid1() -> int | None:
            assert self.nspawn is not None
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.nspawn.returncode} during "
                                   f"boot; console:\n{self.console_tail()}")
            found = subprocess.run(["pgrep", "-P", str(self.nspawn.pid), "-x", "systemd"],
                                   capture_output=True, text=True).stdout.split()
            return int(found[0]) if found else None

        self.pid1 = wait_until(pid1, timeout, "the container's PID 1 (systemd)")

        def booted() -> str | None:
            # "Failed to connect to bus" for a moment after PID 1 appears: retry.
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                             timeout=max(deadline - time.monotonic(), 1.0)).stdout.strip()
            return state if state in ("running", "degraded") else None

        deadline = started + timeout
        self.boot_state = wait_until(booted, max(deadline - time.monotonic(), 1.0),
                                     "systemctl is-system-running = running|degraded")
        self.timings["boot"] = time.monotonic() - started

    @staticmethod
    def _cgroup_hierarchies() -> list[Path]:
        """Where to give the container its own cgroup: the named v1 `systemd`
        hierarchy and the v2 one (`unified` in hybrid mode, the root in
        unified mode)."""
        base = Path("/sys/fs/cgroup")
        found = [base / h for h in ("systemd", "unified") if (base / h / "cgroup.procs").exists()]
        if not found and (base / "cgroup.procs").exists():
            found.append(base)
        return found

    def poweroff(self, timeout: float = 20.0) -> None:
        """`systemctl poweroff`, wait for nspawn to exit (SIGKILL after
        `timeout`), then remove everything."""
        started = time.monotonic()
        try:
            if self.nspawn is not None and self.nspawn.poll() is None:
                if self.pid1 is not None:
                    # The container may die under nsenter's feet: its result does not matter.
                    with contextlib.suppress(Exception):
                        self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
                else:  # boot did not get that far: nspawn halts the container on SIGTERM
                    self.nspawn.terminate()
                try:
                    self.nspawn.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.nspawn.pid, signal.SIGKILL)
                    self.nspawn.wait(timeout=30)
                    raise RuntimeError(f"the container did not power off within {timeout:g} s "
                                       "(killed)") from None
        finally:
            self.timings["poweroff"] = time.monotonic() - started
            self.pid1 = None
            self.cleanup()

    def cleanup(self) -> None:
        for cg in reversed(self.cgroups):
            _remove_cgroup(cg)
        self.cgroups.clear()
        if self.dir is None or self.keep:
            return
        mounted = [m for m in _mount_points() if m == str(self.dir) or m.startswith(f"{self.dir}/")]
        if mounted:  # never rm -rf through a mount (nspawn's are in its own namespace)
            raise RuntimeError(f"not removing {self.dir}: still mounted: {', '.join(mounted)}")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    # -- inside the container ----------------------------------------------

    def _argv(self, cmd: Sequence[str], user: str | None) -> list[str]:
        if self.pid1 is None:
            raise RuntimeError("the container is not booted")
        as_user = ["runuser", "-u", user, "--"] if user is not None else []
        return ["nsenter", "-t", str(self.pid1), "-a", *as_user, *cmd]

    def run(self, cmd: Sequence[str], *, user: str | None = None, check: bool = True,
            timeout: float = 60.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside the container (as `user`, root by default) and
        return its output. Non-zero exit + check: CommandFailed. Past
        `timeout`: its process group is killed and TimeoutError raised."""
        argv = self._argv(cmd, user)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else
                                subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=CONTAINER_ENV, text=True,
                                errors="replace", start_new_session=True)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise TimeoutError(f"{' '.join(cmd)} did not finish within {timeout:g} s\n"
                               f"--- stdout:\n{out}\n--- stderr:\n{err}") from None
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, list(cmd), out, err)
        return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)

    def spawn(self, cmd: Sequence[str], *, user: str | None = None) -> Background:
        """Start `cmd` inside the container in the background; read its
        output with `Background.wait_for_line`, end it with `stop()`."""
        proc = subprocess.Popen(self._argv(cmd, user), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=CONTAINER_ENV, start_new_session=True)
        return Background(proc, cmd)

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside the container. Once booted this goes through
        the container (it sees its /tmp and /run tmpfs); before, through
        the root directory (where /tmp would be hidden by the tmpfs)."""
        if self.pid1 is not None:
            self.run(["sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "sh", path, f"{mode:o}"],
                     input=text)
            return
        if path.startswith(("/tmp/", "/run/")):
            raise ValueError(f"{path}: hidden by a tmpfs once booted; write it after boot()")
        host = self.root / path.lstrip("/")
        host.write_text(text)
        os.chmod(host, mode)

    def read_file(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def wait_until(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        return wait_until(check, timeout, what)

    def journal(self, *matches: str, since: int | None = None) -> list[dict[str, Any]]:
        """Journal entries (journalctl -o json) for field matches such as
        `TASKMASTER_PROGRAM=web`; with `since` (a `journal_mark()`), only
        those received after it. (Not `--after-cursor`: with matches,
        systemd 252's journalctl also skips the first matching entry.)"""
        out = self.run(["journalctl", "--no-pager", "-o", "json", *matches], check=False).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if since is None:
            return entries
        return [e for e in entries if int(e.get("__MONOTONIC_TIMESTAMP", 0)) > since]

    @staticmethod
    def journal_mark() -> int:
        """Now, as journald stamps entries (__MONOTONIC_TIMESTAMP, µs): the
        container has no time namespace, so the host's CLOCK_MONOTONIC is its."""
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    # -- when something fails ----------------------------------------------

    def console_tail(self, lines: int = 60) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except (OSError, RuntimeError) as exc:
            return f"(no console log: {exc})"
        text = ANSI_ESCAPE.sub("", text).replace("\r", "")
        kept = [line for line in text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])

    def diagnostics(self) -> str:
        """The console log and the end of the journal, for error reports."""
        if self.nspawn is None:
            return "=== (the container was never booted: no console, no journal)"
        parts = [f"=== container console ({self.console_log if self.dir else '-'}):",
                 self.console_tail()]
        alive = self.pid1 is not None and self.nspawn is not None and self.nspawn.poll() is None
        if alive and self.boot_state == "degraded":
            failed = self.run(["systemctl", "--failed", "--plain", "--no-legend"], check=False)
            parts += ["=== the boot was degraded; failed units:", failed.stdout.rstrip()]
        if alive:
            try:
                journal = self.run(["sh", "-c", "journalctl -b --no-pager | tail -n 100"],
                                   check=False, timeout=20).stdout
            except Exception as exc:
                journal = f"(journalctl failed: {exc})"
            parts += ["=== journalctl -b | tail -n 100:", journal.rstrip()]
        else:
            parts.append("=== (container not running: no journal)")
        return "\n".join(parts)


def _mount_points() -> Iterator[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # Field 5 is the mount point, with octal escapes for blanks.
            yield line.split()[4].encode().decode("unicode_escape")


def _remove_cgroup(path: Path) -> None:
    """Remove a cgroup and the ones nspawn/systemd created under it
    (deepest first); best effort: a busy one is left for the kernel."""
    if not path.is_dir():
        return
    for sub, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(sub)
