"""`taskctl daemon-reexec` / Manager.Reexecute: taskmasterd executes itself
again in the same process; every program keeps its pid and stays its child
(exit statuses stay real), stopped ones stay stopped, systemd hears
RELOADING=1 then READY=1, and calls in the gap are answered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from taskmasterd import __version__
from tests.harness import Daemon, alive, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_adoption import marker, named, sleeper  # noqa: F401 (fixture)
from tests.integration.test_notify import NotifySocket, notify  # noqa: F401 (fixture)
from tests.integration.test_output_rotation import writers_of
from tests.integration.test_taskctl import taskctl

Start = Callable[..., Daemon]


def test_reexec_keeps_every_program_and_its_state(
        write_config: WriteConfig, daemons: Start, bus_address: str, marker: str,  # noqa: F811
        notify: NotifySocket, workdir: Path) -> None:  # noqa: F811
    config = write_config({"web": sleeper(marker, numprocs=2), "db": sleeper(marker),
                           "idle": sleeper(marker), "once": sleeper(marker, autorestart=False)})
    d = daemons(config, env={"NOTIFY_SOCKET": str(notify.path)})
    d.wait_count(event("RUNNING"), 5)
    notify.next(lambda m: "READY" in m)
    assert taskctl(bus_address, "stop", "idle").returncode == 0
    pids = d.latest_pids()
    os.kill(pids["once"], signal.SIGKILL)
    d.wait_for(event("EXITED", "once"))
    mark = len(d.lines)

    # Calls during the gap: each gets an answer or "unreachable" (7), never hangs.
    results: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            results.append(taskctl(bus_address, "status", timeout=20).returncode)
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        r = taskctl(bus_address, "--json", "daemon-reexec")
    finally:
        stop.set()
        poller.join(30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"reexecuted": True, "pid": d.pid, "version": __version__}
    assert d.proc.poll() is None
    assert notify.next(lambda m: "RELOADING" in m)["RELOADING"] == "1"
    assert notify.next(lambda m: "READY" in m)["READY"] == "1"
    assert set(results) <= {0, 3, 7}, results  # 3: idle is STOPPED

    d.wait_text("re-executed: taskmasterd")
    after = d.since(mark)
    assert not [ln for ln in after if ln.kind in ("STARTING", "ADOPTED", "STOPPED")], after
    live = {n: p for n, p in pids.items() if n not in ("idle", "once")}
    assert named(marker) == {n: [p] for n, p in live.items()}  # same pids, one copy each
    assert all(Path(f"/proc/{p}/stat").read_text().split()[3] == str(d.pid) for p in live.values())
    status = {line.split()[0]: line.split()[1]
              for line in taskctl(bus_address, "status").stdout.splitlines()[1:]}
    assert status == {"web:0": "RUNNING", "web:1": "RUNNING", "db": "RUNNING",
                      "idle": "STOPPED", "once": "EXITED"}

    # Still our children: a real exit status, and the usual autorestart.
    os.kill(live["db"], signal.SIGKILL)
    exited = d.wait_for(event("EXITED", "db"), timeout=5)
    assert exited.fields["status"] == str(-signal.SIGKILL)
    d.wait_for(event("RUNNING", "db"))
    assert taskctl(bus_address, "restart", "web:0").returncode == 0
    assert not alive(live["web:0"])
    assert d.terminate() == 0
    assert named(marker) == {}


def test_reexec_refused_during_a_shutdown_is_an_error_not_a_hang(
        write_config: WriteConfig, daemons: Start, bus_address: str, marker: str) -> None:  # noqa: F811
    config = write_config({"slow": sleeper(marker, cmd="sh -c 'trap \"\" TERM; sleep 100000'",
                                           stoptime=30)})
    d = daemons(config)
    d.wait_for(event("RUNNING", "slow"))
    d.signal(signal.SIGTERM)
    d.wait_for(lambda ln: ln.kind == "DAEMON_STOP")
    r = taskctl(bus_address, "daemon-reexec")
    assert r.returncode != 0 and "shutting down" in r.stderr, r
    os.killpg(d.latest_pids()["slow"], signal.SIGKILL)
    assert d.proc.wait(30) == 0


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and fields[1] == str(pid):
                found.append(int(entry))
    return found


def test_reexec_with_a_rotated_output(write_config: WriteConfig, daemons: Start, bus_address: str,
                                      marker: str, workdir: Path) -> None:  # noqa: F811
    out = workdir / "talk.out"
    talk = sleeper(marker, cmd="sh -c 'while :; do echo tick; sleep 0.05; done'",
                   stdout=str(out), stdout_maxbytes="1MB")
    d = daemons(write_config({"talk": talk}))
    d.wait_for(event("RUNNING", "talk"))
    pid = d.latest_pids()["talk"]
    wait_until("a log writer", lambda: len(writers_of(d.pid)) == 1)
    [writer] = writers_of(d.pid)
    r = taskctl(bus_address, "daemon-reexec")
    assert r.returncode == 0, r.stderr
    # The new image re-attaches the same writer (our control socket closed at exec).
    d.wait_text(f"re-attached the log writer (pid {writer}) and its 1 pipe(s)")
    assert writers_of(d.pid) == [writer]
    size = out.stat().st_size
    wait_until("output after the re-exec", lambda: out.stat().st_size > size + 100)
    os.killpg(pid, signal.SIGKILL)
    exited = d.wait_for(event("EXITED", "talk"), timeout=5)
    assert exited.fields["status"] == str(-signal.SIGKILL)
    d.wait_for(event("RUNNING", "talk"))
    assert zombies_of(d.pid) == []  # nothing left uncollected across the exec
    assert d.terminate() == 0
    assert not alive(writer)  # the re-attached writer finished with the daemon


def test_reexec_on_the_private_bus_keeps_the_bus(
        write_config: WriteConfig, workdir: Path, marker: str) -> None:  # noqa: F811
    runtime = workdir / "run"
    env = {"TASKMASTER_RUNTIME_DIR": str(runtime)}
    d = Daemon(write_config({"a": sleeper(marker)}), "--bus", "private", env=env)
    try:
        d.wait_for(event("RUNNING", "a"))
        address = (runtime / "bus").read_text().strip()
        bus_pid = int(subprocess.run(
            ["busctl", f"--address={address}", "call", "org.freedesktop.DBus",
             "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s",
             "org.freedesktop.DBus"], capture_output=True, text=True, check=True,
            timeout=30).stdout.split()[1])
        pid = d.latest_pids()["a"]
        r = taskctl(address, "daemon-reexec")
        assert r.returncode == 0, r.stderr
        assert (runtime / "bus").read_text().strip() == address  # the same bus
        assert alive(bus_pid) and alive(pid)
        assert taskctl(address, "status", "a").stdout.split()[4:7] == ["a", "RUNNING", str(pid)]
        assert d.terminate() == 0
        assert not alive(bus_pid)  # stopped with the daemon, as before
    finally:
        d.close()


def test_a_retry_in_backoff_goes_on_counting_across_a_reexec(
        write_config: WriteConfig, daemons: Start, bus_address: str) -> None:
    """A re-exec during BACKOFF neither grants extra retries nor loses the
    one that was due: retry 1 of 2 before it, retry 2 of 2 after, then FATAL."""
    d = daemons(write_config({"flaky": {"cmd": "sh -c 'exit 3'", "starttime": 1,
                                        "startretries": 2, "restartdelay": 1,
                                        "stdout": None, "stderr": None}}))
    first = d.wait_for(event("BACKOFF", "flaky"))
    assert "retry 1 of 2" in first.message
    r = taskctl(bus_address, "daemon-reexec")
    assert r.returncode == 0, r.stderr
    second = d.wait_for(event("BACKOFF", "flaky"))
    assert "retry 2 of 2" in second.message, second.message
    d.wait_for(event("FATAL", "flaky"))
    spawned = [ln for ln in d.lines if ln.kind == "STARTING" and ln.process == "flaky"]
    assert len(spawned) == 3  # the first start and 2 retries, not one more


def test_reexec_while_a_task_runs_takes_it_back_and_records_its_real_end(
        write_config: WriteConfig, daemons: Start, bus_address: str, workdir: Path) -> None:
    """A task runs under the task runner when the daemon re-executes: the
    new image attaches to the same runner, takes the task back (ADOPTED),
    and records its real exit status when it ends."""
    from tests.integration.test_tasks import status_file, submit_task, with_tasks

    gate = workdir / "gate"
    os.mkfifo(gate)
    d = daemons(with_tasks(write_config({}), max_parallel=2))
    d.wait_for(event("DAEMON_START"))

    id = submit_task(bus_address, "sh", "-c", f"read x < {gate}; exit 3")
    wait_until("the task runs", lambda: status_file(workdir, id)["state"] == "running")
    before = status_file(workdir, id)
    d.wait_for(event("TASK_STARTED", id))

    r = taskctl(bus_address, "--json", "daemon-reexec")
    assert r.returncode == 0, r.stderr
    d.wait_text("re-executed: taskmasterd")
    d.wait_for(event("TASK_ADOPTED", id))
    assert alive(before["pid"]) and alive(before["runner_pid"])

    with open(gate, "w") as f:
        f.write("go\n")
    ended = d.wait_for(event("TASK_FAILED", id), timeout=15)
    assert ended.fields["status"] == "3", ended
    after = status_file(workdir, id)
    assert (after["state"], after["exit_code"], after["pid"], after["runner_pid"]) == \
        ("failed", 3, before["pid"], before["runner_pid"])
    listed = json.loads(taskctl(bus_address, "tasks", "--json").stdout)
    row = next(t for t in (listed if isinstance(listed, list) else listed["tasks"]) if t["id"] == id)
    assert (row["state"], row["exit_code"]) == ("failed", 3), row
    # One end, published once: the re-executed daemon saw it, nothing older.
    assert len([ln for ln in d.lines if ln.kind == "TASK_FAILED" and ln.process == id]) == 1
    assert d.terminate() == 0
