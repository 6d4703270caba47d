"""The measures. Each takes a driver class and options, returns a list of
result rows: {"measure", "unit", "samples", "note"} (samples may be empty
with a note such as "> 30 s" or "n/a"). Every loop is bounded in count and
time; every daemon started is stopped in a finally."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import ClassVar

from consolebench import console
from drivers import (
    MARKER_KEY,
    ExecWatcher,
    Program,
    alive,
    comm,
    cpu_seconds,
    ctx_switches,
    kill_marked,
    log_writers_of,
    marked,
    project_python,
    rss_kib,
)
from remotebench import remote
from taskbench import tasks
from webbench import web

SLEEP = "sleep 100000"


def row(measure: str, unit: str, samples: list[float], note: str = "",
        better: str = "lower") -> dict:
    return {"measure": measure, "unit": unit, "samples": samples, "note": note, "better": better}


def _new_marked(marker: str, known: set[int]) -> int | None:
    """A pid not in `known`, exec'd as `sleep`, whose environment holds the
    marker (new pids only: cheap)."""
    needle = f"{MARKER_KEY}={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in known:
            continue
        if comm(pid) != "sleep":  # not exec'd yet: environ is still the parent's, look again
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if not env:  # mid-exec: comm is set before the new stack (environ) is
            continue
        known.add(pid)
        if needle in env:
            return pid
    return None


def restart_latency(drv_cls, opts) -> list[dict]:
    """kill -9 of a RUNNING process -> new pid (seen by scanning new /proc entries for the marker)."""
    reps = opts.reps_restart
    marker = uuid.uuid4().hex
    d = drv_cls()
    samples: list[float] = []
    try:
        d.start({"r": Program(SLEEP, autorestart="always", env={MARKER_KEY: marker})})
        d.wait_ready()
        pid = d.wait_state("r", "RUNNING")
        for _ in range(reps):
            known = {int(e) for e in os.listdir("/proc") if e.isdigit()}
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            deadline = t0 + 5.0
            new = None
            while new is None and time.perf_counter() < deadline:
                new = _new_marked(marker, known)
                if new is None:
                    time.sleep(0.0002)  # leave the CPU to the daemon (2-CPU machines)
            if new is None:
                return [row("restart latency (kill -9 -> new pid)", "ms", samples, "> 5 s")]
            samples.append((time.perf_counter() - t0) * 1000)
            pid = d.wait_state("r", "RUNNING")
            while pid != new:  # the API caught up with the new pid
                pid = d.wait_state("r", "RUNNING")
    finally:
        d.stop()
    return [row("restart latency (kill -9 -> new pid)", "ms", samples)]


def mass_start_and_status(drv_cls, opts) -> list[dict]:
    """For each N: daemon launch -> all N RUNNING (one sample: a daemon start
    is expensive), then ListProcesses/getAllProcessInfo and CLI status wall
    time (several samples), and for the smallest N the idle cost."""
    rows = []
    for n in opts.sizes:
        d = drv_cls()
        try:
            t0 = d.start({f"p{i}": Program(SLEEP) for i in range(n)})
            deadline = t0 + opts.mass_timeout
            running = -1
            # phase 1: count the daemon's children exec'd as `sleep` from
            # /proc every 20 ms (costs the daemon next to nothing, see
            # ExecWatcher; an API poll at N=1000 would steal its CPU, ~0.8 s
            # a call for supervisord);
            # phase 2: poll the API until every process is RUNNING (or the cap)
            watcher = ExecWatcher(d.pid, "sleep")
            while time.perf_counter() < deadline and watcher.count() < n:
                if d.proc.poll() is not None:
                    raise RuntimeError(f"{d.name} exited ({d.proc.returncode})")
                time.sleep(0.02)
            while time.perf_counter() < deadline:
                try:
                    procs = d.list_processes()
                except Exception:
                    if d.proc.poll() is not None:
                        raise
                    time.sleep(0.005)
                    continue
                running = sum(1 for _, s, _ in procs if s == "RUNNING")
                if running == n:
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
            if running == n:
                rows.append(row(f"mass start N={n} (launch -> all RUNNING)", "s", [elapsed]))
            else:
                rows.append(row(f"mass start N={n} (launch -> all RUNNING)", "s", [],
                                f"> {opts.mass_timeout:g} s ({running} running)"))
                continue
            api = []
            for _ in range(opts.reps_cheap):
                t = time.perf_counter()
                got = d.list_processes()
                api.append((time.perf_counter() - t) * 1000)
                assert len(got) == n
            rows.append(row(f"status API N={n} (ListProcesses / getAllProcessInfo)", "ms", api))
            cli = []
            for _ in range(opts.reps_cli):
                cli.append(_timed_run(d.cli_status()) * 1000)
            rows.append(row(f"status CLI N={n} (taskctl / supervisorctl status)", "ms", cli))
            if n == min(opts.sizes):
                rows += _idle(d, n, opts)
            if n == opts.fanout_n and d.name == "taskmasterd":
                rows += _fanout(d, n, opts)
            if n == max(opts.sizes):
                rows.append(row(f"daemon RSS N={n}", "MiB", [rss_kib(d.pid) / 1024]))
        finally:
            d.stop()
    if drv_cls.name != "taskmasterd":
        rows.append(row("event fan-out (1000 state changes -> subscriber)", "ms", [],
                        "n/a (no push API; only eventlistener subprocesses)"))
    return rows


def _timed_run(argv: list[str], cap: float = 60.0) -> float:
    """Wall time of a command. Not subprocess.run(timeout=...): Python 3.11's
    wait with a timeout polls with sleeps of up to 50 ms, which quantised the
    result; a plain wait() plus a kill timer is exact and still bounded."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    timer = threading.Timer(cap, proc.kill)
    timer.start()
    try:
        proc.wait()
    finally:
        timer.cancel()
    return time.perf_counter() - t


