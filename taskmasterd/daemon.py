"""The daemon's top level: read the config, wire the event stream, run the
supervisor until SIGTERM/SIGINT, reload on SIGHUP. Runs in the foreground
(systemd style: no double fork)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import NoReturn

from taskmasterd import __version__, events
from taskmasterd.config import Config, ConfigError, load_config
from taskmasterd.errors import ConfigInvalid
from taskmasterd.events import Event, EventBus
from taskmasterd.logsink import LifecycleLog
from taskmasterd.paths import resolve_paths
from taskmasterd.reload import ReloadPlan
from taskmasterd.supervisor import Supervisor

log = logging.getLogger("taskmasterd")


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
class Daemon:
    config_path: str
    config: Config
    bus: EventBus
    lifelog: LifecycleLog
    supervisor: Supervisor

    @classmethod
    async def create(cls, config: Config) -> Daemon:
        paths = resolve_paths(config.daemon)
        try:
            lifelog = LifecycleLog(paths.logfile, config.daemon.loglevel)
        except OSError as exc:
            raise StartupError(f"cannot open the log file {paths.logfile}: {exc.strerror}") from None
        bus = EventBus()
        bus.subscribe(lifelog.write)
        sup = Supervisor(config, bus, logdir=paths.logdir, journal=under_journald())
        return cls(config.path, config, bus, lifelog, sup)

    def reload(self) -> ReloadPlan:
        """Re-read the file; on errors keep the running config and raise."""
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self._reload_failed([str(i) for i in exc.issues])
        paths = resolve_paths(new.daemon)
        try:
            self.lifelog.reconfigure(paths.logfile, new.daemon.loglevel)
        except OSError as exc:
            self._reload_failed([f"cannot open the log file {paths.logfile}: {exc.strerror}"])
        self.supervisor.logdir = paths.logdir
        plan = self.supervisor.reload(new)
        self.config = new
        return plan

    def _reload_failed(self, lines: list[str]) -> NoReturn:
        self.bus.publish(Event(
            kind=events.RELOAD_FAILED,
            message=f"{self.config_path}: {len(lines)} error(s); still running the "
                    "previous configuration:\n  " + "\n  ".join(lines)))
        raise ConfigInvalid("\n".join(lines))

    async def run(self, stop: asyncio.Event) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_quietly)
        self.bus.publish(Event(
            kind=events.DAEMON_START, fields={"pid": str(os.getpid())},
            message=f"taskmasterd {__version__} started with {self.config_path} "
                    f"({len(self.config.programs)} programs)"))
        self.supervisor.launch_autostart()
        await stop.wait()
        live = self.supervisor.live_children()
        self.bus.publish(Event(kind=events.DAEMON_STOP,
                               message=f"shutting down: stopping {live} running process(es)"))
        await self.supervisor.shutdown()
        self.bus.publish(Event(kind=events.DAEMON_STOP, message="every process stopped; exiting"))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # Every program is down: a late signal must not turn our clean
            # exit 0 into death by signal (SIG_DFL would).
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        self.lifelog.close()
        return 0

    def _reload_quietly(self) -> None:
        try:
            self.reload()
        except ConfigInvalid:
            pass  # already logged; the old config keeps running


async def serve(config: Config) -> int:
    try:
        daemon = await Daemon.create(config)
    except StartupError as exc:
        print(f"taskmasterd: not started: {exc}", file=sys.stderr)
        return 1
    return await daemon.run(asyncio.Event())
