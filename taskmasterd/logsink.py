"""The lifecycle log: one timestamped line per event, in the log file and on
stderr. Line shape (stable, grep- and parse-friendly):

    2026-11-23 10:31:02.123 WARNING web:1 EXITED pid=4242 status=-9 expected=no: ...

i.e. date, time, level, process (or `taskmasterd`), event kind, key=value
fields, then a human sentence after ': '.

Lines are written once per event-loop turn, not one write (plus a stat of
the log file) per line: starting 1000 programs is 2000 lines in one turn.
They reach the file before the loop next waits; a SIGKILL can lose at most
the lines of the turn it interrupts.

A write that fails (a full disk, EIO, a closed pipe) never stops the
daemon: the failure is logged once (through the other handlers too), the
lines of that outage are counted and dropped, and the first write that
works again says how many were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import sys
import time

from taskmasterd.events import Event, Kind
from taskmasterd.states import State

log = logging.getLogger("taskmasterd")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class _FormatOnce(logging.Formatter):
    """A record formatted once for every handler that shares this formatter
    (the file and stderr write the same line): a burst of tasks is three
    lines per task, and formatting was most of a line's cost."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get("_taskmaster_line")
        if line is None:
            line = super().format(record)
            record._taskmaster_line = line
        return line


_FORMAT = _FormatOnce("%(asctime)s.%(msecs)03d %(levelname)s %(message)s",
                      datefmt="%Y-%m-%d %H:%M:%S")


