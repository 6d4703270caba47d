"""`taskctl maintail [-f]` (supervisorctl's word): the end of taskmasterd's
own log. That is its lifecycle log file (`taskmasterd.logfile`, found as
`taskctl history` finds it: the configuration the daemon names, resolved
for its uid), read here as `tail` reads an output file (-f: across
rotations); when that file cannot be read and the host has a journal, the
journal of taskmasterd (`journalctl -t taskmasterd`). Over -H it runs on the
host (hosts.RUN_THERE): the file is there.
"""

from __future__ import annotations

import argparse
import os
import shutil

from taskctl.context import Context
from taskctl.exitcodes import EXIT_ERROR
from taskctl.follow import follow_fd, run_journalctl

IDENTIFIER = "taskmasterd"  # SYSLOG_IDENTIFIER of the daemon in the journal
JOURNAL_LINES = 20  # the journal has lines, not bytes: this many first


def _open(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)


def run(ctx: Context, args: argparse.Namespace) -> int:
    from taskctl.history import JOURNAL_SOCKET, daemon_log_file

    path, asked = daemon_log_file(ctx)
    try:
        fd = _open(path)
    except OSError as exc:
        why = exc.strerror or str(exc)
        journalctl = shutil.which("journalctl")
        if os.path.exists(JOURNAL_SOCKET) and journalctl is not None:
            ctx.error(f"taskctl maintail: cannot read {path} ({why}); taskmasterd's journal "
                      "instead")
            return journal(ctx, journalctl, args.follow)
        hint = ""
        if isinstance(exc, PermissionError):
            hint = " (run as root, or as the user taskmasterd runs as)"
        elif not asked:
            hint = (" (taskmasterd is not reachable to say where its log is: this is where its "
                    "default configuration puts it)")
        ctx.error(f"taskctl maintail: cannot read {path}: {why}{hint}")
        return EXIT_ERROR

    def reopen() -> int | None:
        try:
            return _open(path)
        except OSError:
            return None  # rotated and not created again yet: keep the file we have

    return follow_fd(ctx, fd, args.bytes, args.follow, reopen)


def journal(ctx: Context, journalctl: str, follow: bool) -> int:
    """journalctl -t taskmasterd (exec'd from the command line)."""
    return run_journalctl(ctx, [journalctl, "--no-pager", "-n", str(JOURNAL_LINES),
                                *(["-f"] if follow else []), "-t", IDENTIFIER])
