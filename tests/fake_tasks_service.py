"""A stand-in for taskmasterd's task API (D-Bus API 1.2, the design of issue
14), for taskctl's tests while the real daemon side is built elsewhere.

It exports exactly the design's members with their signatures, on the name
org.taskmaster.Taskmaster1 (dbus-next, like the daemon):
- Manager: SubmitTask(a{sv}) -> s, SubmitActivity(s, aa{sv}) -> s,
  CancelTask(s), CancelActivity(s), ListTasks() -> a(sssssuisssttt),
  ListActivities() -> a(sssasssttt) (the design's nine fields: id, name,
  state, task ids, failed_task, reason, 3 times; its text says
  a(sssassttt), one s short of them); signals TaskStateChanged(sssssis) and
  ActivityStateChanged(ssssss);
- /org/taskmaster/Taskmaster1/task/<id> (org.taskmaster.Taskmaster1.Task):
  the design's properties, Cancel(), OpenOutput(s) -> h;
- /org/taskmaster/Taskmaster1/activity/<id> (…Activity): its properties, Cancel().

Tasks really run (asyncio subprocesses in their own session, stdout and
stderr in files of a task dir), so exit codes, signals and spawn errors
are real; there is no queue limit and nothing survives the process. Once
the real daemon is merged this file can go if its tests cover the same.

    python -m tests.fake_tasks_service ADDRESS DIRECTORY

prints "ready" once the name is owned; SIGTERM ends it (and its tasks).
"""
# ruff: noqa: F821, F722
# (dbus-next reads the D-Bus signatures from the annotations: no
# `from __future__ import annotations`, and members named as on the bus)

import asyncio
import errno
import logging
import os
import secrets
import signal
import sys
import time
from typing import Any

from dbus_next import BusType, DBusError, Message, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.service import PropertyAccess, ServiceInterface, dbus_property, method
from dbus_next.service import signal as dbus_signal

from taskmasterd.errors import TaskInvalid
from taskmasterd.tasks.spec import TaskSpec, parse_activity_tasks, parse_task

BUS_NAME = "org.taskmaster.Taskmaster1"
ROOT = "/org/taskmaster/Taskmaster1"
ERROR = "org.taskmaster.Taskmaster1.Error."
FINAL = ("succeeded", "failed", "cancelled", "lost")
EXPECTED = {"command": 's', "args": "as", "env": "a{ss}", "workingdir": 's',
            "timeout": "d", "user": 's', "activity": 's', "name": 's'}


def _us(t: float) -> int:
    return int(t * 1_000_000) if t else 0


def unwrap_task(obj: dict[str, Variant], where: str) -> TaskSpec:
    plain: dict[str, Any] = {}
    for key, var in obj.items():
        want = EXPECTED.get(key)
        if want is None:
            plain[key] = var.value  # parse_task names the unknown key
            continue
        ok = var.signature == want or (key == "timeout" and var.signature in "uitx")
        if not ok:
            raise TaskInvalid(f"{where}.{key}: expected the D-Bus type {want}, got "
                              f"{var.signature}")
        plain[key] = var.value
    return parse_task(plain, where)


class Task:
    def __init__(self, tid: str, spec: TaskSpec, directory: str, activity: str = "") -> None:
        self.id, self.spec, self.dir, self.activity = tid, spec, directory, activity
        self.state = "queued"
        self.pid = 0
        self.exit_code = -1
        self.signal = ""
        self.spawn_error = ""
        self.reason = ""
        self.submitted, self.started, self.ended = time.time(), 0.0, 0.0
        self.proc: asyncio.subprocess.Process | None = None
        self.cancel_reason = ""
        self.timed_out = False

    def row(self) -> list[Any]:
        return [self.id, self.spec.label, self.state, self.activity, self.spec.command,
                self.pid, self.exit_code, self.signal, self.spawn_error, self.reason,
                _us(self.submitted), _us(self.started), _us(self.ended)]