def _idle(d, n: int, opts) -> list[dict]:
    time.sleep(1.0)  # let the start-up settle
    pid = d.pid
    windows = []
    for _ in range(opts.idle_reps):
        c0 = ctx_switches(pid)
        time.sleep(opts.idle_window)
        windows.append((ctx_switches(pid) - c0) / opts.idle_window)
    return [row(f"idle wakeups/s N={n} ({opts.idle_window:g} s window)", "/s", windows),
            row(f"daemon RSS N={n}", "MiB", [rss_kib(pid) / 1024])]


def _fanout(d, n: int, opts) -> list[dict]:
    expect = 2 * n  # RUNNING -> STOPPING -> STOPPED for each
    secs, count = d.fanout("all", expect, timeout=30)
    note = f"{n} x Stop: {expect} ProcessStateChanged" if count == expect else \
        f"{count}/{expect} signals received"
    return [row("event fan-out (1000 state changes -> subscriber)", "ms",
                [secs * 1000] if count >= expect else [], note)]


def output_flood(drv_cls, opts) -> list[dict]:
    """A program writing as fast as it can for `flood_secs` into its stdout
    file; bytes/s landed and daemon CPU% meanwhile. One sample per rep."""
    rates, cpus = [], []
    secs = opts.flood_secs
    cap = 4 * 1024 ** 3  # never more than 4 GiB on disk per run
    tmpdir = tempfile.mkdtemp(prefix="bench-flood-")
    for _ in range(opts.reps_flood):
        d = drv_cls()
        out = ""
        try:
            out = os.path.join(tmpdir, f"flood-{d.name}.out")
            d.start({"flood": Program(
                f"sh -c 'timeout {secs} yes 0123456789abcdef0123456789abcdef | head -c {cap}'",
                autostart=False, autorestart="never", stdout=out)})
            d.wait_ready()
            time.sleep(0.5)
            cpu0 = cpu_seconds(d.pid)
            t0 = time.perf_counter()
            d.start_process("flood")
            pid = d.wait_state("flood", "RUNNING")
            while alive(pid) and time.perf_counter() < t0 + secs + 5:
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(d.pid) - cpu0
            size = os.path.getsize(out) if os.path.exists(out) else 0
            rates.append(size / elapsed / 1e6)
            cpus.append(100 * cpu / elapsed)
            Path(out).unlink(missing_ok=True)
        finally:
            d.stop()
            if out:
                Path(out).unlink(missing_ok=True)
    os.rmdir(tmpdir)
    return [row(f"output flood: bytes landed in log ({secs:g} s of `yes`)", "MB/s", rates,
                better="higher"),
            row("output flood: daemon CPU", "% core", cpus)]


