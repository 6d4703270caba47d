"""The readiness and health keys of a program (issue 15): what `ready:` and
`health:` hold, how they are read off the node tree, and the checks that
span several keys (`watchdog` needs `ready: notify`, `readytimeout` is at
least `starttime`). Pure: no I/O, no asyncio.

    ready: notify                      # the sd_notify protocol: READY=1
    ready: {tcp: "127.0.0.1:6379"}     # RUNNING when a connect succeeds
    ready: {unix: /run/app.sock}
    ready: {cmd: "redis-cli ping"}     # RUNNING when it exits 0
    health: {http: "http://127.0.0.1:8080/health", interval: 10, timeout: 2, failures: 3}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from taskmasterd.probeplan import ProbeSpec, check_target
from taskmasterd.yamlnodes import NodeReader, Reject, Reported, kind, show

READY_KINDS = ("notify", "tcp", "unix", "cmd")
HEALTH_KINDS = ("cmd", "tcp", "http")
DEFAULT_READYTIMEOUT = 60.0
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_FAILURES = 3


@dataclass(frozen=True)
class Check:
    """One probe: `kind` in READY_KINDS or HEALTH_KINDS; `target` is "" for
    notify, "host:port" for tcp, an absolute path for unix, a command line
    for cmd (split like `cmd`, no shell), a URL for http."""

    kind: str
    target: str = ""

    def describe(self) -> str:
        return "notify" if self.kind == "notify" else f"{self.kind} {self.target}"


@dataclass(frozen=True)
class HealthCheck:
    check: Check
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    failures: int = DEFAULT_FAILURES


# ---- readers ------------------------------------------------------------------


def _one_check(r: NodeReader, kp: str, node: MappingNode, kinds: tuple[str, ...],
               resolve: Callable[[str], str], extra: tuple[str, ...]) -> tuple[Check, dict[str, Node]]:
    """The one probe key of a mapping (tcp/unix/cmd/http) and its other keys."""
    found: list[tuple[ScalarNode, Node]] = []
    others: dict[str, Node] = {}
    bad = False
    for k, v in r.entries(node, kp):
        if k.value in kinds:
            found.append((k, v))
        elif k.value in extra:
            others[k.value] = v
        else:
            accepted = ", ".join((*kinds, *extra))
            r.error(k, f"{kp}.{k.value}", f"unknown key '{k.value}'; accepted here: {accepted}")
            bad = True
    if bad:
        raise Reported
    if len(found) != 1:
        names = " or ".join(f"'{x}'" for x in kinds)
        what = "none" if not found else ", ".join(f"'{k.value}'" for k, _ in found)
        raise Reject(f"expected exactly one of {names}, found {what}")
    k, v = found[0]
    try:
        return Check(k.value, _target(r, k.value, v, resolve)), others
    except Reject as rej:
        r.error(rej.node if rej.node is not None else v, f"{kp}.{k.value}", rej.message)
        raise Reported from None


def _target(r: NodeReader, what: str, node: Node, resolve: Callable[[str], str]) -> str:
    """The probe's target as written (a unix path resolved against the
    file's directory), checked by the probe machinery's own rules."""
    hint = {"tcp": "HOST:PORT like 127.0.0.1:8080", "unix": "a socket path",
            "cmd": "a command line", "http": "a URL like http://127.0.0.1:8080/health"}[what]
    text = r._text(node, hint, strict=what != "cmd")
    if what == "unix":
        text = resolve(text)
    problem = check_target(ProbeSpec(what, text))
    if problem is not None:
        raise Reject(problem)
    return text


def read_ready(r: NodeReader, kp: str, node: Node, resolve: Callable[[str], str]) -> Check:
    if isinstance(node, ScalarNode) and node.value == "notify" and not node.tag.startswith("!"):
        return Check("notify")
    if not isinstance(node, MappingNode):
        raise Reject("expected 'notify' or a mapping with one of tcp: HOST:PORT, unix: PATH, "
                     f"cmd: COMMAND, found {show(node) if isinstance(node, ScalarNode) else kind(node)}")
    check, _ = _one_check(r, kp, node, ("tcp", "unix", "cmd"), resolve, ())
    return check


def read_health(r: NodeReader, kp: str, node: Node, resolve: Callable[[str], str]) -> HealthCheck:
    if not isinstance(node, MappingNode):
        raise Reject("expected a mapping with one of cmd: COMMAND, tcp: HOST:PORT, http: URL "
                     f"(and interval, timeout, failures), found {kind(node)}")
    check, others = _one_check(r, kp, node, HEALTH_KINDS, resolve,
                               ("interval", "timeout", "failures"))
    values: dict[str, Any] = {}
    ok = True
    for name, reader in (("interval", lambda n: _positive(r, n)), ("timeout", lambda n: _positive(r, n)),
                         ("failures", lambda n: r._int(n, 1, 1000))):
        if name in others:
            ok = r._read(reader, others[name], f"{kp}.{name}", values, name) and ok
    if not ok:
        raise Reported
    health = HealthCheck(check, **values)
    if health.timeout > health.interval:
        r.error(others.get("timeout", node), f"{kp}.timeout",
                f"timeout ({health.timeout:g} s) must not exceed interval ({health.interval:g} s): "
                "a probe would still run when the next one is due")
        raise Reported
    return health


def _positive(r: NodeReader, node: Node) -> float:
    value = r._seconds(node)
    if value <= 0:
        raise Reject("must be more than 0 seconds")
    return value


def read_positive_seconds(r: NodeReader, node: Node) -> float:
    """readytimeout: seconds, more than 0."""
    return _positive(r, node)


# ---- across keys ----------------------------------------------------------------


def cross_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each rule between keys that `values` (the keys a
    program sets, read) breaks; the key is where the error is shown."""
    out: list[tuple[str, str]] = []
    ready: Check | None = values.get("ready")
    watchdog = values.get("watchdog", 0.0)
    if watchdog and (ready is None or ready.kind != "notify"):
        out.append(("watchdog", "watchdog needs 'ready: notify' (the process pings with "
                                "WATCHDOG=1 on its NOTIFY_SOCKET)"))
    starttime = values.get("starttime", 1.0)
    readytimeout = values.get("readytimeout", DEFAULT_READYTIMEOUT)
    if ready is not None and readytimeout < starttime:
        key = "readytimeout" if "readytimeout" in values else "starttime"
        out.append((key, f"readytimeout ({readytimeout:g} s) must be at least starttime "
                         f"({starttime:g} s): starttime is the minimum before RUNNING"))
    return out
