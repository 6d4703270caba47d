"""Readiness and health probes on the asyncio loop: one probe
(`probe_once`), the readiness prober of a STARTING process
(`ReadinessProber`) and the health checker of a RUNNING one
(`HealthChecker`). The policies (backoff, failures in a row) are pure, in
taskmasterd/probeplan.py.

Nothing here runs unless started: an object created and not started
schedules nothing (an idle daemon has no wake-up for probes), and cancel()
leaves nothing behind -- a `cmd` probe's process group is SIGKILLed at once
and its leader reaped through its pidfd when it is gone.

`cmd` probes are spawned by taskmasterd.spawn, like programs (own session
and process group, stdin/stdout/stderr on /dev/null, no shell), and
collected with waitid(P_PIDFD) when their pidfd is readable: never
waitpid(-1), never asyncio's child watchers. `http` probes speak HTTP/1.1
on asyncio streams (stdlib only, cancellable at any moment, no thread):
one GET, the status line read, the connection dropped; redirects are never
followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from taskmasterd import spawn
from taskmasterd.probeplan import (
    HealthCount,
    ProbeSpec,
    check_url,
    parse_command,
    parse_hostport,
    ready_delay,
    url_target,
)
from taskmasterd.programschema import Output, OutputKind

log = logging.getLogger("taskmasterd")

# The bound of one readiness attempt. A refused connect or a missing socket
# fails at once; only a dropped SYN (a firewall, a full backlog) or a
# hung `cmd` waits, and 5 s leaves a loaded host its time while the
# attempt is retried well within any sensible readytimeout.
READY_ATTEMPT_TIMEOUT = 5.0

# The status line of an HTTP answer is read up to this (the asyncio
# stream's buffer limit): a peer that sends more without a newline is not
# an HTTP server, and memory stays bounded.
_STATUS_LINE_LIMIT = 8192

Result = tuple[bool, str]


# ---- one probe -----------------------------------------------------------------------


async def probe_once(spec: ProbeSpec, timeout: float, *, env: Mapping[str, str] | None = None,
                     cwd: str | None = None, user: int | None = None) -> Result:
    """Run one probe, bounded by `timeout` seconds: (ok, one line on it).

    `env`, `cwd` and `user` matter to `cmd` only: the variables it gets
    over the daemon's environment (as a program's `env`), its working
    directory, the uid it runs as (with that user's groups, HOME, USER).
    The others connect from the daemon itself. Never raises but
    CancelledError."""
    return await _probe(spec, timeout, env, cwd, user, _CmdSlot())


async def _probe(spec: ProbeSpec, timeout: float, env: Mapping[str, str] | None, cwd: str | None,
                 user: int | None, slot: _CmdSlot) -> Result:
    try:
        if spec.kind == "cmd":
            return await _probe_cmd(spec.target, timeout, env, cwd, user, slot)
        async with asyncio.timeout(timeout):
            if spec.kind == "tcp":
                return await _probe_tcp(spec.target)
            if spec.kind == "unix":
                return await _probe_unix(spec.target)
            return await _probe_http(spec.target)
    except TimeoutError:
        return False, f"timed out after {_seconds(timeout)}"
    except (OSError, ValueError, RuntimeError) as exc:  # a failure none of the probes expected
        log.warning("probe %s failed unexpectedly", spec.describe(), exc_info=True)
        return False, "probe error: " + " ".join(str(exc).split())  # one line


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _os_error(exc: OSError) -> str:
    """One line for a failed connect: "connection refused"."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate refused: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    # asyncio's own text ("Connect call failed ('127.0.0.1', 80)") repeats
    # the address: the errno's says what happened.
    text = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a probe's connection politely (a FIN, not a reset)."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _probe_tcp(target: str) -> Result:
    parsed = parse_hostport(target)
    if isinstance(parsed, str):
        return False, parsed
    host, port = parsed
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return False, f"{_os_error(exc)} ({_where(host, port)})"
    await _close(writer)
    return True, f"connected to {_where(host, port)}"


async def _probe_unix(path: str) -> Result:
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except OSError as exc:
        return False, f"{_os_error(exc)} ({path})"
    await _close(writer)
    return True, f"connected to {path}"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The stdlib's default client context (system CAs, host name checked),
    made once: loading the CAs costs more than a probe."""
    return ssl.create_default_context()


async def _probe_http(url: str) -> Result:
    why = check_url(url)
    if why is not None:
        return False, why
    host, port, tls, path = url_target(url)
    where = _where(host, port)
    bare_host = f"[{host}]" if ":" in host else host
    host_header = bare_host if port == (443 if tls else 80) else where
    request = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: taskmasterd-probe\r\n"
               "Accept: */*\r\nConnection: close\r\n\r\n").encode("ascii")
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=_tls_context() if tls else None, server_hostname=host if tls else None,
            limit=_STATUS_LINE_LIMIT)
    except OSError as exc:
        return False, f"{_os_error(exc)} ({where})"
    try:
        writer.write(request)
        line = await reader.readline()
    except OSError as exc:
        return False, f"{_os_error(exc)} ({where})"
    except ValueError:  # the limit: a line longer than any status line
        return False, f"not an HTTP answer from {url} (no status line)"
    finally:
        # The answer's rest is not read: a reset, not a FIN, either way, and
        # at once (a TLS close would wait for the peer's close_notify).
        writer.transport.abort()
    if not line:
        return False, f"connection closed without an answer ({where})"
    status = _status_code(line)
    if status is None:
        return False, f"not an HTTP answer from {url}: {line[:60]!r}"
    return 200 <= status < 400, f"HTTP {status} from {url}"


def _status_code(line: bytes) -> int | None:
    """The code of a status line ("HTTP/1.1 503 Service Unavailable")."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        return None
    return int(code)


class _CmdSlot:
    """The `cmd` probe in flight, if any, so that a cancel kills it at
    once rather than when its task next runs. The child is forgotten the
    moment it is reaped: its pid may be reused after that."""

    def __init__(self) -> None:
        self.child: spawn.Child | None = None

    def kill(self) -> None:
        if self.child is not None:
            spawn.kill_group(self.child, signal.SIGKILL)


async def _probe_cmd(command: str, timeout: float, env: Mapping[str, str] | None, cwd: str | None,
                     user: int | None, slot: _CmdSlot) -> Result:
    argv = parse_command(command)
    if isinstance(argv, str):
        return False, argv
    launch = spawn.LaunchSpec(
        process="probe", program="probe", index=0, argv=argv, base_env=os.environ,
        env=dict(env or {}), cwd=cwd, umask=None, user=None if user is None else str(user),
        stdout=Output(OutputKind.NULL), stderr=Output(OutputKind.NULL), logdir="", journal=False)
    try:
        child = spawn.spawn(launch)
    except spawn.SpawnFailed as exc:
        return False, f"could not be started: {exc.error}"
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    returncode: list[int] = []

    def on_exit() -> None:
        loop.remove_reader(child.pidfd)  # before collect() closes it
        code = spawn.collect(child)  # SIGKILLs what it left in its group, then reaps
        if code is None:  # a spurious wake-up
            loop.add_reader(child.pidfd, on_exit)
            return
        returncode.append(code)
        if slot.child is child:
            slot.child = None
        ended.set()

    # The reader stays until the child is reaped, whatever happens to this
    # coroutine: a cancel kills the group, and the reap follows when it is gone.
    slot.child = child
    loop.add_reader(child.pidfd, on_exit)
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await ended.wait()
        except TimeoutError:
            timed_out = True
            slot.kill()
            await ended.wait()  # SIGKILL: soon; no bound to add (it cannot be ignored)
    except BaseException:  # cancelled: the group goes now, its reap when it is gone
        slot.kill()
        raise
    if timed_out:
        return False, f"timed out after {_seconds(timeout)} (process group killed)"
    code = returncode[0]
    if code == 0:
        return True, "exited with status 0"
    if code > 0:
        return False, f"exited with status {code}"
    return False, f"killed by {_signame(-code)}"


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _call(what: str, callback: Callable[..., None], *args: Any) -> None:
    """Run a callback of the lead's; its exception is logged, and the
    prober or checker goes on."""
    try:
        callback(*args)
    except Exception:
        log.exception("probe %s callback failed", what)


# ---- readiness -------------------------------------------------------------------------


class _Prober:
    """What both probers share: their task on the running loop, started
    once, and its cancellation (a `cmd` probe under way has its process
    group SIGKILLed at once); what a probe runs as."""

    _kind = ""  # names the task: "ready", "health"

    def __init__(self, spec: ProbeSpec, env: Mapping[str, str] | None, cwd: str | None,
                 user: int | None) -> None:
        self.spec = spec
        self._env = env
        self._cwd = cwd
        self._user = user
        self._slot = _CmdSlot()
        self._task: asyncio.Task[None] | None = None
        self._cancelled = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start on the running loop (once; after cancel(), never)."""
        if self._task is not None or self._cancelled:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"{self._kind} {self.spec.describe()}")

    def cancel(self) -> None:
        """Stop: idempotent (a no-op once a readiness prober is done). A `cmd`
        probe under way has its process group SIGKILLed now."""
        self._cancelled = True
        self._slot.kill()
        if self._task is not None:
            self._task.cancel()

    async def _probe_once(self, timeout: float) -> Result:
        return await _probe(self.spec, timeout, self._env, self._cwd, self._user, self._slot)

    async def _run(self) -> None:
        raise NotImplementedError


class ReadinessProber(_Prober):
    """Probes a STARTING process until the probe succeeds, then calls
    on_ready(detail) once and stops: the first attempt at once, the next
    ones ready_delay(n) after the end of attempt n, each bounded by
    `attempt_timeout`. It never gives up by itself: the readytimeout is the
    state machine's, which cancels the prober when the process leaves
    STARTING."""

    _kind = "ready"

    def __init__(self, spec: ProbeSpec, on_ready: Callable[[str], None], *,
                 env: Mapping[str, str] | None = None, cwd: str | None = None, user: int | None = None,
                 attempt_timeout: float = READY_ATTEMPT_TIMEOUT) -> None:
        super().__init__(spec, env, cwd, user)
        self._on_ready = on_ready
        self._attempt_timeout = attempt_timeout
        self._attempts = 0
        self._last_detail = ""

    @property
    def attempts(self) -> int:
        """Attempts made so far (ended or under way)."""
        return self._attempts

    @property
    def last_detail(self) -> str:
        """The latest failed attempt's line (for "not ready after 30 s: ...")."""
        return self._last_detail

    async def _run(self) -> None:
        try:
            while True:
                self._attempts += 1
                ok, detail = await self._probe_once(self._attempt_timeout)
                if self._cancelled:  # cancelled as the probe ended: no callback after cancel()
                    return
                if ok:
                    _call("on_ready", self._on_ready, detail)
                    return
                self._last_detail = detail
                await asyncio.sleep(ready_delay(self._attempts))
        except Exception:  # a bug here: logged, not "Task exception was never retrieved"
            log.exception("readiness probe %s stopped", self.spec.describe())


# ---- health ---------------------------------------------------------------------------


class HealthChecker(_Prober):
    """Probes a RUNNING process every `interval` seconds, each probe bounded
    by `timeout`; after `failures` failures in a row, on_unhealthy(detail)
    with the last one's line (once per run of failures: HealthCount).
    on_result(ok, detail) after every probe. The first probe comes
    `interval` after start(), each next one `interval` after the end of the
    previous: probes never overlap, and a slow one delays the next rather
    than causing a burst. It goes on after on_unhealthy (a recovery is
    seen) until cancel()."""

    _kind = "health"

    def __init__(self, spec: ProbeSpec, interval: float, timeout: float, failures: int,
                 on_unhealthy: Callable[[str], None], *,
                 on_result: Callable[[bool, str], None] | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 user: int | None = None) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError(f"interval and timeout must be positive ({interval}, {timeout})")
        super().__init__(spec, env, cwd, user)
        self.interval = interval
        self.timeout = timeout
        self._count = HealthCount(failures)
        self._on_unhealthy = on_unhealthy
        self._on_result = on_result

    @property
    def failures(self) -> int:
        """Failures in a row, now (0 after a success)."""
        return self._count.failures

    @property
    def last_detail(self) -> str:
        """The latest probe's line, success or failure ("" before the first)."""
        return self._count.last_detail

    async def _run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                ok, detail = await self._probe_once(self.timeout)
                if self._cancelled:  # cancelled as the probe ended: no callback after cancel()
                    return
                unhealthy = self._count.record(ok, detail)
                if self._on_result is not None:
                    _call("on_result", self._on_result, ok, detail)
                if unhealthy:
                    _call("on_unhealthy", self._on_unhealthy, detail)
        except Exception:
            log.exception("health check %s stopped", self.spec.describe())
