"""Keeping secrets out of logs (pure): how a target is named, and what of
its URL must never be shown."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence


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
