"""Default locations, by who runs the daemon (root: FHS; others: XDG)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from taskmasterd.config import GlobalConfig


@dataclass(frozen=True)
class Paths:
    logfile: str
    logdir: str
    statedir: str
    runtimedir: str


def _xdg(environ: Mapping[str, str], var: str, fallback: str) -> str:
    value = environ.get(var, "")
    if os.path.isabs(value):
        return value
    return os.path.join(environ.get("HOME") or os.path.expanduser("~"), fallback)


def default_config_path(uid: int | None = None, environ: Mapping[str, str] = os.environ) -> str:
    if (os.geteuid() if uid is None else uid) == 0:
        return "/etc/taskmaster/taskmaster.yaml"
    return os.path.join(_xdg(environ, "XDG_CONFIG_HOME", ".config"), "taskmaster", "taskmaster.yaml")


def resolve_paths(g: GlobalConfig, uid: int | None = None,
                  environ: Mapping[str, str] = os.environ) -> Paths:
    if (os.geteuid() if uid is None else uid) == 0:
        logdir, statedir, runtimedir = "/var/log/taskmaster", "/var/lib/taskmaster", "/run/taskmaster"
    else:
        state = os.path.join(_xdg(environ, "XDG_STATE_HOME", ".local/state"), "taskmaster")
        logdir, statedir = os.path.join(state, "log"), state
        runtime = environ.get("XDG_RUNTIME_DIR", "")
        runtimedir = (os.path.join(runtime, "taskmaster") if os.path.isabs(runtime)
                      else f"/tmp/taskmaster-{os.geteuid()}")
    logdir = g.logdir or logdir
    return Paths(logfile=g.logfile or os.path.join(logdir, "taskmasterd.log"), logdir=logdir,
                 statedir=g.statedir or statedir, runtimedir=runtimedir)
