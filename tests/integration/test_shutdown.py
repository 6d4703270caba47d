"""A clean shutdown on the daemon's own private bus, as a user runs it (issue 11, 7.).

`timeout -s TERM 2.5 taskmasterd -c FILE` after one `taskctl status` printed
"Future exception was never retrieved ... BrokenPipeError" in 3 runs of 7:
`timeout` (like Ctrl-C on a terminal) signals the whole process group, the
embedded dbus-daemon was in it and died at once, and the daemon, still
stopping its programs, wrote its signals into a dead socket. The scenario runs
50 times (a few at once, to keep it short).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from taskmasterd.bus.embedded import read_address_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="needs dbus-daemon"),
]

RUNS = 50
AT_ONCE = 4
TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[2]


def _read_until(proc: subprocess.Popen[bytes], wanted: int, deadline: float) -> bytes:
    """stderr until `wanted` RUNNING lines have come (or EOF / the deadline)."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    data = b""
    while data.count(b" RUNNING ") < wanted:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError("the programs did not reach RUNNING:\n" + data.decode(errors="replace"))
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError("taskmasterd exited early:\n" + data.decode(errors="replace"))
        data += chunk
    return data


PROCESSES = 31
# Many signals in flight while stopping.
PROGRAMS = ("  a: {cmd: sleep 1000, numprocs: 30, starttime: 0}\n"
            "  b: {cmd: sleep 1000, starttime: 0}\n")


@contextlib.contextmanager
def _daemon(n: int, programs: str = PROGRAMS, processes: int = PROCESSES
            ) -> Iterator[tuple[subprocess.Popen[bytes], str, dict[str, str], bytearray]]:
    """taskmasterd on its private bus in a process group of its own (as a shell
    starts a command), its programs RUNNING: (proc, bus address, env, stderr so far)."""
    with tempfile.TemporaryDirectory(prefix=f"tm-shutdown-{n}-") as d:
        base = Path(d)
        runtime = base / "run"
        config = base / "taskmaster.yaml"
        config.write_text(f"taskmasterd: {{logfile: {base}/t.log, logdir: {base}/logs}}\n"
                          "programs:\n" + programs)
        env = {**os.environ, "TASKMASTER_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(ROOT)}
        env.pop("NOTIFY_SOCKET", None)
        proc = subprocess.Popen([sys.executable, "-m", "taskmasterd", "-c", str(config),
                                 "--bus", "private"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                cwd=base, start_new_session=True)
        try:
            err = bytearray(_read_until(proc, processes, time.monotonic() + TIMEOUT))
            address = read_address_file(str(runtime))
            assert address is not None
            yield proc, address, env, err
            assert not runtime.joinpath("bus").exists()  # the bus went last, and cleanly
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _timeout_kill(proc: subprocess.Popen[bytes], err: bytearray) -> None:
    """What `timeout -s TERM` does: SIGTERM to the command first, then to its
    whole process group (Ctrl-C on a terminal reaches the group too); then
    wait for the exit and collect stderr into `err`."""
    os.kill(proc.pid, signal.SIGTERM)
    os.killpg(proc.pid, signal.SIGTERM)
    _, rest = proc.communicate(timeout=TIMEOUT)
    err += rest
    assert proc.returncode == 0, (proc.returncode, err.decode(errors="replace"))


def _one_run(n: int) -> str:
    """Start, `taskctl status`, SIGTERM as `timeout` sends it; the problems found (or "")."""
    with _daemon(n) as (proc, address, env, err):
        status = subprocess.run([sys.executable, "-m", "taskctl", "--address", address, "status"],
                                capture_output=True, text=True, env=env, timeout=TIMEOUT)
        assert status.returncode == 0 and status.stdout.count("RUNNING") == PROCESSES, status
        _timeout_kill(proc, err)
    text = err.decode(errors="replace")
    if "Traceback" in text or "never retrieved" in text or " ERROR " in text:
        return f"run {n}:\n{text}"
    return ""


def test_sigterm_to_the_process_group_after_a_status_leaves_no_traceback() -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(AT_ONCE) as pool:
        problems = [p for p in pool.map(_one_run, range(RUNS)) if p]
    assert problems == [], "\n".join(problems[:3])
    assert time.monotonic() - started < 120  # the issue asks under ~60 s; loaded CI gets slack


def test_the_private_bus_outlives_the_stop_of_every_program() -> None:
    """The group's SIGTERM does not reach the embedded dbus-daemon: a client
    following the events sees every process stop (these take half a second
    to), then loses the bus."""
    slow = ("  slow:\n"
            "    cmd: sh -c 'trap \"sleep 0.5; exit 0\" TERM; sleep 1000 & wait'\n"
            "    numprocs: 3\n"
            "    starttime: 0\n")
    with _daemon(0, slow, 3) as (proc, address, env, err):
        follower = subprocess.Popen([sys.executable, "-m", "taskctl", "--address", address, "events"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, text=True)
        try:
            assert follower.stderr is not None
            ready = follower.stderr.readline()  # printed once subscribed
            assert "following the events" in ready, ready
            _timeout_kill(proc, err)
            out, rest = follower.communicate(timeout=TIMEOUT)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        lines = out.splitlines()
        assert len([line for line in lines if "-> STOPPING" in line]) == 3, out + rest
        assert len([line for line in lines if "-> STOPPED" in line]) == 3, out + rest
