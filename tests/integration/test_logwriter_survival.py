"""The log writer outlives the daemon (issue 13): a SIGKILLed daemon's
programs keep writing their rotated output, never blocked and never EPIPE,
and the next daemon of the same instance (statedir + config file, same
runtime directory) re-attaches the writer and holds every pipe again.

What is checked is the file (a counter, contiguous across rotations and
every gap) and the daemon's fds (a copy of the program's pipe); the last
test adds the supervisor's re-adoption of the program itself (takeover.py):
its pipe is followed again, and its stop waits for the drain."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from taskmasterd.config import Config, ProgramConfig
from taskmasterd.events import EventBus
from taskmasterd.supervisor import Supervisor
from tests.harness import Daemon, alive, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_output_rotation import (
    assert_no_gap,
    killed_at_end,
    numbers_in_order,
    start_counting,
    total,
    writers_of,
)

Start = Callable[..., Daemon]
BACKUPS = 400

# A line every ms; on EPIPE it leaves a mark and exits 3 (it must never).
COUNTER = """\
import os, sys, time
i = 0
try:
    while True:
        i += 1
        sys.stdout.write(f"{i} {'x' * 60}\\n")
        sys.stdout.flush()
        time.sleep(0.001)  # sleep-ok: the counter program's own pace (a line per ms)
except BrokenPipeError:
    with open(sys.argv[1], "w") as f:
        f.write(f"EPIPE at line {i}\\n")
    os._exit(3)
"""


def setup(workdir: Path, write_config: WriteConfig, **program: Any) -> tuple[Path, Path, dict[str, str]]:
    """The counter's config (its stdout bounded, 64 KB per file), the
    runtime directory both daemons share, and where an EPIPE would be told."""
    script = workdir / "counter.py"
    script.write_text(COUNTER)
    epipe = workdir / "epipe"
    write_config({"count": {"cmd": f"{sys.executable} {script} {epipe}", "stdout": str(workdir / "count.out"),
                            "stdout_maxbytes": "64KB", "stdout_backups": BACKUPS, "stderr": None,
                            "starttime": 0, **program}},
                 statedir=str(workdir / "state"))
    return workdir / "count.out", epipe, {"TASKMASTER_RUNTIME_DIR": str(workdir / "run")}


def pipe_of(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def holds(pid: int, pipe: str) -> bool:
    """Whether process `pid` has `pipe` (pipe:[inode]) open."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if pipe_of(pid, int(fd)) == pipe:
                return True
        except FileNotFoundError:  # closed since listed (a socket, a file being read)
            continue
    return False


def grows(out: Path, by: int = 20_000, timeout: float = 30) -> None:
    start = total(out)
    wait_until(f"{by} more bytes of output", lambda: total(out) > start + by, timeout=timeout)


