"""D-Bus fuzz (issue 11 §9): every Manager and Program method, well- and
ill-typed, as root and as uid 65534, against one real taskmasterd on a
private system-like bus with our policy.

Contract: no `org.taskmaster.Taskmaster1.Error.Failed` (an unexpected
exception in the daemon), no reply that is or holds a traceback, the daemon
alive and answering afterwards, and its memory bounded: VmRSS, sampled
every 50 ms during the run, stays below the baseline (after start-up) +
RSS_BOUND_MB, and within RSS_AFTER_MB of it once the run is over.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.dbus_fixtures import bus_directory, session_bus, system_bus
from tests.harness import Daemon, alive, event, wait_until

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "dbus" / "org.taskmaster.Taskmaster1.conf"
NAME = "org.taskmaster.Taskmaster1"
NOBODY = 65534
CALLS_ROOT = int(os.environ.get("TASKMASTER_FUZZ_DBUS_ROOT", "2000"))
CALLS_NOBODY = int(os.environ.get("TASKMASTER_FUZZ_DBUS_NOBODY", "1000"))
SEED = int(os.environ.get("TASKMASTER_FUZZ_SEED", "1"))  # fixed in CI: a run is reproducible
RSS_BOUND_MB = 50
RSS_AFTER_MB = 20

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("dbus-daemon", "busctl")),
                                reason="needs dbus-daemon and busctl")

CONFIG = """\
taskmasterd: {{logfile: {d}/taskmasterd.log, logdir: {d}/logs}}
programs:
  web: {{cmd: sleep 100000, numprocs: 2, starttime: 0, stoptime: 0.2, autorestart: always}}
  db: {{cmd: sleep 100000, starttime: 0, stoptime: 0.2}}
  lazy: {{cmd: sleep 100000, starttime: 0, stoptime: 0.2, autostart: false}}
"""


# What the file says flips while the calls run, so that their Reloads change
# something: a program removed and back, numprocs 2 <-> 3, a broken file.
VARIANTS = [CONFIG,
            CONFIG.replace("numprocs: 2", "numprocs: 3").replace("  db: ", "  db2: "),
            CONFIG + "  bad: {{cmd: sleep 1, numprocs: zero}}\n"]


class ConfigFlipper(threading.Thread):
    def __init__(self, path: Path, d: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.d = path, d
        self.done = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.done.wait(0.2):
            n += 1
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(VARIANTS[n % len(VARIANTS)].format(d=self.d))
            tmp.replace(self.path)
        self.path.write_text(CONFIG.format(d=self.d))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                self.peak = max(self.peak, rss_kb(self.pid))
            except (OSError, AssertionError):
                return


def client(address: str, seed: int, count: int, *prefix: str,
           mode: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen([*prefix, sys.executable, "-m", "tests.fuzz.dbus_fuzz_client", address,
                             str(seed), str(count), *mode], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    report: dict[str, object] = json.loads(out)
    return report


def test_dbus_fuzz() -> None:
    as_root = os.geteuid() == 0
    # Not root: a session-like bus (a system-like one would refuse our calls).
    with bus_directory() as d, (system_bus(d, POLICY) if as_root else session_bus(d)) as address:
        # a name that is not UTF-8: ConfigFile, log lines and errors carry it
        cfg = d / os.fsdecode(b"taskmaster-\xfe.yaml")
        cfg.write_text(CONFIG.format(d=d))
        daemon = Daemon(cfg, "--address", address)
        try:
            for name in ("web:0", "web:1", "db"):
                daemon.wait_for(event("RUNNING", name))
            baseline = rss_kb(daemon.pid)
            sampler = RssSampler(daemon.pid)
            sampler.start()
            flipper = ConfigFlipper(cfg, d)
            flipper.start()
            procs = [client(address, SEED, CALLS_ROOT)]
            if as_root and shutil.which("setpriv"):
                procs.append(client(address, SEED + 1, CALLS_NOBODY, "setpriv", f"--reuid={NOBODY}",
                                    f"--regid={NOBODY}", "--clear-groups"))
            reports = [result(p) for p in procs]
            flipper.done.set()
            flipper.join()
            sampler.done.set()
            sampler.join()
            summary = json.dumps(reports, indent=1)
            assert sum(int(str(r["sent"])) for r in reports) >= (2000 if len(procs) == 2 else CALLS_ROOT)
            assert [r["bad"] for r in reports] == [[]] * len(reports), summary
            handled = reports[0]["handled"]
            assert isinstance(handled, dict)
            # every method reached its handler as root (all but Shutdown, never called right)
            for member in ("Start", "Stop", "Restart", "Signal", "Reload", "ListProcesses", "OpenLog",
                           "TestAlerts", "PlanReload", "PlanReloadReasons", "PlanReloadSettings",
                           "Get", "GetAll", "Introspect", "GetManagedObjects"):
                assert handled.get(member, 0) >= 5, (member, summary)
            assert alive(daemon.pid), daemon.text()
            # still answering, still supervising
            listed = subprocess.run(["busctl", f"--address={address}", "call", "org.taskmaster.Taskmaster1",
                                     "/org/taskmaster/Taskmaster1", "org.taskmaster.Taskmaster1.Manager",
                                     "ListProcesses"], capture_output=True, text=True, timeout=30)
            assert listed.returncode == 0 and '"web' in listed.stdout, listed.stderr
            assert reports[0]["replies"].get(  # type: ignore[attr-defined]
                "error:org.taskmaster.Taskmaster1.Error.ConfigInvalid", 0) > 0, summary
            assert "Traceback" not in daemon.text(), daemon.text()[-3000:]
            after = rss_kb(daemon.pid)
            print(f"RSS kB: baseline {baseline}, peak {sampler.peak}, after {after}; {summary}")
            assert sampler.peak <= baseline + RSS_BOUND_MB * 1024, (baseline, sampler.peak)
            assert after <= baseline + RSS_AFTER_MB * 1024, (baseline, after)
        finally:
            assert daemon.terminate() == 0, daemon.text()[-3000:]


TASK_CALLS_ROOT = int(os.environ.get("TASKMASTER_FUZZ_DBUS_TASKS", "1500"))
TASK_CALLS_NOBODY = 300
MEMPROBE = ROOT / "tests" / "memprobe"


def memprobe_env(out: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(MEMPROBE), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "MEMPROBE_OUT": str(out)}


def held(pid: int, out: Path) -> dict[str, int]:
    """What the daemon holds after a garbage collection (tests/memprobe)."""
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    wait_until(f"the daemon's memory probe in {out}", out.exists)
    counts: dict[str, int] = json.loads(out.read_text())
    return counts
TASK_CONFIG = """\
taskmasterd: {{logfile: {d}/taskmasterd.log, logdir: {d}/logs, statedir: {d}/state}}
programs:
  web: {{cmd: sleep 100000, starttime: 0, stoptime: 0.2}}
