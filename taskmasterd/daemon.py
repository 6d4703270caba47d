"""The daemon's top level: read the config, wire the event stream, run the
supervisor until SIGTERM/SIGINT, reload on SIGHUP. Runs in the foreground
(systemd style: no double fork)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from dbus_next import BusType

from taskmasterd import __version__, consoles
from taskmasterd.alerts import CLOSE_TIMEOUT, AlertDispatcher
from taskmasterd.bus.names import BUS_NAME
from taskmasterd.bus.service import BusService, BusUnavailable
from taskmasterd.busaddr import BusChoice, runtime_dir
from taskmasterd.config import Config
from taskmasterd.daemonreload import Reloading
from taskmasterd.errors import ShuttingDown, TaskmasterError
from taskmasterd.events import Event, EventBus, Kind
from taskmasterd.journal import JournalSink
from taskmasterd.logpipes import DRAIN_WAIT, FINISH_TIMEOUT, writer_socket
from taskmasterd.logsink import LifecycleLog
from taskmasterd.logwriter import raise_nofile
from taskmasterd.notify import Notifier, status_line
from taskmasterd.paths import resolve_paths
from taskmasterd.probing import Probing
from taskmasterd.statestore import Refused, Snapshot, StateStore, StoreBusy, StoreWriter
from taskmasterd.statestore import handover as handovers
from taskmasterd.statestore.handover import Handover
from taskmasterd.supervisor import Supervisor
from taskmasterd.tasks.manager import TaskManager
from taskmasterd.taskwiring import create_task_manager, stderr_file

if TYPE_CHECKING:
    from taskmasterd.bus.embedded import EmbeddedBus

log = logging.getLogger("taskmasterd")


# run()'s result when the daemon is to re-execute itself (serve() does it).
REEXEC = -1

# The longest the daemon may still take once every program is down: a last
# exit waiting for its output to land, the log writer's drain, the last alerts.
AFTER_PROGRAMS = DRAIN_WAIT + FINISH_TIMEOUT + CLOSE_TIMEOUT


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to fix."""