class Activity:
    def __init__(self, aid: str, name: str, tasks: list[str]) -> None:
        self.id, self.name, self.tasks = aid, name, tasks
        self.state = "queued"
        self.failed_task = ""
        self.reason = ""
        self.submitted, self.started, self.ended = time.time(), 0.0, 0.0

    def row(self) -> list[Any]:
        return [self.id, self.name, self.state, list(self.tasks), self.failed_task, self.reason,
                _us(self.submitted), _us(self.started), _us(self.ended)]


class TaskObject(ServiceInterface):
    def __init__(self, svc: 'Service', task: Task) -> None:
        super().__init__("org.taskmaster.Taskmaster1.Task")
        self.svc, self.task = svc, task

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> 's':
        return self.task.id

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> 's':
        return self.task.spec.label

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> 's':
        return self.task.state

    @dbus_property(access=PropertyAccess.READ)
    def Activity(self) -> 's':
        return self.task.activity

    @dbus_property(access=PropertyAccess.READ)
    def Command(self) -> 's':
        return self.task.spec.command

    @dbus_property(access=PropertyAccess.READ)
    def Args(self) -> 'as':
        return list(self.task.spec.args)

    @dbus_property(access=PropertyAccess.READ)
    def WorkingDirectory(self) -> 's':
        return self.task.spec.workingdir or ""

    @dbus_property(access=PropertyAccess.READ)
    def Pid(self) -> 'u':
        return self.task.pid

    @dbus_property(access=PropertyAccess.READ)
    def ExitCode(self) -> 'i':
        return self.task.exit_code

    @dbus_property(access=PropertyAccess.READ)
    def Signal(self) -> 's':
        return self.task.signal

    @dbus_property(access=PropertyAccess.READ)
    def SpawnError(self) -> 's':
        return self.task.spawn_error

    @dbus_property(access=PropertyAccess.READ)
    def Reason(self) -> 's':
        return self.task.reason

    @dbus_property(access=PropertyAccess.READ)
    def Timeout(self) -> 'd':
        return float(self.task.spec.timeout or 0.0)

    @dbus_property(access=PropertyAccess.READ)
    def SubmittedAt(self) -> 't':
        return _us(self.task.submitted)

    @dbus_property(access=PropertyAccess.READ)
    def StartedAt(self) -> 't':
        return _us(self.task.started)

    @dbus_property(access=PropertyAccess.READ)
    def EndedAt(self) -> 't':
        return _us(self.task.ended)

    @dbus_property(access=PropertyAccess.READ)
    def Directory(self) -> 's':
        return self.task.dir

    @method()
    def Cancel(self) -> None:
        self.svc.cancel(self.task.id, "cancelled over D-Bus")

    @method()
    def OpenOutput(self, stream: 's') -> 'h':
        if stream not in ("stdout", "stderr"):
            raise DBusError(ERROR + "BadName", f"no stream {stream!r}: stdout or stderr")
        return os.open(os.path.join(self.task.dir, stream), os.O_RDONLY | os.O_CLOEXEC)


class ActivityObject(ServiceInterface):
    def __init__(self, svc: 'Service', act: Activity) -> None:
        super().__init__("org.taskmaster.Taskmaster1.Activity")
        self.svc, self.act = svc, act

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> 's':
        return self.act.id

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> 's':
        return self.act.name

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> 's':
        return self.act.state

    @dbus_property(access=PropertyAccess.READ)
    def Tasks(self) -> 'as':
        return list(self.act.tasks)

    @dbus_property(access=PropertyAccess.READ)
    def FailedTask(self) -> 's':
        return self.act.failed_task

    @dbus_property(access=PropertyAccess.READ)
    def Reason(self) -> 's':
        return self.act.reason

    @dbus_property(access=PropertyAccess.READ)
    def SubmittedAt(self) -> 't':
        return _us(self.act.submitted)

    @dbus_property(access=PropertyAccess.READ)
    def StartedAt(self) -> 't':
        return _us(self.act.started)

    @dbus_property(access=PropertyAccess.READ)
    def EndedAt(self) -> 't':
        return _us(self.act.ended)

    @method()
    def Cancel(self) -> None:
        self.svc.cancel_activity(self.act.id, "cancelled over D-Bus")


