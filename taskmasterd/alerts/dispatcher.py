"""Alerts: the event stream fanned out to apprise targets, rate-limited.

Three layers, the first two pure:

* matching and coalescing — `alert_name`, `matches` and `Throttle`, a pure
  per-target state machine with the clock as an argument (like process.py):
  the first matching event is sent at once; the ones that follow within
  `rate` seconds of the last send, or while that send is still under way,
  are gathered in one `Batch` and sent as a summary when the interval has
  passed. A crash loop therefore costs one message per `rate` seconds.
* messages — `render` turns a Batch into a title and a body (the built-in
  text, or the alert's str.format templates over config.TEMPLATE_FIELDS).
* delivery — `AlertDispatcher`, subscribed to the EventBus. Each target has
  its own apprise object and its own worker thread (a one-thread executor,
  created at its first message): a slow, refusing or black-holed target
  holds only its own thread, never the event loop, restarts, D-Bus replies
  or the other targets. A failed delivery is logged with the URL redacted
  and tried again, 3 tries in all, 2 s then 10 s apart. Nothing is
  scheduled while nothing is pending: an idle daemon has no alert timer.

apprise is imported when the first target is built (config.py has imported
it already to check the URLs), never when there are no alerts. Its own log
records are kept out of our log (apprise 1.2 writes URLs with their
passwords in them); the warnings it logs while sending a message are
captured in the sending thread and reported, scrubbed, as the reason of a
failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fnmatch
import itertools
import logging
import os
import queue
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from taskmasterd import events
from taskmasterd.config import TEMPLATE_FIELDS, AlertConfig
from taskmasterd.deadline import cancel as cancel_timer
from taskmasterd.deadline import follow as follow_deadline
from taskmasterd.errors import BadName
from taskmasterd.events import Event
from taskmasterd.process import describe_status

log = logging.getLogger("taskmasterd")
T = TypeVar("T")

RETRY_DELAYS: tuple[float, ...] = (2.0, 10.0)  # 3 tries in all
TEST_TIMEOUT = 20.0  # seconds per target for `taskctl alert test` (< the 25 s of busctl & co.)
CLOSE_TIMEOUT = 5.0  # seconds the daemon waits for the last messages when it exits
TAIL_LINES = 20
TAIL_BYTES = 16384
MAX_LISTED = 10  # processes named in a summary

# Event kinds that are not process states but can be alerted on.
_DAEMON_KINDS = frozenset({events.RELOAD, events.RELOAD_FAILED, events.DAEMON_START,
                           events.DAEMON_STOP})
_ALERTABLE = frozenset({"STARTING", "RUNNING", "BACKOFF", "STOPPING", "STOPPED", "EXITED", "FATAL",
                        events.SPAWN_ERROR, *_DAEMON_KINDS})
# apprise's notify types (the same strings on 1.2 and 2.x), by how bad an event is.
_FAILURE = frozenset({"FATAL", events.RELOAD_FAILED})
_WARNING = frozenset({"EXITED_UNEXPECTED", "BACKOFF", events.SPAWN_ERROR})


# ---- matching (pure) ----------------------------------------------------------


def alert_name(event: Event) -> str | None:
    """The name `events:` uses for this event (EXITED is split by `expected`),
    or None for events no alert can ask for (KILLED, SIGNALLED, UNKNOWN)."""
    if event.kind not in _ALERTABLE:
        return None
    if event.kind == "EXITED":
        return "EXITED_EXPECTED" if event.expected else "EXITED_UNEXPECTED"
    return event.kind


def display_name(event: Event) -> str:
    """How messages name an event: "EXITED (unexpected)", "FATAL", ..."""
    if event.kind == "EXITED":
        return "EXITED (expected)" if event.expected else "EXITED (unexpected)"
    return event.kind


def matches(alert: AlertConfig, event: Event) -> bool:
    """Whether `alert` wants `event`: its name is in `events` (EXITED means
    both kinds of exit) and, for a process event, its program or process
    name matches one of the `programs` globs. Daemon events (RELOAD,
    RELOAD_FAILED, DAEMON_START, DAEMON_STOP) ignore `programs`."""
    name = alert_name(event)
    if name is None:
        return False
    wanted = name in alert.events or (name.startswith("EXITED_") and "EXITED" in alert.events)
    if not wanted:
        return False
    if event.kind in _DAEMON_KINDS:
        return True
    return any(fnmatch.fnmatchcase(event.program, p) or fnmatch.fnmatchcase(event.process, p)
               for p in alert.programs)


# ---- coalescing (pure) ----------------------------------------------------------


@dataclass
class Batch:
    """The events one message is about: one event, or a summary of several."""

    first: Event
    last: Event
    count: int = 1
    summary: bool = False  # gathered while the target was rate-limited
    kinds: dict[str, int] = field(default_factory=dict)  # display name -> count, first seen first
    programs: list[str] = field(default_factory=list)  # distinct, first seen first
    processes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, event: Event, *, summary: bool = False) -> Batch:
        batch = cls(first=event, last=event, count=0, summary=summary)
        batch.add(event)
        return batch

    def add(self, event: Event) -> None:
        if self.count:
            self.last = event
        self.count += 1
        name = display_name(event)
        self.kinds[name] = self.kinds.get(name, 0) + 1
        if event.program and event.program not in self.programs:
            self.programs.append(event.program)
        if event.process not in self.processes:
            self.processes.append(event.process)


class Throttle:
    """One target's rate limit. Pure: `now` is an argument (monotonic seconds).

    `offer(event, now)` returns the Batch to send now, or None when the event
    was buffered. A buffered Batch goes out from `due(now)` once `rate`
    seconds have passed since the last send and that send is `done`; the
    caller arms one timer on `deadline` (None: nothing to wake up for).
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.last_sent: float | None = None
        self.pending: Batch | None = None
        self.busy = False  # a message is being delivered (retries included)

    def offer(self, event: Event, now: float) -> Batch | None:
        if self.pending is None and not self.busy and self._free(now):
            return self._send(Batch.of(event), now)
        if self.pending is None:
            self.pending = Batch.of(event, summary=True)
        else:
            self.pending.add(event)
        return None

    def due(self, now: float) -> Batch | None:
        """The summary to send now, if its time has come (a summary of one
        event is that event)."""
        if self.pending is None or self.busy or not self._free(now):
            return None
        return self._send(self._take(), now)

    def done(self) -> None:
        """The message sent last is delivered or given up."""
        self.busy = False

    def drain(self) -> Batch | None:
        """What is pending, rate or not (the daemon is exiting)."""
        return self._take() if self.pending is not None else None

    @property
    def deadline(self) -> float | None:
        if self.pending is None or self.busy:
            return None
        return self.last_sent + self.rate if self.last_sent is not None else 0.0

    def _free(self, now: float) -> bool:
        return self.last_sent is None or now >= self.last_sent + self.rate

    def _take(self) -> Batch:
        batch, self.pending = self.pending, None
        assert batch is not None
        batch.summary = batch.count > 1
        return batch

    def _send(self, batch: Batch, now: float) -> Batch:
        self.last_sent = now
        self.busy = True
        return batch


