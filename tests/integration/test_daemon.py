"""The real daemon, real processes: life cycle, spawn, stop, reload, shutdown.

Every wait is on a lifecycle log line with a timeout (tests/harness.py).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import Daemon, alive, cpu_seconds, event, parse_log, processes_with_env, read_fifo
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
SLEEPER = "sleep 100000"


def test_kill9_of_running_program_restarts_it_with_a_new_pid(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({"worker": {"cmd": SLEEPER, "starttime": 0.2}})
    d = daemons(cfg)
    first = d.wait_for(event("STARTING", "worker"))
    d.wait_for(event("RUNNING", "worker"))
    os.kill(first.pid, signal.SIGKILL)
    exited = d.wait_for(event("EXITED", "worker"))
    assert exited.fields == {"pid": str(first.pid), "status": "-9", "expected": "no"}
    assert "killed by SIGKILL; not expected" in exited.message
    second = d.wait_for(event("STARTING", "worker"))
    assert second.pid != first.pid and alive(second.pid)
    d.wait_for(event("RUNNING", "worker"))
    assert d.terminate() == 0
    # The log file holds the same lines as stderr.
    logged = parse_log((workdir / "taskmasterd.log").read_text())
    assert [(ln.kind, ln.pid) for ln in logged if ln.process == "worker"][:5] == [
        ("STARTING", first.pid), ("RUNNING", first.pid), ("EXITED", first.pid),
        ("STARTING", second.pid), ("RUNNING", second.pid)]


def test_expected_exit_code_is_not_restarted(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    fifo = workdir / "go"
    os.mkfifo(fifo)
    cfg = write_config({"job": {"cmd": f"sh -c 'read x < {fifo}; exit 2'", "starttime": 0,
                                "exitcodes": [0, 2], "autorestart": "unexpected"}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "job"))
    with open(fifo, "w") as f:
        f.write("go\n")
    exited = d.wait_for(event("EXITED", "job"))
    assert exited.fields["status"] == "2" and exited.fields["expected"] == "yes"
    mark = d.cursor
    # An autorestart would be spawned in the same loop turn as the exit, so
    # anything logged after it (the reload's line) comes after that spawn.
    assert d.reload().kind == "RELOAD"
    assert not [ln for ln in d.since(mark) if ln.process == "job"]


def test_missing_command_backs_off_then_fatal_while_others_keep_running(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({
        "ghost": {"cmd": "/nonexistent/ghost --serve", "startretries": 2},
        "steady": {"cmd": SLEEPER, "starttime": 0},
    })
    d = daemons(cfg)
    errors = d.wait_count(event("SPAWN_ERROR", "ghost"), 3)
    assert all(e.fields["errno"] == "ENOENT" for e in errors)
    assert "execve /nonexistent/ghost" in errors[0].message
    fatal = d.wait_for(event("FATAL", "ghost"))
    backoffs = [ln for ln in d.lines if ln.kind == "BACKOFF" and ln.process == "ghost"]
    assert len(backoffs) == 3  # startretries=2: the 3rd failure gives up
    assert ["retry 1 of 2 in 1s" in backoffs[0].message, "retry 2 of 2 in 2s" in backoffs[1].message,
            "no retries left" in backoffs[2].message] == [True, True, True]
    # Each retry waited for its backoff (1 s then 2 s: load only makes it
    # later): from the BACKOFF line, when the wait starts, to the next
    # STARTING. (Between two SPAWN_ERRORs it can look shorter: the first
    # spawn may take longer to fail than the next.) The exact delays:
    # tests/integration/test_supervisor_timing.py, on the virtual clock.
    starts = [ln for ln in d.lines if ln.kind == "STARTING" and ln.process == "ghost"]
    assert len(starts) == 3
    gaps = [start.timestamp - backoff.timestamp
            for backoff, start in zip(backoffs[:2], starts[1:], strict=True)]
    assert gaps[0] >= 0.99 and gaps[1] >= 1.99, gaps  # ms timestamps: a 1 ms margin
    assert fatal.timestamp >= errors[-1].timestamp
    # The daemon still serves the other program: kill it, it comes back.
    steady = d.latest_pids()["steady"]
    os.kill(steady, signal.SIGKILL)
    again = d.wait_for(event("STARTING", "steady"))
    assert again.pid != steady
    assert d.terminate() == 0
    log = (workdir / "taskmasterd.log").read_text()
    assert "ghost SPAWN_ERROR errno=ENOENT: spawn error: ENOENT (execve /nonexistent/ghost)" in log


def test_bad_workingdir_is_a_spawn_error_with_chdir(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({"lost": {"cmd": SLEEPER, "workingdir": str(workdir / "nope"),
                                 "startretries": 0}})
    d = daemons(cfg)
    err = d.wait_for(event("SPAWN_ERROR", "lost"))
    assert err.fields["errno"] == "ENOENT"
    assert f"chdir {workdir / 'nope'}" in err.message
    d.wait_for(event("FATAL", "lost"))


def test_200_mb_of_output_lands_whole_without_costing_the_daemon_cpu(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    size = 200_000_000
    pattern = b"abcdefghijklmnopqrstuvwxyz0123456789\n"
    out = workdir / "flood.out"
    cfg = write_config({"flood": {
        "cmd": f"sh -c 'yes {pattern.decode().strip()} | head -c {size}'",
        "starttime": 0, "autorestart": "never", "stdout": str(out), "stderr": None,
        "stdout_maxbytes": 0}})  # unbounded: the child writes the file itself
    d = daemons(cfg)
    d.wait_for(event("DAEMON_START"))
    before = cpu_seconds(d.pid)
    d.wait_for(event("EXITED", "flood"), timeout=120)
    spent = cpu_seconds(d.pid) - before
    assert out.stat().st_size == size
    expected = hashlib.sha256()
    block = pattern * (1 << 16)
    left = size
    while left:
        expected.update(block[:left])
        left -= min(left, len(block))
    with open(out, "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == expected.hexdigest()
    # The daemon is not in the data path: a copying supervisor spends seconds here.
    assert spent < 0.5, f"daemon used {spent:.2f}s of CPU during the flood"


def test_term_ignoring_program_is_killed_stoptime_after_the_stop_signal(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    ready = workdir / "ready"
    os.mkfifo(ready)
    # It says "ready" only once TERM is ignored: a stop before that would be a race.
    cfg = write_config({"stubborn": {
        "cmd": f"sh -c 'trap \"\" TERM; echo ready > {ready}; exec sleep 100000'",
        "starttime": 0, "stoptime": 1}})
    d = daemons(cfg)
    d.wait_for(event("RUNNING", "stubborn"))
    assert read_fifo(ready) == "ready\n"
    d.signal(signal.SIGTERM)
    stopping = d.wait_for(event("STOPPING", "stubborn"))
    killed = d.wait_for(event("KILLED", "stubborn"))
    stopped = d.wait_for(event("STOPPED", "stubborn"))
    assert stopped.fields["status"] == "-9"
    # SIGKILL waited for stoptime (load only makes it later); exactly 1 s:
    # tests/integration/test_supervisor_timing.py, on the virtual clock.
    delay = killed.timestamp - stopping.timestamp
    assert delay >= 0.99, f"SIGKILL came {delay:.3f}s after SIGTERM"
    assert d.terminate() == 0


def test_reload_restarts_only_what_changed(
        write_config: WriteConfig, daemons: Start) -> None:
    programs = {"alpha": {"cmd": SLEEPER, "starttime": 0, "numprocs": 2},
                "beta": {"cmd": SLEEPER, "starttime": 0},
                "gamma": {"cmd": SLEEPER, "starttime": 0}}
    cfg = write_config(programs)
    d = daemons(cfg)
    d.wait_count(lambda ln: ln.kind == "RUNNING", 4)
    before = d.latest_pids()
    assert set(before) == {"alpha:0", "alpha:1", "beta", "gamma"}

    # 1. beta's cmd changes: only beta gets a new pid.
    programs["beta"]["cmd"] = "sleep 100001"
    # gamma: only a non-launch key changes: applied in place.
    programs["gamma"]["stoptime"] = 3
    write_config(programs)
    line = d.reload()
    assert "restarted: beta" in line.message and "updated in place: gamma (stoptime)" in line.message
    d.wait_for(event("RUNNING", "beta"))
    after = d.latest_pids()
    assert after["beta"] != before["beta"] and not alive(before["beta"])
    for name in ("alpha:0", "alpha:1", "gamma"):
        assert after[name] == before[name] and alive(before[name])

    # 2. numprocs 2 -> 3: the first two keep their pids, one more starts.
    programs["alpha"]["numprocs"] = 3
    write_config(programs)
    assert "resized: alpha 2->3" in d.reload().message
    d.wait_for(event("RUNNING", "alpha:2"))
    now = d.latest_pids()
    assert now["alpha:0"] == before["alpha:0"] and now["alpha:1"] == before["alpha:1"]
    assert alive(now["alpha:2"])

    # 3. an invalid edit: errors logged with file:line, nothing touched.
    mark = len(d.lines)
    cfg.write_text(cfg.read_text().replace("numprocs: 3", "numprocs: -1"))
    failed = d.reload()
    assert failed.kind == "RELOAD_FAILED" and failed.level == "ERROR"
    issues = d.text()[d.text().index(failed.raw):]  # the located issues follow the line
    assert f"{cfg}:" in issues and "programs.alpha.numprocs" in issues
    assert [ln.kind for ln in d.since(mark)] == ["RELOAD_FAILED"]
    assert all(alive(pid) for pid in now.values())

    # 4. removal stops the removed program only.
    del programs["gamma"]
    write_config(programs)
    assert "removed: gamma" in d.reload().message
    d.wait_for(event("STOPPED", "gamma"))
    assert not alive(now["gamma"]) and alive(now["beta"])
    assert d.terminate() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_umask_workingdir_env_and_user_reach_the_child(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    out = workdir / "child.out"
    script = 'umask; pwd; echo "$ANSWER/$TASKMASTER_PROCESS_NUM/$HOME"; id -u; touch made-here'
    share = workdir / "share"
    share.mkdir(mode=0o777)
    share.chmod(0o777)
    cfg = write_config({"probe": {
        "cmd": f"sh -c '{script}'", "umask": "027", "workingdir": str(share),
        "env": {"ANSWER": "42"}, "user": "nobody", "starttime": 0, "autorestart": "never",
        "stdout": str(out)}})
    d = daemons(cfg)
    d.wait_for(event("EXITED", "probe"))
    umask, cwd, env, uid = out.read_text().split()
    assert umask == "0027"
    assert cwd == str(share)
    assert env == "42/0/" + os.path.expanduser("~nobody")
    assert uid == "65534"
    made = share / "made-here"
    assert made.stat().st_uid == 65534 and made.stat().st_mode & 0o777 == 0o640


def test_umask_workingdir_and_env_without_user(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    out = workdir / "child.out"
    cfg = write_config({"probe": {
        "cmd": "sh -c 'umask; pwd; echo \"$ANSWER $TASKMASTER_PROCESS_NUM $TASKMASTER_PROGRAM\"'",
        "umask": "077", "workingdir": str(workdir), "env": {"ANSWER": "042"},
        "starttime": 0, "autorestart": "never", "numprocs": 2, "stdout": str(out)}})
    d = daemons(cfg)
    d.wait_count(lambda ln: ln.kind == "EXITED", 2)
    lines = out.read_text().splitlines()
    assert lines.count("0077") == 2 and lines.count(str(workdir)) == 2
    assert sorted(ln for ln in lines if ln.startswith("042")) == ["042 0 probe", "042 1 probe"]


def test_auto_output_goes_to_logdir_files(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    cfg = write_config({"talker": {"cmd": "sh -c 'echo out-$TASKMASTER_PROCESS_NUM; echo err >&2'",
                                   "numprocs": 2, "starttime": 0, "autorestart": "never"},
                        "quiet": {"cmd": "echo discarded", "stdout": None, "starttime": 0,
                                  "autorestart": "never"}})
    d = daemons(cfg)
    d.wait_count(lambda ln: ln.kind == "EXITED", 3)
    logs = workdir / "logs"
    assert (logs / "talker-0.stdout.log").read_text() == "out-0\n"
    assert (logs / "talker-1.stdout.log").read_text() == "out-1\n"
    assert (logs / "talker-1.stderr.log").read_text() == "err\n"
    assert not (logs / "quiet.stdout.log").exists()
    assert (logs / "quiet.stderr.log").read_text() == ""


def test_200_programs_all_run_and_sigterm_leaves_nothing_behind(
        write_config: WriteConfig, daemons: Start) -> None:
    marker = f"TM_TEST_RUN={uuid.uuid4().hex}"
    key, value = marker.split("=")
    # Each program has a child of its own: the group kill must reach it too.
    programs = {f"p{i:03d}": {"cmd": "sh -c 'sleep 100000 & wait'", "starttime": 0.5,
                              "env": {key: value}} for i in range(200)}
    cfg = write_config(programs)
    d = daemons(cfg)
    d.wait_count(lambda ln: ln.kind == "RUNNING", 200, timeout=60)
    assert len(processes_with_env(marker)) == 400  # 200 shells + 200 sleeps
    assert d.terminate(timeout=60) == 0
    assert processes_with_env(marker) == []
    stops = [ln for ln in d.lines if ln.kind == "STOPPED"]
    assert len(stops) == 200


def test_invalid_config_at_start_exits_1_with_located_errors(write_config: WriteConfig) -> None:
    cfg = write_config({"bad": {"cmd": SLEEPER, "umask": "089", "stopsignal": "TERMINATE"}})
    r = subprocess.run([sys.executable, "-m", "taskmasterd", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"{cfg}:" in r.stderr and "umask" in r.stderr and "stopsignal" in r.stderr
    assert "not started" in r.stderr


def test_check_config_exit_codes(write_config: WriteConfig, workdir: Path) -> None:
    good = write_config({"ok": {"cmd": SLEEPER}}, name="good.yaml")
    bad = workdir / "bad.yaml"
    bad.write_text("programs:\n  x:\n    cmd: true\n    numprocs: zero\n")
    ok = subprocess.run([sys.executable, "-m", "taskmasterd", "--check-config", str(good)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "OK (1 programs, 1 processes)" in ok.stdout
    ko = subprocess.run([sys.executable, "-m", "taskmasterd", "--check-config", str(bad)],
                        capture_output=True, text=True, timeout=30)
    assert ko.returncode == 1
    assert f"{bad}:4:15: programs.x.numprocs:" in ko.stderr


def test_unopenable_logfile_refuses_start_and_fails_reload_without_harm(
        write_config: WriteConfig, daemons: Start, workdir: Path) -> None:
    bad = write_config({"x": {"cmd": SLEEPER}}, name="bad.yaml", logfile="/proc/nope/t.log")
    r = subprocess.run([sys.executable, "-m", "taskmasterd", "-c", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot open the log file /proc/nope/t.log" in r.stderr and "Traceback" not in r.stderr
    cfg = write_config({"x": {"cmd": SLEEPER, "starttime": 0}})
    d = daemons(cfg)
    pid = d.wait_for(event("RUNNING", "x")).pid
    write_config({"x": {"cmd": "sleep 5"}}, logfile="/proc/nope/t.log")
    failed = d.reload()
    assert failed.kind == "RELOAD_FAILED"
    assert "cannot open the log file /proc/nope/t.log" in d.text()
    assert alive(pid) and d.latest_pids() == {"x": pid}
    assert "Traceback" not in d.text()
