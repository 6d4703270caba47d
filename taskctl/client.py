"""taskmasterd's Manager API for taskctl, typed: `Client` turns each call
(Start, ListProcesses, Reload, OpenLog...) into Python values
(taskctl.model). The connection, the requests and their errors are
`taskctl.link`, the events `taskctl.subscriber`; a Client is both.
`connect()` makes one connected.
"""

from __future__ import annotations

from taskctl.buses import Candidate, address_problem, candidates  # re-exported
from taskctl.connection import DBUS_NAME, DBUS_PATH
from taskctl.link import CALL_TIMEOUT
from taskctl.model import CallError, ProcessRow, Reloaded, Unreachable
from taskctl.plan import Plan, Setting
from taskctl.subscriber import Subscriber
from taskmasterd.bus.names import BUS_NAME
from taskmasterd.busaddr import BusChoice

ALERT_TEST_TIMEOUT = 45.0  # the daemon gives each target 20 s, all at once


class Client(Subscriber):
    """A connection to taskmasterd (`taskctl.link.Link`: made at the first
    request), its events (`Subscriber`) and the Manager's calls."""

    # -- the Manager API -------------------------------------------------------------

    def start(self, target: str) -> list[str]:
        return [str(n) for n in self.call("Start", "s", [target])[0]]

    def stop(self, target: str) -> list[str]:
        return [str(n) for n in self.call("Stop", "s", [target])[0]]

    def restart(self, target: str) -> list[str]:
        return [str(n) for n in self.call("Restart", "s", [target])[0]]

    def signal(self, target: str, sig: str) -> list[str]:
        return [str(n) for n in self.call("Signal", "ss", [target, sig])[0]]

    def reload(self) -> Reloaded:
        added, changed, removed = self.call("Reload")
        return Reloaded(tuple(added), tuple(changed), tuple(removed))

    def plan_reload(self) -> Plan:
        """What a reload would do now, and why (API 1.6): two calls, each
        reading the file (a program the second does not explain has no reason)."""
        lists = self.call("PlanReload")
        [reasons] = self.call("PlanReloadReasons")
        return Plan.from_replies(lists, dict(reasons))

    def plan_settings(self) -> tuple[Setting, ...]:
        """The settings outside `programs:` a reload would change now (API
        1.7; a 1.6 daemon has none to tell)."""
        try:
            [settings] = self.call("PlanReloadSettings")
        except CallError as exc:
            if exc.name != "UnknownMethod":
                raise
            return ()
        return tuple(Setting.from_reply(v) for v in settings)

    def plan_with_settings(self) -> Plan:
        """plan_reload() and plan_settings()."""
        return self.plan_reload()._replace(settings=self.plan_settings())

    def list_processes(self) -> list[ProcessRow]:
        return [ProcessRow.from_values(r) for r in self.call("ListProcesses")[0]]

    def shutdown(self) -> None:
        """Ask taskmasterd to stop everything and exit. A daemon that leaves
        the bus without replying did what was asked: that is no error."""
        try:
            self.call("Shutdown")
        except Unreachable as exc:
            if exc.cause != Unreachable.NO_REPLY or self.has_owner():
                raise

    def has_owner(self) -> bool:
        """Whether somebody owns org.taskmaster.Taskmaster1 on the bus now."""
        [has] = self.call("NameHasOwner", "s", [BUS_NAME], destination=DBUS_NAME, path=DBUS_PATH,
                          interface=DBUS_NAME)
        return bool(has)

    def open_log(self, process: str, stream: str = "stdout") -> int:
        """A read-only fd of the process's output file (the caller closes it).
        CallError "NotAFile" when the output goes to the journal or is discarded."""
        return self.call_fd("OpenLog", "ss", [process, stream])

    def open_console(self, process: str) -> int:
        """The process's pseudo-terminal master, to write keystrokes into and
        set the window size on, never to read (the caller closes it).
        CallError NoConsole (no `console: true`), NotRunning (no terminal now)."""
        return self.call_fd("OpenConsole", "s", [process])

    def watch_console(self, process: str) -> int:
        """A socket of the process's terminal output, to read: the scrollback,
        then the live output; EOF when the terminal closes or this reader
        fell too far behind (the caller closes it)."""
        return self.call_fd("WatchConsole", "s", [process])

    def test_alerts(self, target: str = "") -> list[tuple[str, bool, str]]:
        """Manager.TestAlerts: a test message to every alert target ("") or to
        one (index or URL); (redacted url, delivered, detail) per target."""
        reply = self._call("TestAlerts", "s", [target],
                           timeout=max(self.timeout, ALERT_TEST_TIMEOUT))
        return [(str(url), bool(ok), str(detail)) for url, ok, detail in reply.body[0]]

    def version(self) -> str:
        return str(self.get_property("Version"))

    def state(self) -> str:
        return str(self.get_property("State"))

    def config_file(self) -> str:
        return str(self.get_property("ConfigFile"))

    def daemon_pid(self) -> int:
        """The pid of the process owning org.taskmaster.Taskmaster1 (from the bus)."""
        [pid] = self.call("GetConnectionUnixProcessID", "s", [BUS_NAME], destination=DBUS_NAME,
                          path=DBUS_PATH, interface=DBUS_NAME)
        return int(pid)


def connect(choice: BusChoice | None = None, *, timeout: float = CALL_TIMEOUT) -> Client:
    """A connected Client (raises Unreachable)."""
    client = Client(choice, timeout=timeout)
    try:
        client.connect()
    except BaseException:
        client.close()
        raise
    return client


__all__ = ["Candidate", "Client", "address_problem", "candidates", "connect"]