class _Batching(logging.StreamHandler):  # type: ignore[type-arg]
    """Collects formatted lines; writes them all at the end of the loop turn
    (at once when no loop runs in this thread, e.g. an alert worker)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._lines: list[str] = []
        self._scheduled = False
        self._failure = ""  # why writing fails ("": it works)
        self._dropped = 0  # lines lost since it fails

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._queue(line)

    def add_line(self, line: str) -> None:
        """A line formatted already (LifecycleLog's events), as emit() takes one."""
        with self.lock:  # type: ignore[union-attr]
            self._queue(line)

    def _queue(self, line: str) -> None:
        self._lines.append(line + self.terminator)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = False
            lines, self._lines = self._lines, []
            if not lines:
                return
            self._before_write()
            if self.stream is None:
                self._dropped += len(lines)
                return
            # a failed write may have left half a line: end it first
            cut = self._line_break_if_cut() if self._failure else ""
            try:
                self.stream.write(cut + "".join(lines))
                self.stream.flush()
            except OSError as exc:
                self._write_failed(exc, len(lines))
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": "".join(lines)}))
            else:
                if self._failure:
                    dropped, failure = self._dropped, self._failure
                    self._dropped, self._failure = 0, ""
                    log.warning("log: %s is written again; %d line(s) were lost (%s)",
                                self._where(), dropped, failure)

    def _write_failed(self, exc: OSError, count: int) -> None:
        self._dropped += count
        self._discard()
        if not self._failure:
            self._failure = exc.strerror or str(exc)
            # The other handlers carry it; this one counts it among the lost.
            log.warning("log: cannot write %s (%s); supervision goes on, its lines are dropped "
                        "until it can be written again", self._where(), self._failure)

    def _where(self) -> str:
        return "stderr"

    def _line_break_if_cut(self) -> str:
        return ""

    def _discard(self) -> None:
        """Drop what the stream still buffers: a retry of it would fail the same way."""

    def _before_write(self) -> None:
        pass

    def close(self) -> None:
        self.flush()
        super().close()


class _BatchedStderr(_Batching):
    pass


class _BatchedFile(_Batching, logging.handlers.WatchedFileHandler):
    _reopen_failed = False

    def _before_write(self) -> None:
        if self._reopen_failed:  # a SIGUSR2 reopen failed: each batch tries again
            try:
                self._open_again()
            except OSError:
                return
        # Watched: logrotate may move the file; the next batch reopens it.
        try:
            if self.stream is None:  # dropped after a failed write
                self.stream = self._open()
                self._statstream()
            else:
                self.reopenIfNeeded()
        except OSError as exc:  # cannot reopen it (e.g. no room for a new file)
            self._write_failed(exc, 0)

    def _where(self) -> str:
        return f"the log file {self.baseFilename}"

    def _line_break_if_cut(self) -> str:
        """A newline when the file ends inside a line (a write cut short by ENOSPC)."""
        try:  # our fd is write-only (append mode): read the end through the name
            with open(self.baseFilename, "rb") as f:
                if f.seek(0, os.SEEK_END) == 0:
                    return ""
                f.seek(-1, os.SEEK_END)
                return "" if f.read(1) == b"\n" else "\n"
        except OSError:
            return ""

    def _discard(self) -> None:
        # Point the stream's fd at /dev/null, then close it: the bytes it
        # still buffers go nowhere instead of being retried, and no other
        # thread can be handed that fd number meanwhile. The next batch
        # reopens the file (append mode).
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.dup2(null, stream.fileno(), inheritable=False)
                finally:
                    os.close(null)
            with contextlib.suppress(Exception):
                stream.close()

    def _open_again(self) -> None:
        self.stream = self._open()
        self._statstream()
        self._reopen_failed = False

    def reopen(self) -> None:
        """Close the file and open the path again, now (SIGUSR2): the lines
        waiting for this loop turn go to the file they were logged in."""
        with self.lock:  # type: ignore[union-attr]
            self.flush()
            if self.stream is not None:
                self.stream.close()
                self.stream = None
            self._reopen_failed = True
            self._open_again()

    def close(self) -> None:
        self._reopen_failed = False  # closed for good: nothing to try again
        super().close()


class _Stamp:
    """The start of a line, as _FORMAT writes it: the local time to the
    millisecond and the level name; the seconds part made once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def prefix(self, now: float, level: int) -> str:
        second = int(now)
        if second != self._second:
            self._second, self._text = second, time.strftime(_FORMAT.datefmt or "",
                                                             time.localtime(second))
        return f"{self._text}.{int((now - second) * 1000):03d} {logging.getLevelName(level)} "


def level_of(event: Event) -> int:
    if event.kind in (State.FATAL, Kind.RELOAD_FAILED, State.UNKNOWN):
        return logging.ERROR
    if event.kind in (State.BACKOFF, Kind.SPAWN_ERROR, Kind.KILLED, Kind.UNHEALTHY,
                      Kind.OVERLAP_FAILED, Kind.TASK_FAILED, Kind.TASK_LOST, Kind.ACTIVITY_FAILED):
        return logging.WARNING
    if event.kind == State.EXITED and not event.expected:
        return logging.WARNING
    return logging.INFO


def format_event(event: Event) -> str:
    fields = []
    if event.pid:
        fields.append(f"pid={event.pid}")
    if event.exit_status is not None:
        fields.append(f"status={event.exit_status}")
    elif event.exit_unknown:
        fields.append("status=unknown")
    if event.kind in (State.EXITED, State.STOPPED):
        fields.append(f"expected={'yes' if event.expected else 'no'}")
    fields += [f"{k}={v}" for k, v in event.extra_fields()]
    tail = "".join(" " + f for f in fields)
    return f"{event.process} {event.kind}{tail}: {event.message}"


class LifecycleLog:
    """Owns the daemon's log handlers; subscribe `write` to the event bus.

    Libraries (dbus-next logs on the root logger) get the same handlers at
    WARNING and above, so their complaints land in the log file too rather
    than on Python's last-resort stderr handler."""

    def __init__(self, logfile: str, loglevel: str = "info", stderr: bool = True,
                 events_to_stderr: bool = True) -> None:
        self._file: _BatchedFile | None = None
        self._stderr: _BatchedStderr | None = None
        self._events_to_stderr = events_to_stderr
        self._stamp = _Stamp()
        self._root = logging.getLogger()
        self._root.setLevel(logging.WARNING)
        log.propagate = False
        if stderr:
            self._stderr = _BatchedStderr(sys.stderr)
            self._stderr.setFormatter(_FORMAT)
            if not events_to_stderr:  # the journal has them, with their fields
                self._stderr.addFilter(lambda record: not getattr(record, "event", False))
            self._add(self._stderr)
        self.logfile = ""
        self.reconfigure(logfile, loglevel)

    def _add(self, handler: logging.Handler) -> None:
        log.addHandler(handler)
        self._root.addHandler(handler)

    def _remove(self, handler: logging.Handler) -> None:
        log.removeHandler(handler)
        self._root.removeHandler(handler)
        handler.close()

    def reconfigure(self, logfile: str, loglevel: str) -> None:
        log.setLevel(_LEVELS.get(loglevel, logging.INFO))
        if logfile == self.logfile:
            return
        os.makedirs(os.path.dirname(logfile) or ".", mode=0o755, exist_ok=True)
        # backslashreplace: a path of non-UTF-8 bytes in a line is written as
        # \udXXX escapes (as on stderr), not a "Logging error" per line
        handler = _BatchedFile(logfile, encoding="utf-8", errors="backslashreplace")
        handler.setFormatter(_FORMAT)
        if self._file is not None:
            self._remove(self._file)
        self._add(handler)
        self._file, self.logfile = handler, logfile

    def reopen(self) -> None:
        """Reopen the log file at once (SIGUSR2, after logrotate moved it).

        Moving the file is also noticed at the next write, which is enough for
        logrotate's `create`; the signal closes the old file right away (it can
        be compressed and its disk space is freed at once) and recreates a
        deleted one. Raises OSError when the file cannot be opened; the old
        file is closed then and the next write tries again."""
        if self._file is not None:
            assert isinstance(self._file, _BatchedFile)
            self._file.reopen()

    def write(self, event: Event) -> None:
        level = level_of(event)
        if not log.isEnabledFor(level):
            return
        text = format_event(event)
        if self._ours_only():
            # The line straight to our handlers: what logging does for them
            # (a LogRecord, filters, a lock and a format per handler) was
            # most of a line's cost, and a burst of tasks is three lines each.
            line = self._stamp.prefix(time.time(), level) + text
            if self._file is not None:
                self._file.add_line(line)
            if self._stderr is not None and self._events_to_stderr:
                self._stderr.add_line(line)
            return
        # Another handler listens (a test's, a library's): through logging,
        # with makeRecord + handle (not log.log: no search of the caller's frame).
        log.handle(log.makeRecord(log.name, level, "", 0, text, (), None, extra={"event": True}))

    def _ours_only(self) -> bool:
        """Whether the logger's handlers are this object's, as it set them up."""
        ours = [h for h in (self._file, self._stderr) if h is not None]
        return len(log.handlers) == len(ours) and set(log.handlers) == set(ours) and \
            not log.filters and not log.disabled and all(h.level == logging.NOTSET for h in ours)

    def close(self) -> None:
        for h in (self._file, self._stderr):
            if h is not None:
                self._remove(h)
