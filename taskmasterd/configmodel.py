"""The configuration's model: `Config` (the whole tree of files),
`GlobalConfig` (`taskmasterd:`) and `ConfigFile` (one file read), frozen
dataclasses; `programs:`, `alerts:` and `tasks:` bring theirs
(taskmasterd.programmodel, taskmasterd.alertschema, taskmasterd.tasks.settings).

Apart from the validator that fills them (taskmasterd.configschema) so that
the validator and the entry points (taskmasterd.config, which re-exports
these) both import them, one way. Pure: no I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from taskmasterd.alertschema import AlertConfig
from taskmasterd.programmodel import ProgramConfig
from taskmasterd.tasks.settings import TaskSettings

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class GlobalConfig:
    # None means "the daemon picks the default for its uid" (see paths.py).
    logfile: str | None = None
    loglevel: str = "info"  # debug | info | warning | error
    logdir: str | None = None
    statedir: str | None = None
    include: tuple[str, ...] = ()  # the patterns as written (Config.files: what they named)


@dataclass(frozen=True)
class ConfigFile:
    """One file of the configuration: the main one or one it includes."""

    path: str  # absolute
    name: str  # as issues name it: as given (main), or joined to the main file's name
    programs: tuple[str, ...] = ()  # the programs it defines, in file order
    alerts: tuple[AlertConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    path: str  # absolute path of the main file
    daemon: GlobalConfig = GlobalConfig()
    programs: tuple[ProgramConfig, ...] = ()  # in file order, the main file's first
    alerts: tuple[AlertConfig, ...] = ()
    tasks: TaskSettings = field(default_factory=TaskSettings)
    # Every file read, the main one first, then the included ones in the
    # order read. Not part of the value: moving a program to another file
    # changes nothing a reload acts on.
    files: tuple[ConfigFile, ...] = field(default=(), compare=False)

    def program(self, name: str) -> ProgramConfig | None:
        return self._by_name.get(name)

    def file_of(self, program: str) -> str:
        """The name (as in issues) of the file defining `program`."""
        return next((f.name for f in self.files if program in f.programs), self.path)

    @functools.cached_property
    def _by_name(self) -> dict[str, ProgramConfig]:
        # Not a field: frozen and compared by value all the same. The D-Bus
        # properties look programs up by name on every read.
        return {p.name: p for p in self.programs}
