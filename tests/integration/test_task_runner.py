"""The task runner with real processes (taskmasterd/tasks/runner.py through
taskmasterd/tasks/runnerclient.py, and `taskmasterd --run-task`): tasks run
and end with the right status, in their files as in the messages; the
runner outlives its daemon (played by a RunnerClient the test closes),
records the real end of a task that ended meanwhile, hands its tasks to the
next daemon, and exits once idle and detached. No fixed sleeps: every wait
is on a status, a file or a process, with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskmasterd import fastspawn
from taskmasterd.tasks import runproto
from taskmasterd.tasks.execute import CANCEL, HEARTBEAT, Execution
from taskmasterd.tasks.records import TaskState, TaskStatus, new_id, task_json
from taskmasterd.tasks.runnerclient import RunnerClient, runner_socket
from taskmasterd.tasks.spawner import Spawner
from taskmasterd.tasks.spec import parse_task
from taskmasterd.tasks.taskfiles import TaskDir, TaskFiles
from tests.harness import wait_until
from tests.virtual_clock import VirtualClockLoop

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0


@pytest.fixture
def dirs() -> Iterator[tuple[str, str]]:
    """(statedir, runtime dir): short paths (a unix socket path is <= 108 bytes)."""
    base = tempfile.mkdtemp(prefix="tr-", dir="/tmp")
    os.chmod(base, 0o700)
    yield os.path.join(base, "state"), os.path.join(base, "run")
    for pid in _started_with(base):  # a failed test leaves no runner nor task behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def _started_with(base: str) -> list[int]:
    """The processes whose command line names `base` (this test's runners and tasks)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if os.fsencode(base) in f.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


async def until(what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """wait_until for the event loop: the loop keeps running meanwhile."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)  # sleep-ok: the poll step of a wait with a timeout


class Daemon:
    """What the daemon part does with a RunnerClient, reduced to recording."""

    def __init__(self, statedir: str, runtime: str) -> None:
        self.files = TaskFiles(statedir)
        self.statuses: dict[str, list[TaskStatus]] = {}
        self.gone: list[tuple[int, str]] = []
        self.client = RunnerClient(statedir, runner_socket(runtime, statedir, "/etc/tm.yaml"),
                                   on_status=self.on_status,
                                   on_gone=lambda pid, why: self.gone.append((pid, why)))
        self.ended: list[TaskStatus] = []

    def on_status(self, status: TaskStatus) -> None:
        self.statuses.setdefault(status.id, []).append(status)
        if status.state.final:
            self.ended.append(status)

    def submit(self, command: str, *args: str, timeout: float = 0, run: bool = True) -> TaskStatus:
        status = TaskStatus(id=new_id(self.files.taken),
                            spec=parse_task({"command": command, "args": list(args), "timeout": timeout}),
                            state=TaskState.QUEUED, seq=len(self.statuses) + 1, submitted=time.time(),
                            timeout=timeout)
        self.files.create_task(status)
        self.statuses.setdefault(status.id, [])
        if run:
            self.client.run(status, signal.SIGTERM, 10.0)
        return status

    def last(self, id: str) -> TaskStatus | None:
        got = self.statuses.get(id)
        return got[-1] if got else None

    async def end_of(self, id: str, timeout: float = TIMEOUT) -> TaskStatus:
        await until(f"the end of task {id}", lambda: (s := self.last(id)) is not None and s.state.final,
                    timeout)
        end = self.last(id)
        assert end is not None
        return end

    async def running(self, id: str) -> TaskStatus:
        await until(f"task {id} running", lambda: any(s.state is TaskState.RUNNING
                                                     for s in self.statuses.get(id, [])))
        return next(s for s in self.statuses[id] if s.state is TaskState.RUNNING)

    def on_disk(self, id: str) -> TaskStatus:
        got = self.files.read_task(id)
        assert isinstance(got, TaskStatus), got
        return got

    async def recorded(self, status: TaskStatus) -> None:
        """Wait until status.json says what the message said (the file is
        written off the loop, in the runner's own time)."""
        await until(f"{status.id}'s status.json to say {status.state.value}",
                    lambda: same(self.files.read_task(status.id), status))


def same(a: object, b: TaskStatus) -> bool:
    """Whether a status read back is `b` (times are kept to the µs on disk)."""
    return isinstance(a, TaskStatus) and task_json(a) == task_json(b)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_exits_spawn_errors_and_files_agree(dirs: tuple[str, str]) -> None:
    async def main() -> None:
        d = Daemon(*dirs)
        ok = d.submit("true")
        three = d.submit("sh", "-c", "echo out; echo err >&2; exit 3")
        missing = d.submit("no-such-command-here")
        env = d.submit("sh", "-c", 'echo "$TASKMASTER_TASK_ID $TASKMASTER_TASK_NAME"; umask; '
                                   'echo "${PYTHONPATH-unset}"; env | grep -c TASKMASTER_RUNNER')
        runner_pid = d.client.pid
        assert runner_pid > 0
        end = await d.end_of(ok.id)
        assert (end.state, end.exit_code, end.reason) == (TaskState.SUCCEEDED, 0, "")
        assert end.runner_pid == runner_pid and end.pid > 0 and end.started and end.ended
        assert [s.state for s in d.statuses[ok.id]] == [TaskState.RUNNING, TaskState.SUCCEEDED]
        end = await d.end_of(three.id)
        assert (end.state, end.exit_code, end.reason) == (TaskState.FAILED, 3, "exited with status 3")
        end = await d.end_of(missing.id)
        assert end.state is TaskState.FAILED and end.spawn_error is not None
        assert (end.spawn_error.code, end.spawn_error.syscall) == ("ENOENT", "spawn no-such-command-here")
        assert [s.state for s in d.statuses[missing.id]] == [TaskState.FAILED]
        await d.end_of(env.id)
        for status in (ok, three, missing, env):
            await d.recorded(d.last(status.id))  # type: ignore[arg-type]
        out = d.files.task_dir(three.id)
        assert Path(out.output("stdout")).read_text() == "out\n"
        assert Path(out.output("stderr")).read_text() == "err\n"
        assert os.stat(out.output("stdout")).st_mode & 0o777 == 0o600
        umask = os.umask(0o022)
        os.umask(umask)
        # The task runs with the daemon's umask; its output files are 0600 all the same.
        assert Path(d.files.task_dir(env.id).output("stdout")).read_text() == (
            f"{env.id} sh\n{umask:04o}\n{os.environ.get('PYTHONPATH', 'unset')}\n0\n")
        await d.client.close()
        await until("the idle, detached runner to exit", lambda: gone(runner_pid))
        assert not d.gone  # a runner that left on its own is not "gone" news

    run(main())


def test_timeouts_stop_with_stopsignal_then_sigkill(dirs: tuple[str, str]) -> None:
    async def main() -> None:
        d = Daemon(*dirs)
        polite = d.submit("sleep", "30", timeout=0.3)
        stubborn = TaskStatus(
            id=new_id(d.files.taken),
            spec=parse_task({"command": "sh", "timeout": 0.3,
                             "args": ["-c", 'trap "" TERM; echo ready; while :; do sleep 1; done']}),
            state=TaskState.QUEUED, seq=9, submitted=time.time(), timeout=0.3)
        d.files.create_task(stubborn)
        d.client.run(stubborn, signal.SIGTERM, 0.5)
        end = await d.end_of(polite.id)
        assert end.state is TaskState.FAILED and end.signal == signal.SIGTERM
        assert end.reason == "timed out after 0.3 s (stopped with SIGTERM)"
        end = await d.end_of(stubborn.id)
        assert end.state is TaskState.FAILED and end.signal == signal.SIGKILL
        assert end.reason == "timed out after 0.3 s (stopped with SIGTERM, SIGKILL after 0.5 s)"
        assert end.ended - end.started >= 0.8
        await d.recorded(end)
        await d.client.close()

    run(main())


def test_a_cancel_ends_the_task_cancelled(dirs: tuple[str, str]) -> None:
    async def main() -> None:
        d = Daemon(*dirs)
        task = d.submit("sleep", "30")
        await d.running(task.id)
        assert d.on_disk(task.id).state in (TaskState.QUEUED, TaskState.RUNNING)
        d.client.cancel(task.id, "cancelled by taskctl cancel (uid 0)")
        end = await d.end_of(task.id)
        assert end.state is TaskState.CANCELLED and end.signal == signal.SIGTERM
        assert end.reason == "cancelled by taskctl cancel (uid 0)"
        await d.recorded(end)
        d.client.cancel(task.id, "again")  # ended: nothing happens, nothing breaks
        await d.client.close()

    run(main())


def test_the_runner_outlives_its_daemon_and_hands_its_tasks_to_the_next(dirs: tuple[str, str]) -> None:
    base = os.path.dirname(dirs[0])
    fifos = [os.path.join(base, name) for name in ("a", "b")]
    for fifo in fifos:
        os.mkfifo(fifo)

    async def main() -> None:
        first = Daemon(*dirs)
        a = first.submit("sh", "-c", f"read x < {fifos[0]}; exit 5")
        b = first.submit("sh", "-c", f"read x < {fifos[1]}; exit 0")
        runner_pid = first.client.pid
        await first.running(a.id)
        running_b = await first.running(b.id)
        assert first.client.peer_batches  # the runner said so before any status
        await first.client.close()  # the daemon is gone (SIGKILL looks the same from the runner)

        await asyncio.to_thread(Path(fifos[0]).write_text, "go\n")  # A ends meanwhile
        await until("A's real end in its status.json",
                    lambda: first.on_disk(a.id).state is TaskState.FAILED)
        end = first.on_disk(a.id)
        assert (end.exit_code, end.reason, end.runner_pid) == (5, "exited with status 5", runner_pid)
        assert first.ended == []  # nobody attached: no message queued for nobody

        second = Daemon(*dirs)
        held = second.client.attach_surviving()
        assert held is not None and second.client.pid == runner_pid
        assert second.client.peer_batches  # in its welcome
        # A's file is visible at its rename, a moment before the runner drops
        # it from what it holds: then it is handed over too, as ended.
        assert [(s.id, s.state, s.exit_code) for s in held if s.id == a.id] in \
            ([], [(a.id, TaskState.FAILED, 5)])
        assert [(s.id, s.state, s.pid) for s in held if s.id != a.id] == \
            [(b.id, TaskState.RUNNING, running_b.pid)]
        third = Daemon(*dirs)
        assert third.client.attach_surviving() is None  # busy: logged

        await asyncio.to_thread(Path(fifos[1]).write_text, "go\n")
        end = await second.end_of(b.id)
        assert end.state is TaskState.SUCCEEDED and end.pid == running_b.pid
        await second.recorded(end)
        await second.client.close()
        await until("the idle, detached runner to exit", lambda: gone(runner_pid))
        await until("its socket to be removed", lambda: not os.path.exists(second.client.socket_path
                                                                           or "/nonexistent"))
        assert Daemon(*dirs).client.attach_surviving() is None

    run(main())


def test_bad_messages_are_answered_refused_and_the_runner_goes_on(dirs: tuple[str, str]) -> None:
    statedir = dirs[0]
    files = TaskFiles(statedir)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([sys.executable, "-m", "taskmasterd.tasks.runner", statedir,
                             str(theirs.fileno())], pass_fds=[theirs.fileno()], cwd=ROOT)
    theirs.close()
    ours.settimeout(TIMEOUT)
    try:
        status = TaskStatus(id=new_id(files.taken),
                            spec=parse_task({"command": "sleep", "args": ["30"], "timeout": 0}),
                            state=TaskState.QUEUED, seq=1, submitted=time.time())
        files.create_task(status)
        good = runproto.encode("run", status=runproto.status_text(status), stopsignal=15, stoptime=1.0)
        for bad in (b"garbage", runproto.encode("run", status="{}", stopsignal=15, stoptime=1.0),
                    runproto.encode("welcome", pid=1, tasks=0), good.replace(b'"v":1', b'"v":9')):
            ours.send(bad)
            msg, _fds = runproto.receive(ours, runproto.TO_DAEMON)
            assert msg["op"] == "refused" and "message refused" in str(msg["message"])
        ours.send(good)
        ours.send(good)  # twice: the second is refused, the task runs once
        ours.send(runproto.encode("cancel", id=status.id, reason="enough"))
        got = [runproto.receive(ours, runproto.TO_DAEMON)[0] for _ in range(3)]
        # The refusal may come before `running`: a runner reading several
        # run messages at once records their `running` once all are spawned.
        refused = [m for m in got if m["op"] == "refused"]
        statuses = [runproto.status_of(m) for m in got if m["op"] == "status"]
        assert len(refused) == 1 and "already held" in str(refused[0]["message"])
        assert [s.state for s in statuses] == [TaskState.RUNNING, TaskState.CANCELLED]
        end = statuses[1]
        assert (end.state, end.reason) == (TaskState.CANCELLED, "enough")
    finally:
        ours.close()  # detached and idle: it exits
    assert proc.wait(timeout=TIMEOUT) == 0


def test_a_task_too_large_for_a_message_fails_with_the_reason(dirs: tuple[str, str]) -> None:
    async def main() -> None:
        d = Daemon(*dirs)
        big = d.submit("echo", *["x" * 60000] * 4)
        end = await d.end_of(big.id)
        assert end.state is TaskState.FAILED and end.started == 0.0
        assert end.reason.startswith("too large for the task runner: its status is 24")
        assert task_json(d.on_disk(big.id)) == task_json(end)  # (times in µs on disk)
        assert d.client.pid == 0  # nothing was started for it
        await d.client.close()

    run(main())


DAEMON = """
import asyncio, signal, sys, time
from taskmasterd.tasks.records import TaskState, TaskStatus
from taskmasterd.tasks.runnerclient import RunnerClient
from taskmasterd.tasks.spec import parse_task
from taskmasterd.tasks.taskfiles import TaskFiles

async def main():
    statedir, sock, fifo = sys.argv[1:]
    running = asyncio.Event()
    client = RunnerClient(statedir, sock, on_status=lambda s: running.set(), on_gone=print)
    status = TaskStatus(id="0badcafe", spec=parse_task({"command": "sh", "timeout": 0,
                        "args": ["-c", f"read x < {fifo}; exit 7"]}), state=TaskState.QUEUED,
                        seq=1, submitted=time.time())
    TaskFiles(statedir).create_task(status)
    client.run(status, signal.SIGTERM, 10.0)
    await running.wait()
    print(client.pid, flush=True)
    await asyncio.Event().wait()  # until SIGKILL

asyncio.run(main())
"""


def test_a_sigkilled_daemons_runner_is_taken_back_by_the_next(dirs: tuple[str, str]) -> None:
    statedir, runtime = dirs
    fifo = os.path.join(os.path.dirname(statedir), "fifo")
    os.mkfifo(fifo)
    sock = runner_socket(runtime, statedir, "/etc/tm.yaml")
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, statedir, sock, fifo], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    runner_pid = int(daemon.stdout.readline())
    daemon.kill()
    daemon.wait(timeout=TIMEOUT)
    daemon.stdout.close()

    async def main() -> None:
        d = Daemon(statedir, runtime)
        held = d.client.attach_surviving()
        assert held is not None and [(s.id, s.state) for s in held] == [("0badcafe", TaskState.RUNNING)]
        assert d.client.pid == runner_pid
        await asyncio.to_thread(Path(fifo).write_text, "go\n")
        end = await d.end_of("0badcafe")
        assert (end.state, end.exit_code) == (TaskState.FAILED, 7)  # its real exit status
        await d.recorded(end)
        await d.client.close()
        await until("the runner's exit", lambda: gone(runner_pid))
        assert d.gone == []

    run(main())


def test_a_runner_killed_while_attached_is_reported_gone(dirs: tuple[str, str]) -> None:
    async def main() -> None:
        d = Daemon(*dirs)
        task = d.submit("sleep", "30")
        running = await d.running(task.id)
        pid = d.client.pid
        os.kill(pid, signal.SIGKILL)
        await until("on_gone", lambda: bool(d.gone))
        assert d.gone == [(pid, "killed by SIGKILL")]
        assert d.client.pid == 0
        os.killpg(running.pid, signal.SIGKILL)  # the task outlived it (its own session)
        after = d.submit("true")  # a new runner takes the next task
        assert (await d.end_of(after.id)).state is TaskState.SUCCEEDED
        assert d.client.pid not in (0, pid)
        await d.client.close()

    run(main())


def test_sigterm_cancels_the_tasks_records_them_and_exits(dirs: tuple[str, str]) -> None:
    async def main() -> None:
        d = Daemon(*dirs)
        tasks = [d.submit("sleep", "30") for _ in range(3)]
        for t in tasks:
            await d.running(t.id)
        pid = d.client.pid
        os.kill(pid, signal.SIGINT)  # ignored
        os.kill(pid, signal.SIGHUP)  # ignored
        os.kill(pid, signal.SIGTERM)
        for t in tasks:
            end = await d.end_of(t.id)
            assert end.state is TaskState.CANCELLED
            assert end.reason == "the task runner was stopped (SIGTERM)"
            assert same(d.on_disk(t.id), end)  # written before it exited
        await until("the runner's exit", lambda: gone(pid))
        assert d.gone == [(pid, "exited with status 0")]
        await d.client.close()

    run(main())


def test_200_true_tasks_in_16_lanes_are_all_recorded(dirs: tuple[str, str]) -> None:
    async def main() -> None:
        d = Daemon(*dirs)
        waiting = [d.submit("true", run=False) for _ in range(200)]
        running = 0
        peak = 0

        def next_one() -> None:
            nonlocal running, peak
            status = waiting.pop(0)
            running += 1
            peak = max(peak, running)
            d.client.run(status, signal.SIGTERM, 10.0)

        def on_status(status: TaskStatus) -> None:
            nonlocal running
            Daemon.on_status(d, status)
            if status.state.final:
                running -= 1
                if waiting:
                    next_one()

        d.client.on_status = on_status
        for _ in range(16):
            next_one()
        await until("200 ends", lambda: len(d.ended) == 200, timeout=120)
        assert peak == 16
        assert all(s.state is TaskState.SUCCEEDED for s in d.ended)
        pid = d.client.pid
        await d.client.close()
        await until("the runner's exit", lambda: gone(pid), timeout=60)
        statuses, bad = d.files.scan_tasks()
        assert bad == [] and len(statuses) == 200
        assert all(s.state is TaskState.SUCCEEDED and s.exit_code == 0 for s in statuses)

    run(main())


def test_a_running_task_beats_every_30_s_and_only_while_it_runs(tmp_path: Path) -> None:
    """On a virtual clock (tests/virtual_clock.py): 95 s pass at once."""
    records: list[tuple[float, TaskStatus, bool]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        status = TaskStatus(id="cli", spec=parse_task({"command": "sleep", "args": ["60"], "timeout": 0}),
                            state=TaskState.QUEUED, seq=0, submitted=time.time())
        finished = asyncio.Event()
        ex = Execution(status, TaskDir(str(tmp_path)), stopsignal=signal.SIGTERM, stoptime=10.0,
                       runner_pid=os.getpid(), finished=lambda _ex: finished.set(),
                       record=lambda s, news: records.append((loop.time(), s, news)))
        ex.start()
        await asyncio.sleep(95)  # sleep-ok: virtual clock: 95 s of heartbeats pass at once
        assert ex.stop(CANCEL, "enough")
        await finished.wait()
        # (the clock may jump while the real process dies: beats go on until then)
        ended = len(records)
        await asyncio.sleep(100)  # sleep-ok: virtual clock: proves no timer is left
        assert len(records) == ended  # no timer once it ended

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        runner.run(main())
    beats = [t for t, s, news in records if not news]
    assert beats[:3] == [HEARTBEAT, 2 * HEARTBEAT, 3 * HEARTBEAT]
    assert all(b - a == HEARTBEAT for a, b in itertools.pairwise(beats))
    assert all(s.state is TaskState.RUNNING for _t, s, news in records if not news)
    assert [s.state for _t, s, news in records if news] == [TaskState.RUNNING, TaskState.CANCELLED]
    assert records[-1][1].heartbeat == records[-2][1].heartbeat  # the end keeps the last beat


# ---- taskmasterd --run-task ------------------------------------------------------------


def run_task(cwd: Path, task: object, *, name: str = "task.json") -> subprocess.CompletedProcess[str]:
    path = cwd / name
    if isinstance(task, bytes):
        path.write_bytes(task)
    else:
        path.write_text(task if isinstance(task, str) else json.dumps(task))
    return subprocess.run([sys.executable, "-m", "taskmasterd", "--run-task", name], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def cli_status(cwd: Path) -> dict[str, object]:
    return json.loads((cwd / "status.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(("task", "code", "state", "line"), [
    ({"command": "true"}, 0, "succeeded", "task cli (true) succeeded; exit 0"),
    ({"command": "sh", "args": ["-c", "echo out; echo err >&2; exit 3"]}, 3, "failed",
     "task cli (sh) failed: exited with status 3; exit 3"),
    ({"command": "sh", "args": ["-c", "kill -9 $$"]}, 137, "failed", "killed by SIGKILL; exit 137"),
    ({"command": "no-such-command-here"}, 127, "failed",
     "could not be started: ENOENT (spawn no-such-command-here): No such file or directory; exit 127"),
    ({"command": "./notexec"}, 126, "failed", "EACCES (spawn ./notexec): Permission denied; exit 126"),
    ({"command": "sleep", "args": ["30"], "timeout": 0.2}, 124, "failed",
     "timed out after 0.2 s (stopped with SIGTERM); exit 124"),
])
def test_run_task_exits_with_the_tasks_status(tmp_path: Path, task: dict[str, object], code: int,
                                              state: str, line: str) -> None:
    (tmp_path / "notexec").write_text("#!/bin/sh\n")  # mode 0644: no execute bit
    done = run_task(tmp_path, task)
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    assert line in done.stderr and len(done.stderr.splitlines()) == 1
    status = cli_status(tmp_path)
    assert (status["id"], status["state"]) == ("cli", state)
    assert status["runner_pid"] is not None
    if task.get("args") == ["-c", "echo out; echo err >&2; exit 3"]:
        assert os.stat(tmp_path / "stdout").st_mode & 0o777 == 0o600
        assert os.stat(tmp_path / "status.json").st_mode & 0o777 == 0o600
        assert (tmp_path / "stdout").read_text() == "out\n"
        assert (tmp_path / "stderr").read_text() == "err\n"
        assert status["exit_code"] == 3
        # Temporary files, not a spare (the daemon's runner swaps one in):
        # nothing else is left in the user's directory.
        assert sorted(os.listdir(tmp_path)) == ["notexec", "status.json", "stderr", "stdout",
                                                "task.json"]


@pytest.mark.parametrize(("text", "error"), [
    ("{", "task.json:1:2: not valid JSON"),
    ('{"comand": "x"}', "task.json: unknown key 'comand' (did you mean 'command'?)"),
    ('{"command": "x", "args": "y"}', "task.json.args: expected a list of strings, got a string"),
    # hostile files: refused in one line, never a traceback, nothing run
    (b"[" * 100_000 + b"]" * 100_000, "task.json: not valid JSON: maximum recursion depth"),
    (b'{"command": "true", "timeout": ' + b"9" * 5000 + b"}",
     "task.json: not valid JSON: Exceeds the limit (4300 digits)"),
    ('{"command": "true", "command": "rm"}', "task.json: key 'command' given twice in one object"),
    (b'{"command": "tr\xffue"}', "task.json: not valid JSON: 'utf-8' codec can't decode byte 0xff"),
    ('{"command": "true", "timeout": NaN}',
     "task.json.timeout: expected 0 (no limit) or a positive number of seconds, got nan"),
    ('{"command": "true", "timeout": 1e400}',
     "task.json.timeout: expected 0 (no limit) or a positive number of seconds, got inf"),
    ('{"command": "true"} {"command": "rm"}', "task.json:1:21: not valid JSON: Extra data"),
    ('{"command": "true\\u0000"}', "task.json.command: contains a NUL character"),
])
def test_run_task_refuses_a_bad_file_in_one_line(tmp_path: Path, text: str | bytes,
                                                  error: str) -> None:
    done = run_task(tmp_path, text)
    assert done.returncode == 2
    assert error in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "status.json").exists()
    missing = subprocess.run([sys.executable, "-m", "taskmasterd", "--run-task", "nope.json"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert missing.returncode == 2 and "cannot read nope.json: No such file" in missing.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_run_task_interrupted_records_a_cancel(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    (tmp_path / "task.json").write_text(json.dumps({"command": "sleep", "args": ["30"]}))
    proc = subprocess.Popen([sys.executable, "-m", "taskmasterd", "--run-task", "task.json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_until("the task running", lambda: (tmp_path / "status.json").exists()
                   and cli_status(tmp_path)["state"] == "running", timeout=TIMEOUT)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    status = cli_status(tmp_path)
    assert status["state"] == "cancelled" and status["signal"] == "SIGTERM"
    assert status["reason"] == f"cancelled by {sig.name} to taskmasterd --run-task"
    assert out == "" and f"exit {code}" in err


def test_run_task_a_second_signal_kills_at_once(tmp_path: Path) -> None:
    (tmp_path / "task.json").write_text(json.dumps(
        {"command": "sh", "args": ["-c", 'trap "echo term" TERM; echo ready; while :; do sleep 1; done']}))
    proc = subprocess.Popen([sys.executable, "-m", "taskmasterd", "--run-task", "task.json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_until("the task running", lambda: (tmp_path / "stdout").exists()
                   and (tmp_path / "stdout").read_text() == "ready\n", timeout=TIMEOUT)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)  # the task shrugs off the SIGTERM this sends it...
        wait_until("the task's TERM trap", lambda: "term" in (tmp_path / "stdout").read_text(),
                   timeout=TIMEOUT)
        proc.send_signal(signal.SIGINT)  # ...so the second Ctrl-C kills it
        _out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert time.monotonic() - started < 10.0  # not the 10 s stoptime
    assert proc.returncode == 130, err
    status = cli_status(tmp_path)
    assert (status["state"], status["signal"]) == ("cancelled", "SIGKILL")


def test_the_listening_socket_refuses_garbage_strangers_and_the_silent(
        dirs: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A process speaking garbage to the runner's socket, one of another uid
    (SO_PEERCRED, as the log writer's), one that says nothing, too many at
    once: each refused with why; the runner goes on and takes a daemon."""
    from taskmasterd.tasks import runner as runner_mod

    statedir, runtime = dirs
    os.makedirs(runtime, mode=0o700)
    path = os.path.join(runtime, "r.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    monkeypatch.setattr(runner_mod, "GREET_TIMEOUT", 0.3)

    def exchange(data: bytes | None) -> dict[str, object]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as c:
            c.settimeout(TIMEOUT)
            c.connect(path)
            if data is not None:
                c.send(data)
            msg, _fds = runproto.receive(c, runproto.TO_DAEMON)
            return msg

    async def main() -> None:
        r = runner_mod.Runner(statedir, None, listener)
        try:
            hello = runproto.encode("hello", pid=os.getpid())
            for bad, why in ((b"garbage", "not"), (b"\xff" * 200_001, ""),
                             (runproto.encode("cancel", id="3df2bb24", reason="x"), "cancel"),
                             (None, "no hello within 0.3 s")):
                msg = await asyncio.to_thread(exchange, bad)
                assert msg["op"] == "refused", msg
                assert why in str(msg["message"]), msg
            from taskmasterd import logattach

            real = logattach.peer_uid_pid
            monkeypatch.setattr(logattach, "peer_uid_pid", lambda s: (1234, real(s)[1]))
            msg = await asyncio.to_thread(exchange, hello)
            assert msg == {"op": "refused", "v": 1,
                           "message": f"uid 1234 may not attach to a task runner of uid "
                                      f"{os.geteuid()}"}
            monkeypatch.setattr(logattach, "peer_uid_pid", real)
            silent = [socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                      for _ in range(runner_mod.MAX_PENDING + 1)]
            for s in silent:
                s.connect(path)
            await until("the silent ones to be pending",
                        lambda: len(r.pending) == runner_mod.MAX_PENDING)
            extra = silent[-1]
            extra.settimeout(TIMEOUT)
            msg, _fds = await asyncio.to_thread(runproto.receive, extra, runproto.TO_DAEMON)
            assert msg["message"] == "too many connections waiting"
            for s in silent:
                s.close()
            await until("the pending ones to expire", lambda: not r.pending)
            assert r.ctl is None
            msg = await asyncio.to_thread(exchange, hello)  # a daemon of ours: welcome
            assert msg["op"] == "welcome" and msg["tasks"] == 0
        finally:
            r.unlink()
            r.writer.close()

    run(main())


class HeldSpawner:
    """A spawner (taskmasterd/tasks/spawner.py) that starts its jobs only when
    told (`release`), in a thread: a task caught between its hand-over to a
    spawner thread and its start."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], int], Callable[[int | BaseException], None]]] = []

    def submit(self, start: Callable[[], int], done: Callable[[int | BaseException], None]) -> None:
        self.jobs.append((start, done))

    def release(self) -> None:
        loop = asyncio.get_running_loop()

        def run_all() -> None:
            for start, done in self.jobs:
                result: int | BaseException
                try:
                    result = start()
                except Exception as exc:  # handed to the waiter
                    result = exc
                loop.call_soon_threadsafe(done, result)
        threading.Thread(target=run_all).start()


@pytest.mark.skipif(not fastspawn.AVAILABLE, reason="glibc's posix_spawn is needed")
def test_a_task_stopped_while_it_is_being_started_is_stopped_once_started(tmp_path: Path) -> None:
    """fastspawn starts tasks in spawner threads: a cancel (or a timeout, a
    SIGTERM to the runner) that comes meanwhile is carried out as soon as
    the process exists, never lost."""
    records: list[TaskStatus] = []

    async def main() -> None:
        status = TaskStatus(id="cli", spec=parse_task({"command": "sleep", "args": ["60"], "timeout": 0}),
                            state=TaskState.QUEUED, seq=0, submitted=time.time())
        finished = asyncio.Event()
        ex = Execution(status, TaskDir(str(tmp_path)), stopsignal=signal.SIGTERM, stoptime=10.0,
                       runner_pid=os.getpid(), finished=lambda _ex: finished.set(),
                       record=lambda s, news: records.append(s))
        spawner = HeldSpawner()
        assert ex.spawn_in(spawner, fastspawn.encode_environ(dict(os.environ)))  # type: ignore[arg-type]
        assert ex.child is None and records == []  # handed over, not started
        assert ex.stop(CANCEL, "changed my mind")
        assert not ex.stop(CANCEL, "twice")  # one stop under way
        spawner.release()
        await asyncio.wait_for(finished.wait(), 30)
        assert [s.state for s in records] == [TaskState.RUNNING, TaskState.CANCELLED]
        assert records[0].pid > 0 and records[0].start_ticks > 0
        end = records[-1]
        assert (end.reason, end.signal) == ("changed my mind", signal.SIGTERM)

    asyncio.run(main())


@pytest.mark.skipif(not fastspawn.AVAILABLE, reason="glibc's posix_spawn is needed")
def test_an_exec_error_in_a_spawner_thread_fails_the_task_in_taskds_style(tmp_path: Path) -> None:
    records: list[TaskStatus] = []

    async def main() -> None:
        status = TaskStatus(id="cli", spec=parse_task({"command": "/nonexistent/tool", "timeout": 0}),
                            state=TaskState.QUEUED, seq=0, submitted=time.time())
        finished = asyncio.Event()
        ex = Execution(status, TaskDir(str(tmp_path)), stopsignal=signal.SIGTERM, stoptime=1.0,
                       runner_pid=os.getpid(), finished=lambda _ex: finished.set(),
                       record=lambda s, news: records.append(s))
        spawner = Spawner(1)
        try:
            assert ex.spawn_in(spawner, fastspawn.encode_environ(dict(os.environ)))
            await asyncio.wait_for(finished.wait(), 30)
        finally:
            spawner.close()
        (end,) = records
        assert end.state is TaskState.FAILED and end.spawn_error is not None
        assert (end.spawn_error.code, end.spawn_error.syscall) == ("ENOENT", "spawn /nonexistent/tool")

    asyncio.run(main())


# ---- batches (runproto.py): several messages per datagram, only with a peer that reads them


def _datagrams_until_ended(sock: socket.socket, ids: set[str]) -> list[list[dict[str, object]]]:
    """The runner's datagrams, each as its messages, until every task of `ids` ended."""
    ended: set[str] = set()
    datagrams = []
    while ended != ids:
        messages = runproto.receive_batch(sock, runproto.TO_DAEMON)
        assert not [m for m in messages if isinstance(m, runproto.ProtocolError)], messages
        got = [m for m in messages if isinstance(m, dict)]
        datagrams.append(got)
        for m in got:
            if m["op"] == "status" and runproto.status_of(m).state.final:
                ended.add(runproto.status_of(m).id)
    return datagrams


@pytest.mark.parametrize("daemon_batches", [True, False])
def test_a_runner_batches_only_for_a_daemon_that_said_it_reads_batches(
        dirs: tuple[str, str], daemon_batches: bool) -> None:
    """A daemon that reads batches starts its runner with BATCHES_ENV=1: the
    runner says it reads them too, and sends a loop turn's statuses as one
    datagram. A daemon of an older version sets nothing: one message per
    datagram, as it reads them. The tasks never see the variable."""
    statedir = dirs[0]
    files = TaskFiles(statedir)
    env = {k: v for k, v in os.environ.items() if k != runproto.BATCHES_ENV}
    if daemon_batches:
        env[runproto.BATCHES_ENV] = "1"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([sys.executable, "-m", "taskmasterd.tasks.runner", statedir,
                             str(theirs.fileno())], pass_fds=[theirs.fileno()], cwd=ROOT, env=env)
    theirs.close()
    ours.settimeout(TIMEOUT)
    try:
        statuses = []
        for i in range(16):
            s = TaskStatus(id=new_id(files.taken), state=TaskState.QUEUED, seq=i + 1,
                           spec=parse_task({"command": "sh", "timeout": 0, "args": [
                               "-c", f"echo ${{{runproto.BATCHES_ENV}-unset}}"]}),
                           submitted=time.time())
            files.create_task(s)
            statuses.append(s)
        runs = [runproto.encode("run", status=runproto.status_text(s), stopsignal=15, stoptime=1.0)
                for s in statuses]
        if daemon_batches:
            ours.send(b"\n".join(runs))  # a burst as the daemon sends it: one datagram
        else:
            for data in runs:
                ours.send(data)
        datagrams = _datagrams_until_ended(ours, {s.id for s in statuses})
        ops = [m["op"] for d in datagrams for m in d]
        assert ops.count("status") == 32 and set(ops) <= {"status", "batches"}
        if daemon_batches:
            assert datagrams[0] == [{"v": 1, "op": "batches"}]  # said first
            assert max(len(d) for d in datagrams) >= 2  # the 8 `running` of a spawner's share
        else:
            assert "batches" not in ops and all(len(d) == 1 for d in datagrams)
        for s in statuses:
            assert (Path(files.task_dir(s.id).path) / "stdout").read_text() == "unset\n"
    finally:
        ours.close()
    assert proc.wait(timeout=TIMEOUT) == 0


def test_a_daemon_attaching_says_whether_it_reads_batches(dirs: tuple[str, str]) -> None:
    """hello {batches: true} from a daemon: the runner batches for it, and
    says in its welcome that it reads batches; a hello without (an older
    daemon): one message per datagram."""
    from taskmasterd.tasks import runner as runner_mod

    statedir, runtime = dirs
    os.makedirs(runtime, mode=0o700)
    path = os.path.join(runtime, "r.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)

    async def main() -> None:
        r = runner_mod.Runner(statedir, None, listener)
        try:
            for batches in (False, True):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                c.settimeout(TIMEOUT)
                c.connect(path)
                fields = {"batches": True} if batches else {}
                c.send(runproto.encode("hello", pid=os.getpid(), **fields))
                got: list[dict[str, object] | runproto.ProtocolError] = []
                while not any(isinstance(m, dict) and m["op"] == "end" for m in got):
                    got += await asyncio.to_thread(runproto.receive_batch, c, runproto.TO_DAEMON)
                assert [m["op"] for m in got if isinstance(m, dict)] == ["welcome", "end"]
                assert got[0]["batches"] is True  # type: ignore[index]
                assert r.peer_batches is batches
                c.close()
                await until("the runner to see the daemon leave", lambda: r.ctl is None)
        finally:
            r.unlink()
            r.writer.close()

    run(main())


def test_what_follows_the_end_of_a_welcome_in_its_datagram_is_not_lost(dirs: tuple[str, str]) -> None:
    """A runner that batches may send a task's end in the datagram that
    ends its welcome: the daemon takes the held tasks, then that end."""
    statedir, runtime = dirs
    os.makedirs(runtime, mode=0o700)
    files = TaskFiles(statedir)
    running = TaskStatus(id=new_id(files.taken), spec=parse_task({"command": "true", "timeout": 0}),
                         state=TaskState.RUNNING, seq=1, submitted=time.time(), started=time.time(),
                         pid=os.getpid())
    ended = running.replace(state=TaskState.SUCCEEDED, exit_code=0, ended=time.time())

    async def main() -> None:
        d = Daemon(statedir, runtime)
        assert d.client.socket_path is not None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(d.client.socket_path)
        listener.listen(1)

        def fake_runner() -> None:
            conn, _ = listener.accept()
            with conn:
                hello, _fds = runproto.receive(conn, {"hello"})
                assert hello["batches"] is True
                conn.send(b"\n".join([
                    runproto.encode("welcome", pid=os.getpid(), tasks=1, batches=True),
                    runproto.encode("held", status=runproto.status_text(running)),
                    runproto.encode("end"),
                    runproto.encode("status", status=runproto.status_text(ended))]))
                conn.recv(1)  # until the daemon hangs up

        thread = threading.Thread(target=fake_runner)
        thread.start()
        try:
            held = d.client.attach_surviving()  # blocking, on the loop, as the daemon calls it
            assert len(held) == 1 and same(held[0], running) and d.client.peer_batches
            assert d.ended == []  # not before its caller has the held ones
            await until("the end that followed", lambda: len(d.ended) == 1)
            assert same(d.ended[0], ended)
        finally:
            await d.client.close()
            await asyncio.to_thread(thread.join, TIMEOUT)
            listener.close()

    run(main())
