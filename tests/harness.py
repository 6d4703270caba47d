"""Run the real taskmasterd and wait on its lifecycle log lines.

The daemon writes one line per event to stderr (the same lines as its log
file). `Daemon.wait_for` reads them as they come, with a timeout: tests never
sleep to wait for something to happen.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

LINE = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d\.\d{3}) (?P<level>[A-Z]+) "
    r"(?P<process>\S+) (?P<kind>[A-Z_]+)(?P<fields>(?: [a-z_]+=\S*)*): (?P<message>.*)$")


@dataclass
class LogLine:
    raw: str
    level: str
    process: str
    kind: str
    fields: dict[str, str]
    message: str
    timestamp: float  # seconds since the epoch, ms precision

    @property
    def pid(self) -> int:
        return int(self.fields.get("pid", "0"))


def parse_line(raw: str) -> LogLine | None:
    m = LINE.match(raw)
    if not m:
        return None
    fields = dict(f.split("=", 1) for f in m["fields"].split())
    ts = time.mktime(time.strptime(f"{m['date']} {m['time'][:8]}", "%Y-%m-%d %H:%M:%S"))
    return LogLine(raw, m["level"], m["process"], m["kind"], fields, m["message"],
                   ts + int(m["time"][9:]) / 1000)


def parse_log(text: str) -> list[LogLine]:
    return [ln for ln in map(parse_line, text.splitlines()) if ln is not None]


Predicate = Callable[[LogLine], bool]


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `cond` until it holds, for states nothing announces (a file's
    size or contents, /proc); fail after `timeout` s naming `what`."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # sleep-ok: the poll step of a wait with a timeout


def event(kind: str, process: str | None = None, **fields: str) -> Predicate:
    def match(ln: LogLine) -> bool:
        return (ln.kind == kind and (process is None or ln.process == process)
                and all(ln.fields.get(k) == v for k, v in fields.items()))
    match.__doc__ = f"{kind} {process or ''} {fields or ''}"
    return match


# Once the daemon has exited, its last output is read within this. Longer
# means a task runner it left holds the pipe: its EOF comes with the runner.
AFTER_EXIT = 2.0


class Daemon:
    """A taskmasterd subprocess whose stderr is drained by a thread as it
    comes (a test busy elsewhere must never block the daemon on a full pipe)."""

    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None,
                 prefix: Sequence[str] = (), unset: Sequence[str] = ()) -> None:
        """`prefix`: a command the daemon runs under (it ends with exec "$@");
        `unset`: environment variables the daemon must not inherit."""
        self.config = config
        environ = {k: v for k, v in os.environ.items() if k not in unset}
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "taskmasterd", "-c", str(config), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**environ, **(env or {})}, cwd=config.parent)
        self.lines: list[LogLine] = []
        self.raw: list[str] = []
        self.eof = False
        self.cursor = 0  # wait_for looks at lines from here on
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            text = raw.decode(errors="replace").rstrip("\n")
            parsed = parse_line(text)
            with self._cond:
                self.raw.append(text)
                if parsed is not None:
                    self.lines.append(parsed)
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.raw)

    def wait_for(self, pred: Predicate, timeout: float = 10.0) -> LogLine:
        """The first line from the cursor on that matches; moves the cursor past it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self.cursor, len(self.lines)):
                    if pred(self.lines[i]):
                        self.cursor = i + 1
                        return self.lines[i]
                if self.eof:
                    raise AssertionError(f"taskmasterd exited ({self.proc.wait()}) while waiting "
                                         f"for {pred.__doc__}; log:\n" + "\n".join(self.raw))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {pred.__doc__}; "
                                         "log:\n" + "\n".join(self.raw))
                self._cond.wait(left)

    def wait_text(self, text: str, timeout: float = 10.0) -> None:
        """Wait until `text` appears anywhere in the output (any line shape)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in raw for raw in self.raw):
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise AssertionError(f"no {text!r} in the output; log:\n" + "\n".join(self.raw))
                self._cond.wait(left)

    def wait_count(self, pred: Predicate, n: int, timeout: float = 30.0) -> list[LogLine]:
        """Wait until n lines (from the cursor on) match; cursor moves past the n-th."""
        found: list[LogLine] = []
        deadline = time.monotonic() + timeout
        while len(found) < n:
            found.append(self.wait_for(pred, max(0.0, deadline - time.monotonic())))
        return found

    def since(self, mark: int) -> list[LogLine]:
        with self._cond:
            return self.lines[mark:]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def reload(self) -> LogLine:
        """SIGHUP, then the RELOAD or RELOAD_FAILED line it causes."""
        self.signal(signal.SIGHUP)
        return self.wait_for(lambda ln: ln.kind in ("RELOAD", "RELOAD_FAILED"))

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
            self._reader.join(AFTER_EXIT)
            return code
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(AFTER_EXIT)
        # A task runner that outlived the daemon holds its stderr (it logs
        # there) until its last task ends: then the reader is still blocked
        # in read(), and close() would wait for it. The pipe closes with the
        # runner.
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()

    def latest_pids(self) -> dict[str, int]:
        """Process name -> pid of its latest spawn, from the log so far."""
        pids: dict[str, int] = {}
        with self._cond:
            for ln in self.lines:
                if ln.kind == "STARTING" and ln.pid:
                    pids[ln.process] = ln.pid
        return pids


def processes_with_env(marker: str) -> list[int]:
    """PIDs of live processes whose environment contains `marker` (a K=V)."""
    needle = marker.encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read() + b"\0":
                    with open(f"/proc/{entry}/stat", "rb") as s:
                        if s.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                            found.append(int(entry))
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", "rb") as s:
        return s.read().rsplit(b")", 1)[1].split()[0] != b"Z"


def read_fifo(path: Path, timeout: float = 10.0) -> str:
    """Wait (with a timeout) for a program to write a line into a FIFO."""
    # O_RDWR: we count as a writer ourselves, so the FIFO never reads as EOF
    # before the program opens it, and select() blocks until data arrives.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"nothing written to {path} within {timeout}s")
            data += os.read(fd, 4096)
        return data.decode()
    finally:
        os.close(fd)
