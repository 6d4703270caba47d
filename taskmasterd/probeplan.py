"""Readiness and health probes: what a probe is, the checks the config
reader runs on its target, and the two policies (the readiness backoff and
the failures-in-a-row count). Pure: no asyncio, no I/O; the asyncio side is
taskmasterd/probes.py.

The check functions return why a value is refused (one line, for the
config reader to put after file:line:col), or the parsed value.
"""

from __future__ import annotations

import ipaddress
import shlex
import urllib.parse
from dataclasses import dataclass

KINDS = ("tcp", "unix", "cmd", "http")

# The readiness backoff: the first attempt goes at once, the next after
# READY_FIRST_DELAY, each further one after twice the previous delay, at
# most READY_MAX_DELAY. Why these numbers: most servers bind within 10 ms
# to 1 s of their start; doubling from 50 ms finds them at most about twice
# their start time (+50 ms) after it (one that binds in 300 ms is seen at
# 350 ms: attempts at 0, 50, 150, 350 ms), instead of a fixed poll's
# latency/load trade-off. The cap bounds both sides for the slow starters
# (a JVM, a database replaying its log): READY comes at most 2 s late, and
# a process that never gets ready costs one probe per 2 s (a connect, or a
# fork for `cmd`) until its readytimeout, whatever that is: 100 processes
# starting at once fork 50 probes a second at worst.
READY_FIRST_DELAY = 0.05
READY_MAX_DELAY = 2.0

# The ports a `tcp:` target may name.
_PORTS = range(1, 65536)


@dataclass(frozen=True)
class ProbeSpec:
    """One probe: `kind` in KINDS, and its target -- "host:port" (tcp), a
    socket path (unix), a command line (cmd, split with shlex, no shell), a
    URL (http; https too)."""

    kind: str
    target: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown probe kind {self.kind!r} (one of {', '.join(KINDS)})")

    def describe(self) -> str:
        """For messages: `tcp 127.0.0.1:80`, `unix /run/x.sock`,
        `cmd pg_isready -q`, `http http://127.0.0.1/health`."""
        return f"{self.kind} {self.target}"


def parse_hostport(text: str) -> tuple[str, int] | str:
    """("host", port) from "host:port" or "[v6]:port"; else why not."""
    if any(c.isspace() for c in text):
        return f"{text!r} holds a space: HOST:PORT expected, e.g. 127.0.0.1:8080"
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return f"{text!r}: no ']' closes the IPv6 address: e.g. [::1]:8080"
        host, rest = text[1:close], text[close + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{text!r}: {host!r} in brackets is not an IPv6 address"
        if not rest.startswith(":"):
            return f"{text!r}: no port after the address: [{host}]:PORT expected"
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            return f"{text!r}: no port: HOST:PORT expected, e.g. 127.0.0.1:8080"
        if "/" in host:
            return f"{text!r}: a host, not a URL or path: HOST:PORT expected"
        if ":" in host:
            return f"{text!r}: an IPv6 address goes in brackets, e.g. [::1]:8080"
        if not host:
            return f"{text!r}: no host before the port, e.g. 127.0.0.1:{port_text}"
    if not port_text.isascii() or not port_text.isdigit():
        return f"{text!r}: the port {port_text!r} is not a number (1-65535)"
    port = int(port_text)
    if port not in _PORTS:
        return f"{text!r}: the port {port} is out of range (1-65535)"
    return host, port


def check_url(text: str) -> str | None:
    """Why an `http:` URL is refused, or None. http:// and https:// (the
    certificate checked against the system's CAs, as the ssl module's
    default context does)."""
    if not text.isascii():
        return f"{text!r}: characters beyond ASCII must be percent-encoded"
    if any(c <= " " or c == "\x7f" for c in text):
        return f"{text!r}: spaces and control characters must be percent-encoded"
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 host
        return f"{text!r}: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{text!r}: only http:// and https:// URLs can be probed"
    if not parts.hostname:
        return f"{text!r}: no host, e.g. http://127.0.0.1:8080/health"
    if parts.username is not None or parts.password is not None:
        return f"{text!r}: credentials in the URL are not supported"
    try:
        port = parts.port
    except ValueError:
        return f"{text!r}: the port is not a number in 1-65535"
    if port is not None and port not in _PORTS:
        return f"{text!r}: the port {port} is out of range (1-65535)"
    return None


def url_target(text: str) -> tuple[str, int, bool, str]:
    """(host, port, tls, request target) of a URL check_url accepts: what
    goes into the connection and the request line."""
    parts = urllib.parse.urlsplit(text)
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname or "", port, tls, path


def parse_command(text: str) -> tuple[str, ...] | str:
    """The argv of a `cmd:` probe (shlex, no shell, as a program's `cmd`),
    or why not."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:  # "No closing quotation"
        return f"{text!r}: {str(exc).lower()}"
    if not argv:
        return "the command is empty"
    if any("\0" in arg for arg in argv):
        return f"{text!r}: a NUL byte cannot be passed to a command"
    return argv


def check_target(spec: ProbeSpec) -> str | None:
    """Why a probe's target is refused, or None: the config reader's one
    call per probe."""
    if spec.kind == "tcp":
        parsed = parse_hostport(spec.target)
        return parsed if isinstance(parsed, str) else None
    if spec.kind == "unix":
        if not spec.target:
            return "the socket path is empty"
        if "\0" in spec.target:
            return f"{spec.target!r}: a NUL byte in the socket path"
        if len(spec.target.encode()) > 107:  # sun_path holds 108 bytes with the NUL
            return f"{spec.target!r}: a socket path is at most 107 bytes long"
        return None
    if spec.kind == "cmd":
        argv = parse_command(spec.target)
        return argv if isinstance(argv, str) else None
    return check_url(spec.target)


def ready_delay(attempt: int) -> float:
    """Seconds between readiness attempt `attempt` (1 = the first, made at
    once) having failed and the next one."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    # No float overflow for a huge attempt number: the cap is reached at 6.
    doublings = min(attempt - 1, 16)
    return min(READY_FIRST_DELAY * (1 << doublings), READY_MAX_DELAY)


@dataclass
class HealthCount:
    """The failures in a row of a health check, against its `failures: N`.

    `record` says True exactly once per run of failures: when the run
    reaches N. Further failures keep counting (for the display) without
    firing again; only a success, which resets the run, arms it again. Why
    not every further N failures: UNHEALTHY is a state the process is in,
    and the supervisor restarts it on the first report; a process left
    unhealthy (its restart refused, or not yet done) would else repeat the
    same event and alert every N intervals with no news."""

    threshold: int
    failures: int = 0  # in a row, now
    last_detail: str = ""  # of the latest probe, success or not

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"failures must be at least 1, not {self.threshold}")

    def record(self, ok: bool, detail: str) -> bool:
        """Count one probe's result; True when this failure makes the run
        reach the threshold."""
        self.last_detail = detail
        if ok:
            self.failures = 0
            return False
        self.failures += 1
        return self.failures == self.threshold
