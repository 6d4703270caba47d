"""One-shot tasks and activities end to end (issue 14's own tests): the real
daemon, the real task runner, real processes, a private bus.

- a 3-task activity survives a SIGKILL of the daemon during task 2, which
  ends while no daemon runs: its real exit status is recorded, task 3 runs,
  the activity succeeds, and the files agree with `taskctl tasks --json`;
- 500 tasks with max_parallel 8: never more than 8 running, all succeed;
- a task whose command does not exist fails with {code: ENOENT, syscall},
  fails its activity, and the alert mail carries what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import yaml
from dbus_next import Variant

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_alerts import SmtpSink, mail_text, smtp_sink  # noqa: F401 (fixture)
from tests.integration.test_dbus_service import client
from tests.integration.test_taskctl import taskctl

Start = Any


def with_tasks(path: Path, **settings: Any) -> Path:
    doc = yaml.safe_load(path.read_text())
    doc["tasks"] = settings
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def task(command: str, *args: str, **keys: Any) -> dict[str, Variant]:
    out = {"command": Variant("s", command), "args": Variant("as", list(args))}
    for key, value in keys.items():
        out[key] = Variant("s", value)
    return out


def status_file(workdir: Path, id: str) -> dict[str, Any]:
    return json.loads((workdir / "state" / "tasks" / id / "status.json").read_text())


def activity_file(workdir: Path, id: str) -> dict[str, Any]:
    return json.loads((workdir / "state" / "activities" / id / "status.json").read_text())


def sigkill(d: Daemon) -> None:
    d.proc.kill()
    d.proc.wait()
    d.close()


def submit_task(address: str, command: str, *args: str) -> str:
    async def submit() -> str:
        async with client(address) as c:
            [id] = await c.ok("SubmitTask", "a{sv}", [task(command, *args)])
            return str(id)
    return asyncio.run(submit())


async def submit_activity(address: str, name: str, tasks: list[dict[str, Variant]]) -> str:
    async with client(address) as c:
        [id] = await c.ok("SubmitActivity", "saa{sv}", [name, tasks])
        return str(id)


def test_activity_survives_a_sigkilled_daemon(write_config: WriteConfig, daemons: Start,
                                              workdir: Path, bus_address: str) -> None:
    gate = workdir / "gate"
    os.mkfifo(gate)
    marks = workdir / "marks"
    cfg = with_tasks(write_config({}), max_parallel=2)
    d = daemons(cfg)
    d.wait_for(event("DAEMON_START"))
    activity = asyncio.run(submit_activity(bus_address, "deploy", [
        task("sh", "-c", f"echo one >> {marks}"),
        # Task 2 blocks on the fifo until the test opens it while no daemon runs.
        task("sh", "-c", f"read x < {gate}; echo two >> {marks}; exit 0"),
        task("sh", "-c", f"echo three >> {marks}"),
    ]))
    ids = activity_file(workdir, activity)["tasks"]
    wait_until("task 2 runs", lambda: status_file(workdir, ids[1])["state"] == "running")
    assert status_file(workdir, ids[0])["state"] == "succeeded"
    sigkill(d)

    # Task 2 ends with the daemon dead: its runner records the real exit.
    with open(gate, "w") as f:
        f.write("go\n")
    wait_until("task 2 recorded as ended",
               lambda: status_file(workdir, ids[1])["state"] != "running", timeout=15)
    t2 = status_file(workdir, ids[1])
    assert (t2["state"], t2["exit_code"], t2["signal"]) == ("succeeded", 0, None)
    assert status_file(workdir, ids[2])["state"] == "queued"  # nothing moved it on meanwhile

    d2 = daemons(cfg)
    d2.wait_for(event("ACTIVITY_SUCCEEDED"), timeout=20)
    assert marks.read_text().split() == ["one", "two", "three"]
    # The files are written off the loop, just after the events.
    wait_until("the activity's file", lambda: activity_file(workdir, activity)["state"] == "succeeded")
    r = taskctl(bus_address, "tasks", "--json")
    assert r.returncode == 0, r.stderr
    listed = {o["id"]: o for o in json.loads(r.stdout)}
    for id in ids:
        on_disk = status_file(workdir, id)
        assert listed[id]["state"] == on_disk["state"] == "succeeded"
        assert listed[id]["exit_code"] == on_disk["exit_code"] == 0


def test_a_task_ending_while_the_daemon_is_down_keeps_its_real_status(
        write_config: WriteConfig, daemons: Start, workdir: Path, bus_address: str) -> None:
    gate = workdir / "gate"
    os.mkfifo(gate)
    d = daemons(write_config({}))
    d.wait_for(event("DAEMON_START"))

    id = submit_task(bus_address, "sh", "-c", f"read x < {gate}; exit 7")
    wait_until("running", lambda: status_file(workdir, id)["state"] == "running")
    sigkill(d)
    with open(gate, "w") as f:
        f.write("go\n")
    wait_until("recorded", lambda: status_file(workdir, id)["state"] == "failed", timeout=15)
    d2 = daemons(write_config({}))
    d2.wait_for(event("TASK_FAILED", id), timeout=20)
    r = taskctl(bus_address, "tasks", "--json")
    [listed] = [o for o in json.loads(r.stdout) if o["id"] == id]
    assert listed["exit_code"] == 7 and listed["state"] == "failed"


async def _run_500(address: str, marks: Path) -> tuple[int, list[Any]]:
    async with client(address) as c:
        script = f"echo + >> {marks}; sleep 0.02; echo - >> {marks}"
        # Pipelined, 50 at a time (dbus-next's own client drops its
        # connection when the socket's buffer is full: BlockingIOError).
        ids: set[str] = set()
        for _ in range(10):
            replies = await asyncio.gather(*(c.ok("SubmitTask", "a{sv}", [task("sh", "-c", script)])
                                             for _ in range(50)))
            ids |= {str(r[0]) for r in replies}
        ended: set[str] = set()
        running: set[str] = set()
        most = 0
        async with asyncio.timeout(120):
            while len(ended) < len(ids):
                msg = await c.signals.get()
                if msg.member != "TaskStateChanged" or msg.body[0] not in ids:
                    continue
                id, new = msg.body[0], msg.body[4]
                if new == "running":
                    running.add(id)
                    most = max(most, len(running))
                elif new in ("succeeded", "failed", "cancelled", "lost"):
                    running.discard(id)
                    ended.add(id)
        rows = (await c.ok("ListTasks"))[0]
        return most, [r for r in rows if r[0] in ids]


def test_500_tasks_never_more_than_max_parallel(write_config: WriteConfig, daemons: Start,
                                                workdir: Path, bus_address: str) -> None:
    marks = workdir / "marks"
    d = daemons(with_tasks(write_config({}), max_parallel=8))
    d.wait_for(event("DAEMON_START"))
    most, rows = asyncio.run(_run_500(bus_address, marks))
    assert len(rows) == 500
    assert {r[2] for r in rows} == {"succeeded"}
    assert 1 < most <= 8  # as the daemon reports it
    # ... and as the tasks themselves saw it: + on start, - on end, in order.
    level = peak = 0
    for line in marks.read_text().split():
        level += 1 if line == "+" else -1
        peak = max(peak, level)
    assert level == 0 and peak <= 8


def test_enoent_fails_the_task_and_its_activity_and_mails(
        write_config: WriteConfig, daemons: Start, workdir: Path, bus_address: str,
        smtp_sink: SmtpSink) -> None:  # noqa: F811 (the fixture)
    cfg = write_config({})
    doc = yaml.safe_load(cfg.read_text())
    doc["alerts"] = [{"url": smtp_sink.url(), "events": ["TASK_FAILED", "ACTIVITY_FAILED"],
                      "rate": 0}]
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    d = daemons(cfg)
    d.wait_for(event("DAEMON_START"))
    activity = asyncio.run(submit_activity(bus_address, "bootstrap", [
        task("sh", "-c", "echo 'preparing the host' >&2"),
        task("sbin/ssh-bootstrap", "--now"),
        task("true"),
    ]))
    ids = activity_file(workdir, activity)["tasks"]
    d.wait_for(event("ACTIVITY_FAILED"), timeout=20)
    failed = status_file(workdir, ids[1])
    assert failed["state"] == "failed"
    assert failed["spawn_error"]["code"] == "ENOENT"
    assert failed["spawn_error"]["syscall"] == "spawn sbin/ssh-bootstrap"
    # The daemon writes its own files off the loop, just after its events.
    wait_until("task 3 cancelled on disk", lambda: status_file(workdir, ids[2])["state"] == "cancelled")
    wait_until("the activity failed on disk", lambda: activity_file(workdir, activity)["state"] == "failed")
    act = activity_file(workdir, activity)
    assert (act["state"], act["failed_task"]) == ("failed", ids[1])
    texts = [mail_text(m) for m in smtp_sink.wait(2, timeout=30)]
    assert any("ENOENT" in t and "bootstrap" in t for t in texts), texts

    # A task that fails with something on stderr: the mail carries its tail.
    id = submit_task(bus_address, "sh", "-c", "echo 'disk full' >&2; exit 2")
    d.wait_for(event("TASK_FAILED", id), timeout=20)
    wait_until("the mail about it", lambda: any("disk full" in mail_text(m)
                                                for m in smtp_sink.items), timeout=30)


def test_a_full_queue_refuses_with_queue_full_and_queues_nothing(
        write_config: WriteConfig, daemons: Start, workdir: Path, bus_address: str) -> None:
    gate = workdir / "gate"
    os.mkfifo(gate)
    d = daemons(with_tasks(write_config({}), max_parallel=1, max_queued=2))
    d.wait_for(event("DAEMON_START"))
    first = submit_task(bus_address, "sh", "-c", f"read x < {gate}")
    submit_task(bus_address, "true")  # queued behind it: 2 not ended

    async def refused() -> tuple[str, str]:
        async with client(bus_address) as c:
            return await c.error("SubmitActivity", "saa{sv}", ["more", [task("true")]])
    name, text = asyncio.run(refused())
    assert name == "org.taskmaster.Taskmaster1.Error.QueueFull", (name, text)
    assert "past tasks.max_queued (2; 2 queued or running): nothing queued" in text
    r = taskctl(bus_address, "run", "--", "true")
    assert r.returncode != 0 and "task queue full" in r.stderr, (r.returncode, r.stderr)
    assert len(os.listdir(workdir / "state" / "tasks")) == 2
    assert not (workdir / "state" / "activities").exists() or \
        os.listdir(workdir / "state" / "activities") == []
    with open(gate, "w") as f:  # an end makes room
        f.write("go\n")
    d.wait_for(event("TASK_SUCCEEDED", first))
    assert taskctl(bus_address, "run", "--", "true").returncode == 0
    assert d.terminate() == 0
