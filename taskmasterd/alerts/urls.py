"""Whether apprise can use the alert URLs of a loaded configuration.

The schema (alertschema.py) checks an URL's syntax only and keeps where it
is written (AlertConfig.line/column); apprise, whose plugins differ from a
version to the next (rsyslog:// is 2.x only), is asked here, by the
daemon's loader (hostcheck.load: at start, at reload and for
--check-config), once the file is otherwise valid. apprise is imported on
the first URL (it costs ~0.1-0.3 s), never for a file without alerts.
"""

from __future__ import annotations

import functools
from typing import Any

from taskmasterd.alertschema import APPRISE_WIKI
from taskmasterd.config import Config, ConfigIssue


def url_issues(config: Config) -> list[ConfigIssue]:
    """An issue at each `url:` of `config` that apprise cannot use."""
    out: list[ConfigIssue] = []
    for index, alert in enumerate(config.alerts):
        problem = url_problem(alert.url)
        if problem is not None:
            out.append(ConfigIssue(config.path, alert.line, alert.column, f"alerts[{index}].url", problem))
    return out


def url_problem(url: str) -> str | None:
    """Why apprise cannot use `url`, or None when it can. The URL is never
    quoted back: it may hold a password or a token."""
    try:
        import apprise
    except ImportError:
        return ("alerts need the apprise package (Debian: python3-apprise), which is not "
                "installed; install it or remove 'alerts:'")
    scheme = url.partition("://")[0]
    try:
        targets = apprise.Apprise()
        accepted = bool(targets.add(url))
        count = len(targets)
    except Exception:  # a plugin that chokes on odd input: still "cannot use it"
        accepted, count = False, 0
    if accepted and count == 1:
        return None
    if accepted:
        return (f"this is {count} URLs for apprise (separated by a comma or a space); "
                "write one '- url:' item per target")
    if scheme.lower() in ("http", "https"):
        secure = "s" if scheme.lower() == "https" else ""
        return (f"apprise has no {scheme}:// service: for a web hook write json{secure}:// "
                f"(JSON POST), form{secure}:// or xml{secure}:// instead of {scheme}://")
    if scheme.lower() not in _apprise_schemes(apprise):
        return f"apprise has no service '{scheme}://'; the services and their URLs: {APPRISE_WIKI}"
    return (f"apprise cannot use this {scheme}:// URL: a part is missing or invalid "
            f"(host, port, token, address...); see {APPRISE_WIKI} for its format")


@functools.lru_cache(maxsize=1)
def _apprise_schemes(apprise: Any) -> frozenset[str]:
    # ~50 ms (apprise describes every plugin): once per process, not per URL.
    schemes: set[str] = set()
    try:
        for entry in apprise.Apprise().details().get("schemas", ()):
            for key in ("protocols", "secure_protocols"):
                value = entry.get(key) or ()
                schemes.update(str(v).lower() for v in ([value] if isinstance(value, str) else value))
    except Exception:
        pass
    return frozenset(schemes)