# ---- messages (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: str = "info"  # apprise notify type: info, warning or failure


def clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t)).strip()


def short_clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _listed(names: Sequence[str]) -> str:
    if len(names) <= MAX_LISTED:
        return ", ".join(names)
    return ", ".join(names[:MAX_LISTED]) + f" and {len(names) - MAX_LISTED} more"


def describe_kinds(batch: Batch) -> str:
    """"12 × EXITED (unexpected), 3 × BACKOFF"."""
    return ", ".join(f"{n} × {name}" for name, n in batch.kinds.items())


def message_fields(batch: Batch, host: str, stderr_tail: str = "") -> dict[str, str]:
    """The template fields (config.TEMPLATE_FIELDS), all text. Those about one
    process (pid, state, status, message, stderr_tail) describe the latest
    event; `time` is the latest event's, `since` the first one's."""
    last = batch.last
    out = {
        "host": host,
        "program": _listed(batch.programs),
        "process": _listed(batch.processes),
        "pid": str(last.pid) if last.pid else "",
        "event": describe_kinds(batch) if batch.summary else display_name(last),
        "state": last.new_state or last.kind,
        "status": describe_status(last.exit_status) if last.exit_status is not None else "",
        "time": clock(last.time),
        "since": clock(batch.first.time),
        "count": str(batch.count),
        "message": last.message,
        "stderr_tail": stderr_tail,
    }
    assert tuple(out) == TEMPLATE_FIELDS
    return out


