"""The exported D-Bus objects: thin adapters over the supervisor.

No `from __future__ import annotations` here: dbus-next reads the D-Bus
signatures ('s', 'as', ...) from the annotations at class creation. mypy
reads those strings as type names, hence the per-module override in
pyproject.toml; everything these adapters call is typed.

Every argument is named in the introspection data: in-arguments after
the Python parameters (dbus-next does that), out-arguments and signal
arguments by `named` (dbus-next 0.2.3 leaves them unnamed; gdbus would show
arg_0, and generated client code would be poorer for it).

Errors, argument bounds and names: calls.py (shared with taskobjects.py,
the tasks' and activities' objects and the Manager's task methods).
"""

import signal
from typing import Protocol

from dbus_next import PropertyAccess
from dbus_next.service import ServiceInterface, dbus_property, method

from taskmasterd import __version__, signames
from taskmasterd.bus.calls import check_arg, dbus_errors, named, open_output, us
from taskmasterd.bus.members import init_interface
from taskmasterd.bus.names import MANAGER_IFACE, PROGRAM_IFACE
from taskmasterd.bus.signals import trusted_signal
from taskmasterd.bus.taskobjects import TaskMethods, Tasks
from taskmasterd.bus.writer import close_after_send
from taskmasterd.errors import BadName
from taskmasterd.lifecycle import worst_state
from taskmasterd.reload import ReloadPlan
from taskmasterd.settingsdiff import SettingChange
from taskmasterd.supervisor import ProcessInfo, Supervisor


class Controller(Protocol):
    """What the adapters need from the daemon (daemon.Daemon satisfies it)."""

    supervisor: Supervisor
    config_path: str
    state: str
    reloads: int
    started_us: int

    @property
    def tasks(self) -> Tasks | None:
        """The daemon's tasks.manager.TaskManager; None: it runs no tasks (the
        task methods answer Error.Failed, no task object is exported)."""

    def reload(self) -> ReloadPlan: ...
    def plan_reload(self) -> tuple[ReloadPlan, dict[str, str]]: ...
    def plan_settings(self) -> tuple[SettingChange, ...]: ...
    def request_shutdown(self) -> None: ...
    def reexecute(self) -> None: ...
    def output_file(self, process: str, stream: str) -> str: ...
    def open_console(self, process: str) -> int: ...
    def watch_console(self, process: str) -> int: ...
    async def test_alerts(self, target: str) -> list[tuple[str, bool, str]]: ...
    def alert_counts(self) -> tuple[int, int]: ...


def parse_signal(name: str) -> signal.Signals:
    check_arg(name, "signal")
    try:
        return signames.parse(name)
    except ValueError as exc:
        raise BadName(str(exc)) from None


def process_row(info: ProcessInfo) -> list[object]:
    """One ListProcesses struct, (sssuitssuitb): name, program, state, pid,
    exit_status, started_us, description, spawn_error, restarts,
    last_exit_status, last_exit_us, last_exit_expected (docs/dbus-api.md).
    The first nine are those of before 1.0, in the same order: a client
    reading them by position still works."""
    return [info.name, info.program, info.state.value, info.pid, info.exit_status,
            us(info.started_at), info.description, info.spawn_error, info.restarts,
            info.last_exit_status, us(info.last_exit_at), info.last_exit_expected]


def readiness_row(info: ProcessInfo) -> list[object]:
    """One struct of a program's Readiness property (1.3), (sssssu): name,
    ready check ("" without `ready:`), STATUS= text, health ("" without
    `health:` or when not RUNNING, "unknown", "healthy", "unhealthy"), the last
    check's detail, failed checks in a row (docs/dbus-api.md)."""
    return [info.name, info.ready_check, info.status_text, info.health, info.health_detail,
            info.health_failures]


def program_process(info: ProcessInfo) -> list[object]:
    """One struct of a program's Processes property, (ssuutitb): name,
    state, pid, restarts, started_us, last_exit_status, last_exit_us,
    last_exit_expected."""
    return [info.name, info.state.value, info.pid, info.restarts, us(info.started_at),
            info.last_exit_status, us(info.last_exit_at), info.last_exit_expected]


