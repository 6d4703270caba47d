"""The `console` measure: a program on a console (`console: true`) writing a
steady 1 MB/s of 1 KB lines that nobody watches. What draining it costs the
supervisor, and whether the program is ever held up.

The program (FLOOD) waits for a go file, then writes one 1 KB line every
1/1024 s against an absolute schedule (so 1 MiB/s, one write and one wake-up
of the reader per line: a steady logger, harsher than bursts), times each
write, and at the end reports its slowest write, its time from the first
write to the end of the last, and the bytes written; then it sleeps, so its
terminal stays open while the bench reads the CPU counters.

- taskmasterd: the program with `console: true`, stdout to a file rotated at
  1 MB with 3 backups; CPU = utime+stime (/proc/PID/stat) of the daemon plus
  its log writer (the terminal's one reader: file, rotation, scrollback ring),
  from the go file to the report. The writer is found once the process is
  RUNNING, before the clock starts: its own start is not part of the flow.
- supervisord: the same program and file, through a pipe it reads (it has
  no pseudo-terminal): its answer to "drain output nobody watches".
- tmux (in the taskmasterd pass, pair by pair with it): the same program in
  a detached session (`tmux -S SOCK -f /dev/null new-session -d`), CPU of the
  tmux server, which parses the output into the pane's grid and history (no
  file): what users compare attach/detach with.

Bytes moved are the program's (the terminal adds a CR per line: 1025 bytes
leave the master for each 1024 written). Targets (issue): the daemon and its
writer under 10 % of a core at 1 MB/s; the program never held up (slowest
write < 0.5 s; at the end, < 0.5 s behind its schedule).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers import Program, alive, cpu_seconds, log_writers_of
from taskbench import paired_ratios

RATE = 1024  # lines per second: 1 MiB/s
HELD_UP = 0.5  # seconds: a write waiting longer, or the end later than that, is a fail
CPU_TARGET = 10.0  # % of a core for the daemon and its writer

# The rows' names (run.TARGETS judges the first three by prefix).
CPU_ROW = "console: CPU at 1 MB/s, nobody attached"
SLOW_ROW = "console: the program's slowest write (of the run)"
LAG_ROW = "console: the program behind its 1 MB/s schedule at the end (most of the run)"
TMUX_ROW = "console reference: tmux server CPU per GB (detached session, the same program)"
RATIO_ROW = "console: CPU per GB, tmux / taskmasterd (pair by pair)"

FLOOD = r"""
import os, sys, time
n, rate, go, report = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
line = b"x" * 1023 + b"\n"
while not os.path.exists(go):  # the bench starts the clock
    time.sleep(0.005)
start = time.monotonic()
slowest = 0.0
for i in range(n):
    t = time.monotonic()
    view = memoryview(line)
    while view:
        view = view[os.write(1, view):]
    now = time.monotonic()
    slowest = max(slowest, now - t)
    ahead = start + (i + 1) / rate - now
    if ahead > 0:
        time.sleep(ahead)
took = now - start
with open(report + ".tmp", "w") as f:
    f.write(f"{slowest:.6f} {took:.6f} {n * len(line)}\n")