class Manager(ServiceInterface):
    def __init__(self, svc: 'Service') -> None:
        super().__init__("org.taskmaster.Taskmaster1.Manager")
        self.svc = svc

    @method()
    def SubmitTask(self, task: 'a{sv}') -> 's':
        return self.svc.submit(self.svc.checked(lambda: [unwrap_task(task, "task")])[0])

    @method()
    def SubmitActivity(self, name: 's', tasks: 'aa{sv}') -> 's':
        specs = self.svc.checked(lambda: parse_activity_tasks(
            [unwrap_task(t, f"tasks[{i}]").to_json() for i, t in enumerate(tasks)], "tasks"))
        return self.svc.submit_activity(name, specs)

    @method()
    def CancelTask(self, id: 's') -> None:
        self.svc.cancel(id, "cancelled by taskctl cancel")

    @method()
    def CancelActivity(self, id: 's') -> None:
        self.svc.cancel_activity(id, "cancelled by taskctl cancel")

    @method()
    def ListTasks(self) -> 'a(sssssuisssttt)':
        return [t.row() for t in self.svc.tasks.values()]

    @method()
    def ListActivities(self) -> 'a(sssasssttt)':
        return [a.row() for a in self.svc.activities.values()]

    @dbus_signal()
    def TaskStateChanged(self, values: list[Any]) -> 'sssssis':
        return values

    @dbus_signal()
    def ActivityStateChanged(self, values: list[Any]) -> 'ssssss':
        return values