def severity(batch: Batch) -> str:
    names = {"EXITED_UNEXPECTED" if k == "EXITED (unexpected)" else k for k in batch.kinds}
    if names & _FAILURE:
        return "failure"
    if names & _WARNING:
        return "warning"
    return "info"


def render(alert: AlertConfig, batch: Batch, host: str, stderr_tail: str = "") -> Message:
    """The message for `batch`: the alert's templates if it has them, else
    the built-in title and body."""
    f = message_fields(batch, host, stderr_tail)
    title = default_title(batch, f)
    body = default_body(batch, f)
    # Templates were checked at load with every field present: formatting
    # cannot fail, but a message is never lost to a template.
    with contextlib.suppress(Exception):
        title = alert.title.format(**f) if alert.title is not None else title
    with contextlib.suppress(Exception):
        body = alert.body.format(**f) if alert.body is not None else body
    return Message(title, body, severity(batch))


def default_title(batch: Batch, f: dict[str, str]) -> str:
    if batch.summary:
        noun = "event" if batch.count == 1 else "events"
        return f"[{f['host']}] {f['program'] or f['process']}: {batch.count} more {noun}"
    return f"[{f['host']}] {f['process']}: {f['event']}"


def default_body(batch: Batch, f: dict[str, str]) -> str:
    last = batch.last
    lines: list[str] = []
    if batch.summary:
        noun = "event" if batch.count == 1 else "events"
        who = f["program"] or f["process"]
        lines.append(f"{batch.count} more {noun} for {who} since {short_clock(batch.first.time)}: "
                     f"{f['event']}")
        lines.append(f"host: {f['host']}")
        lines.append(f"processes: {f['process']}")
        lines.append(f"latest: {display_name(last)} of {last.process} at {f['time']}")
    else:
        lines.append(f"{f['event']}: {f['process']} on {f['host']}")
        lines.append(f"time: {f['time']}")
    if last.program:
        lines.append(f"program: {last.program}, process: {last.process}")
        lines.append(f"state: {f['state']}")
    if f["pid"]:
        lines.append(f"pid: {f['pid']}")
    if f["status"]:
        lines.append(f"status: {f['status']}")
    lines.append(last.message)
    if f["stderr_tail"]:
        lines += ["", f"last lines of the stderr of {last.process}:", f["stderr_tail"]]
    return "\n".join(lines)


def probe_message(host: str, where: str, config_path: str) -> Message:
    """What `taskctl alert test` sends."""
    return Message(
        f"[{host}] taskmaster: test alert",
        f"A test message from taskmasterd (pid {os.getpid()}) on {host}, sent by "
        f"'taskctl alert test' to {where}.\nconfiguration: {config_path}\ntime: {clock(time.time())}",
        "info")


# ---- secrets (pure) -----------------------------------------------------------------


def short_url(privacy_url: str) -> str:
    """apprise's privacy URL without its query (plugin options, and a place
    secrets hide) and with %-escapes undone: how logs and taskctl name a target."""
    base = privacy_url.split("?", 1)[0]
    if base.endswith("/") and not base.endswith("://"):
        base = base.rstrip("/")
    return urllib.parse.unquote(base)


def secrets_of(url: str, privacy_url: str) -> list[str]:
    """Parts of `url` (3 characters or more) that apprise's privacy URL
    leaves out or masks: passwords, tokens, keys. Longest first."""
    shown = urllib.parse.unquote(privacy_url)
    parts = {p for p in re.split(r"[/:@?&=#,;+\s]+", urllib.parse.unquote(url)) if len(p) >= 3}
    parts |= {urllib.parse.quote(p, safe="") for p in set(parts)}
    return sorted((p for p in parts if p not in shown), key=len, reverse=True)


def scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "****")
    return text


# ---- I/O helpers ------------------------------------------------------------------------


def read_tail(path: str, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    """The last `lines` lines of a file (at most `limit` bytes read), or ""."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - limit)
            f.seek(start)
            data = f.read(limit)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    rows = text.splitlines()
    if start > 0 and rows:
        rows = rows[1:]  # the first one is cut
    return "\n".join(rows[-lines:]).rstrip()


class _AppriseLog(logging.Handler):
    """apprise's log records, kept per thread while a thread sends."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        lines: list[str] | None = getattr(self._local, "lines", None)
        if lines is not None:
            with contextlib.suppress(Exception):
                lines.append(record.getMessage())

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[str]]:
        lines: list[str] = []
        self._local.lines = lines
        try:
            yield lines
        finally:
            self._local.lines = None


