"""One apprise target: built on the event loop, `send` run in the target's
worker thread (pool.Worker).

apprise is imported when the first target is built (the load-time check,
alerts.urls, has imported it already), never when there are no alerts. Its
own log records are kept out of our log (apprise 1.2 writes URLs with their
passwords in them); the warnings it logs while sending a message are
captured in the sending thread and reported, scrubbed, as the reason of a
failure.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator

from taskmasterd.alerts.redact import scrub, secrets_of, short_url
from taskmasterd.alerts.render import Message


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


def route_apprise_log() -> None:
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
