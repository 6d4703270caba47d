"""One supervisord [program:x] section -> one Taskmaster program (a dict
ready for YAML) and the notes on what could not be carried over."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from taskmasterd.importer.envstr import EnvironmentError_, parse_environment
from taskmasterd.importer.expand import Names, expand_now, translate
from taskmasterd.importer.ini import Section
from taskmasterd.importer.report import Notes
from taskmasterd.programschema import parse_size

_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")
_NAME_BAD_RE = re.compile(r"[^A-Za-z0-9_.-]")

# Options with nothing to carry, and what to do instead.
UNSUPPORTED: dict[str, str] = {
    "serverurl": "taskctl talks D-Bus; a process that calls supervisorctl needs taskctl instead",
    "stdout_capture_maxbytes": "no process communication events; use alerts: in docs/config.md",
    "stderr_capture_maxbytes": "no process communication events; use alerts: in docs/config.md",
    "stdout_events_enabled": "no event listeners; use alerts: in docs/config.md",
    "stderr_events_enabled": "no event listeners; use alerts: in docs/config.md",
    "stdout_syslog": "write 'stdout: journal' to send the output to the journal",
    "stderr_syslog": "write 'stderr: journal' to send the output to the journal",
}


# The options whose %(...)s become our %{...} (the others are expanded now).
_TRANSLATED = ("command", "directory", "environment", "process_name", "stdout_logfile",
               "stderr_logfile")


@dataclass
class Program:
    name: str  # Taskmaster's
    source: Section
    body: dict[str, Any]
    priority: int
    autostart: bool


def program_name(section: Section, notes: Notes) -> str:
    """Our name for [program:x]: letters, digits, _ . - (1-64), not 'all'."""
    raw = section.label.strip()
    name = _NAME_BAD_RE.sub("_", raw)[:64] or "program"
    if name == "all":
        name = "all_"
    if name != raw:
        notes.add(section, None, f"program name {raw!r} is written {name!r} "
                                 "(letters, digits, _ . - only, 'all' is reserved)")
    return name


def _bool(text: str) -> bool | None:
    low = text.strip().lower()
    return True if low in _TRUE else False if low in _FALSE else None


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def read_program(section: Section, notes: Notes, group: str | None) -> Program:
    o = dict(section.options)
    name = program_name(section, notes)
    body: dict[str, Any] = {}
    group_name = group or section.label.strip()
    # numprocs (and the other plain keys) may use %(ENV_X)s too: expanded first
    for option in ("numprocs", "numprocs_start"):
        if option in o:
            o[option], problems = expand_now(o[option], Names(section.label.strip(), group_name))
            for p in problems:
                notes.add(section, option, p)

    def bad(option: str, expected: str) -> None:
        if "%(" in o[option]:
            return  # its expansion is reported already
        notes.add(section, option, f"{o[option]!r} is not {expected} (supervisord refuses it); left out")

    numprocs = _int(o.get("numprocs", "1"))
    if numprocs is None or not 1 <= numprocs <= 1000:
        if "numprocs" in o:
            bad("numprocs", "a number 1-1000")
        numprocs = 1
    start = _int(o.get("numprocs_start", "0")) or 0
    names = Names(program=section.label.strip(), group=group_name,
                  numprocs=numprocs, numprocs_start=start)

    # environment= first: supervisord adds it to the names of the other values
    env: dict[str, str] = {}
    if "environment" in o:
        try:
            pairs = parse_environment(o["environment"])
        except EnvironmentError_ as exc:
            notes.add(section, "environment", f"{exc}; left out")
            pairs = []
        for k, v in pairs:
            ex = translate(v, names)
            for p in ex.problems:
                notes.add(section, "environment", f"{k}: {p}")
            env[k] = ex.text
        names.env = dict(env)
    for option in o:
        if option not in _TRANSLATED and option not in ("numprocs", "numprocs_start"):
            o[option], problems = expand_now(o[option], names)
            for p in problems:
                notes.add(section, option, p)

    def text(option: str, allow_vars: bool = True) -> str | None:
        if option not in o:
            return None
        ex = translate(o[option], names, allow_vars)
        for p in ex.problems:
            notes.add(section, option, p)
        return ex.text

    cmd = text("command")
    if cmd is None:
        notes.add(section, None, "has no command (supervisord refuses it); written with cmd: false")
        cmd = "false"
    body["cmd"] = cmd
    if numprocs != 1:
        body["numprocs"] = numprocs
    _process_name(section, name, numprocs, notes)
    if start:
        notes.add(section, "numprocs_start", f"processes are numbered from 0, not {start}")
    workingdir = text("directory")
    if workingdir is not None:
        body["workingdir"] = workingdir
    umask = o.get("umask")
    if umask is not None:
        digits = umask.strip()
        if re.fullmatch(r"0?[0-7]{1,3}", digits):
            body["umask"] = digits.rjust(3, "0")
        else:
            bad("umask", "an octal umask")
    if "autostart" in o:
        b = _bool(o["autostart"])
        if b is None:
            bad("autostart", "a boolean")
        else:
            body["autostart"] = b
    if "autorestart" in o:
        low = o["autorestart"].strip().lower()
        mode = {"unexpected": "unexpected"}.get(low) or (
            "always" if low in _TRUE else "never" if low in _FALSE else None)
        if mode is None:
            bad("autorestart", "true, false or unexpected")
        else:
            body["autorestart"] = mode
    if "exitcodes" in o:
        codes = [_int(c) for c in o["exitcodes"].split(",")]
        if codes and all(c is not None and 0 <= c <= 255 for c in codes):
            body["exitcodes"] = codes
        else:
            bad("exitcodes", "a list of exit codes 0-255")
    for option, ours, top in (("startretries", "startretries", 1000), ("startsecs", "starttime", 86400),
                              ("stopwaitsecs", "stoptime", 86400)):
        if option in o:
            n = _int(o[option])
            if n is None or not 0 <= n <= top:
                bad(option, f"a number 0-{top}")
            else:
                body[ours] = n
    if "stopsignal" in o:
        sig = o["stopsignal"].strip().upper()
        body["stopsignal"] = int(sig) if sig.isdigit() else sig
    for option in ("stopasgroup", "killasgroup"):
        if option in o and _bool(o[option]) is False:
            notes.add(section, option, "Taskmaster always signals the whole process group "
                                       "(a program is its process group)")
    user = o.get("user")
    if user is not None:
        body["user"] = user
    if env:
        body["env"] = env
    redirect = _bool(o.get("redirect_stderr", "false")) is True
    _outputs(section, o, body, text, redirect, notes)
    for option, why in UNSUPPORTED.items():
        if option in o and not _is_off(option, o[option]):
            notes.add(section, option, f"not supported ({why})")
    known = {"command", "numprocs", "numprocs_start", "process_name", "directory", "umask",
             "autostart", "autorestart", "exitcodes", "startretries", "startsecs",
             "stopwaitsecs", "stopsignal", "stopasgroup", "killasgroup", "user", "environment",
             "redirect_stderr", "priority", *UNSUPPORTED,
             *(f"{s}_logfile{x}" for s in ("stdout", "stderr") for x in ("", "_maxbytes", "_backups"))}
    for option in o:
        if option not in known:
            notes.add(section, option, "unknown to supervisord 4 and to Taskmaster; left out")
    _relative_paths(section, body, notes)
    priority = _int(o.get("priority", "999"))
    autostart = _bool(o.get("autostart", "true")) is not False
    return Program(name, section, body, 999 if priority is None else priority, autostart)


def _is_off(option: str, value: str) -> bool:
    """An unsupported option left at its default changes nothing: not reported."""
    if option == "serverurl":
        return value.strip().upper() == "AUTO"
    if option.endswith("_capture_maxbytes"):
        return parse_size(value) == 0
    return _bool(value) is False


def _relative_paths(section: Section, body: dict[str, Any], notes: Notes) -> None:
    """supervisord resolves a relative path against its own working
    directory; Taskmaster against the directory of the YAML file."""
    why = ("a relative path: supervisord resolves it against its working directory, Taskmaster "
           "against the YAML file's; write it absolute")
    for ours, theirs in (("workingdir", "directory"), ("stdout", "stdout_logfile"),
                         ("stderr", "stderr_logfile")):
        value = body.get(ours)
        if isinstance(value, str) and not value.startswith(("/", "%{")):
            notes.add(section, theirs, why)
    argv0 = body["cmd"].split(None, 1)[0] if body["cmd"].split() else ""
    if "/" in argv0 and not argv0.startswith(("/", "%{")):
        notes.add(section, "command", why.replace("a relative path", "a relative program path"))


def _process_name(section: Section, name: str, numprocs: int, notes: Notes) -> None:
    pattern = section.options.get("process_name")
    if numprocs == 1:
        if pattern is not None and pattern.strip() != "%(program_name)s":
            notes.add(section, "process_name", f"the process is named {name!r} "
                                               "(Taskmaster names a lone process as its program)")
        return
    ours = f"{name}:0 ... {name}:{numprocs - 1}"
    notes.add(section, "process_name" if pattern else "numprocs",
              f"the processes are named {ours} (supervisord: {section.label}:<process_name>)")


def _outputs(section: Section, o: dict[str, str], body: dict[str, Any], text: Any, redirect: bool,
             notes: Notes) -> None:
    for stream in ("stdout", "stderr"):
        key = f"{stream}_logfile"
        if stream == "stderr" and redirect:
            if key in o and o[key].strip().lower() not in ("auto", "none", "off"):
                notes.add(section, key, "ignored with redirect_stderr=true (as supervisord does)")
            continue
        if key in o:
            value = text(key)
            low = value.strip().lower()
            if low in ("none", "off"):
                body[stream] = None
            elif low == "auto":
                pass  # ours when absent: a file in logdir (or the journal under systemd)
            elif low == "syslog":
                notes.add(section, key, "the deprecated 'syslog': write 'stdout: journal' instead")
            else:
                body[stream] = value
        for suffix, ours in (("_maxbytes", "_maxbytes"), ("_backups", "_backups")):
            option = key + suffix
            if option not in o:
                continue
            raw = o[option].strip()
            if suffix == "_maxbytes":
                if parse_size(raw) is None:
                    notes.add(section, option, f"{raw!r} is not a size; left out")
                else:
                    body[stream + ours] = raw if not raw.isdigit() else int(raw)
            else:
                n = _int(raw)
                if n is None or not 0 <= n <= 1000:
                    notes.add(section, option, f"{raw!r} is not a number 0-1000; left out")
                else:
                    body[stream + ours] = n
    if redirect:
        body["redirect_stderr"] = True