class Service:
    def __init__(self, bus: MessageBus, directory: str) -> None:
        self.bus, self.directory = bus, directory
        self.tasks: dict[str, Task] = {}
        self.activities: dict[str, Activity] = {}
        self.manager = Manager(self)
        bus.export(ROOT, self.manager)

    @staticmethod
    def checked(parse: Any) -> Any:
        try:
            return parse()
        except TaskInvalid as exc:
            raise DBusError(ERROR + "TaskInvalid", str(exc)) from None

    def _new_id(self) -> str:
        while True:
            candidate = secrets.token_hex(4)
            if candidate not in self.tasks and candidate not in self.activities:
                return candidate

    def _add(self, spec: TaskSpec, activity: str = "") -> Task:
        tid = self._new_id()
        directory = os.path.join(self.directory, "tasks", tid)
        os.makedirs(directory, mode=0o700)
        task = Task(tid, spec, directory, activity)
        self.tasks[tid] = task
        self.bus.export(f"{ROOT}/task/{tid}", TaskObject(self, task))
        self._changed(task, "")
        return task

    def submit(self, spec: TaskSpec) -> str:
        if spec.activity:
            act = self.activities.get(spec.activity)
            if act is None:
                raise DBusError(ERROR + "NoSuchTask", f"no activity {spec.activity}")
            if act.state in FINAL:
                raise DBusError(ERROR + "TaskInvalid",
                                f"activity {act.id} has ended ({act.state})")
            task = self._add(spec, act.id)
            act.tasks.append(task.id)
            return task.id
        task = self._add(spec)
        asyncio.get_running_loop().create_task(self._run(task))
        return task.id

    def submit_activity(self, name: str, specs: list[TaskSpec]) -> str:
        aid = self._new_id()
        act = Activity(aid, name, [])
        self.activities[aid] = act
        self.bus.export(f"{ROOT}/activity/{aid}", ActivityObject(self, act))
        for spec in specs:
            act.tasks.append(self._add(spec, aid).id)
        asyncio.get_running_loop().create_task(self._run_activity(act))
        return aid

    def _changed(self, task: Task, old: str) -> None:
        self.manager.TaskStateChanged([task.id, task.spec.label, task.activity, old, task.state,
                                       task.exit_code, task.reason])

    def _set(self, task: Task, state: str) -> None:
        old, task.state = task.state, state
        if state in FINAL:
            task.ended = time.time()
        self._changed(task, old)

    def _set_activity(self, act: Activity, state: str) -> None:
        old, act.state = act.state, state
        if state in FINAL:
            act.ended = time.time()
        self.manager.ActivityStateChanged([act.id, act.name, old, state, act.failed_task,
                                           act.reason])

    async def _run(self, task: Task) -> None:
        if task.state != "queued":
            return
        spec = task.spec
        env = {**os.environ, **dict(spec.env)}
        out = os.open(os.path.join(task.dir, "stdout"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(os.path.join(task.dir, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            task.proc = await asyncio.create_subprocess_exec(
                spec.command, *spec.args, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=err, cwd=spec.workingdir, env=env, start_new_session=True)
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "EIO")
            task.spawn_error = f"{code} (spawn {spec.command}): {os.strerror(exc.errno or 0)}"
            task.reason = f"could not be started: {task.spawn_error}"
            self._set(task, "failed")
            return
        finally:
            os.close(out)
            os.close(err)
        task.pid, task.started = task.proc.pid, time.time()
        self._set(task, "running")
        timer = None
        if spec.timeout:
            timer = asyncio.get_running_loop().call_later(spec.timeout, self._time_out, task)
        status = await task.proc.wait()
        if timer is not None:
            timer.cancel()
        if status < 0:
            task.signal = signal.Signals(-status).name
        else:
            task.exit_code = status
        if task.cancel_reason:
            task.reason = task.cancel_reason
            self._set(task, "cancelled")
        elif task.timed_out:
            task.reason = f"timed out after {spec.timeout:g} s (stopped with SIGTERM)"
            self._set(task, "failed")
        elif status == 0:
            self._set(task, "succeeded")
        else:
            task.reason = (f"exited with status {status}" if status > 0
                           else f"killed by {task.signal}")
            self._set(task, "failed")

    def _time_out(self, task: Task) -> None:
        task.timed_out = True
        self._kill(task)

    @staticmethod
    def _kill(task: Task, sig: int = signal.SIGTERM) -> None:
        if task.proc is not None and task.proc.returncode is None:
            try:
                os.killpg(task.proc.pid, sig)
            except ProcessLookupError:
                pass

    async def _run_activity(self, act: Activity) -> None:
        i = 0
        while i < len(act.tasks):
            if act.state in FINAL:
                return
            task = self.tasks[act.tasks[i]]
            if act.state == "queued":
                act.started = time.time()
                self._set_activity(act, "running")
            await self._run(task)
            if task.state != "succeeded":
                act.failed_task = task.id
                act.reason = f"task {task.id} ({task.spec.label}) {task.state}: {task.reason}"
                for rest in act.tasks[i + 1:]:
                    self.tasks[rest].reason = f"activity {act.id} failed at task {task.id}"
                    self._set(self.tasks[rest], "cancelled")
                if act.state not in FINAL:
                    self._set_activity(act, "failed")
                return
            i += 1
        self._set_activity(act, "succeeded")

    def cancel(self, tid: str, reason: str) -> None:
        task = self.tasks.get(tid)
        if task is None:
            raise DBusError(ERROR + "NoSuchTask", f"no task {tid}")
        if task.state in FINAL:
            raise DBusError(ERROR + "NotRunning", f"task {tid} has already ended ({task.state})")
        if task.state == "queued":
            task.reason = reason
            self._set(task, "cancelled")
        else:
            task.cancel_reason = reason
            self._kill(task)

    def cancel_activity(self, aid: str, reason: str) -> None:
        act = self.activities.get(aid)
        if act is None:
            raise DBusError(ERROR + "NoSuchTask", f"no task or activity {aid}")
        if act.state in FINAL:
            raise DBusError(ERROR + "NotRunning", f"activity {aid} has already ended ({act.state})")
        act.reason = reason
        self._set_activity(act, "cancelled")
        for tid in act.tasks:
            task = self.tasks[tid]
            if task.state not in FINAL:
                self.cancel(tid, reason)

    def stop(self) -> None:
        for task in self.tasks.values():
            self._kill(task, signal.SIGKILL)


async def main(address: str, directory: str) -> None:
    logging.disable(logging.ERROR)  # dbus-next logs every DBusError a handler raises
    bus = await MessageBus(bus_address=address, bus_type=BusType.SESSION,
                           negotiate_unix_fd=True).connect()
    svc = Service(bus, directory)
    reply = await bus.call(Message(destination="org.freedesktop.DBus",
                                   path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="RequestName",
                                   signature="su", body=[BUS_NAME, 4]))
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    svc.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