tasks: {{max_parallel: 2, max_queued: 12, timeout: 3, stoptime: 0.5}}
"""


def on_disk(state: Path, reports: list[dict[str, object]]) -> tuple[set[str], set[str]]:
    """(task dirs on disk, the tasks the calls that succeeded queued)."""
    queued = {id for r in reports for id in r["tasks"]}  # type: ignore[attr-defined]
    for act in (a for r in reports for a in r["activities"]):  # type: ignore[attr-defined]
        queued.update(json.loads((state / "activities" / act / "status.json").read_text())["tasks"])
    tasks = state / "tasks"
    return (set(os.listdir(tasks)) if tasks.exists() else set()), queued


def test_dbus_task_fuzz() -> None:
    """The task API (SubmitTask, SubmitActivity, the cancels, the lists, the
    Task and Activity objects) with hostile values: every call answered by
    a named error or a reply, the daemon alive and bounded, and nothing on
    disk but what the calls that succeeded queued.

    Memory: RSS stays below the baseline + RSS_BOUND_MB throughout. Past
    that, RSS says little: the huge calls (strings and arrays of megabytes,
    an activity of 10,001 tasks unmarshalled before it is refused) leave
    glibc's heap as high as their order and timing made it (a CI run went
    37 -> 59 MB on the second round, others 50 -> 54 or 48 -> 39). So the
    leak check counts what the daemon holds (tests/memprobe): the same calls
    sent a second time may add what the tasks they queued keep (until
    tasks.keep), and nothing per call."""
    as_root = os.geteuid() == 0
    with bus_directory() as d, (system_bus(d, POLICY) if as_root else session_bus(d)) as address:
        cfg = d / "taskmaster.yaml"
        cfg.write_text(TASK_CONFIG.format(d=d))
        probe = d / "memprobe.json"
        daemon = Daemon(cfg, "--address", address, env=memprobe_env(probe))
        try:
            daemon.wait_for(event("RUNNING", "web"))
            baseline = rss_kb(daemon.pid)
            sampler = RssSampler(daemon.pid)
            sampler.start()
            procs = [client(address, SEED, TASK_CALLS_ROOT // 2, mode=("tasks",))]
            if as_root and shutil.which("setpriv"):
                procs.append(client(address, SEED + 1, TASK_CALLS_NOBODY, "setpriv",
                                    f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                    mode=("tasks",)))
            reports = [result(p) for p in procs]
            half = held(daemon.pid, probe)
            # The same calls again: what they cost the first time (caches,
            # the first of each kind of object) is not paid twice.
            reports.append(result(client(address, SEED, TASK_CALLS_ROOT // 2, mode=("tasks",))))
            second = held(daemon.pid, probe)
            sampler.done.set()
            sampler.join()
            summary = json.dumps([{k: v for k, v in r.items() if k not in ("tasks", "activities")}
                                  for r in reports], indent=1)
            assert [r["bad"] for r in reports] == [[]] * len(reports), summary
            roots = [reports[0], reports[-1]]
            handled = {m: sum(r["handled"].get(m, 0) for r in roots)  # type: ignore[attr-defined]
                       for m in reports[0]["handled"]}  # type: ignore[attr-defined]
            for member in ("SubmitTask", "SubmitActivity", "CancelTask", "CancelActivity",
                           "ListTasks", "ListActivities", "Cancel", "OpenOutput", "Get", "GetAll"):
                assert handled.get(member, 0) >= 5, (member, summary)
            # Each error reached by the root clients together. QueueFull is
            # not among them: whether 12 tasks are still unended when a submit
            # comes depends on how fast the daemon and the tasks run (a run
            # reached it once in 750 calls, the next not at all); it is
            # provoked on purpose below, once the fuzz's files are checked.
            for error in ("TaskInvalid", "NoSuchTask", "NotRunning"):
                assert sum(r["replies"].get(  # type: ignore[attr-defined]
                    f"error:org.taskmaster.Taskmaster1.Error.{error}", 0) for r in roots) > 0, summary
            # Some were queued (what the files are checked against below), by
            # either root client: the second sends the same calls while the
            # first one's `sleep 2` tasks may still fill the queue (QueueFull
            # for every activity then: seen once the daemon answered faster).
            assert any(r["tasks"] for r in roots) and any(r["activities"] for r in roots), summary
            dirs, queued = on_disk(d / "state", reports)
            assert dirs == queued, (sorted(dirs - queued), sorted(queued - dirs))
            assert alive(daemon.pid), daemon.text()
            listed = subprocess.run(["busctl", f"--address={address}", "call", NAME,
                                     "/org/taskmaster/Taskmaster1", "org.taskmaster.Taskmaster1.Manager",
                                     "ListTasks"], capture_output=True, text=True, timeout=30)
            assert listed.returncode == 0, listed.stderr
            # QueueFull: 13 tasks that take a while, with max_queued 12 (and
            # max_parallel 2): one of them, at the latest the 13th, is refused.
            refused = []
            for _ in range(13):
                submit = subprocess.run(
                    ["busctl", f"--address={address}", "call", NAME, "/org/taskmaster/Taskmaster1",
                     "org.taskmaster.Taskmaster1.Manager", "SubmitTask", "a{sv}", "2",
                     "command", "s", "sleep", "args", "as", "1", "30"],
                    capture_output=True, text=True, timeout=30)
                if submit.returncode != 0:
                    refused.append(submit.stderr)
            assert refused and all("past tasks.max_queued (12;" in e for e in refused), refused
            assert alive(daemon.pid), daemon.text()
            assert "Traceback" not in daemon.text(), daemon.text()[-3000:]
            queued_again = len(on_disk(d / "state", reports[-1:])[1])
            grew = {k: second[k] - half[k] for k in half}
            print(f"RSS kB: baseline {baseline}, peak {sampler.peak}; held: {half}, then {second} "
                  f"with {queued_again} tasks queued by the second round; {summary}")
            assert sampler.peak <= baseline + RSS_BOUND_MB * 1024, (baseline, sampler.peak)
            # Measured: 15-21 objects and 39-51 blocks per queued task (one
            # more object per call, 750 of them, would fail).
            assert grew["objects"] <= 40 * queued_again + 300, (grew, queued_again)
            assert grew["blocks"] <= 100 * queued_again + 1500, (grew, queued_again)
        finally:
            assert daemon.terminate() == 0, daemon.text()[-3000:]
