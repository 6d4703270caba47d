"""Connect to a bus, own org.taskmaster.Taskmaster1, export the objects, and
turn the event stream into D-Bus signals.

When the connection drops (the bus daemon died or was restarted),
`keep_connected` logs it once and reconnects with a growing delay
(RETRY_DELAYS, then every 30 s) until it succeeds or the daemon stops;
supervision never waits for it. No signal is queued meanwhile: a client
that reconnects reads the current state (ListProcesses, GetManagedObjects).

Object life: a program's object is exported (InterfacesAdded) before the
first state change of its processes, and unexported (InterfacesRemoved)
once a reload removed it and its last process is down (after their
STOPPING/STOPPED signals).

Tasks and activities (taskobjects.py): one object each, those the task
manager knows when we connect exported with the programs; a new one on its
first event (or when Submit* answers, whichever comes first), its activity
before it; unexported when the manager's clean-up (`tasks.keep`) removed it.
Each event is a TaskStateChanged / ActivityStateChanged signal, in order;
PropertiesChanged is coalesced like the programs' and carries only the
properties that changed since the object was announced or last changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dbus_next import BusType
from dbus_next.constants import NameFlag, RequestNameReply

from taskmasterd.bus.messagebus import TaskmasterBus, close
from taskmasterd.bus.names import BUS_NAME, MANAGER_PATH, activity_path, program_path, task_path
from taskmasterd.bus.objects import Controller, Manager, Program
from taskmasterd.bus.pinned import WrongDbusNext
from taskmasterd.bus.taskobjects import (
    ACTIVITY_PROPERTIES,
    TASK_PROPERTIES,
    Activity,
    Task,
    Tasks,
    changed_properties,
)
from taskmasterd.errors import NoSuchTask
from taskmasterd.events import Event, Kind, TaskChange

log = logging.getLogger("taskmasterd")


class BusUnavailable(Exception):
    """No bus could be reached or the name is taken: the message says which."""


# Seconds between two reconnection attempts; the last one repeats.
RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def retry_delay(attempt: int) -> float:
    """The wait before reconnection attempt `attempt` (0-based)."""
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]


class BusService:
    def __init__(self, controller: Controller) -> None:
        self._c = controller
        self.bus: TaskmasterBus | None = None
        self.manager = Manager(controller)
        self.programs: dict[str, Program] = {}
        self.tasks: dict[str, Task] = {}
        self.activities: dict[str, Activity] = {}
        self._dirty_tasks: set[str] = set()
        self._dirty_activities: set[str] = set()
        self._removals_heard = False  # our listener is in the task manager's list
        # removed by a reload, exported until their last process is down
        self._leaving: set[str] = set()
        # programs whose properties changed -> whether their config did too
        self._dirty: dict[str, bool] = {}
        self._flush_scheduled = False

    async def connect(self, *, address: str | None = None, bus_type: BusType = BusType.SYSTEM) -> None:
        try:
            bus = TaskmasterBus(bus_address=address, bus_type=bus_type, negotiate_unix_fd=True,
                                manager_path=MANAGER_PATH)
            await bus.connect()
        except WrongDbusNext as exc:  # (cli.main checks first: only if started otherwise)
            raise BusUnavailable(str(exc)) from None
        except Exception as exc:  # dbus-next raises several kinds here
            where = address or bus_type.name.lower() + " bus"
            raise BusUnavailable(f"cannot connect to the D-Bus {where}: {exc}") from None
        self.bus = bus
        # Fresh objects on every connection: dbus-next's interfaces remember
        # every bus they were exported on, a dead one included.
        self.manager = Manager(self._c)
        self.manager.on_submitted = self._ensure_exported
        self.programs = {}
        self.tasks = {}
        self.activities = {}
        if self._mark not in self._c.supervisor.detail_listeners:
            # STATUS= texts and health results: the processes' descriptions
            self._c.supervisor.detail_listeners.append(self._mark)
        with bus.unannounced_exports():
            bus.export(MANAGER_PATH, self.manager)
            for program in self._c.supervisor.config.programs:
                self._export(program.name)
            tasks = self._c.tasks
            if tasks is not None:
                if not self._removals_heard:
                    tasks.removed_listeners.append(self._removed)
                    self._removals_heard = True
                for activity in tasks.activities():
                    self._export_activity(tasks, activity.id)
                for task in tasks.tasks():
                    self._export_task(tasks, task.id)
        try:
            reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except Exception as exc:  # the bus went away meanwhile, or refused
            await self.close()
            raise BusUnavailable(f"cannot own {BUS_NAME}: {exc}") from None
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            await self.close()
            raise BusUnavailable(f"{BUS_NAME} is already owned on this bus "
                                 "(another taskmasterd is running?)")

    async def close(self) -> None:
        bus, self.bus = self.bus, None
        if bus is None:
            return
        await close(bus)

    async def keep_connected(self, reconnect: Callable[[], Awaitable[None]], where: str) -> None:
        """Run until close(): whenever the connection drops, reconnect.

        `reconnect()` connects again (it may restart a private bus first) and
        raises (BusUnavailable, RuntimeError, OSError...) when it cannot. The
        loss is logged once, the failed attempts only at debug level, and
        the reconnection once."""
        while True:
            bus = self.bus
            if bus is None:
                return
            with contextlib.suppress(Exception):  # an error drop is a drop like another
                # shielded: cancelling us must not cancel the bus's own future,
                # which close() awaits too
                await asyncio.shield(bus.wait_for_disconnect())
            if self.bus is not bus:  # close() was called
                return
            self.bus = None
            await close(bus)
            log.warning("D-Bus: lost the connection to %s; supervision goes on without it, "
                        "reconnecting", where)
            attempt = 0
            while self.bus is None:
                await asyncio.sleep(retry_delay(attempt))
                attempt += 1
                try:
                    await reconnect()
                except Exception as exc:  # whatever it was, the next attempt may work
                    log.debug("D-Bus: reconnection attempt %d failed: %s", attempt, exc)
            log.info("D-Bus: reconnected to %s after %d attempt(s); serving again", where, attempt)

    # ---- events -> signals -----------------------------------------------

    def on_event(self, ev: Event) -> None:
        if self.bus is None:
            return
        if ev.task is not None:
            self._task_event(ev.task)
        elif ev.old_state is not None and ev.new_state is not None:
            self.manager.ProcessStateChanged(
                ev.process, ev.program, ev.old_state.value, ev.new_state.value, ev.pid,
                ev.exit_status or 0, ev.expected)
            self._mark(ev.program)
            if ev.program in self._leaving and not self._c.supervisor.leaving(ev.program):
                self._unexport(ev.program)  # its last process is down
        elif ev.kind is Kind.RELOAD and ev.reload is not None:
            self._sync_programs(list(ev.reload.added), list(ev.reload.changed),
                                list(ev.reload.removed))

    def _sync_programs(self, added: list[str], changed: list[str], removed: list[str]) -> None:
        """After a reload (its stops and starts are yet to come): export the
        new programs; unexport the removed ones, or those with processes
        alive once those are down."""
        sup = self._c.supervisor
        current = {p.name for p in sup.config.programs}
        self._leaving -= current  # removed, then added back while going down
        for name in [n for n in self.programs if n not in current and n not in self._leaving]:
            if sup.leaving(name):
                self._leaving.add(name)
            else:
                self._unexport(name)
        for name in sorted(current - set(self.programs)):
            self._export(name)
        for name in changed:
            self._mark(name, config=True)
        self.manager.Reloaded(added, changed, removed)

    def _unexport(self, name: str) -> None:
        self._leaving.discard(name)
        obj = self.programs.pop(name, None)
        if obj is not None and self.bus is not None:
            self.bus.unexport(program_path(name), obj)

    def _export(self, name: str) -> None:
        assert self.bus is not None
        obj = Program(self._c, name)
        self.programs[name] = obj
        self.bus.export(program_path(name), obj)

    # ---- tasks and activities ---------------------------------------------

    def _task_event(self, change: TaskChange) -> None:
        tasks = self._c.tasks
        if tasks is None:
            return
        if change.is_activity:
            self._ensure_exported([], [change.id])
            try:
                failed = tasks.activity(change.id).failed_task
            except NoSuchTask:
                failed = ""
            self.manager.ActivityStateChanged(change.id, change.name, change.old, change.new,
                                              failed, change.reason)
            self._dirty_activities.add(change.id)
        else:
            self._ensure_exported([change.id], [change.activity] if change.activity else [])
            self.manager.TaskStateChanged(
                change.id, change.name, change.activity, change.old, change.new,
                -1 if change.exit_code is None else change.exit_code, change.reason)
            self._dirty_tasks.add(change.id)
            if change.activity:  # its Tasks, when the task was appended to it
                self._dirty_activities.add(change.activity)
        self._schedule_flush()

    def _ensure_exported(self, task_ids: list[str], activity_ids: list[str]) -> None:
        """Export the objects of those the manager knows that have none yet
        (InterfacesAdded), the activities first."""
        tasks = self._c.tasks
        if tasks is None or self.bus is None:
            return
        for activity_id in activity_ids:
            if activity_id not in self.activities:
                with contextlib.suppress(NoSuchTask):  # removed meanwhile: nothing to show
                    self._export_activity(tasks, activity_id)
        for task_id in task_ids:
            if task_id not in self.tasks:
                with contextlib.suppress(NoSuchTask):
                    self._export_task(tasks, task_id)

    def _export_task(self, tasks: Tasks, task_id: str) -> None:
        assert self.bus is not None
        obj = Task(tasks, task_id)
        obj.sent = obj.status()  # what InterfacesAdded (or GetManagedObjects) shows
        self.tasks[task_id] = obj
        self.bus.export(task_path(task_id), obj)

    def _export_activity(self, tasks: Tasks, activity_id: str) -> None:
        assert self.bus is not None
        obj = Activity(tasks, activity_id)
        obj.sent = obj.status()
        self.activities[activity_id] = obj
        self.bus.export(activity_path(activity_id), obj)

    def _removed(self, task_ids: list[str], activity_ids: list[str]) -> None:
        """The task manager removed these (`tasks.keep`): InterfacesRemoved."""
        for task_id in task_ids:
            self._dirty_tasks.discard(task_id)
            task = self.tasks.pop(task_id, None)
            if task is not None and self.bus is not None:
                self.bus.unexport(task_path(task_id), task)
        for activity_id in activity_ids:
            self._dirty_activities.discard(activity_id)
            activity = self.activities.pop(activity_id, None)
            if activity is not None and self.bus is not None:
                self.bus.unexport(activity_path(activity_id), activity)

    def _flush_tasks(self) -> None:
        tasks, self._dirty_tasks = self._dirty_tasks, set()
        activities, self._dirty_activities = self._dirty_activities, set()
        _announce_changes(self.tasks, tasks, TASK_PROPERTIES)
        _announce_changes(self.activities, activities, ACTIVITY_PROPERTIES)

    # ---- PropertiesChanged ------------------------------------------------

    def _mark(self, program: str, *, config: bool = False) -> None:
        """Coalesce PropertiesChanged: one per program per loop turn."""
        self._dirty[program] = config or self._dirty.get(program, False)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        if self.bus is None:  # the connection dropped meanwhile
            self._dirty_tasks.clear()
            self._dirty_activities.clear()
            return
        self._flush_tasks()
        for name, config_changed in dirty.items():
            obj = self.programs.get(name)
            if obj is None:
                continue
            # A transition changes Processes (and maybe State); Command and
            # NumProcs change only by a reload: sent only then (marshalling
            # is most of a signal's cost, and 1000 programs start at once).
            props: tuple[str, ...] = ("State", "Processes", "Command", "NumProcs") \
                if config_changed else ("State", "Processes")
            config = self._c.supervisor.config.program(name)
            if config_changed or (config is not None and (config.ready or config.health)):
                props += ("Readiness",)  # (1.3) only where there is something to show
            obj.emit_properties_changed({prop: getattr(obj, prop) for prop in props})

    def properties_changed(self) -> None:
        """The manager's own State property changed."""
        if self.bus is None:
            return
        self.manager.emit_properties_changed({"State": self._c.state})



def _announce_changes(objects: Mapping[str, Task | Activity], ids: set[str],
                      table: Mapping[str, Callable[[Any], object]]) -> None:
    """PropertiesChanged of each object in `ids` with the properties that
    differ from what it last announced (none if nothing did)."""
    for object_id in ids:
        obj = objects.get(object_id)
        if obj is None:
            continue
        try:
            now = obj.status()
        except NoSuchTask:  # removed meanwhile: its InterfacesRemoved comes
            continue
        if obj.sent is not None and now != obj.sent:
            changed = changed_properties(table, obj.sent, now)
            if changed:
                obj.emit_properties_changed(changed)
        obj.sent = now
