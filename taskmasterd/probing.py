"""Readiness and health, the asyncio side (issue 15): for each process whose
program has `ready:` or `health:`, its notify socket, its readiness prober
and its health checker, started and stopped as the process moves.

The supervisor calls: `spawn_env` before a spawn (the child's
NOTIFY_SOCKET and WATCHDOG_USEC), `spawned` once the pid is known,
`changed` on every transition, `gone` once the process is reaped,
`adopted` for a process taken back from a previous daemon. What the
process says or what the probes find goes back through `Sink` (the
supervisor turns it into state-machine events).

Nothing runs for a program without `ready:`/`health:`: no socket, no
timer, no task (an idle daemon stays at 0 wakeups). A notify socket's path
is a function of the daemon instance and the process name, so that a
re-executed or restarted daemon binds it again where the running process
was told to send.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from taskmasterd import spawn
from taskmasterd.config import ProgramConfig
from taskmasterd.notifyproto import Notice
from taskmasterd.notifysock import NotifyEndpoint
from taskmasterd.probeplan import ProbeSpec
from taskmasterd.probes import HealthChecker, ReadinessProber
from taskmasterd.probeschema import Check
from taskmasterd.states import State

log = logging.getLogger("taskmasterd")

# The daemon's own notification variables (systemd's, when it runs under
# systemd): a child must never inherit them, or its sd_notify() would speak
# to systemd as if it were the daemon.
DAEMON_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass
class Sink:
    """Where findings go (the supervisor's handlers), by process name."""

    ready: Callable[[str, str], None]  # (process, detail)
    ping: Callable[[str], None]  # WATCHDOG=1
    unhealthy: Callable[[str, str], None]  # (process, detail)
    status: Callable[[str, str], None]  # (process, its STATUS= text)
    details: Callable[[str], None]  # a health result changed: show it


@dataclass
class Health:
    """What `taskctl status` and D-Bus show of a health check."""

    ok: bool | None = None  # None: not checked yet
    failures: int = 0
    detail: str = ""


@dataclass
class _Watch:
    process: str
    endpoint: NotifyEndpoint | None = None
    prober: ReadinessProber | None = None
    checker: HealthChecker | None = None
    health: Health = field(default_factory=Health)
    mainpid_told: bool = False
    ignored_told: bool = False


def _spec(check: Check) -> ProbeSpec:
    return ProbeSpec(check.kind, check.target)


def _uid(user: str | None) -> int | None:
    if user is None:
        return None
    try:
        return spawn.user_entry(user).pw_uid
    except (KeyError, ValueError):
        return None  # the spawn itself reports the unknown user


class Probing:
    def __init__(self, sink: Sink, notify_dir: str) -> None:
        self._sink = sink
        self.directory = notify_dir
        self._watches: dict[str, _Watch] = {}

    @staticmethod
    def notify_dir(runtime: str, instance_key: str) -> str:
        """`runtime/notify-<digest>`: one directory per daemon instance
        (statedir + config file), short: a socket path has 108 bytes."""
        digest = hashlib.sha256(os.fsencode(instance_key)).hexdigest()[:8]
        return os.path.join(runtime, f"notify-{digest}")

    # ---- the supervisor's calls ----------------------------------------------

    def spawn_env(self, process: str, config: ProgramConfig) -> dict[str, str]:
        """Variables the child gets (raises OSError if its notify socket
        cannot be made: a spawn error)."""
        self.gone(process)  # a leftover of the previous run (a failed spawn)
        if config.ready is None or config.ready.kind != "notify":
            return {}
        name = hashlib.sha256(process.encode()).hexdigest()[:10]
        endpoint = NotifyEndpoint.open(self.directory, name, _uid(config.user))
        self._watch(process).endpoint = endpoint
        env = {"NOTIFY_SOCKET": endpoint.path}
        if config.watchdog > 0:
            env["WATCHDOG_USEC"] = str(int(config.watchdog * 1_000_000))
        return env

    def spawned(self, process: str, config: ProgramConfig, pid: int, *, starting: bool = True) -> None:
        """The child runs: listen to it; probe it while STARTING."""
        # The callbacks name the process by its watch (`w.process`), not by
        # `process`: a rename (a reload, an overlap restart's successor taking
        # the slot) must carry them along.
        w = self._watches.get(process)
        if w is not None and w.endpoint is not None:
            watch = w
            w.endpoint.watch(asyncio.get_running_loop(), pid,
                             lambda notice: self._notice(watch.process, notice),
                             lambda reason: self._ignored(watch.process, reason))
        if starting and config.ready is not None and config.ready.kind != "notify":
            w = self._watch(process)
            probed = w
            w.prober = ReadinessProber(_spec(config.ready),
                                       lambda detail: self._sink.ready(probed.process, detail),
                                       env=dict(config.env), cwd=config.workingdir, user=_uid(config.user))
            w.prober.start()

    def changed(self, process: str, config: ProgramConfig, old: State, new: State, *,
                health: bool = True) -> None:
        """A transition. `health` False: no health check even if RUNNING (an
        overlap restart's successor, checked once it has taken the slot)."""
        w = self._watches.get(process)
        if old is State.STARTING and w is not None and w.prober is not None:
            w.prober.cancel()
            w.prober = None
        if old is State.RUNNING and w is not None and w.checker is not None:
            w.checker.cancel()
            w.checker = None
        if new is State.RUNNING and config.health is not None and health:
            self._start_health(process, config)

    def reconfigured(self, process: str, config: ProgramConfig, state: State) -> None:
        """A reload changed its settings in place: the health check follows."""
        w = self._watches.get(process)
        if w is not None and w.checker is not None:
            w.checker.cancel()
            w.checker = None
            w.health = Health()
        if state is State.RUNNING and config.health is not None:
            self._start_health(process, config)

    def adopted(self, process: str, config: ProgramConfig, pid: int, state: State) -> None:
        """Taken back alive from a previous daemon: its notify socket again
        where it was told to send, and its checks."""
        if config.ready is not None and config.ready.kind == "notify":
            try:
                self.spawn_env(process, config)
            except OSError as exc:
                log.warning("%s: cannot bind its notify socket again (%s): READY=1 and "
                            "WATCHDOG=1 from it are lost", process, exc)
        self.spawned(process, config, pid, starting=state is State.STARTING)
        if state is State.RUNNING and config.health is not None:
            self._start_health(process, config)

    def gone(self, process: str) -> None:
        """Reaped (or never started): close everything it had."""
        w = self._watches.pop(process, None)
        if w is None:
            return
        if w.endpoint is not None:
            w.endpoint.close()
        if w.prober is not None:
            w.prober.cancel()
        if w.checker is not None:
            w.checker.cancel()

    def rename(self, old: str, new: str) -> None:
        """prog <-> prog:0 when numprocs crosses 1 (a reload)."""
        w = self._watches.pop(old, None)
        if w is not None:
            w.process = new
            self._watches[new] = w

    def close(self) -> None:
        for process in list(self._watches):
            self.gone(process)

    def health(self, process: str) -> Health | None:
        w = self._watches.get(process)
        return w.health if w is not None and (w.checker is not None or w.health.ok is not None) else None

    # ---- inside ---------------------------------------------------------------

    def _watch(self, process: str) -> _Watch:
        w = self._watches.get(process)
        if w is None:
            w = self._watches[process] = _Watch(process)
        return w

    def _start_health(self, process: str, config: ProgramConfig) -> None:
        assert config.health is not None
        h = config.health
        w = self._watch(process)
        if w.checker is not None:
            w.checker.cancel()
        w.health = Health()

        def result(ok: bool, detail: str) -> None:
            changed = (ok, detail) != (w.health.ok, w.health.detail)
            w.health.ok, w.health.detail = ok, detail
            w.health.failures = 0 if ok else w.health.failures + 1
            if changed or not ok:
                self._sink.details(w.process)

        w.checker = HealthChecker(_spec(h.check), h.interval, h.timeout, h.failures,
                                  lambda detail: self._sink.unhealthy(w.process, detail),
                                  on_result=result, env=dict(config.env), cwd=config.workingdir,
                                  user=_uid(config.user))
        w.checker.start()

    def _notice(self, process: str, notice: Notice) -> None:
        w = self._watches.get(process)
        if w is None:
            return
        if notice.status is not None:
            self._sink.status(process, notice.status)
        if notice.mainpid is not None and not w.mainpid_told:
            w.mainpid_told = True
            log.warning("%s: MAINPID=%d refused: taskmasterd supervises the process it started "
                        "(its pid and process group); a daemon that forks should run in the "
                        "foreground instead", process, notice.mainpid)
        if notice.stopping:
            log.info("%s: STOPPING=1: the process says it is shutting down", process)
        if notice.watchdog:
            self._sink.ping(process)
        if notice.ready:
            self._sink.ready(process, "READY=1")

    def _ignored(self, process: str, reason: str) -> None:
        w = self._watches.get(process)
        if w is None or w.ignored_told:
            log.debug("%s: notify message ignored: %s", process, reason)
            return
        w.ignored_told = True  # once per run: a flood must not flood the log
        log.warning("%s: notify message ignored: %s (further ones are logged at debug level)",
                    process, reason)
