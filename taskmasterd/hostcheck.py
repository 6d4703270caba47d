"""Checks of a loaded configuration against this host.

`config.py` is pure: it reads the config files and nothing else, so it cannot know
that `stdout: journal` names a journal this host does not have (the spawn
then failed with `ENOENT (open stdout)`). `load()` is what the daemon and
`--check-config` call instead of `config.load_config`: the same errors, plus
these, located like the others. The host is asked through `journal_present`
(injectable: tests pass their own); its apprise, whether it can use each
alert URL, through `alerts.urls.url_issues`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import stat
from collections.abc import Callable
from pathlib import Path

from taskmasterd.alerts.urls import url_issues
from taskmasterd.config import Config, ConfigError, ConfigIssue, OutputKind, load_config

# Where journald takes stream connections (sd_journal_stream_fd's socket).
JOURNAL_SOCKET = "/run/systemd/journal/stdout"


def journal_present() -> bool:
    """True when journald listens on this host (its stream socket exists)."""
    try:
        return stat.S_ISSOCK(os.stat(JOURNAL_SOCKET).st_mode)
    except OSError:
        return False


def _journal_module() -> bool:
    try:
        return importlib.util.find_spec("systemd.journal") is not None
    except (ImportError, ValueError):
        return False


def host_issues(config: Config, *, journal: Callable[[], bool] = journal_present,
                journal_module: Callable[[], bool] = _journal_module) -> list[ConfigIssue]:
    """What in `config` this host cannot do, each at its place in the file."""
    wanted = [(p.name, stream, out) for p in config.programs
              for stream, out in (("stdout", p.stdout), ("stderr", p.stderr))
              if out.kind is OutputKind.JOURNAL]
    if not wanted:
        return []
    if not journal():
        problem = (f"no journal on this host ({JOURNAL_SOCKET} does not exist: journald is not "
                   "running); write a file path, or null to discard the output")
    elif not journal_module():
        problem = ("journal output needs python3-systemd (the systemd.journal module), which "
                   "is not installed; install it, or write a file path")
    else:
        return []
    return [ConfigIssue(config.file_of(name), out.line, out.column, f"programs.{name}.{stream}",
                        problem)
            for name, stream, out in wanted]


def _alert_issues(config: Config) -> list[ConfigIssue]:
    """url_issues file by file: each alert at its place in its own file."""
    if not config.files:
        return url_issues(config)
    return [issue for f in config.files if f.alerts
            for issue in url_issues(dataclasses.replace(config, path=f.name, alerts=f.alerts))]


def load(path: str | Path, *, journal: Callable[[], bool] = journal_present) -> Config:
    """`config.load_config(path)` plus `host_issues` and the alert URLs apprise
    cannot use; ConfigError with every issue (file by file, the main one first)."""
    config = load_config(path)
    issues = host_issues(config, journal=journal) + _alert_issues(config)
    if issues:
        # Issues name the file as given, like load_config's.
        name = os.fspath(path)
        order = {f.name: n for n, f in enumerate(config.files)}
        named = [ConfigIssue(name if i.file == config.path else i.file, i.line, i.column,
                             i.keypath, i.message) for i in issues]
        raise ConfigError(sorted(named, key=lambda i: (order.get(i.file, 0), i.line, i.column)))
    return config
