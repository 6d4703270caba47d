"""Bounded output with the real daemon (issue 11 §1): the bound under a
flood, no line lost when the daemon or the log writer is SIGKILLed,
`taskctl tail -f` across a rotation, and maxbytes 0 left as it was."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.harness import Daemon, alive, cpu_seconds, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_taskctl import Lines, interrupt, popen_taskctl

Start = Callable[..., Daemon]
MB = 1024 * 1024
PIPE = MB  # the log writer's pipes are grown to 1 MB
COUNTER = "sh -c 'i=0; while :; do i=$((i+1)); echo $i; done'"


def total(base: Path) -> int:
    size = 0
    for p in base.parent.glob(base.name + "*"):
        with contextlib.suppress(FileNotFoundError):
            size += p.stat().st_size
    return size


def writers_of(pid: int) -> list[int]:
    """The log-writer children of a daemon."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    with contextlib.suppress(FileNotFoundError), \
                            open(f"/proc/{child}/cmdline", "rb") as c:
                        if b"taskmasterd.logwriter" in c.read():
                            found.append(int(child))
    return found


def numbers_in_order(base: Path, backups: int) -> list[int]:
    """The number starting each line of FILE.N ... FILE.1, FILE (oldest
    first; a line may be cut in two by a rotation: joined again here)."""
    data = b""
    for i in range(backups, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            data += Path(f"{base}.{i}").read_bytes()
    data += base.read_bytes()
    return [int(line.split()[0]) for line in data.splitlines()]


def assert_no_gap(numbers: list[int]) -> None:
    assert numbers, "no output at all"
    assert numbers[0] == 1, f"the first line is {numbers[0]}: the oldest output was dropped"
    gaps = [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]
    assert not gaps, f"lines missing or out of order at {gaps[:5]} (of {len(numbers)} lines)"


def start_counting(daemons: Start, cfg: Path, env: dict[str, str] | None = None
                   ) -> tuple[Daemon, int, int]:
    """A daemon running the program `count` with a bounded output: the
    daemon, the program's pid, its log writer's pid."""
    d = daemons(cfg, env=env)
    d.wait_for(event("RUNNING", "count"))
    program = d.latest_pids()["count"]
    wait_until("a log writer", lambda: len(writers_of(d.pid)) == 1)
    [writer] = writers_of(d.pid)
    return d, program, writer


@contextlib.contextmanager
def killed_at_end(*pids: int) -> Iterator[list[int]]:
    """SIGKILL what is left of these (and those added to the list) at the end."""
    extra: list[int] = list(pids)
    try:
        yield extra
    finally:
        for pid in extra:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def test_a_flood_never_exceeds_the_bound(write_config: WriteConfig, daemons: Start,
                                         workdir: Path) -> None:
    out = workdir / "flood.out"
    cfg = write_config({"flood": {"cmd": "yes", "stdout": str(out), "stdout_maxbytes": "1MB",
                                  "stdout_backups": 3, "starttime": 0}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "flood"))
    cpu0 = cpu_seconds(d.pid)
    end = time.monotonic() + 30  # the 30 s
    biggest = 0
    while time.monotonic() < end:
        biggest = max(biggest, total(out))
        assert biggest <= 4 * MB + PIPE, f"{biggest} bytes on disk"
        time.sleep(0.1)  # sleep-ok: the sampling period, not a wait for an event
    spent = cpu_seconds(d.pid) - cpu0
    assert d.terminate() == 0  # the files are still while we look at them
    assert total(out) <= 4 * MB
    assert sorted(p.name for p in workdir.glob("flood.out*")) == \
        ["flood.out", "flood.out.1", "flood.out.2", "flood.out.3"]
    for i in (1, 2, 3):
        assert Path(f"{out}.{i}").stat().st_size == MB  # each rotated file exactly full
    assert biggest > 3 * MB  # it did fill them (the writer kept up)
    assert spent < 1.0, f"the daemon itself spent {spent:.2f} s of CPU: it is in the data path"


def test_unbounded_output_is_the_file_itself_and_bounded_a_pipe(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({
        "plain": {"cmd": "sleep 100000", "stdout": str(workdir / "plain.out"),
                  "stdout_maxbytes": 0, "stderr_maxbytes": 0, "starttime": 0},
        "bounded": {"cmd": "sleep 100000", "stdout": str(workdir / "bounded.out"), "starttime": 0},
        "discarded": {"cmd": "sleep 100000", "stdout": None, "stdout_maxbytes": "1KB",
                      "starttime": 0},
    })
    d = daemons(cfg)
    d.wait_count(event("RUNNING"), 3)
    pids = d.latest_pids()
    assert os.readlink(f"/proc/{pids['discarded']}/fd/1") == "/dev/null"  # null: untouched
    [writer] = writers_of(d.pid)
    for pid in (d.pid, writer):  # 1000 programs are 2000 pipes: soft limit = hard limit
        with open(f"/proc/{pid}/limits") as f:
            soft, hard = next(ln for ln in f if ln.startswith("Max open files")).split()[3:5]
        assert soft == hard
    assert os.readlink(f"/proc/{pids['plain']}/fd/1") == str(workdir / "plain.out")
    assert os.readlink(f"/proc/{pids['plain']}/fd/2") == str(workdir / "logs/plain.stderr.log")
    assert os.readlink(f"/proc/{pids['bounded']}/fd/1").startswith("pipe:")  # default 50MB
    with open(f"/proc/{pids['plain']}/fdinfo/1") as f:  # O_APPEND, as before
        flags = int(next(ln for ln in f if ln.startswith("flags:")).split()[1], 8)
    assert flags & os.O_APPEND
    assert d.terminate() == 0


def test_sigkill_of_the_daemon_loses_no_line_and_never_blocks_the_program(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    out = workdir / "count.out"
    cfg = write_config({"count": {"cmd": COUNTER, "stdout": str(out), "stdout_maxbytes": "1MB",
                                  "stdout_backups": 200, "starttime": 0}})
    d, program, writer = start_counting(daemons, cfg)
    with killed_at_end(program, writer):
        wait_until("some output", lambda: total(out) > 100_000)
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(timeout=10)
        # The program goes on, and so does its output (not blocked, no SIGPIPE).
        after = total(out)
        wait_until("output after the daemon's death", lambda: total(out) > after + 2 * PIPE,
                   timeout=30)
        assert alive(program) and alive(writer)
        os.kill(program, signal.SIGTERM)
        wait_until("the program's exit", lambda: not alive(program))
        wait_until("the log writer to drain and exit", lambda: not alive(writer))
        assert_no_gap(numbers_in_order(out, 200))


def test_a_killed_log_writer_is_replaced_and_no_line_is_lost(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    out = workdir / "count.out"
    cfg = write_config({"count": {"cmd": COUNTER, "stdout": str(out), "stdout_maxbytes": "1MB",
                                  "stdout_backups": 200, "starttime": 0}})
    d, _program, first = start_counting(daemons, cfg)
    with killed_at_end(first) as leftovers:
        wait_until("some output", lambda: total(out) > 100_000)
        os.kill(first, signal.SIGKILL)
        d.wait_text(f"log writer (pid {first}) died (killed by signal 9)")
        wait_until("a new log writer", lambda: [p for p in writers_of(d.pid) if p != first] != [])
        leftovers += writers_of(d.pid)
        after = total(out)
        wait_until("output through the new writer", lambda: total(out) > after + 2 * PIPE,
                   timeout=30)
        assert d.terminate() == 0  # stops the program, drains, waits for the writer
        assert not any(alive(p) for p in leftovers)
        assert_no_gap(numbers_in_order(out, 200))


def test_the_last_lines_are_in_the_file_when_the_exit_is_published(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({"talker": {
        "cmd": "sh -c 'seq 1 20000; echo last words >&2; exit 3'", "starttime": 0,
        "autorestart": "never", "stdout_maxbytes": "10KB", "stdout_backups": 100}})
    d = daemons(cfg)
    d.wait_for(event("EXITED", "talker"))
    logs = workdir / "logs"
    assert (logs / "talker.stderr.log").read_text() == "last words\n"
    assert_no_gap(numbers_in_order(logs / "talker.stdout.log", 100))
    assert d.terminate() == 0


def test_a_full_disk_is_logged_once_and_the_program_goes_on(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({"full": {"cmd": "yes", "stdout": "/dev/full", "stdout_maxbytes": "1MB",
                                 "starttime": 0}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "full"))
    d.wait_text("log writer: cannot write /dev/full: No space left on device")
    program = d.latest_pids()["full"]
    cpu = cpu_seconds(program)
    wait_until("the program to keep running", lambda: cpu_seconds(program) > cpu + 0.5, timeout=30)
    assert d.text().count("/dev/full") == 1  # once per condition, not per write
    assert d.terminate() == 0


def test_tail_follows_across_rotations(write_config: WriteConfig, daemons: Start,
                                       bus_address: str, workdir: Path) -> None:
    # ~10 KB/s into 20 KB files: a rotation every ~2 s, longer than the 1 s
    # of quiet after which `tail -f` checks for one.
    line = "x" * 90
    cfg = write_config({"ticker": {
        "cmd": f"sh -c 'i=0; while :; do i=$((i+1)); echo $i {line}; sleep 0.01; done'",
        "starttime": 0, "stdout_maxbytes": "20KB", "stdout_backups": 5}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "ticker"))
    base = workdir / "logs/ticker.stdout.log"
    follower = popen_taskctl(bus_address, "tail", "-f", "-c", "100", "ticker")
    try:
        out = Lines(follower.stdout)
        out.next()  # the end of a line, most likely
        first = int(out.next().split()[0])
        wait_until("two rotations", lambda: Path(f"{base}.2").exists(), timeout=30)
        wait_until("a third file", lambda: Path(f"{base}.3").exists(), timeout=30)
        # Every line the program wrote since, in order, through 2+ rotations:
        seen = [first]
        last_on_disk = numbers_in_order(base, 5)[-1]
        while seen[-1] < last_on_disk:
            seen.append(int(out.next(timeout=10).split()[0]))
        assert seen == list(range(first, seen[-1] + 1))
    finally:
        code, err = interrupt(follower)
    assert code in (0, 130) and "Traceback" not in err
    assert d.terminate() == 0
