"""The alert dispatcher (asyncio): the event stream fanned out to the
targets, each with its own Throttle, Sender and worker thread.

`AlertDispatcher` is subscribed to the EventBus. Each target has its own
apprise object and its own worker thread (pool.Worker, created at its first
message): a slow, refusing or black-holed target holds only its own thread,
never the event loop, restarts, D-Bus replies or the other targets. A failed
delivery is logged with the URL redacted and tried again, 3 tries in all,
2 s then 10 s apart. Nothing is scheduled while nothing is pending: an idle
daemon has no alert timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskmasterd.alerts.match import matches
from taskmasterd.alerts.pool import Worker
from taskmasterd.alerts.render import Message, describe_kinds, listed, probe_message, render
from taskmasterd.alerts.sender import Sender, route_apprise_log
from taskmasterd.alerts.tail import read_tail
from taskmasterd.alerts.throttle import Batch, Throttle
from taskmasterd.alertschema import AlertConfig
from taskmasterd.deadline import cancel as cancel_timer
from taskmasterd.deadline import follow as follow_deadline
from taskmasterd.errors import BadName
from taskmasterd.events import Event

log = logging.getLogger("taskmasterd")

RETRY_DELAYS: tuple[float, ...] = (2.0, 10.0)  # 3 tries in all
TEST_TIMEOUT = 20.0  # seconds per target for `taskctl alert test` (< the 25 s of busctl & co.)
CLOSE_TIMEOUT = 5.0  # seconds the daemon waits for the last messages when it exits


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
        # Messages delivered / given up (after their retries, or not even
        # rendered) since the daemon started; test messages not counted.
        self.sent = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        route_apprise_log()
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
                self.failed += 1
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
        about = f"{listed(batch.processes)}: {describe_kinds(batch)}"
        for attempt in range(1, tries + 1):
            ok, detail = await self._loop.run_in_executor(target.pool, target.send, message)
            if ok:
                self.sent += 1
                log.debug("%s: alert sent (%s), %s", target.name, about, detail)
                return
            if target.closed:
                return
            if attempt == tries or self._closing.is_set():
                self.failed += 1
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
