"""`taskctl tail`: the end of a process's output, and with -f what is added,
across rotations; the journal when the output goes there."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import TextIO

from taskctl.context import Context
from taskctl.exitcodes import EXIT_ERROR, EXIT_OK
from taskctl.filefollow import FOLLOW_POLL, FileFollow
from taskctl.format import error_line, exit_code_for
from taskctl.model import CallError


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
    (polled: the client side of `tail -f`, across rotations and truncations
    as taskctl/filefollow.py says; `reopen` asks the daemon for the file
    again). Closes `fd`."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = FileFollow(fd)
    try:
        tail.seek(max(0, os.fstat(fd).st_size - nbytes))
        while chunk := tail.read(max_chunks=1):
            ctx.out.write(decoder.decode(chunk))
        ctx.out.flush()
        while follow:
            data = tail.read()
            if data:
                ctx.out.write(decoder.decode(data))
                continue
            ctx.out.flush()
            if tail.quiet() and reopen is not None:
                switched, rest = tail.switch(reopen())
                ctx.out.write(decoder.decode(rest))
                if switched:
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
        tail.close()
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