def rotated_flood(drv_cls, opts) -> list[dict]:
    """`yes` for `flood_secs` into a stdout rotated at 1 MB with 3 backups
    (issue 11): the CPU the supervisor's own processes spend per GB moved
    (taskmasterd: the daemon + its log writer; supervisord: the daemon, which
    reads the pipe and writes the file), and the throughput. Bytes moved are
    counted by `dd` between `yes` and the program's stdout (its stderr, the
    "N bytes copied" line, goes to a file)."""
    per_gb, rates = [], []
    secs = opts.flood_secs
    tmpdir = tempfile.mkdtemp(prefix="bench-rotate-")
    for _ in range(opts.reps_flood):
        d = drv_cls()
        out = os.path.join(tmpdir, f"rotate-{d.name}.out")
        stats = os.path.join(tmpdir, f"rotate-{d.name}.dd")
        try:
            d.start({"rotate": Program(
                f"sh -c 'timeout {secs} yes 0123456789abcdef0123456789abcdef | dd bs=64k 2>{stats}'",
                autostart=False, autorestart="never", stdout=out, maxbytes=1024 * 1024, backups=3)})
            d.wait_ready()
            time.sleep(0.5)
            cpu0 = cpu_seconds(d.pid)
            t0 = time.perf_counter()
            d.start_process("rotate")
            pid = d.wait_state("rotate", "RUNNING")
            writers: set[int] = set()
            while alive(pid) and time.perf_counter() < t0 + secs + 5:
                writers.update(log_writers_of(d.pid))
                time.sleep(0.05)
            elapsed = time.perf_counter() - t0
            writers.update(log_writers_of(d.pid))
            cpu = cpu_seconds(d.pid) - cpu0 + sum(cpu_seconds(w) for w in writers if alive(w))
            with open(stats) as f:
                moved = int(f.read().strip().splitlines()[-1].split()[0])
            per_gb.append(cpu / (moved / 1e9))
            rates.append(moved / elapsed / 1e6)
        finally:
            d.stop()
            for p in Path(tmpdir).iterdir():
                p.unlink()
    os.rmdir(tmpdir)
    return [row(f"rotated flood: CPU per GB moved ({secs:g} s of `yes`, 1MB x 4 files)",
                "CPU-s/GB", per_gb),
            row("rotated flood: bytes moved", "MB/s", rates, better="higher")]


def stop_precision(drv_cls, opts) -> list[dict]:
    """TERM-ignoring program, stoptime 1: stop request -> death."""
    d = drv_cls()
    samples = []
    try:
        d.start({"t": Program("sh -c 'trap \"\" TERM; exec sleep 100000'", autostart=False,
                              autorestart="never", stoptime=1)})
        d.wait_ready()
        for _ in range(opts.reps_cheap):
            d.start_process("t")
            pid = d.wait_state("t", "RUNNING")
            deadline = time.monotonic() + 5
            while comm(pid) != "sleep" and time.monotonic() < deadline:  # trap set, exec done
                time.sleep(0.001)
            t0 = time.perf_counter()
            d.stop_process("t")
            while alive(pid) and time.perf_counter() < t0 + 5:
                time.sleep(0.0002)
            samples.append((time.perf_counter() - t0) * 1000)
            d.wait_state("t", "STOPPED")
    finally:
        d.stop()
    return [row("stop precision (stoptime 1, TERM ignored -> death)", "ms", samples)]


_SPAWN_FLOOR = """
import os, signal, subprocess, sys, time
n = int(sys.argv[1])
null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
t = time.perf_counter()
procs = [subprocess.Popen(["sleep", "100000"], stdin=subprocess.DEVNULL, stdout=null, stderr=null,
                          start_new_session=True) for _ in range(n)]
print(time.perf_counter() - t)
for p in procs:
    p.kill()
    p.wait()
"""


def floors(drv_cls, opts) -> list[dict]:
    """What no Python supervisor can go below on this machine, measured in
    the same run: N fork+execs of `sleep` in a loop (Popen, as taskmasterd
    spawns; nothing else), and the start of an interpreter that does nothing
    (what any Python command line, taskctl and supervisorctl included, pays)."""
    if drv_cls.name != "taskmasterd":
        return []
    python = project_python()
    n = max(opts.sizes)
    spawn = []
    for _ in range(opts.reps_cli):
        out = subprocess.run([python, "-c", _SPAWN_FLOOR, str(n)], check=True,
                             capture_output=True, text=True, timeout=120)
        spawn.append(float(out.stdout))
    start = [_timed_run([python, "-c", "pass"]) * 1000
             for _ in range(opts.reps_cli)]
    return [row(f"floor: {n} x Popen(sleep) in a loop, no daemon", "s", spawn,
                "the machine, not a supervisor"),
            row("floor: python3 -c pass (interpreter start-up)", "ms", start,
                "the machine, not a supervisor")]


def _survival_workload(n: int, marker: str, outdir: str) -> dict[str, Program]:
    """The scale measure's N `sleep`s, outputs a third each: discarded,
    a file the child writes itself (unbounded), a file rotated at 1 MB
    (taskmasterd: through its log writer's pipes; supervisord pipes all)."""
    progs = {}
    for i in range(n):
        out, maxbytes = [(None, 0), (f"{outdir}/p{i}.out", 0),
                         (f"{outdir}/p{i}.log", 1024 * 1024)][i % 3]
        progs[f"p{i}"] = Program(SLEEP, stdout=out, maxbytes=maxbytes, backups=1 if maxbytes else 0,
                                 env={MARKER_KEY: marker})
    return progs


def _running(d) -> dict[str, int]:
    return {name: pid for name, state, pid in d.list_processes() if state == "RUNNING"}


class _Last:
    """What _until_running saw last: a failed call's error, or the RUNNING
    processes (a failure's note says which were not back)."""
    error: ClassVar[str] = ""
    running: ClassVar[dict[str, int]] = {}


def _until_running(d, n: int, deadline: float, same: dict[str, int] | None = None,
                   poll: float = 0.02) -> float | None:
    """perf_counter() when the API shows all `n` RUNNING (with the pids in
    `same` when given); None at the deadline. Calls failing while the daemon
    is not on the bus yet are retried."""
    _Last.error, _Last.running = "", {}
    while time.perf_counter() < deadline:
        if d.proc.poll() is not None:
            raise RuntimeError(f"{d.name} exited ({d.proc.returncode}){_stderr_tail(d)}")
        try:
            now = _running(d)
        except Exception as exc:
            _Last.error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.005)
            continue
        _Last.error, _Last.running = "", now
        t = time.perf_counter()
        if len(now) == n and (same is None or now == same):
            return t
        time.sleep(poll)
    return None


def _stderr_tail(d, lines: int = 3) -> str:
    """The daemon's last stderr lines, for a failure's note."""
    try:
        text = (d.dir / "stderr.txt").read_text(errors="replace")
    except OSError:
        return ""
    tail = " | ".join(ln for ln in text.splitlines()[-lines:] if ln.strip())
    return f"; stderr: {tail}" if tail else ""


def _not_back(d, before: dict[str, int], ready: float | None, timeout: float) -> str:
    """Why a re-adoption was not seen complete: no READY=1, the daemon gone,
    the API failing, or the processes not back with their pids."""
    if d.proc.poll() is not None:
        return f"exited ({d.proc.returncode}){_stderr_tail(d)}"
    if ready is None:
        return f"no READY=1 within {timeout:g} s{_stderr_tail(d)}"
    if _Last.error:
        return f"API failing: {_Last.error}"
    now = _Last.running
    wrong = [f"{name} {pid}->{now.get(name, 'not RUNNING')}" for name, pid in sorted(before.items())
             if now.get(name) != pid]
    return f"{len(wrong)} not back: {', '.join(wrong[:5])}"