os.rename(report + ".tmp", report)  # whole or absent for the bench
time.sleep(3600)  # stays: its terminal stays open until the bench stops it
"""


@dataclass(frozen=True)
class Report:
    slowest: float  # s: the longest single write
    took: float  # s: first write -> end of the last
    moved: int  # bytes written

    def lag(self, lines: int, rate: float = RATE) -> float:
        """How far behind its schedule the program ended: the last line is
        due (lines - 1) / rate after the first."""
        return self.took - (lines - 1) / rate

    def held_up(self, lines: int, rate: float = RATE) -> bool:
        return self.slowest > HELD_UP or self.lag(lines, rate) > HELD_UP


def parse_report(text: str) -> Report:
    slowest, took, moved = text.split()
    return Report(float(slowest), float(took), int(moved))


def per_gb(cpu: float, moved: int) -> float:
    return cpu / (moved / 1e9)


def pct_core(cpu: float, wall: float) -> float:
    return 100 * cpu / wall


def flood_cmd(tmpdir: Path, lines: int, rate: float = RATE) -> str:
    """The program's command line (FLOOD written to a file in `tmpdir`; go
    file and report beside it), one string for taskmasterd, supervisord and
    tmux alike."""
    script = tmpdir / "flood.py"
    script.write_text(FLOOD)
    return shlex.join([sys.executable, str(script), str(lines), str(rate),
                       str(tmpdir / "go"), str(tmpdir / "report")])


def _wait_report(path: Path, deadline: float, alive_check: Callable[[], bool]) -> Report | None:
    while time.perf_counter() < deadline:
        if path.exists():
            return parse_report(path.read_text())
        if not alive_check():
            return None
        time.sleep(0.05)
    return None


@dataclass
class Sample:
    cpu: float  # CPU-s of the supervisor's processes over the window
    daemon: float  # of which the daemon's own (taskmasterd: the rest is its log writer's)
    wall: float  # s: go -> report seen
    report: Report


def _run_daemon(drv_cls: Any, tm: bool, lines: int, tmpdir: Path) -> Sample | str:
    go, report = tmpdir / "go", tmpdir / "report"
    for p in (go, report):
        p.unlink(missing_ok=True)
    cmd = flood_cmd(tmpdir, lines)
    d = drv_cls()
    try:
        d.start({"console": Program(cmd, autostart=False, autorestart="never",
                                    stdout=str(tmpdir / f"console-{d.name}.out"),
                                    maxbytes=1024 * 1024, backups=3, console=tm)})
        d.wait_ready()
        d.start_process("console")
        d.wait_state("console", "RUNNING")
        writers: set[int] = set()
        deadline = time.monotonic() + 10
        while tm and not writers:  # the terminal's reader, before the clock starts
            writers.update(log_writers_of(d.pid))
            if time.monotonic() > deadline:
                return "no log writer for the console"
            time.sleep(0.02)
        time.sleep(0.3)  # the start's own work (signals, log lines) done
        cpu0 = {p: cpu_seconds(p) for p in (d.pid, *writers)}
        t0 = time.perf_counter()
        go.touch()
        got = _wait_report(report, t0 + 3 * lines / RATE + 10, lambda: d.proc.poll() is None)
        wall = time.perf_counter() - t0
        if tm:
            writers.update(log_writers_of(d.pid))  # a writer new mid-run counts from 0
        spent = {p: cpu_seconds(p) - cpu0.get(p, 0.0) for p in (d.pid, *writers) if alive(p)}
        if got is None:
            return f"no report from the program after {wall:.0f} s"
        return Sample(sum(spent.values()), spent.get(d.pid, 0.0), wall, got)
    finally:
        d.stop()


def _run_tmux(lines: int, tmpdir: Path) -> Sample | str:
    go, report, sock = tmpdir / "go", tmpdir / "report", str(tmpdir / "tmux.sock")
    for p in (go, report):
        p.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    tmux = ["tmux", "-S", sock, "-f", "/dev/null"]
    try:
        subprocess.run([*tmux, "new-session", "-d", "-x", "80", "-y", "24",
                        flood_cmd(tmpdir, lines)], env=env, check=True, timeout=10)
        server = int(subprocess.run([*tmux, "display-message", "-p", "#{pid}"], env=env,
                                    check=True, capture_output=True, text=True,
                                    timeout=10).stdout)
        time.sleep(0.3)
        cpu0 = cpu_seconds(server)
        t0 = time.perf_counter()
        go.touch()
        got = _wait_report(report, t0 + 3 * lines / RATE + 10, lambda: alive(server))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(server) - cpu0
        if got is None:
            return f"no report from the program after {wall:.0f} s"
        return Sample(cpu, cpu, wall, got)
    finally:
        with contextlib.suppress(Exception):
            subprocess.run([*tmux, "kill-server"], env=env, timeout=10,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tmux_version() -> str:
    try:
        return subprocess.run(["tmux", "-V"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def console(drv_cls: Any, opts: argparse.Namespace) -> list[dict[str, Any]]:
    from measures import row

    secs = opts.console_secs
    lines = int(secs * RATE)
    tm = drv_cls.name == "taskmasterd"
    what = "daemon, reading a pipe: no pty"
    name = f"console: CPU per GB, nobody attached ({secs:g} s of 1 MB/s in 1 KB lines, 1MB x 4 files)"
    has_tmux = tm and shutil.which("tmux") is not None
    tmpdir = Path(tempfile.mkdtemp(prefix="bench-console-"))
    ours: list[Sample] = []
    refs: list[Sample] = []
    problem = ""
    try:
        for _ in range(opts.reps_console):
            ref = _run_tmux(lines, tmpdir) if has_tmux else None
            got = _run_daemon(drv_cls, tm, lines, tmpdir)
            if isinstance(ref, str) or isinstance(got, str):
                problem = ref if isinstance(ref, str) else str(got)
                break
            ours.append(got)
            if ref is not None:
                refs.append(ref)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    held = sum(1 for s in ours if s.report.held_up(lines))
    if tm and ours:
        what = writer_note(ours)
    rows = [
        row(name, "CPU-s/GB", [per_gb(s.cpu, s.report.moved) for s in ours], problem or what),
        row(CPU_ROW, "% core", [pct_core(s.cpu, s.wall) for s in ours]),
        row(SLOW_ROW, "ms", [1000 * max(s.report.slowest for s in ours)] if ours else [],
            f"held up in {held} of {len(ours)} runs" if ours else ""),
        row(LAG_ROW, "ms", [1000 * max(s.report.lag(lines) for s in ours)] if ours else []),
    ]
    if not tm:
        return rows
    if not has_tmux:
        rows.append(row(TMUX_ROW, "CPU-s/GB", [], "skipped: no tmux on this machine"))
        return rows
    theirs = [per_gb(s.cpu, s.report.moved) for s in refs]
    mine = [per_gb(s.cpu, s.report.moved) for s in ours]
    rows.append(row(TMUX_ROW, "CPU-s/GB", theirs, tmux_note(tmux_version(), refs) if refs else ""))
    if 0 in mine:  # under one 10 ms tick of CPU: no ratio to make
        rows.append(row(RATIO_ROW, "x", [], "taskmasterd's CPU under the counters' 10 ms"))
    else:
        rows.append(row(RATIO_ROW, "x", paired_ratios(theirs, mine), better="higher"))
    return rows


def writer_note(ours: list[Sample]) -> str:
    """taskmasterd's split: how much of the CPU was the daemon's own (the
    rest is the log writer's), summed over the repetitions."""
    total = sum(s.cpu for s in ours)
    daemon = sum(s.daemon for s in ours)
    share = f"{100 * daemon / total:.0f} %" if total else "-"
    return f"daemon + log writer; the daemon's share {share}"


def tmux_note(version: str, refs: list[Sample]) -> str:
    """The tmux row's note: its CPU as % of a core and its program's slowest
    write (medians over the repetitions)."""
    cpu = statistics.median(pct_core(s.cpu, s.wall) for s in refs)
    slow = statistics.median(1000 * s.report.slowest for s in refs)
    return f"{version}, the reference: {cpu:.1f} % core, its program's slowest write {slow:.1f} ms"
