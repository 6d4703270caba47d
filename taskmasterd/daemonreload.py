"""The daemon's reloads (SIGHUP, `taskctl reload`, Manager.Reload) and their
preview (Manager.PlanReload): read the file tree again, then apply the
difference or only say what it would be. A mixin of daemon.Daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
from typing import TYPE_CHECKING, NoReturn

from taskmasterd.config import Config, ConfigError
from taskmasterd.errors import ConfigInvalid, ShuttingDown
from taskmasterd.events import Event, EventBus, Kind
from taskmasterd.exposure import exposure_warning
from taskmasterd.hostcheck import load as load_config
from taskmasterd.logsink import LifecycleLog
from taskmasterd.paths import Paths, resolve_paths
from taskmasterd.reload import ReloadPlan, plan_reasons, plan_reload
from taskmasterd.settingsdiff import SettingChange, not_applied, settings_changes
from taskmasterd.supervisor import Supervisor

if TYPE_CHECKING:
    from taskmasterd.alerts import AlertDispatcher
    from taskmasterd.statestore.store import StateStore
    from taskmasterd.tasks.manager import TaskManager

log = logging.getLogger("taskmasterd")


class Reloading:
    # Owned by daemon.Daemon (declared here for the type checker).
    config_path: str
    config: Config
    bus: EventBus
    lifelog: LifecycleLog
    supervisor: Supervisor
    state: str
    alerts: AlertDispatcher | None
    tasks: TaskManager
    store: StateStore | None
    reloads: int
    _stop: asyncio.Event

    def _set_state(self, state: str) -> None: ...

    def _warn_if_exposed(self, config: Config) -> None:
        """One warning when the file holds credentials any user can read."""
        # A target apprise could not parse may hide anything: counted as secret.
        secret = [t.sender is None or bool(t.sender.secrets) for t in self.alerts.targets] \
            if self.alerts is not None else []
        warning = exposure_warning(config, secret)
        if warning is not None:
            log.warning("%s", warning)

    def reload(self) -> ReloadPlan:
        """Re-read the file; on errors keep the running config and raise.
        Refused once a shutdown is requested: what it would start would be
        stopped at once, and what it reports would not happen."""
        if self._stop.is_set() or self.supervisor.shutting_down:
            raise ShuttingDown("taskmasterd is shutting down: reload refused")
        previous = self.state
        self._set_state("reloading")
        try:
            return self._reload()
        finally:
            self._set_state(previous)

    def _reload(self) -> ReloadPlan:
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self._reload_failed([str(i) for i in exc.issues])
        paths = resolve_paths(new.daemon)
        settings = settings_changes(self.config, new, self._paths_in_use(), paths)
        try:
            self.lifelog.reconfigure(paths.logfile, new.daemon.loglevel)
        except OSError as exc:
            self._reload_failed([f"cannot open the log file {paths.logfile}: {exc.strerror}"])
        self.supervisor.logdir = paths.logdir
        self.tasks.configure(new.tasks)
        if self.alerts is not None:  # before the RELOAD event: the new targets hear of it
            self.alerts.configure(new.alerts)
        self._warn_if_exposed(new)
        for change in not_applied(settings):
            log.warning("reload: %s changed (%s -> %s) but is not applied by a reload: "
                        "%s stays in use until taskmasterd is restarted",
                        change.setting, change.old, change.new, change.old)
        plan = self.supervisor.reload(new, settings)
        self.config = new
        self.reloads += 1
        return plan

    def plan_reload(self) -> tuple[ReloadPlan, dict[str, str]]:
        """What reload() would do now, with the file as it is on disk, and why
        (Manager.PlanReload): the same loader and the same diff, nothing
        applied, no event. ConfigInvalid with the messages a Reload would
        refuse with."""
        new = self._load_for_plan()
        old = self.supervisor.config  # what Supervisor.reload diffs against
        plan = plan_reload(old, new)
        return plan, plan_reasons(plan, old, new)

    def plan_settings(self) -> tuple[SettingChange, ...]:
        """What reload() would change now outside the programs
        (Manager.PlanReloadSettings): settingsdiff.py. Errors as plan_reload()."""
        new = self._load_for_plan()
        return settings_changes(self.config, new, self._paths_in_use(), resolve_paths(new.daemon))

    def _paths_in_use(self) -> Paths:
        """The running configuration's paths, with the statedir the daemon
        holds: a reload does not move it, so it differs from the file's
        until a restart, and every preview says so."""
        paths = resolve_paths(self.config.daemon)
        if self.store is None:
            return paths
        return dataclasses.replace(paths, statedir=self.store.statedir)

    def _load_for_plan(self) -> Config:
        """The file as reload() would read it, or the error it would refuse with."""
        if self._stop.is_set() or self.supervisor.shutting_down:
            raise ShuttingDown("taskmasterd is shutting down: no reload to plan")
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            raise ConfigInvalid("\n".join(str(i) for i in exc.issues)) from None
        logfile = resolve_paths(new.daemon).logfile
        problem = _log_file_problem(logfile) if logfile != self.lifelog.logfile else None
        if problem is not None:
            raise ConfigInvalid(f"cannot open the log file {logfile}: {problem}")
        return new

    def _reload_failed(self, lines: list[str]) -> NoReturn:
        self.bus.publish(Event(
            kind=Kind.RELOAD_FAILED,
            message=f"{self.config_path}: {len(lines)} error(s); still running the "
                    "previous configuration:\n  " + "\n  ".join(lines)))
        raise ConfigInvalid("\n".join(lines))

    def reload_quietly(self) -> None:
        try:
            self.reload()
        except ConfigInvalid:
            pass  # already logged; the old config keeps running
        except ShuttingDown:
            log.info("SIGHUP ignored: taskmasterd is shutting down")


def _log_file_problem(path: str) -> str | None:
    """Why a Reload could not open `path` as its new log file (the strerror
    it would give), judged without creating it or its directories."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if probe != path and not os.path.isdir(probe):
        return os.strerror(errno.ENOTDIR)
    if probe == path and os.path.isdir(path):
        return os.strerror(errno.EISDIR)
    if not os.access(probe, os.W_OK | (os.X_OK if probe != path else 0)):
        return os.strerror(errno.EACCES)
    return None