def under_journald() -> bool:
    """True when our stderr is a journal stream (systemd's documented check)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return bool(ino) and f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


@dataclass
class Daemon(Reloading):
    config_path: str
    config: Config
    bus: EventBus
    lifelog: LifecycleLog
    supervisor: Supervisor
    notifier: Notifier = field(default_factory=Notifier)
    state: str = "starting"  # starting | running | reloading | stopping
    state_changed: Callable[[], None] = lambda: None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _status_pending: bool = False
    alerts: AlertDispatcher | None = None  # set by create()
    # One-shot tasks (set by create(); the D-Bus layer uses it). Opened once
    # the state store is ours; closed at shutdown, where running tasks go on
    # under the task runner for the next daemon to take back.
    tasks: TaskManager = field(init=False)
    store: StateStore | None = None  # set by create(); used from run() on
    writer: StoreWriter | None = None  # while this daemon owns the store
    handover: Handover | None = None  # what our previous image handed over (daemon-reexec)
    reexec_supported: Callable[[], str | None] = lambda: None  # why not, or None
    _reexec: bool = False
    # For Manager's Reloads and StartTime properties (taskmaster-web's metrics):
    # reloads applied by this process, and when it started (µs since the epoch).
    reloads: int = 0
    started_us: int = field(default_factory=lambda: time.time_ns() // 1000)

    def alert_counts(self) -> tuple[int, int]:
        """Alerts delivered and given up since this process started."""
        if self.alerts is None:
            return 0, 0
        return self.alerts.sent, self.alerts.failed

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == "running":  # after start-up and after each reload
            self.notifier.ready(status_line(self.supervisor.counts()))
        elif state == "reloading":
            self.notifier.reloading()
        elif state == "stopping":
            self.notifier.stopping(self.supervisor.longest_stop(), after=AFTER_PROGRAMS)
        self.state_changed()

    def _on_event(self, event: Event) -> None:
        """Keep systemd's STATUS= current, one update per loop turn."""
        if event.is_transition and self.state == "running" and not self._status_pending:
            self._status_pending = True
            asyncio.get_running_loop().call_soon(self._send_status)

    def _send_status(self) -> None:
        self._status_pending = False
        if self.state == "running":
            self.notifier.status(status_line(self.supervisor.counts()))

    def request_shutdown(self) -> None:
        self._stop.set()

    def reexecute(self) -> None:
        """Manager.Reexecute: RELOADING=1 now; once the reply is sent, serve()
        hands the state over and executes taskmasterd again in this process."""
        if self._stop.is_set() or self.supervisor.shutting_down:
            raise ShuttingDown("taskmasterd is shutting down: no re-exec")
        why = self.reexec_supported()
        if why is not None:
            raise TaskmasterError(f"cannot re-execute: {why}")
        if self.state != "running":
            raise TaskmasterError(f"cannot re-execute while {self.state}; try again")
        self._reexec = True
        self._set_state("reloading")  # RELOADING=1: READY=1 comes from the new image
        self._stop.set()

    def exec_self(self, embedded_bus: dict[str, object] | None) -> NoReturn:
        """Hand the state over (memfd) and become the taskmasterd on disk now,
        with the same pid: children stay ours, their pidfds stay open."""
        sup = self.supervisor
        sup.abort_overlaps()  # a successor has no record to be taken back by (overlap.py)
        snapshot = sup.snapshot()
        pidfds: dict[str, int] = {}
        for slot in sup.live_slots():
            assert slot.child is not None
            os.set_inheritable(slot.child.pidfd, True)
            pidfds[slot.process.name] = slot.child.pidfd
        # The log writer (a child) keeps draining the pipes it holds; the new
        # image re-attaches it (LogPipes.attach_surviving: our control socket
        # closes at exec) or, if it cannot, collects its exit.
        # The task runner too, when we started it (a child): it keeps its
        # tasks and the new image attaches to it again (TaskManager.open).
        reap = tuple(p for p in (sup.logpipes.pid, self.tasks.runner.pid) if p)
        h = Handover(snapshot, pidfds, tuple(sup.down_states()), __version__, embedded_bus, reap)
        fd = handovers.write_memfd(h)
        if self.store is not None and self.writer is not None:
            try:  # the store too: if the new image dies early, a next start adopts them
                self.store.save(snapshot)
            except OSError as exc:
                log.warning("state store: cannot write %s before re-exec: %s", self.store.path,
                            exc.strerror)
        log.info("re-executing %s (%d process(es) kept, state handed over in fd %d)",
                 sys.executable, len(pidfds), fd)
        self.lifelog.close()  # flushes this turn's lines
        env = dict(os.environ)
        env[handovers.ENV] = str(fd)
        os.execve(sys.executable, sys.orig_argv, env)

    def output_file(self, process: str, stream: str) -> str:
        return self.supervisor.output_file(process, stream)

    def open_console(self, process: str) -> int:
        return consoles.open_console(self.supervisor, process)

    def watch_console(self, process: str) -> int:
        return consoles.watch_console(self.supervisor, process)

    async def test_alerts(self, target: str) -> list[tuple[str, bool, str]]:
        """`taskctl alert test`: (redacted url, delivered, detail) per target."""
        if self.alerts is None:
            return []
        return [(r.url, r.ok, r.detail) for r in await self.alerts.test(target)]

    @classmethod
    async def create(cls, config: Config, *, stderr: bool = True) -> Daemon:
        raise_nofile()  # 1000 programs with bounded output hold 2000 pipes
        paths = resolve_paths(config.daemon)
        journald = under_journald()
        sink = _journal_sink()
        try:
            lifelog = LifecycleLog(paths.logfile, config.daemon.loglevel, stderr=stderr,
                                   events_to_stderr=not (journald and sink))
        except OSError as exc:
            raise StartupError(f"cannot open the log file {paths.logfile}: {exc.strerror}") from None
        bus = EventBus()
        bus.subscribe(lifelog.write)
        if sink is not None:
            bus.subscribe(sink.write)
        sup = Supervisor(config, bus, logdir=paths.logdir, journal=journald,
                         notify_dir=Probing.notify_dir(runtime_dir(),
                                                       f"{os.path.abspath(paths.statedir)}\0{config.path}"))
        # Before any program starts: the log writer a dead daemon left draining.
        sup.logpipes.attach_surviving(writer_socket(runtime_dir(), paths.statedir, config.path))
        # Not durable: the file names live processes, which a power cut kills
        # (statestore/store.py); what counts is that it is there at once.
        store = StateStore(paths.statedir, durable=False)
        daemon = cls(config.path, config, bus, lifelog, sup, store=store)
        bus.subscribe(daemon._on_event)
        tasks = create_task_manager(paths.statedir, config.path, config.tasks, bus)
        daemon.tasks = tasks
        daemon.alerts = AlertDispatcher(config.alerts, config_path=config.path,
                                        stderr_file=lambda p: stderr_file(tasks, sup, p))
        bus.subscribe(daemon.alerts.on_event)
        daemon._warn_if_exposed(config)
        return daemon

    async def run(self, *, handle_signals: bool = True) -> int:
        """Launch autostart programs, serve until asked to stop, stop them all.

        `handle_signals=False` when the loop is not in the main thread (the
        --shell mode forwards TERM/HUP itself)."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self._stop.set)
            loop.add_signal_handler(signal.SIGINT, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload_quietly)
            loop.add_signal_handler(signal.SIGUSR2, self.reopen_logs)
        self.bus.publish(Event(
            kind=Kind.DAEMON_START, pid=os.getpid(),
            message=f"taskmasterd {__version__} started with {self.config_path} "
                    f"({len(self.config.programs)} programs)"))
        self._open_store()
        await self._open_tasks()
        if self.handover is not None:  # after our own exec: what ran, runs; what did not, not
            known = {r.process for r in self.handover.snapshot.processes}
            known |= set(self.supervisor.restore(list(self.handover.down)))
            self.supervisor.launch_autostart(skip=known)
        else:
            self.supervisor.launch_autostart()
        self._set_state("running")  # READY=1: the bus name is ours, autostart launched
        self.notifier.start_watchdog()
        await self._stop.wait()
        await self.tasks.close()  # detach: running tasks go on under the runner
        if self._reexec:
            return REEXEC
        self._set_state("stopping")
        live = self.supervisor.live_children()
        self.bus.publish(Event(kind=Kind.DAEMON_STOP,
                               message=f"shutting down: stopping {live} running process(es)"))
        await self.supervisor.shutdown()
        if self.writer is not None:  # nothing runs: nothing for a next daemon to adopt
            await self.writer.close(clean=True)
            self.writer = None
        self.bus.publish(Event(kind=Kind.DAEMON_STOP, message="every process stopped; exiting"))
        if self.alerts is not None:
            await self.alerts.close()  # the last messages, a few seconds at most
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2) if handle_signals else ():
            # Every program is down: a late signal must not turn our clean
            # exit 0 into death by signal (SIG_DFL would).
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        self.lifelog.close()
        return 0

    def _open_store(self) -> None:
        """Own the state store (its lock), take back the processes it
        records, then keep it current. Without it (another daemon holds it,
        statedir unusable) supervision works as before, minus re-adoption."""
        store = self.store
        h = self.handover
        if h is not None:  # our own children, handed over: taken back whatever the store says
            self.supervisor.adopt(h.snapshot, h.pidfds)
            for pid in h.reap:
                if pid != self.supervisor.logpipes.pid:  # re-attached: LogPipes collects it
                    _reap_later(pid)
        if store is None:
            return
        try:
            store.lock()
        except StoreBusy as exc:
            log.warning("state store: %s: no process is re-adopted and this daemon records "
                        "none (give each daemon its own statedir)", exc)
            return
        except OSError as exc:
            log.warning("state store: cannot use %s (%s): no process is re-adopted and this "
                        "daemon's processes could not be re-adopted after a crash", store.statedir,
                        exc.strerror)
            return
        if h is None:
            snapshot = store.load()
            if isinstance(snapshot, Snapshot) and snapshot.processes:
                self.supervisor.adopt(snapshot)
        self.writer = StoreWriter(store, self.supervisor.snapshot)
        self.bus.subscribe(self._process_changed)
        self.writer.changed()

    def _process_changed(self, event: Event) -> None:
        """The state store records processes: a task's event changes none
        (its status.json is its record), and with many programs a snapshot
        per loop turn of a task burst would cost as much as the tasks."""
        if event.task is None and self.writer is not None:
            self.writer.changed()

    async def _open_tasks(self) -> None:
        """Take back the tasks on disk (and the runner that outlived us), if
        this daemon owns the statedir: two daemons never run its tasks."""
        if self.writer is None:
            self.tasks.refuse("another taskmasterd owns the statedir, or it is unusable (see the "
                              "state store warning)")
            log.warning("tasks: not taken back nor accepted: %s", self.tasks.unavailable)
            return
        try:
            await self.tasks.open()
        except (OSError, TaskmasterError) as exc:
            self.tasks.refuse(f"the tasks under the statedir cannot be read ({exc})")
            log.error("tasks: %s", self.tasks.unavailable)

    def reopen_logs(self) -> None:
        """SIGUSR2 (supervisord's habit; logrotate's postrotate sends it):
        reopen the lifecycle log file."""
        try:
            self.lifelog.reopen()
        except OSError as exc:
            log.warning("SIGUSR2: cannot reopen the log file %s: %s (tried again at each "
                        "write)", self.lifelog.logfile, exc.strerror)
            return
        log.info("SIGUSR2: reopened the log file %s", self.lifelog.logfile)

def _reap_later(pid: int) -> None:
    """Collect the exit of a child of ours nothing else watches (the log
    writer of our image before a re-exec), so that it leaves no zombie."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    loop = asyncio.get_running_loop()

    def collect() -> None:
        try:
            if os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG) is None:
                return
        except ChildProcessError:
            pass  # not ours after all: nothing to collect
        loop.remove_reader(pidfd)
        os.close(pidfd)
    loop.add_reader(pidfd, collect)