def reexec(drv_cls, opts) -> list[dict]:
    """With N programs running: Manager.Reexecute (what `taskctl
    daemon-reexec` calls) -> READY=1 from the new image on the NOTIFY_SOCKET
    the bench listens on; then every process must be RUNNING with the pid it
    had, and the log must hold no STARTING line since the call."""
    n = max(opts.sizes)
    t_name = f"daemon-reexec time N={n} (Reexecute -> READY=1)"
    r_name = f"daemon-reexec restarts N={n} (pid changed or spawned)"
    if drv_cls.name != "taskmasterd":
        why = "n/a (no re-exec keeping its children: `reload` restarts every program)"
        return [row(t_name, "s", [], why), row(r_name, "programs", [], "n/a")]
    marker = uuid.uuid4().hex
    outdir = tempfile.mkdtemp(prefix="bench-reexec-")
    d = drv_cls()
    times: list[float] = []
    restarts: list[float] = []
    note = ""
    try:
        d.start(_survival_workload(n, marker, outdir), notify=True)
        if d.wait_notify("READY", opts.mass_timeout) is None or \
                _until_running(d, n, time.perf_counter() + opts.mass_timeout) is None:
            raise RuntimeError(f"not all {n} RUNNING after {opts.mass_timeout:g} s")
        spawned_total = 0
        for _ in range(opts.reps_reexec):
            before = _running(d)
            _, offset = d.log_kinds()
            d.drain_notify()
            t0 = time.perf_counter()
            d.reexecute()
            t = d.wait_notify("READY", 30)
            if t is None:
                note = "> 30 s"
                break
            times.append(t - t0)
            after = _running(d)
            assert d.proc.poll() is None, "the daemon exited instead of re-executing"
            kinds, _ = d.log_kinds(offset)
            spawned = kinds.count("STARTING")
            spawned_total += spawned
            changed = sum(1 for name, pid in before.items() if after.get(name) != pid)
            restarts.append(float(max(changed, spawned)))
        if len(marked(marker)) != n:
            note = f"{len(marked(marker))} copies alive for {n} programs"
    finally:
        d.stop()
        kill_marked(marker)
        shutil.rmtree(outdir, ignore_errors=True)
    return [row(t_name, "s", times, note),
            row(r_name, "programs", restarts,
                f"{spawned_total} STARTING in the log over {len(restarts)} re-execs")]


def readopt(drv_cls, opts) -> list[dict]:
    """With N programs running: SIGKILL the daemon alone, start a new one on
    the same config (and statedir): its exec -> all N RUNNING again, and how
    many second copies of a program are alive then. taskmasterd: READY=1,
    then ListProcesses must show every process RUNNING with its old pid.
    supervisord cannot take its orphans back; what a user sees from it is
    the same restart: launch -> all N RUNNING (new pids), the orphans still
    running beside them."""
    n = max(opts.sizes)
    t_name = f"re-adopt time N={n} (kill -9, new daemon exec -> all RUNNING)"
    c_name = f"re-adopt second copies N={n} (programs running twice)"
    tm = drv_cls.name == "taskmasterd"
    reps = opts.reps_readopt if tm else 1  # supervisord: each restart doubles the processes
    marker = uuid.uuid4().hex
    outdir = tempfile.mkdtemp(prefix="bench-readopt-")
    d = drv_cls()
    times: list[float] = []
    copies: list[float] = []
    kept = 0
    note = ""
    try:
        if tm:
            d.start(_survival_workload(n, marker, outdir), notify=True)
        else:
            d.start(_survival_workload(n, marker, outdir))
        if _until_running(d, n, time.perf_counter() + opts.mass_timeout, poll=0.5) is None:
            raise RuntimeError(f"not all {n} RUNNING after {opts.mass_timeout:g} s")
        for _ in range(reps):
            before = _running(d)
            d.kill9()
            if tm:
                d.drain_notify()  # the killed daemon's READY/STATUS lines still queued
            t0 = d.launch()
            deadline = t0 + opts.mass_timeout
            if tm:
                ready = d.wait_notify("READY", opts.mass_timeout)
                t = _until_running(d, n, deadline, same=before) if ready is not None else None
                if t is not None and t - ready < 0.2:
                    t = ready  # all were back when it said READY (the first check proved it)
            else:
                watcher = ExecWatcher(d.pid, "sleep")  # cheap: no API poll during the start
                while time.perf_counter() < deadline and watcher.count() < n:
                    time.sleep(0.02)
                t = _until_running(d, n, deadline)
            if t is None:
                note = f"> {opts.mass_timeout:g} s"
                if tm:
                    note += f" ({_not_back(d, before, ready, opts.mass_timeout)})"
                break
            times.append(t - t0)
            copies.append(float(len(marked(marker)) - n))
            kept = sum(1 for name, pid in _running(d).items() if before.get(name) == pid)
    finally:
        d.stop()
        kill_marked(marker)
        shutil.rmtree(outdir, ignore_errors=True)
    return [row(t_name, "s", times, note or ("" if tm else "restarted, not re-adopted")),
            row(c_name, "programs", copies, f"{kept}/{n} kept their pid")]


MEASURES = {
    "floor": floors,
    "restart": restart_latency,
    "stop": stop_precision,
    "flood": output_flood,
    "rotate": rotated_flood,
    "console": console,
    "scale": mass_start_and_status,
    "reexec": reexec,
    "readopt": readopt,
    "tasks": tasks,
    "web": web,
    "remote": remote,
}


def summary(samples: list[float]) -> dict:
    if not samples:
        return {}
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}