class Manager(TaskMethods, ServiceInterface):
    """The root's interface; its task methods and signals are TaskMethods'."""

    def __init__(self, controller: Controller) -> None:
        super().__init__(MANAGER_IFACE)
        self._c = controller

    def _tasks(self) -> Tasks | None:
        return self._c.tasks

    @property
    def _sup(self) -> Supervisor:
        return self._c.supervisor

    @named("processes")
    @method()
    def Start(self, target: 's') -> 'as':
        with dbus_errors("Start"):
            return self._sup.start(check_arg(target, "target"))

    @named("processes")
    @method()
    def Stop(self, target: 's') -> 'as':
        with dbus_errors("Stop"):
            return self._sup.stop(check_arg(target, "target"))

    @named("processes")
    @method()
    def Restart(self, target: 's') -> 'as':
        with dbus_errors("Restart"):
            return self._sup.restart(check_arg(target, "target"))

    @named("processes")
    @method()
    def Signal(self, target: 's', signal: 's') -> 'as':
        with dbus_errors("Signal"):
            return self._sup.signal(check_arg(target, "target"), parse_signal(signal))

    @named("added", "changed", "removed")
    @method()
    def Reload(self) -> 'asasas':
        with dbus_errors("Reload"):
            plan = self._c.reload()
            return [[p.name for p in plan.added], plan.changed, list(plan.removed)]

    # (1.6) The reload preview: root and group taskmaster only (the reasons
    # tell which keys of a file that may be 0640 changed).
    @named("added", "changed", "removed", "restarted")
    @method()
    def PlanReload(self) -> 'asasasas':
        """What Reload would do now with the file on disk, without doing it:
        `changed` is applied in place (resized programs too: their
        processes keep their PIDs), `restarted` is restarted."""
        with dbus_errors("PlanReload"):
            plan, _reasons = self._c.plan_reload()
            return [[p.name for p in plan.added], plan.in_place, list(plan.removed),
                    [p.name for p in plan.restarted]]

    @named("reasons")
    @method()
    def PlanReloadReasons(self) -> 'a{ss}':
        """PlanReload's programs, each with why: "added", "removed",
        "restarted: cmd, env changed", "changed in place: stoptime"."""
        with dbus_errors("PlanReloadReasons"):
            return self._c.plan_reload()[1]

    # (1.7) The rest of the preview: settings outside `programs:`.
    @named("settings")
    @method()
    def PlanReloadSettings(self) -> 'a(ssss)':
        """What Reload would change now outside the programs: (setting, old,
        new, effect), effect "applied" or "restart" (not applied until
        taskmasterd restarts)."""
        with dbus_errors("PlanReloadSettings"):
            return [[c.setting, c.old, c.new, c.effect.value] for c in self._c.plan_settings()]

    @named("processes")
    @method()
    def ListProcesses(self) -> 'a(sssuitssuitb)':
        with dbus_errors("ListProcesses"):
            return [process_row(i) for i in self._sup.processes()]

    @method()
    def Shutdown(self) -> None:
        with dbus_errors("Shutdown"):
            self._c.request_shutdown()

    @method()
    def Reexecute(self) -> None:
        """Re-execute taskmasterd in the same process (an upgrade applied
        without restarting any program): RELOADING=1 now, the name leaves the
        bus once this reply is sent, the new image owns it again and says
        READY=1 (State "running"). Calls in between get ServiceUnknown."""
        with dbus_errors("Reexecute"):
            self._c.reexecute()

    @named("fd")
    @method()
    def OpenLog(self, process: 's', stream: 's') -> 'h':
        with dbus_errors("OpenLog"):
            path = self._c.output_file(check_arg(process, "process"), check_arg(stream, "stream"))
            return open_output(
                path, f"{process} has no {stream} output yet ({path} does not exist: the process "
                "has not run since the file was set)",
                f"the {stream} of {process} goes to {path}, which is not a regular file")

    # (1.5) Consoles (docs/console.md): root and group taskmaster only.
    @named("terminal")
    @method()
    def OpenConsole(self, process: 's') -> 'h':
        """The process's terminal (its pseudo-terminal's master): write
        keystrokes into it, set its size with TIOCSWINSZ; never read it (the
        output is the log writer's: WatchConsole)."""
        with dbus_errors("OpenConsole"):
            return close_after_send(self._c.open_console(check_arg(process, "process")))

    @named("output")
    @method()
    def WatchConsole(self, process: 's') -> 'h':
        """A stream socket to read: the process's scrollback, then its terminal
        output as it comes; it ends when the terminal closes."""
        with dbus_errors("WatchConsole"):
            return close_after_send(self._c.watch_console(check_arg(process, "process")))

    @named("results")
    @method()
    async def TestAlerts(self, target: 's') -> 'a(sbs)':
        """A test message to every alert target ("") or one (its index or URL):
        (redacted URL, delivered, detail) each. Targets are tried at once, each
        in its own thread, with a time limit: the loop goes on meanwhile."""
        with dbus_errors("TestAlerts"):
            results = await self._c.test_alerts(check_arg(target, "target"))
            return [[url, ok, detail] for url, ok, detail in results]

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> 's':
        return __version__

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> 's':
        return self._c.state

    @dbus_property(access=PropertyAccess.READ)
    def ConfigFile(self) -> 's':
        return self._c.config_path

    # (1.4) Counters for monitoring (taskmaster-web's /metrics); read on
    # demand, no PropertiesChanged.
    @dbus_property(access=PropertyAccess.READ)
    def Reloads(self) -> 'u':
        return self._c.reloads

    @dbus_property(access=PropertyAccess.READ)
    def StartTime(self) -> 't':
        return self._c.started_us

    @dbus_property(access=PropertyAccess.READ)
    def AlertsSent(self) -> 't':
        return self._c.alert_counts()[0]

    @dbus_property(access=PropertyAccess.READ)
    def AlertsFailed(self) -> 't':
        return self._c.alert_counts()[1]

    @named()
    @trusted_signal()
    def ProcessStateChanged(self, process: str, program: str, old_state: str, new_state: str,
                            pid: int, exit_status: int, expected: bool) -> 'ssssuib':
        return [process, program, old_state, new_state, pid, exit_status, expected]

    @named()
    @trusted_signal()
    def Reloaded(self, added: list[str], changed: list[str], removed: list[str]) -> 'asasas':
        return [added, changed, removed]


