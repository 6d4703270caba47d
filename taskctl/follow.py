"""`taskctl tail`: the end of a process's output, and with -f what is added,
across rotations; the journal when the output goes there."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import TextIO

from taskctl.context import Context
from taskctl.exitcodes import EXIT_ERROR, EXIT_OK
from taskctl.format import error_line, exit_code_for
from taskctl.model import CallError

FOLLOW_POLL = 0.2  # seconds between reads of a followed log file
REOPEN_AFTER = 1.0  # seconds without new data before checking for a rotation


def several_line(program: str, names: Sequence[str]) -> str:
    """`tail web` when web has several processes (supervisorctl refuses
    a group too): which ones to choose from."""
    return (f"{program}: ERROR (no such process): {program} has {len(names)} processes: "
            f"{' '.join(names)}; tail one of them (taskctl tail {names[0]})")


def cmd_tail(ctx: Context, args: argparse.Namespace) -> int:
    stream = "stderr" if args.stderr else "stdout"
    try:
        fd = ctx.client.open_log(args.process, stream)
    except CallError as exc:
        if exc.name == "NoSuchProgram":
            names = [r.name for r in ctx.client.list_processes()
                     if r.program == args.process and r.name != args.process]
            if names:
                ctx.error(several_line(args.process, names))
                return exit_code_for(exc.name)
        if exc.name != "NotAFile" or "goes to the journal" not in exc.message:
            ctx.error(error_line(args.process, exc))
            return exit_code_for(exc.name)
        return journal_fallback(ctx, args, exc)

    def reopen() -> int | None:
        try:
            return ctx.client.open_log(args.process, stream)
        except CallError:
            return None  # stopped, removed, daemon gone: keep the file we have

    return follow_fd(ctx, fd, args.bytes, args.follow, reopen)


def follow_fd(ctx: Context, fd: int, nbytes: int, follow: bool,
              reopen: Callable[[], int | None] | None = None) -> int:
    """Print the last `nbytes` of the file; with `follow`, then what is added
    (polled: the client side of `tail -f`). Closes `fd`.

    Rotation: when the file has had nothing new for REOPEN_AFTER s, `reopen`
    asks the daemon for the file again; another file (st_dev, st_ino) means
    ours was rotated away: its rest is printed, then the new one from its
    start. A file truncated in place (0 backups) is read again from the top."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        size = os.fstat(fd).st_size
        pos = os.lseek(fd, max(0, size - nbytes), os.SEEK_SET)
        while pos < size:
            chunk = os.read(fd, min(65536, size - pos))
            if not chunk:
                break
            pos += len(chunk)
            ctx.out.write(decoder.decode(chunk))
        ctx.out.flush()
        quiet = 0.0
        while follow:
            chunk = os.read(fd, 65536)
            if chunk:
                pos += len(chunk)
                quiet = 0.0
                ctx.out.write(decoder.decode(chunk))
                continue
            ctx.out.flush()
            st = os.fstat(fd)
            if st.st_size < pos:  # truncated: start again from the top
                pos = os.lseek(fd, 0, os.SEEK_SET)
            quiet += FOLLOW_POLL
            if reopen is not None and quiet >= REOPEN_AFTER:
                quiet = 0.0
                new = reopen()
                if new is not None and _same_file(os.fstat(new), st):
                    os.close(new)
                elif new is not None:
                    while chunk := os.read(fd, 65536):  # what was written before the rotation
                        ctx.out.write(decoder.decode(chunk))
                    os.close(fd)
                    fd, pos = new, 0
                    continue
            if _reader_gone(ctx.out):
                # Nobody reads what we print (`tail -f | head`, or ssh gone
                # when this runs for `taskctl -H`): a quiet log would
                # otherwise keep us here until its next line.
                raise BrokenPipeError("the reader of taskctl's output went away")
            ctx.client.sleep(FOLLOW_POLL)
        ctx.out.write(decoder.decode(b"", final=True))
        ctx.out.flush()
    finally:
        os.close(fd)
    return EXIT_OK


def _reader_gone(out: TextIO) -> bool:
    """Whether `out` is a pipe, socket or terminal whose other end is closed
    (POLLERR/POLLHUP come without being asked for; a file never has them)."""
    import select

    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, 0)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def journal_fallback(ctx: Context, args: argparse.Namespace, exc: CallError) -> int:
    """The output goes to the journal: journalctl -t <program> (exec'd from the CLI)."""
    import shutil

    journalctl = shutil.which("journalctl")
    if journalctl is None:
        ctx.error(error_line(args.process, exc))
        return EXIT_ERROR
    program = args.process.partition(":")[0]
    for row in ctx.client.list_processes():
        if row.name == args.process:
            program = row.program
    return run_journalctl(ctx, [journalctl, "--no-pager", *(["-f"] if args.follow else ["-n", "20"]),
                                "-t", program])


def run_journalctl(ctx: Context, argv: list[str]) -> int:
    """journalctl as asked: exec'd from the command line (its exit status is
    ours), a child from the shell (Ctrl-C ends it and returns to the prompt)."""
    import subprocess

    ctx.out.flush()
    ctx.err.flush()
    if not ctx.interactive:
        os.execv(argv[0], argv)
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise

