"""`taskctl attach` at the file descriptor level: the user's terminal in raw
mode, its size copied to the console, and the pump between them (no D-Bus
here: `taskctl.attach` asks the daemon for the descriptors).

The pump copies the keystrokes (stdin, through the detach filter) to the
console's terminal, the pty master taskmasterd passed (written only, never
read: a read would take output from the daemon's recorder), and what the
daemon sends on the output socket to stdout. Keystrokes go straight to the
pty, never through the daemon.

Nothing blocks on the program: the terminal is written without blocking,
through a bounded buffer. When that buffer is full (a program that does not
read its input), keys from a terminal are still read, for the detach keys,
and the rest dropped; from a pipe, stdin is not read until there is room
again (a script waits for the program).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import termios
import time
import tty
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple, Protocol

from taskctl.detachkeys import DetachFilter
from taskctl.wakeup import SignalWakeup

PENDING_MAX = 64 * 1024  # bytes held for the terminal, and for stdout
CHUNK = 16 * 1024  # bytes read at once
STDOUT_CHUNK = 4096  # bytes written to stdout at once (PIPE_BUF: a blocking write fits)
SIZE_POLL = 0.5  # seconds between looks at the window size when no SIGWINCH can be had
EXIT_GRACE = 2.0  # seconds to wait, after the output ends, for the process's exit event
DRAIN_QUIET = 0.3  # once the process exited: the output ends when quiet this long...
DRAIN_MAX = 2.0  # ... or this long after the exit (an orphan keeping the terminal open)

# Sequences written to a terminal stdout at the end: modes a full-screen
# program may have left on (mouse reporting, bracketed paste, application
# keys, a hidden cursor, colours) switched off, so that the shell after a
# detach is usable. Each is a no-op when not on. Not the alternate screen:
# leaving it (1049l) also restores a saved cursor position, wherever that is.
RESET_MODES = (b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l"
               b"\x1b[?1l\x1b>\x1b[?25h\x1b[0m")

DETACHED, EXITED, CLOSED, SIGNALLED, HANGUP = "detached", "exited", "closed", "signalled", "hangup"


class End(NamedTuple):
    """Why the pump stopped: DETACHED (the detach keys), EXITED (the
    watcher saw the process end), CLOSED (the output ended, no exit seen),
    SIGNALLED (SIGTERM or SIGHUP: `signum`), HANGUP (stdout is gone).
    `fresh`: the output written ended at the start of a line."""

    how: str
    fresh: bool = True
    signum: int = 0


class Watcher(Protocol):
    """What tells the pump that the process exited (`taskctl.attach`: the
    bus). `fileno()`: an fd to poll (None: none now); `poll()`, called when
    it is readable (and once at the start): take what arrived, True once
    the process has exited."""

    def fileno(self) -> int | None: ...
    def poll(self) -> bool: ...


# ---- the user's terminal ---------------------------------------------------------


def window_size(fd: int) -> bytes | None:
    """The terminal's size (struct winsize, as TIOCGWINSZ gives it), None if
    `fd` is no terminal or it has no size set."""
    try:
        size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, cols = struct.unpack("HHHH", size)[:2]
    return size if rows and cols else None


def set_window_size(fd: int, size: bytes) -> None:
    """TIOCSWINSZ on the console's master: the kernel sends SIGWINCH to the
    program when the size changes."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)


class SizeForwarder:
    """Copies the window size of `source` (the user's terminal) to
    `terminal` (the console), when it changed since the last copy."""

    def __init__(self, source: int | None, terminal: int | None) -> None:
        self.source, self.terminal = source, terminal
        self.last: bytes | None = None

    def __call__(self) -> None:
        if self.source is None or self.terminal is None:
            return
        size = window_size(self.source)
        if size is None or size == self.last:
            return
        try:
            set_window_size(self.terminal, size)
        except OSError:
            return  # the console is going away: the output's end will say so
        self.last = size


def isatty(fd: int | None) -> bool:
    return fd is not None and os.isatty(fd)


@contextmanager
def raw_mode(fd: int | None) -> Iterator[None]:
    """`fd`'s terminal in raw mode (no echo, no line editing, no signals from
    keys: Ctrl-C, Ctrl-Z go to the program), restored however this ends.
    Nothing is done when `fd` is no terminal."""
    if not isatty(fd):
        yield
        return
    assert fd is not None
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # TCSANOW: what was typed ahead is kept for the program
    try:
        yield
    finally:
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        except termios.error:
            pass  # the terminal is gone (hung up): nothing left to restore


# ---- signals ----------------------------------------------------------------------


class Signals:
    """SIGWINCH, SIGTERM and SIGHUP caught while attached; each wakes the
    pump through the signal wakeup fd (the byte written is the signal's
    number). Only the main thread can have them (`install` returns None
    elsewhere, or when the wakeup fd is someone else's).

    The previous dispositions are saved and restored at the C level too:
    readline catches SIGWINCH in C, where Python's signal module does not
    see it (getsignal says SIG_DFL), and the shell's line editing must get
    its handler back after a detach."""

    CAUGHT = (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, wake: SignalWakeup) -> None:
        self.wake = wake
        self.read = wake.read
        self._saved: list[tuple[int, object, object]] = []
        self.seen: set[int] = set()

    @classmethod
    def install(cls, signums: Iterable[int] = CAUGHT) -> Signals | None:
        wake = SignalWakeup.install()
        if wake is None:
            return None
        self = cls(wake)
        for signum in signums:
            action = _c_action(signum)
            self._saved.append((signum, signal.signal(signum, _noted), action))
        return self

    def fileno(self) -> int:
        return self.read

    def take(self) -> list[int]:
        """The signals caught since the last call, in order, each once."""
        got: list[int] = []
        while True:
            try:
                data = os.read(self.read, 512)
            except BlockingIOError:
                break
            if not data:
                break
            got += [s for s in data if s not in got]
        self.seen.update(got)
        return got

    def restore(self) -> None:
        for signum, handler, action in reversed(self._saved):
            if handler is not None:  # None: not Python's; the C-level action says it all
                signal.signal(signum, handler)  # type: ignore[arg-type]
            if action is not None:
                _set_c_action(signum, action)
        self._saved = []
        self.wake.uninstall()


def _noted(signum: int, frame: object) -> None:
    """The handler: nothing (the wakeup fd carries the signal to the pump)."""


_libc: object = None


def _c_action(signum: int) -> object:
    """The signal's whole C-level sigaction (opaque bytes), None if unavailable."""
    global _libc
    try:
        import ctypes

        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(1024)  # > sizeof(struct sigaction) anywhere
        if _libc.sigaction(signum, None, buf) != 0:  # type: ignore[attr-defined]
            return None
        return buf
    except (OSError, AttributeError):
        return None


def _set_c_action(signum: int, action: object) -> None:
    _libc.sigaction(signum, action, None)  # type: ignore[attr-defined]


# ---- the pump -----------------------------------------------------------------------