class Program(ServiceInterface):
    def __init__(self, controller: Controller, name: str) -> None:
        init_interface(self, PROGRAM_IFACE)  # one per program: the class scan once (members.py)
        self._c = controller
        self.program = name

    @property
    def _sup(self) -> Supervisor:
        return self._c.supervisor

    def _infos(self) -> list[ProcessInfo]:
        return self._sup.program_processes(self.program)

    @named("processes")
    @method()
    def Start(self) -> 'as':
        with dbus_errors("Start"):
            return self._sup.start(self.program)

    @named("processes")
    @method()
    def Stop(self) -> 'as':
        with dbus_errors("Stop"):
            return self._sup.stop(self.program)

    @named("processes")
    @method()
    def Restart(self) -> 'as':
        with dbus_errors("Restart"):
            return self._sup.restart(self.program)

    @named("processes")
    @method()
    def Signal(self, signal: 's') -> 'as':
        with dbus_errors("Signal"):
            return self._sup.signal(self.program, parse_signal(signal))

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> 's':
        return self.program

    @dbus_property(access=PropertyAccess.READ)
    def Command(self) -> 's':
        config = self._sup.config.program(self.program)
        return config.cmd if config else ""

    @dbus_property(access=PropertyAccess.READ)
    def NumProcs(self) -> 'u':
        config = self._sup.config.program(self.program)
        return config.numprocs if config else 0

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> 's':
        with dbus_errors("State"):
            return worst_state([i.state for i in self._infos()]).value

    @dbus_property(access=PropertyAccess.READ)
    def Readiness(self) -> 'a(sssssu)':
        """(1.3) `readiness_row` of each process: readiness and health."""
        with dbus_errors("Readiness"):
            return [readiness_row(i) for i in self._infos()]

    @dbus_property(access=PropertyAccess.READ)
    def Processes(self) -> 'a(ssuutitb)':
        """`program_process` of each process."""
        with dbus_errors("Processes"):
            return [program_process(i) for i in self._infos()]