def _journal_sink() -> JournalSink | None:
    """The journal subscriber when journald is there (and systemd-python)."""
    if not JournalSink.available():
        return None
    try:
        return JournalSink()
    except ImportError:
        log.warning("journald is running but systemd-python is missing: events go to the "
                    "log file only")
        return None


SYSTEM_POLICY = f"/usr/share/dbus-1/system.d/{BUS_NAME}.conf"


def _policy_file(system_policy: str = SYSTEM_POLICY) -> str | None:
    """Our D-Bus policy for the private bus: the one the system bus uses (the
    .deb's), else the copy shipped in the Python package (pip install, a source
    tree). None, with a warning, when neither is there."""
    shipped = os.path.join(os.path.dirname(__file__), "bus", f"{BUS_NAME}.conf")
    for path in (system_policy, shipped):
        if os.path.isfile(path):
            return os.path.normpath(path)
    log.warning("no D-Bus policy for %s (neither %s nor %s): on the private bus only uid %d may "
                "call taskmasterd, every other caller is refused (reinstall taskmaster)",
                BUS_NAME, system_policy, shipped, os.geteuid())
    return None


Started = Callable[["Daemon", asyncio.AbstractEventLoop, BusChoice], None]


async def serve(config: Config, choice: BusChoice, *, shell: bool = False,
                started: Started | None = None) -> int:
    """Run the daemon on the chosen bus until it is stopped.

    With `shell`, nothing is logged to stderr (the terminal belongs to the
    shell), signals are left to the caller, and `started(daemon, loop,
    where)` is called once the bus name is owned, `where` being the bus a
    client should use."""
    handover = handovers.take()  # set when we are our own re-exec
    try:
        daemon = await Daemon.create(config, stderr=not shell)
    except StartupError as exc:
        print(f"taskmasterd: not started: {exc}", file=sys.stderr)
        return 1
    if isinstance(handover, Refused):  # the store written before the exec serves instead
        log.warning("re-exec: the handover is refused (%s); taking processes back from the "
                    "state store", handover.reason)
    elif handover is not None:
        daemon.handover = handover
        log.info("re-executed: taskmasterd %s, was %s", __version__, handover.from_version)
    embedded: EmbeddedBus | None = None
    service = BusService(daemon)
    keeper: asyncio.Task[None] | None = None
    # Before the name is ours: a Start that a client sends the moment the name
    # appears may be served while connect() is still under way, and its
    # ProcessStateChanged must not be lost (on_event says nothing until there
    # is a bus).
    daemon.bus.subscribe(service.on_event)
    daemon.state_changed = service.properties_changed
    try:
        if choice.kind == "private":
            from taskmasterd.bus.embedded import EmbeddedBus

            kept = handover.embedded_bus if isinstance(handover, Handover) else None
            embedded = EmbeddedBus.inherit(kept) if kept is not None else \
                await EmbeddedBus.start(runtime_dir(), _policy_file())
            await service.connect(address=embedded.address)
            choice = BusChoice("address", embedded.address)
            log.info("taskmasterd D-Bus: no system/session bus, serving on %s "
                     "(address in %s)", embedded.address, embedded.address_file)
            where = f"the private bus (address in {embedded.address_file})"
        elif choice.kind == "address":
            await service.connect(address=choice.address)
            where = f"the bus {choice.address}"
        else:
            await service.connect(bus_type=BusType.SESSION if choice.kind == "user" else BusType.SYSTEM)
            where = "the session bus" if choice.kind == "user" else "the system bus"
        kind, address = choice.kind, choice.address

        async def reconnect() -> None:
            """Connect again after the bus went away; our own bus is restarted first."""
            nonlocal embedded
            if embedded is not None:
                await embedded.stop()  # reaps it, removes its files
                embedded = await EmbeddedBus.start(runtime_dir(), _policy_file())
                await service.connect(address=embedded.address)
            elif kind == "address":
                await service.connect(address=address)
            else:
                await service.connect(bus_type=BusType.SESSION if kind == "user" else BusType.SYSTEM)

        keeper = asyncio.create_task(service.keep_connected(reconnect, where))
        daemon.reexec_supported = lambda: "not with --shell" if shell else None
        if started is not None:
            started(daemon, asyncio.get_running_loop(), choice)
        code = await daemon.run(handle_signals=not shell)
        if code == REEXEC:
            await service.close()  # after the reply to Reexecute: the bus frees our name
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            daemon.exec_self(embedded.handover() if embedded is not None else None)
        return code
    except (BusUnavailable, RuntimeError, OSError) as exc:
        print(f"taskmasterd: not started: {exc}", file=sys.stderr)
        await daemon.supervisor.shutdown()
        return 1
    finally:
        await service.close()
        if keeper is not None:  # sleeping between two attempts, or already done
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if embedded is not None:
            await embedded.stop()