def set_nonblocking(fd: int) -> None:
    """O_NONBLOCK on `fd`. Never cleared after: the console's terminal is a
    duplicate of the daemon's master (the same open file description),
    which its event loop reads without blocking anyway."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


def pump(*, output: int, stdout: int, stdin: int | None, terminal: int | None,
         detach: DetachFilter, watcher: Watcher | None = None,
         signals: Signals | None = None, resize: Callable[[], None] | None = None,
         clock: Callable[[], float] = time.monotonic) -> End:
    """Copy stdin -> `detach` -> `terminal` and `output` -> stdout until one
    of End's reasons. `terminal` None: read-only (stdin is still read, for
    the detach keys). `resize()` copies the window size to the console: called
    at the start, on each SIGWINCH (with `signals`), or every SIZE_POLL s
    without. The caller owns every fd (nothing is closed here)."""
    p = _Pump(output, stdout, stdin, terminal, detach, watcher, signals, resize, clock)
    return p.run()


class _Pump:
    def __init__(self, output: int, stdout: int, stdin: int | None, terminal: int | None,
                 detach: DetachFilter, watcher: Watcher | None, signals: Signals | None,
                 resize: Callable[[], None] | None, clock: Callable[[], float]) -> None:
        self.output: int | None = output
        self.stdout, self.stdin, self.terminal = stdout, stdin, terminal
        self.detach, self.watcher, self.signals = detach, watcher, signals
        self.resize, self.clock = resize, clock
        self.stdin_tty = isatty(stdin)
        self.to_terminal = bytearray()
        self.to_stdout = bytearray()
        self.fresh = True
        self.exited_at: float | None = None  # when the watcher saw the exit
        self.closed_at: float | None = None  # when the output ended
        self.heard_at = clock()  # the last output

    def run(self) -> End:
        if self.terminal is not None:
            set_nonblocking(self.terminal)
        if self.resize is not None:
            self.resize()
        next_size = self.clock() + SIZE_POLL
        if self.watcher is not None and self.watcher.poll():
            self._exited()
        while True:
            for signum in self.signals.take() if self.signals is not None else ():
                if signum == signal.SIGWINCH and self.resize is not None:
                    self.resize()
                elif signum in (signal.SIGTERM, signal.SIGHUP):
                    return End(SIGNALLED, self.fresh, signum)
            now = self.clock()
            end = self._settled(now)
            if end is not None:
                return end
            if self.resize is not None and self.signals is None and now >= next_size:
                self.resize()
                next_size = now + SIZE_POLL
            poller, wanted = self._poller()
            timeout = self._timeout(now, next_size)
            ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
            for fd, events in ready:
                for name in wanted.get(fd, ()):
                    end = self._on(name, events)
                    if end is not None:
                        return end

    def _exited(self) -> None:
        """The process exited: keys are dropped from now on; the output
        drains (what it wrote last may still be on its way through the
        daemon: quiet is counted from now)."""
        self.exited_at = self.heard_at = self.clock()

    def _settled(self, now: float) -> End | None:
        """The end decided by time: the output drained after an exit, or no
        exit event within EXIT_GRACE of the output's end."""
        if self.exited_at is not None:
            if now - self.exited_at >= DRAIN_MAX:
                return End(EXITED, self.fresh)
            drained = self.output is None or now - self.heard_at >= DRAIN_QUIET
            return End(EXITED, self.fresh) if drained and not self.to_stdout else None
        if self.closed_at is not None and not self.to_stdout:
            watching = self.watcher is not None and self.watcher.fileno() is not None
            if not watching or now - self.closed_at >= EXIT_GRACE:
                return End(CLOSED, self.fresh)
        return None

    def _poller(self) -> tuple[select.poll, dict[int, list[str]]]:
        """What to wait for now; per fd, the ends it serves (stdin and
        stdout may be one terminal)."""
        wanted: dict[int, list[str]] = {}
        masks: dict[int, int] = {}

        def want(fd: int | None, name: str, mask: int) -> None:
            if fd is not None:
                wanted.setdefault(fd, []).append(name)
                masks[fd] = masks.get(fd, 0) | mask

        if self.output is not None and len(self.to_stdout) < PENDING_MAX:
            want(self.output, "output", select.POLLIN)
        if self.to_stdout:
            want(self.stdout, "stdout", select.POLLOUT)
        if self.stdin is not None and (self.stdin_tty or len(self.to_terminal) < PENDING_MAX):
            # a terminal is read even when the program's buffer is full: the detach keys
            want(self.stdin, "stdin", select.POLLIN)
        if self.terminal is not None and self.to_terminal:
            want(self.terminal, "terminal", select.POLLOUT)
        if self.watcher is not None:
            want(self.watcher.fileno(), "watcher", select.POLLIN)
        if self.signals is not None:
            want(self.signals.fileno(), "signals", select.POLLIN)
        poller = select.poll()
        for fd, mask in masks.items():
            poller.register(fd, mask)
        return poller, wanted

    def _timeout(self, now: float, next_size: float) -> float | None:
        deadlines = []
        if self.resize is not None and self.signals is None:
            deadlines.append(next_size)
        if self.exited_at is not None:
            deadlines.append(self.exited_at + DRAIN_MAX)
            if not self.to_stdout:
                deadlines.append(self.heard_at + DRAIN_QUIET)
        if self.closed_at is not None:
            deadlines.append(self.closed_at + EXIT_GRACE)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _on(self, name: str, events: int) -> End | None:
        """`events` on the fd of the end `name`: act on the ones it waits for
        (a hang-up or an error: a read or a write says which)."""
        readable = events & (select.POLLIN | select.POLLHUP | select.POLLERR)
        writable = events & (select.POLLOUT | select.POLLHUP | select.POLLERR)
        if name in ("output", "stdin", "watcher") and not readable:
            return None
        if name in ("stdout", "terminal") and not writable:
            return None
        if name == "output":
            self._read_output()
        elif name == "stdout":
            return self._write_stdout()
        elif name == "stdin":
            return self._read_stdin()
        elif name == "terminal":
            self._write_terminal(events)
        elif name == "watcher":
            assert self.watcher is not None
            if self.exited_at is None and self.watcher.poll():
                self._exited()
        return None  # "signals": taken at the top of the loop

    def _read_output(self) -> None:
        assert self.output is not None
        try:
            data = os.read(self.output, CHUNK)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.output = None
            self.closed_at = self.clock()
            return
        self.heard_at = self.clock()
        self.to_stdout += data

    def _write_stdout(self) -> End | None:
        try:
            n = os.write(self.stdout, self.to_stdout[:STDOUT_CHUNK])
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EIO, errno.ENXIO):
                return End(HANGUP, self.fresh)  # the user's terminal is gone
            raise
        if n:
            self.fresh = self.to_stdout[n - 1:n] == b"\n"
            del self.to_stdout[:n]
        return None

    def _read_stdin(self) -> End | None:
        assert self.stdin is not None
        room = PENDING_MAX - len(self.to_terminal)
        try:
            # from a pipe, no more than there is room for: nothing is dropped
            data = os.read(self.stdin, CHUNK if self.stdin_tty else max(1, min(CHUNK, room)))
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: a terminal hung up
                raise
            data = b""
        if not data:
            # From a pipe, the end of the input does not detach: the output
            # is followed until the process exits (Ctrl-C, SIGTERM stop it).
            self.stdin = None
            return None
        send, detached = self.detach.feed(data)
        if self.terminal is not None and self.exited_at is None:
            # a terminal's keys past the bound are dropped (read for the detach keys)
            self.to_terminal += send[:max(0, room)] if self.stdin_tty else send
        if detached:
            if self.to_terminal:
                self._write_terminal(0)  # what was typed before: one try, without waiting
            return End(DETACHED, self.fresh)
        return None

    def _write_terminal(self, events: int) -> None:
        assert self.terminal is not None
        try:
            n = os.write(self.terminal, self.to_terminal[:CHUNK])
        except BlockingIOError:
            if events & (select.POLLHUP | select.POLLERR) and not events & select.POLLOUT:
                self._terminal_gone()
            return
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EPIPE, errno.ENXIO):
                raise
            self._terminal_gone()
            return
        del self.to_terminal[:n]

    def _terminal_gone(self) -> None:
        """The console's terminal takes no more input (the program's side is
        closed): keys are dropped from now on; the output says the rest."""
        self.terminal = None
        self.to_terminal.clear()


def finish_output(stdout: int, end: End) -> None:
    """After the terminal is restored: modes left on switched off (a
    terminal stdout), and a fresh line for taskctl's last words."""
    terminal = isatty(stdout)
    tail = RESET_MODES if terminal else b""
    if not end.fresh:
        tail += b"\r\n" if terminal else b"\n"  # \r: whatever the terminal's modes
    try:
        while tail:
            n = os.write(stdout, tail)
            tail = tail[n:]
    except OSError:
        pass
