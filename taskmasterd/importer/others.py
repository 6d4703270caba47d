"""The sections that are not [program:x]: [supervisord] (-> `taskmasterd:`
where there is an equivalent) and the rest, which are reported."""

from __future__ import annotations

import os
import re
from typing import Any

from taskmasterd.importer.ini import Section, expand_environ
from taskmasterd.importer.report import Notes

_LOGLEVELS = {"critical": "error", "error": "error", "warn": "warning", "info": "info",
              "debug": "debug", "trace": "debug", "blather": "debug"}

# [supervisord] options without an equivalent, and what to do instead.
_DAEMON_NOTES: dict[str, str] = {
    "pidfile": "no pid file: systemd or your init tracks taskmasterd",
    "nodaemon": "taskmasterd always runs in the foreground under systemd's Type=notify",
    "silent": "taskmasterd's own output goes to its stderr , the journal under systemd",
    "logfile_maxbytes": "the lifecycle log is rotated by logrotate and USR2 reopens it",
    "logfile_backups": "the lifecycle log is rotated by logrotate and USR2 reopens it",
    "user": "run taskmasterd as that user with User= in its systemd unit",
    "umask": "set it for taskmasterd with UMask= in its systemd unit, or per program with umask:",
    "directory": "set it per program with workingdir:",
    "environment": "set it for taskmasterd with Environment= in its unit, or per program with env:",
    "minfds": "set LimitNOFILE= in taskmasterd's systemd unit",
    "minprocs": "set LimitNPROC= in taskmasterd's systemd unit",
    "identifier": "the D-Bus name is fixed: org.taskmaster in docs/dbus-api.md",
    "nocleanup": "automatic output files are kept, rotated by size",
    "strip_ansi": "output is written as the program writes it",
    "childlogdir": "",  # carried over (logdir)
}

_SECTION_NOTES: dict[str, str] = {
    "unix_http_server": "taskctl talks to taskmasterd over D-Bus; who may use it is D-Bus "
                        "policy in docs/remote.md",
    "inet_http_server": "no HTTP control port; remote control goes over ssh in docs/remote.md "
                        "and taskweb serves a web page in docs/web.md",
    "supervisorctl": "taskctl finds taskmasterd on D-Bus by itself",
    "rpcinterface": "the control interface is D-Bus in docs/dbus-api.md",
    "eventlistener": "no event listeners: use alerts: for notifications in docs/config.md; "
                     "or run it as a program if it does not need supervisord's events",
    "fcgi-program": "no FastCGI socket management: run the server as a program listening on "
                    "its own socket",
    "ctlplugin": "taskctl has no plugins",
}


def read_daemon(section: Section, notes: Notes) -> dict[str, Any]:
    """[supervisord] -> the `taskmasterd:` mapping."""
    out: dict[str, Any] = {}
    o = section.options
    if "logfile" in o:
        path = _path(section, "logfile", notes)
        if path is not None and not path.startswith("/dev/"):
            # the same directory, our own file: the formats differ, and both
            # daemons may run side by side while moving over
            ours = os.path.join(os.path.dirname(path), "taskmasterd.log")
            notes.add(section, "logfile", f"taskmasterd's own log is written to {ours} "
                                          "(its lifecycle log, in its own format)")
            out["logfile"] = ours
        elif path is not None:
            out["logfile"] = path
    if "childlogdir" in o:
        path = _path(section, "childlogdir", notes)
        if path is not None:
            out["logdir"] = path
    if "loglevel" in o:
        level = _LOGLEVELS.get(o["loglevel"].strip().lower())
        if level is None:
            notes.add(section, "loglevel", f"{o['loglevel']!r} is not a supervisord log level; left out")
        else:
            out["loglevel"] = level
    for option in o:
        if option in ("logfile", "childlogdir", "loglevel"):
            continue
        why = _DAEMON_NOTES.get(option, "unknown to supervisord 4 and to Taskmaster")
        notes.add(section, option, f"not carried over: {why}")
    return out


def _path(section: Section, option: str, notes: Notes) -> str | None:
    # `taskmasterd:` takes no %{...}: the environment is expanded now, as
    # supervisord would at its start
    value = expand_environ(section.options[option]).strip()
    if value.upper() in ("AUTO", "NONE", "SYSLOG") or re.search(r"%\(", value):
        notes.add(section, option, f"{value!r} is not carried over (use the default, or write a path)")
        return None
    return value.replace("%%", "%")


def note_section(section: Section, notes: Notes, in_main: bool) -> None:
    """A section that is neither [program:x] nor [supervisord]: say what becomes of it."""
    kind = section.kind
    if kind == "group":
        members = ", ".join(p.strip() for p in section.options.get("programs", "").split(","))
        notes.add(section, None, f"groups are not carried over: its programs ({members}) are "
                                 "programs of their own; start them together with "
                                 "`taskctl start a b` or a glob")
        return
    if kind == "include":
        if not in_main:
            notes.add(section, None, "ignored, as supervisord ignores [include] in included files")
        return
    why = _SECTION_NOTES.get(kind)
    if why is None:
        notes.add(section, None, "unknown section; not carried over")
    else:
        notes.add(section, None, f"not carried over: {why}")