def test_programs_outlive_the_daemon_and_the_next_daemon_reattaches_the_writer(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    out, epipe, env = setup(workdir, write_config)
    cfg = workdir / "taskmaster.yaml"
    d1, program, writer = start_counting(daemons, cfg, env)
    pipe = pipe_of(program, 1)
    assert pipe.startswith("pipe:") and holds(d1.pid, pipe)  # the daemon's copy (s6 style)
    sockets = list((workdir / "run").glob("logwriter-*.sock"))
    assert len(sockets) == 1 and sockets[0].stat().st_mode & 0o777 == 0o600
    with killed_at_end(program, writer) as leftovers:
        grows(out)
        os.kill(d1.pid, signal.SIGKILL)
        d1.proc.wait(timeout=10)
        # No daemon: the writer goes on draining, with rotation.
        grows(out, 3 * 65536)
        assert alive(program) and alive(writer) and not epipe.exists()
        assert os.path.exists(f"{out}.3")  # it rotated meanwhile

        # The next daemon (the program is re-adopted from the state store
        # whatever autostart says: it stays the file's only writer).
        setup(workdir, write_config, autostart=False)
        d2 = daemons(cfg, env=env)
        d2.wait_text(f"re-attached the log writer (pid {writer}) and its 1 pipe(s)")
        wait_until("the daemon's copy of the pipe", lambda: holds(d2.pid, pipe))
        grows(out)

        # The daemon holds the pipe again: a dead writer is replaced, nothing lost.
        os.kill(writer, signal.SIGKILL)
        d2.wait_text(f"log writer (pid {writer}) died")
        wait_until("a new log writer", lambda: len(writers_of(d2.pid)) == 1)
        leftovers += writers_of(d2.pid)
        grows(out)
        assert alive(program) and not epipe.exists()

        assert d2.terminate() == 0  # stops the adopted program; the writer drains, exits, removes its socket
        assert not any(alive(p) for p in leftovers)
        assert not list((workdir / "run").glob("logwriter-*.sock"))
    assert not epipe.exists(), epipe.read_text()
    assert_no_gap(numbers_in_order(out, BACKUPS))


def test_a_writer_with_no_daemon_and_no_program_left_exits(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    out, epipe, env = setup(workdir, write_config)
    cfg = workdir / "taskmaster.yaml"
    d1, program, writer = start_counting(daemons, cfg, env)
    with killed_at_end(program, writer):
        grows(out)
        os.kill(d1.pid, signal.SIGKILL)
        d1.proc.wait(timeout=10)
        grows(out)
        os.kill(program, signal.SIGTERM)
        wait_until("the writer to drain and exit by itself", lambda: not alive(writer))
    assert not epipe.exists()
    assert_no_gap(numbers_in_order(out, BACKUPS))
    assert not list((workdir / "run").glob("logwriter-*.sock"))  # it removed its socket
    setup(workdir, write_config, autostart=True)  # the next daemon: nothing to re-attach, nothing said
    d2 = daemons(cfg, env=env)
    d2.wait_for(event("RUNNING", "count"))
    assert "log writer" not in d2.text()
    assert d2.terminate() == 0
    assert not list((workdir / "run").glob("logwriter-*.sock"))


def test_a_live_daemons_writer_is_not_taken(write_config: WriteConfig, daemons: Start, workdir: Path,
                                            bus_address: str) -> None:
    """A second daemon of the same instance (same statedir and config) while
    the first runs: told busy, it does not take the writer."""
    _out, _epipe, env = setup(workdir, write_config)
    cfg = workdir / "taskmaster.yaml"
    d1 = daemons(cfg, env=env)
    d1.wait_for(event("RUNNING", "count"))
    wait_until("a log writer", lambda: len(writers_of(d1.pid)) == 1)
    d2 = Daemon(cfg, "--address", bus_address, env=env)  # its bus name is taken: it will not start
    try:
        d2.wait_text(f"is attached to another taskmasterd (pid {d1.pid}): not taken")
        d2.proc.wait(timeout=30)
    finally:
        d2.close()
    assert len(writers_of(d1.pid)) == 1 and list((workdir / "run").glob("logwriter-*.sock"))
    assert d1.terminate() == 0


def test_a_process_renamed_by_a_reload_keeps_its_pipes_key(tmp_path: Path) -> None:
    """numprocs 1 -> 2 renames web to web:0 without restarting it: its pipes
    are found under the new name (what the next daemon looks up)."""
    async def main() -> None:
        bus = EventBus()
        web = replace(ProgramConfig(name="web", cmd="sleep 100000", argv=("sleep", "100000")), starttime=0)
        sup = Supervisor(Config(path="/x.yaml", programs=(web,)), bus, logdir=str(tmp_path))
        sup.launch_autostart()
        try:
            pipes = list(sup.slots["web"].pipes)
            assert len(pipes) == 2  # stdout and stderr: automatic files, bounded by default
            assert [sup.logpipes.adopt("web", s) for s in ("stdout", "stderr")] == pipes
            sup.reload(Config(path="/x.yaml", programs=(replace(web, numprocs=2),)))
            assert sup.slots["web:0"].pipes == pipes
            assert [sup.logpipes.adopt("web:0", s) for s in ("stdout", "stderr")] == pipes
            assert sup.logpipes.adopt("web", "stdout") is None
        finally:
            await sup.shutdown()  # no program nor writer left behind, even on a failure
    asyncio.run(main())


def test_an_adopted_program_keeps_its_rotated_output(
        write_config: WriteConfig, daemons: Start, workdir: Path, bus_address: str) -> None:
    """The whole path: daemon SIGKILLed, the next one re-adopts the program
    (same pid, ADOPTED) and re-attaches its pipe; `taskctl stop` then stops
    it and its last lines land: the counter has no gap, no EPIPE, ever."""
    from tests.integration.test_taskctl import taskctl

    out, epipe, env = setup(workdir, write_config)
    cfg = workdir / "taskmaster.yaml"
    d1, program, writer = start_counting(daemons, cfg, env)
    pipe = pipe_of(program, 1)
    with killed_at_end(program, writer):
        grows(out)
        os.kill(d1.pid, signal.SIGKILL)
        d1.proc.wait(timeout=10)
        grows(out)
        d2 = daemons(cfg, env=env)
        adopted = d2.wait_for(event("ADOPTED", "count"))
        assert adopted.pid == program
        d2.wait_text(f"re-attached the log writer (pid {writer}) and its 1 pipe(s)")
        assert holds(d2.pid, pipe)
        assert not [ln for ln in d2.lines if ln.kind == "STARTING"]  # no second copy
        grows(out)
        r = taskctl(bus_address, "stop", "count")
        assert r.returncode == 0, r.stderr
        assert not alive(program)
        assert d2.terminate() == 0
        assert not alive(writer)
    assert not epipe.exists(), epipe.read_text()
    assert_no_gap(numbers_in_order(out, BACKUPS))