_APPRISE_LOG = _AppriseLog()


def _route_apprise_log() -> None:
    """apprise logs to the "apprise" logger, which would reach our handlers
    through the root logger; apprise 1.2 puts whole URLs, passwords
    included, in some of its messages. Keep them for the failure reports."""
    logger = logging.getLogger("apprise")
    if _APPRISE_LOG not in logger.handlers:
        logger.addHandler(_APPRISE_LOG)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


_tags = itertools.count()


class Sender:
    """One apprise target. Built on the event loop; `send` runs in the
    target's worker thread only."""

    def __init__(self, url: str) -> None:
        import apprise

        self._apprise = apprise
        self.tag = f"taskmaster-{next(_tags)}"
        try:
            # service_timeout (apprise 2.x) = 0: apprise sends in the calling
            # thread (our worker) rather than its shared pool; async_mode off
            # does the same on 1.2. Unknown to 1.2: AttributeError.
            asset = apprise.AppriseAsset(async_mode=False, service_timeout=0)
        except (AttributeError, TypeError):
            asset = apprise.AppriseAsset(async_mode=False)
        self._targets = apprise.Apprise(asset=asset)
        self.ok = bool(self._targets.add(url, tag=self.tag)) and len(self._targets) == 1
        privacy = ""
        for plugin in self._targets:
            # apprise waits request_rate_per_sec between two messages of a
            # plugin (5.5 s for e-mail): we rate-limit ourselves.
            plugin.request_rate_per_sec = 0
            with contextlib.suppress(Exception):
                privacy = str(plugin.url(privacy=True))
        scheme = url.partition("://")[0]
        self.url = short_url(privacy) if privacy else f"{scheme}://…"
        self.secrets = secrets_of(url, privacy) if privacy else [url]

    def send(self, message: Message) -> tuple[bool, str]:
        """Deliver once: (delivered, why not — or how long it took)."""
        if not self.ok:
            return False, "apprise cannot use this URL"
        apprise = self._apprise
        notify_type = {"failure": apprise.NotifyType.FAILURE,
                       "warning": apprise.NotifyType.WARNING}.get(message.kind, apprise.NotifyType.INFO)
        started = time.monotonic()
        with _APPRISE_LOG.capture() as lines:
            try:
                # notify() returns a bool (1.2) or an AppriseResult (2.x):
                # only its truth value is used.
                ok = bool(self._targets.notify(
                    body=message.body, title=message.title, notify_type=notify_type,
                    body_format=apprise.NotifyFormat.TEXT, tag=self.tag))
            except Exception as exc:
                ok = False
                lines.append(f"{type(exc).__name__}: {exc}")
        if ok:
            return True, f"delivered in {time.monotonic() - started:.2f} s"
        why = lines[-1] if lines else "apprise reported a failure"
        return False, scrub(why.strip(), self.secrets)


# ---- the dispatcher (asyncio) -----------------------------------------------------------


class Worker(concurrent.futures.Executor):
    """One daemon thread running what is submitted, in order: a target's
    sends. Like ThreadPoolExecutor(max_workers=1), except that the thread
    is a daemon one, so a send stuck on a black-holed host cannot hold up
    the daemon's exit once `AlertDispatcher.close` has given up on it
    (ThreadPoolExecutor joins its threads at interpreter exit). The thread
    starts with the first job."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._shutdown = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._jobs.put((future, lambda: fn(*args, **kwargs)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            return future

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is not None:
                        job[0].cancel()
            self._jobs.put(None)
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()


@dataclass(frozen=True)
class ProbeResult:
    """One target's answer to `taskctl alert test`."""

    url: str  # redacted
    ok: bool
    detail: str


@dataclass(eq=False)
class Target:
    config: AlertConfig
    index: int
    sender: Sender | None
    url: str  # redacted
    throttle: Throttle
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    closed: bool = False
    _pool: Worker | None = None

    @property
    def name(self) -> str:
        where = f" (line {self.config.line})" if self.config.line else ""
        return f"alerts[{self.index}]{where} {self.url}"

    @property
    def pool(self) -> Worker:
        if self._pool is None:
            self._pool = Worker(f"alert-{self.index}")
        return self._pool

    def send(self, message: Message) -> tuple[bool, str]:
        if self.sender is None:
            return False, "apprise cannot use this URL"
        return self.sender.send(message)

    def close(self) -> None:
        self.closed = True
        cancel_timer(self)
        if self._pool is not None:
            # A send under way finishes in its thread; nothing waits for it.
            self._pool.shutdown(wait=False, cancel_futures=True)


StderrFile = Callable[[str], str]


class AlertDispatcher:
    """Subscribe `on_event` to the EventBus; `configure` on reload; `test`
    for `taskctl alert test`; `close` when the daemon exits.

    `stderr_file(process)` gives the file a process's stderr goes to (the
    supervisor's `output_file(process, "stderr")`); its errors mean "none".
    """

    def __init__(self, alerts: Sequence[AlertConfig] = (), *,
                 stderr_file: StderrFile | None = None, host: str | None = None,
                 config_path: str = "", retry_delays: Sequence[float] = RETRY_DELAYS,
                 test_timeout: float = TEST_TIMEOUT) -> None:
        self._loop = asyncio.get_running_loop()
        self._stderr_file = stderr_file
        self.host = host or socket.gethostname()
        self.config_path = config_path
        self.retry_delays = tuple(retry_delays)
        self.test_timeout = test_timeout
        self.targets: list[Target] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        _route_apprise_log()
        self.configure(alerts)

    # ---- configuration -------------------------------------------------------

    def configure(self, alerts: Sequence[AlertConfig]) -> None:
        """Use `alerts` from now on. A target whose settings did not change
        keeps its state (rate limit, summary pending, thread); the others are
        built anew, and those removed are dropped with what they had pending."""
        old = list(self.targets)
        new: list[Target] = []
        for index, alert in enumerate(alerts):
            kept = next((t for t in old if t.config == alert), None)
            if kept is not None:
                old.remove(kept)
                kept.config, kept.index = alert, index  # same settings, maybe a new line
                new.append(kept)
            else:
                new.append(self._target(alert, index))
        for target in old:
            target.close()
        self.targets = new

    def _target(self, alert: AlertConfig, index: int) -> Target:
        sender: Sender | None
        try:
            sender = Sender(alert.url)
            url = sender.url
        except Exception as exc:  # no apprise, or it chokes: checked at load, so unlikely
            sender, url = None, alert.url.partition("://")[0] + "://…"
            log.error("alerts[%d] %s: cannot be used (%s); its messages will fail",
                      index, url, type(exc).__name__)
        if sender is not None and not sender.ok:
            log.error("alerts[%d] %s: apprise cannot use this URL; its messages will fail", index, url)
        return Target(alert, index, sender, url, Throttle(alert.rate))

    # ---- events -----------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if self._closing.is_set():
            return
        now = self._loop.time()
        for target in self.targets:
            if target.closed or not matches(target.config, event):
                continue
            batch = target.throttle.offer(event, now)
            if batch is not None:
                self._start(target, batch)
            self._sync_timer(target)

    def _start(self, target: Target, batch: Batch) -> None:
        path = self._stderr_path(batch.last)
        task = self._loop.create_task(self._deliver(target, batch, path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stderr_path(self, event: Event) -> str | None:
        if self._stderr_file is None or not event.program:
            return None
        try:
            return self._stderr_file(event.process)
        except Exception:  # not a file (journal, discarded), removed by a reload...
            return None

    def _sync_timer(self, target: Target) -> None:
        follow_deadline(self._loop, target, None if target.closed else target.throttle.deadline,
                        lambda now: self._on_timer(target, now))

    def _on_timer(self, target: Target, now: float) -> None:
        if target.closed:
            return
        batch = target.throttle.due(now)
        if batch is not None:
            self._start(target, batch)
        self._sync_timer(target)

    # ---- delivery ---------------------------------------------------------------

    async def _deliver(self, target: Target, batch: Batch, stderr_path: str | None) -> None:
        try:
            message = await self._loop.run_in_executor(
                target.pool, _render_in_thread, target.config, batch, self.host, stderr_path)
            await self._send(target, message, batch)
        except Exception as exc:  # RuntimeError: dropped by a reload, its worker is shut down
            if not target.closed:
                log.error("%s: alert not sent: %s: %s", target.name, type(exc).__name__, exc)
        finally:
            target.throttle.done()
            if not target.closed:
                nxt = (target.throttle.drain() if self._closing.is_set()
                       else target.throttle.due(self._loop.time()))
                if nxt is not None:
                    self._start(target, nxt)
                self._sync_timer(target)

    async def _send(self, target: Target, message: Message, batch: Batch) -> None:
        tries = len(self.retry_delays) + 1
        about = f"{_listed(batch.processes)}: {describe_kinds(batch)}"
        for attempt in range(1, tries + 1):
            ok, detail = await self._loop.run_in_executor(target.pool, target.send, message)
            if ok:
                log.debug("%s: alert sent (%s), %s", target.name, about, detail)
                return
            if target.closed:
                return
            if attempt == tries or self._closing.is_set():
                log.error("%s: alert not delivered after %s, dropped (%s): %s",
                          target.name, "1 try" if attempt == 1 else f"{attempt} tries", about, detail)
                return
            delay = self.retry_delays[attempt - 1]
            log.warning("%s: alert delivery failed (try %d of %d, next in %g s): %s",
                        target.name, attempt, tries, delay, detail)
            # Wait, unless the daemon exits meanwhile: then one last try now.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    # ---- taskctl alert test ----------------------------------------------------------

    def select(self, which: str) -> list[Target]:
        """"" = every target; N = the N-th (from 0); else the target with this
        URL, as written or as shown (redacted)."""
        if not which:
            return list(self.targets)
        if which.isdecimal() and which.isascii():
            index = int(which)
            if index >= len(self.targets):
                raise BadName(f"there is no alert #{index}: {len(self.targets)} target(s) are "
                              "configured, numbered from 0")
            return [self.targets[index]]
        hits = [t for t in self.targets if which in (t.config.url, t.url)]
        if not hits:
            raise BadName("no alert target has this URL; 'taskctl alert test' lists them all")
        return hits

    async def test(self, which: str = "") -> list[ProbeResult]:
        """Send a test message to the chosen targets at once (each in its own
        thread) and say, per target, whether it was delivered."""
        chosen = self.select(which)

        async def one(target: Target) -> ProbeResult:
            message = probe_message(self.host, target.url, self.config_path)
            try:
                async with asyncio.timeout(self.test_timeout):
                    ok, detail = await self._loop.run_in_executor(target.pool, target.send, message)
            except TimeoutError:
                ok, detail = False, f"no answer within {self.test_timeout:g} s"
            except RuntimeError:
                ok, detail = False, "the target was removed by a reload"
            return ProbeResult(target.url, ok, detail)

        return list(await asyncio.gather(*(one(t) for t in chosen)))

    # ---- exit -------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a message is being delivered (retries included)."""
        return bool(self._tasks)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no message is being delivered (at most `timeout`
        seconds); True if so. Summaries held back for later do not count."""
        deadline = self._loop.time() + timeout
        while self._tasks:  # a delivery that ends may start the summary it held back
            left = deadline - self._loop.time()
            if left <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=left)
        return True

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Send what is pending (one try each, rate or not), wait at most
        `timeout` seconds for the messages under way, then drop the rest."""
        self._closing.set()
        for target in self.targets:
            if not target.throttle.busy:
                batch = target.throttle.drain()
                if batch is not None:
                    self._start(target, batch)
            self._sync_timer(target)
        await self.wait_idle(timeout)
        for task in list(self._tasks):
            task.cancel()
        for target in self.targets:
            target.close()


def _render_in_thread(alert: AlertConfig, batch: Batch, host: str, stderr_path: str | None) -> Message:
    """In the target's thread: the stderr file is read there, not on the loop."""
    tail = read_tail(stderr_path) if stderr_path else ""
    return render(alert, batch, host, tail)


__all__ = [
    "AlertDispatcher",
    "Batch",
    "Message",
    "ProbeResult",
    "Sender",
    "Throttle",
    "alert_name",
    "display_name",
    "matches",
    "message_fields",
    "read_tail",
    "render",
    "scrub",
    "secrets_of",
    "short_url",
]
