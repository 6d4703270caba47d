"""Alerts: the event stream fanned out to apprise targets, rate-limited.

One concern a module; the first five are pure (no asyncio, no apprise):

* match.py — which alert wants which event (`alert_name`, `matches`);
* throttle.py — a target's rate limit and coalescing (`Throttle`, `Batch`),
  the clock an argument;
* render.py — a Batch as a title and a body (built in, or the alert's
  templates);
* redact.py — how a target is named without its secrets;
* tail.py — the end of a process's stderr file;
* sender.py — one apprise target (`Sender`), apprise's log kept apart;
* pool.py — a target's worker thread (`Worker`);
* dispatcher.py — `AlertDispatcher` (asyncio): events in, messages out;
* urls.py — apprise's check of a configuration's URLs (`url_issues`), made
  by the daemon's loader (hostcheck.load).

The dispatcher's names are imported from here on first use, so that
importing a pure module (or urls, for --check-config) does not import
asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taskmasterd.alerts.match import alert_name as alert_name
from taskmasterd.alerts.match import display_name as display_name
from taskmasterd.alerts.match import matches as matches
from taskmasterd.alerts.pool import Worker as Worker
from taskmasterd.alerts.redact import scrub as scrub
from taskmasterd.alerts.redact import secrets_of as secrets_of
from taskmasterd.alerts.redact import short_url as short_url
from taskmasterd.alerts.render import Message as Message
from taskmasterd.alerts.render import message_fields as message_fields
from taskmasterd.alerts.render import render as render
from taskmasterd.alerts.sender import Sender as Sender
from taskmasterd.alerts.tail import read_tail as read_tail
from taskmasterd.alerts.throttle import Batch as Batch
from taskmasterd.alerts.throttle import Throttle as Throttle

if TYPE_CHECKING:
    from taskmasterd.alerts.dispatcher import CLOSE_TIMEOUT as CLOSE_TIMEOUT
    from taskmasterd.alerts.dispatcher import RETRY_DELAYS as RETRY_DELAYS
    from taskmasterd.alerts.dispatcher import TEST_TIMEOUT as TEST_TIMEOUT
    from taskmasterd.alerts.dispatcher import AlertDispatcher as AlertDispatcher
    from taskmasterd.alerts.dispatcher import ProbeResult as ProbeResult

_DISPATCHER_NAMES = frozenset({"AlertDispatcher", "ProbeResult", "CLOSE_TIMEOUT", "RETRY_DELAYS",
                               "TEST_TIMEOUT"})


def __getattr__(name: str) -> Any:
    if name in _DISPATCHER_NAMES:
        return getattr(importlib.import_module("taskmasterd.alerts.dispatcher"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLOSE_TIMEOUT",
    "RETRY_DELAYS",
    "TEST_TIMEOUT",
    "AlertDispatcher",
    "Batch",
    "Message",
    "ProbeResult",
    "Sender",
    "Throttle",
    "Worker",
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
