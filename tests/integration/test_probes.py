"""Readiness and health probes (taskmasterd/probes.py) against real
loopback sockets, an HTTP server and real processes.

Timing is asserted on the virtual clock (tests/virtual_clock.py) with
probes whose outcome the kernel gives within the connect itself (a unix
socket, a loopback TCP connect, an HTTP peer that never answers): nothing
outside the process is awaited there, so the clock cannot jump over it.
`cmd` and answering-HTTP probes depend on another process's or thread's
pace: they run on a real loop with generous timeouts and assert outcomes,
not durations (or freeze the virtual clock with a thread while they wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import random
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmasterd import probes
from taskmasterd.probeplan import ProbeSpec
from taskmasterd.probes import HealthChecker, ReadinessProber, probe_once
from taskmasterd.spawn import proc_stat
from tests.harness import wait_until
from tests.virtual_clock import run

# ---- helpers ----------------------------------------------------------------------------


def live_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    return [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _children() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat.ppid == os.getpid():
                pids.append(stat.pid)
    return pids


_BEFORE: set[int] = set()  # children the test run had before this test (e2e's container)


@pytest.fixture(autouse=True)
def _children_before() -> None:
    _BEFORE.clear()
    _BEFORE.update(_children())


def our_children() -> list[int]:
    """This test's direct children, zombies included (a zombie is a leak
    too); not those the run already had (a session's booted container)."""
    return [pid for pid in _children() if pid not in _BEFORE]


def live_group_members(pgid: int) -> list[int]:
    """The processes of a group that still run (not zombies: a killed
    grandchild is reaped by init, on its own time)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat.pgrp == pgid and stat.state not in ("Z", "X"):
                pids.append(stat.pid)
    return pids


def read_pids(path: Path, count: int) -> list[int] | None:
    """The pids a probe command wrote, once it has written `count`."""
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return None
    return [int(x) for x in lines] if len(lines) >= count else None


async def pids_written(path: Path, count: int) -> list[int]:
    """Wait in a thread (the virtual clock stands still meanwhile) until
    the command has written its pids."""
    found: list[int] = []

    def check() -> bool:
        pids = read_pids(path, count)
        if pids is not None:
            found[:] = pids
        return pids is not None
    await asyncio.get_running_loop().run_in_executor(None, wait_until, f"pids in {path}", check)
    return found


def unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(64)
    return sock


class StatusServer:
    """An HTTP server in a thread on 127.0.0.1: answers GET with the
    statuses given, in order (the last one over and over)."""

    def __init__(self, statuses: list[int], tls: ssl.SSLContext | None = None) -> None:
        self.statuses = list(statuses)
        self.paths: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                status = server.statuses.pop(0) if len(server.statuses) > 1 else server.statuses[0]
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the probe drops the connection after the status line

        self.httpd = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"http{'s' if tls else ''}://127.0.0.1:{self.port}/health"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def status_server() -> Iterator[Callable[..., StatusServer]]:
    servers: list[StatusServer] = []

    def make(statuses: list[int], tls: ssl.SSLContext | None = None) -> StatusServer:
        servers.append(StatusServer(statuses, tls))
        return servers[-1]
    yield make
    for server in servers:
        with contextlib.suppress(OSError):
            server.close()


# ---- nothing runs unless started --------------------------------------------------------


def test_created_but_not_started_probes_schedule_nothing(tmp_path: Path) -> None:
    called: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = open_fds()
        spec = ProbeSpec("unix", str(tmp_path / "sock"))
        ReadinessProber(spec, called.append)
        HealthChecker(spec, 1.0, 1.0, 1, called.append, on_result=lambda ok, d: called.append(d))
        assert live_timers(loop) == []
        assert not loop._ready  # type: ignore[attr-defined]
        assert other_tasks() == set()
        assert open_fds() == before
        await asyncio.sleep(3600)  # sleep-ok: virtual clock: an hour with nothing due
        assert called == []
    run(main())


def test_cancel_leaves_no_timer_and_no_task(tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        spec = ProbeSpec("unix", str(tmp_path / "sock"))
        prober = ReadinessProber(spec, lambda d: None)
        checker = HealthChecker(spec, 5.0, 1.0, 2, lambda d: None)
        prober.start()
        checker.start()
        await asyncio.sleep(7)  # sleep-ok: virtual clock: both have probed and wait
        assert prober.attempts > 1 and checker.failures == 1
        prober.cancel()
        checker.cancel()
        prober.cancel()  # idempotent
        await asyncio.sleep(0)  # sleep-ok: one turn for the cancellations to land
        assert live_timers(loop) == []
        assert other_tasks() == set()
        assert not prober.running and not checker.running
        checker.start()  # no restart after a cancel
        assert other_tasks() == set()
    run(main())


# ---- readiness ----------------------------------------------------------------------------


def test_readiness_tcp_backs_off_then_sees_the_late_listener() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: a connect is refused
    port = sock.getsockname()[1]
    ready: list[tuple[float, str]] = []

    async def main() -> ReadinessProber:
        loop = asyncio.get_running_loop()
        prober = ReadinessProber(ProbeSpec("tcp", f"127.0.0.1:{port}"),
                                 lambda d: ready.append((loop.time(), d)))
        loop.call_at(10.0, sock.listen, 8)
        prober.start()
        await asyncio.sleep(60)  # sleep-ok: virtual clock: long after it is ready
        assert not prober.running
        return prober
    try:
        prober = run(main())
    finally:
        sock.close()
    # Attempts at 0, .05, .15, .35, .75, 1.55, 3.15 (the 2 s cap from
    # there), 5.15, 7.15, 9.15: refused; 11.15: connected.
    assert len(ready) == 1
    assert ready[0][0] == pytest.approx(11.15)
    assert ready[0][1] == f"connected to 127.0.0.1:{port}"
    assert prober.attempts == 11
    assert prober.last_detail == f"connection refused (127.0.0.1:{port})"


def test_readiness_unix_socket_that_appears_later(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    ready: list[tuple[float, str]] = []
    listeners: list[socket.socket] = []

    async def main() -> ReadinessProber:
        loop = asyncio.get_running_loop()
        prober = ReadinessProber(ProbeSpec("unix", str(path)), lambda d: ready.append((loop.time(), d)))
        loop.call_at(0.5, lambda: listeners.append(unix_listener(path)))
        prober.start()
        await asyncio.sleep(0.2)  # sleep-ok: virtual clock: before the socket exists
        assert prober.last_detail == f"no such file or directory ({path})"
        await asyncio.sleep(30)  # sleep-ok: virtual clock: long after it is ready
        return prober
    try:
        prober = run(main())
    finally:
        for sock in listeners:
            sock.close()
    assert len(ready) == 1
    assert ready[0][0] == pytest.approx(0.75)  # attempts at 0 .05 .15 .35 .75
    assert ready[0][1] == f"connected to {path}"
    assert prober.attempts == 5


def test_readiness_cancelled_before_ready_never_calls_on_ready(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    ready: list[str] = []
    listeners: list[socket.socket] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        prober = ReadinessProber(ProbeSpec("unix", str(path)), ready.append)
        loop.call_at(3.0, lambda: listeners.append(unix_listener(path)))
        prober.start()
        await asyncio.sleep(1)  # sleep-ok: virtual clock: still not ready
        prober.cancel()
        attempts = prober.attempts
        await asyncio.sleep(30)  # sleep-ok: virtual clock: the socket is there meanwhile
        assert prober.attempts == attempts
        return attempts
    try:
        assert run(main()) == 5  # 0 .05 .15 .35 .75, then cancelled before 1.55
    finally:
        for sock in listeners:
            sock.close()
    assert ready == []


def test_readiness_on_ready_exception_is_logged_and_called_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "app.sock"
    listener = unix_listener(path)
    calls: list[str] = []

    def on_ready(detail: str) -> None:
        calls.append(detail)
        raise RuntimeError("the lead's bug")

    async def main() -> None:
        prober = ReadinessProber(ProbeSpec("unix", str(path)), on_ready)
        prober.start()
        await asyncio.sleep(10)  # sleep-ok: virtual clock: time for more attempts, if any
        assert not prober.running and prober.attempts == 1
    try:
        with caplog.at_level(logging.ERROR, logger="taskmasterd"):
            run(main())
    finally:
        listener.close()
    assert calls == [f"connected to {path}"]
    assert "on_ready callback failed" in caplog.text and "the lead's bug" in caplog.text


# ---- health checks: timing on the virtual clock ---------------------------------------------


def test_health_n_failures_in_a_row_after_successes_fire_once_at_the_right_time(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    results: list[tuple[float, bool, str]] = []
    unhealthy: list[tuple[float, str]] = []
    listeners: list[socket.socket] = []

    def up() -> None:
        listeners.append(unix_listener(path))

    def down() -> None:
        listeners.pop().close()
        path.unlink()

    async def main() -> HealthChecker:
        loop = asyncio.get_running_loop()
        checker = HealthChecker(ProbeSpec("unix", str(path)), 10.0, 2.0, 3,
                                lambda d: unhealthy.append((loop.time(), d)),
                                on_result=lambda ok, d: results.append((loop.time(), ok, d)))
        up()
        loop.call_at(25.0, down)  # probes at 10, 20 succeed; 30, 40, 50... fail
        loop.call_at(75.0, up)  # 80 succeeds: the run is broken
        loop.call_at(85.0, down)  # 90, 100, 110: a new run of 3
        checker.start()
        await asyncio.sleep(9.9)  # sleep-ok: virtual clock: the first probe waits an interval
        assert results == []
        await asyncio.sleep(112)  # sleep-ok: virtual clock: to 121.9
        return checker
    try:
        checker = run(main())
    finally:
        for sock in listeners:
            sock.close()
    gone = f"no such file or directory ({path})"
    assert [(t, ok) for t, ok, _ in results] == [
        (10, True), (20, True), (30, False), (40, False), (50, False), (60, False), (70, False),
        (80, True), (90, False), (100, False), (110, False), (120, False)]
    assert results[0][2] == f"connected to {path}"
    assert unhealthy == [(50.0, gone), (110.0, gone)]  # once per run, not at 60/70 nor 120
    assert (checker.failures, checker.last_detail) == (4, gone)


def test_health_interval_is_measured_from_the_end_of_a_slow_probe() -> None:
    # A peer that accepts and never answers: each HTTP probe takes its whole timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
    results: list[tuple[float, bool, str]] = []
    unhealthy: list[tuple[float, str]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        checker = HealthChecker(ProbeSpec("http", url), 10.0, 3.0, 2,
                                lambda d: unhealthy.append((loop.time(), d)),
                                on_result=lambda ok, d: results.append((loop.time(), ok, d)))
        checker.start()
        await asyncio.sleep(40)  # sleep-ok: virtual clock: three probes
        checker.cancel()
    try:
        run(main())
    finally:
        silent.close()
    # Probes at 10-13, 23-26, 36-39: never overlapping, never closer than the interval.
    assert results == [(13.0, False, "timed out after 3 s"), (26.0, False, "timed out after 3 s"),
                       (39.0, False, "timed out after 3 s")]
    assert unhealthy == [(26.0, "timed out after 3 s")]


def test_health_callback_exceptions_are_logged_and_checks_go_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = ProbeSpec("unix", str(tmp_path / "absent.sock"))
    results: list[float] = []
    unhealthy: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def on_result(ok: bool, detail: str) -> None:
            results.append(loop.time())
            raise ValueError("display broke")

        def on_unhealthy(detail: str) -> None:
            unhealthy.append(loop.time())
            raise KeyError("restart broke")
        checker = HealthChecker(spec, 1.0, 1.0, 2, on_unhealthy, on_result=on_result)
        checker.start()
        await asyncio.sleep(5.5)  # sleep-ok: virtual clock: five probes
        assert checker.running
        checker.cancel()
    with caplog.at_level(logging.ERROR, logger="taskmasterd"):
        run(main())
    assert results == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert unhealthy == [2.0]
    assert "display broke" in caplog.text and "restart broke" in caplog.text


# ---- HTTP ----------------------------------------------------------------------------------


def test_http_probe_statuses_redirect_not_followed_and_closed(
        status_server: Callable[..., StatusServer]) -> None:
    server = status_server([200, 503, 302, 404])
    spec = ProbeSpec("http", server.url)

    async def main() -> list[tuple[bool, str]]:
        out = [await probe_once(spec, 5.0) for _ in range(4)]
        server.close()
        out.append(await probe_once(spec, 5.0))
        return out
    results = asyncio.run(main())
    assert results == [
        (True, f"HTTP 200 from {server.url}"),
        (False, f"HTTP 503 from {server.url}"),
        (True, f"HTTP 302 from {server.url}"),
        (False, f"HTTP 404 from {server.url}"),
        (False, f"connection refused (127.0.0.1:{server.port})"),
    ]
    assert server.paths == ["/health"] * 4  # the 302's /elsewhere never asked for


def test_http_probe_query_and_ipv4_host(status_server: Callable[..., StatusServer]) -> None:
    server = status_server([204])
    url = f"http://127.0.0.1:{server.port}/ready?deep=1"
    assert asyncio.run(probe_once(ProbeSpec("http", url), 5.0)) == (True, f"HTTP 204 from {url}")
    assert server.paths == ["/ready?deep=1"]


@pytest.mark.parametrize(("payload", "why"), [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP answer from {url}: b'SSH-2.0-OpenSSH_9.2\\r\\n'"),
    (b"HTTP/1.1 OK\r\n\r\n", "not an HTTP answer from {url}: b'HTTP/1.1 OK\\r\\n'"),
    (b"x" * 100_000, "not an HTTP answer from {url} (no status line)"),  # read no further than 8 KiB
    (b"", "connection closed without an answer (127.0.0.1:{port})"),
])
def test_http_probe_of_a_peer_that_is_not_an_http_server(payload: bytes, why: str) -> None:
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen(4)
    peer.settimeout(30)
    port = peer.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"

    def answer() -> None:
        conn, _ = peer.accept()
        conn.recv(65536)  # the request: unread, closing would reset the connection
        with contextlib.suppress(OSError):  # the probe may drop it before the end
            conn.sendall(payload)
        conn.close()
    thread = threading.Thread(target=answer)
    thread.start()
    try:
        result = asyncio.run(probe_once(ProbeSpec("http", url), 10.0))
    finally:
        thread.join()
        peer.close()
    assert result == (False, why.format(url=url, port=port))


def test_https_probe_of_a_plain_http_server_fails_the_handshake(
        status_server: Callable[..., StatusServer]) -> None:
    server = status_server([200])
    tls_url = f"https://127.0.0.1:{server.port}/health"
    ok, detail = asyncio.run(probe_once(ProbeSpec("http", tls_url), 5.0))
    assert not ok
    assert detail.startswith("TLS error: ") and detail.endswith(f"(127.0.0.1:{server.port})")
    assert server.paths == []  # no request went out in clear


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for 127.0.0.1,
    and the certificate (the CA file a client must trust)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


def test_https_probe_checks_the_certificate_with_the_default_context(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        status_server: Callable[..., StatusServer]) -> None:
    context, cert = self_signed_tls(tmp_path)
    server = status_server([200], context)
    spec = ProbeSpec("http", server.url)
    probes._tls_context.cache_clear()
    try:
        # Not among the system's CAs: refused, with the reason.
        assert asyncio.run(probe_once(spec, 10.0)) == (
            False, f"TLS certificate refused: self-signed certificate (127.0.0.1:{server.port})")
        # Trusted (the default context honours SSL_CERT_FILE): the GET goes through TLS.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        probes._tls_context.cache_clear()
        assert asyncio.run(probe_once(spec, 10.0)) == (True, f"HTTP 200 from {server.url}")
        assert server.paths == ["/health"]
    finally:
        probes._tls_context.cache_clear()


def test_unix_and_tcp_probe_details(tmp_path: Path) -> None:
    bound = socket.socket(socket.AF_UNIX)
    bound.bind(str(tmp_path / "bound.sock"))  # a socket file nobody listens on
    (tmp_path / "file").write_text("")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    async def main() -> list[tuple[bool, str]]:
        return [await probe_once(ProbeSpec("unix", str(tmp_path / "bound.sock")), 5.0),
                await probe_once(ProbeSpec("unix", str(tmp_path / "file")), 5.0),
                await probe_once(ProbeSpec("unix", str(tmp_path / "none")), 5.0),
                await probe_once(ProbeSpec("tcp", f"localhost:{port}"), 5.0),
                await probe_once(ProbeSpec("tcp", "127.0.0.1"), 5.0)]
    try:
        results = run(main())
    finally:
        bound.close()
        listener.close()
    assert results == [
        (False, f"connection refused ({tmp_path}/bound.sock)"),
        (False, f"connection refused ({tmp_path}/file)"),
        (False, f"no such file or directory ({tmp_path}/none)"),
        (True, f"connected to localhost:{port}"),
        (False, "'127.0.0.1': no port: HOST:PORT expected, e.g. 127.0.0.1:8080"),
    ]


def test_tcp_probe_over_ipv6_loopback() -> None:
    listener = socket.socket(socket.AF_INET6)
    try:
        listener.bind(("::1", 0))
    except OSError:
        listener.close()
        pytest.skip("no IPv6 loopback here")
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        assert run(probe_once(ProbeSpec("tcp", f"[::1]:{port}"), 5.0)) == (True, f"connected to [::1]:{port}")
    finally:
        listener.close()
    assert run(probe_once(ProbeSpec("tcp", f"[::1]:{port}"), 5.0)) == (
        False, f"connection refused ([::1]:{port})")


def test_http_health_check_unhealthy_once_after_successes(
        status_server: Callable[..., StatusServer]) -> None:
    server = status_server([200, 302, 503])  # then 503 for ever
    results: list[tuple[bool, str]] = []
    unhealthy: list[tuple[str, int]] = []

    async def main() -> HealthChecker:
        checker = HealthChecker(ProbeSpec("http", server.url), 0.01, 5.0, 3,
                                lambda d: unhealthy.append((d, len(results))),
                                on_result=lambda ok, d: results.append((ok, d)))
        checker.start()
        async with asyncio.timeout(20):
            while len(results) < 8:
                await asyncio.sleep(0.01)  # sleep-ok: the poll step of a wait with a timeout
        checker.cancel()
        return checker
    checker = asyncio.run(main())
    fail = f"HTTP 503 from {server.url}"
    assert results[:5] == [(True, f"HTTP 200 from {server.url}"), (True, f"HTTP 302 from {server.url}"),
                           (False, fail), (False, fail), (False, fail)]
    assert unhealthy == [(fail, 5)]  # after the 5th result, and never again
    assert checker.failures == len(results) - 2 and checker.last_detail == fail


def test_http_probe_of_a_silent_peer_times_out() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"

    async def main() -> tuple[tuple[bool, str], float]:
        result = await probe_once(ProbeSpec("http", url), 2.0)
        return result, asyncio.get_running_loop().time()
    try:
        assert run(main()) == ((False, "timed out after 2 s"), 2.0)
    finally:
        silent.close()


# ---- cmd ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "expected"), [
    ("sh -c 'exit 0'", (True, "exited with status 0")),
    ("false", (False, "exited with status 1")),
    ("sh -c 'exit 7'", (False, "exited with status 7")),
    ("sh -c 'kill -TERM $$'", (False, "killed by SIGTERM")),
    ("/nonexistent/probe", (False, "could not be started: ENOENT (execve /nonexistent/probe): "
                                   "No such file or directory")),
    ("sh -c 'exit 0", (False, "\"sh -c 'exit 0\": no closing quotation")),
])
def test_cmd_probe_outcomes(command: str, expected: tuple[bool, str]) -> None:
    fds = open_fds()
    assert asyncio.run(probe_once(ProbeSpec("cmd", command), 30.0)) == expected
    assert our_children() == []  # reaped, not a zombie
    assert open_fds() == fds  # the pidfd closed


def test_cmd_probe_runs_with_the_env_cwd_and_user_given(workdir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching user needs root")
    check = ProbeSpec("cmd", f"sh -c 'test \"$PROBE_VAR\" = yes && test \"$(pwd)\" = {workdir} "
                             "&& test \"$(id -u)\" = 65534 && test \"$USER\" = nobody'")
    assert asyncio.run(probe_once(check, 30.0, env={"PROBE_VAR": "yes"}, cwd=str(workdir),
                                  user=65534)) == (True, "exited with status 0")
    # Each of them matters: without it, the same command fails.
    assert not asyncio.run(probe_once(check, 30.0, cwd=str(workdir), user=65534))[0]
    assert not asyncio.run(probe_once(check, 30.0, env={"PROBE_VAR": "yes"}, user=65534))[0]
    assert not asyncio.run(probe_once(check, 30.0, env={"PROBE_VAR": "yes"}, cwd=str(workdir)))[0]
    assert asyncio.run(probe_once(ProbeSpec("cmd", "true"), 30.0, cwd=str(workdir / "absent"))) == (
        False, f"could not be started: ENOENT (chdir {workdir}/absent): No such file or directory")


def test_cmd_probe_timeout_kills_the_whole_group_and_reaps_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    # The probe's shell and a background sleep: one process group.
    spec = ProbeSpec("cmd", f"sh -c 'sleep 100 & echo $$ $! > {pidfile}; wait'")
    fds = open_fds()

    async def main() -> tuple[tuple[bool, str], list[int], float]:
        probe = asyncio.create_task(probe_once(spec, 5.0))
        pids = await pids_written(pidfile, 2)  # the virtual clock waits for the thread
        assert all(proc_stat(pid) is not None for pid in pids)
        result = await probe
        return result, pids, asyncio.get_running_loop().time()
    result, (leader, background), now = run(main())
    assert result == (False, "timed out after 5 s (process group killed)")
    assert now == 5.0
    assert proc_stat(leader) is None  # reaped by the probe: not even a zombie
    assert leader not in our_children() and our_children() == []
    wait_until("the group killed", lambda: live_group_members(leader) == [], timeout=10)
    assert proc_stat(background) is None or proc_stat(background).state == "Z"  # type: ignore[union-attr]
    assert open_fds() == fds


@pytest.mark.parametrize("kind", ["ready", "health"])
def test_cancel_during_a_cmd_probe_kills_it_at_once(tmp_path: Path, kind: str) -> None:
    pidfile = tmp_path / "pids"
    spec = ProbeSpec("cmd", f"sh -c 'sleep 100 & echo $$ $! > {pidfile}; wait'")
    called: list[object] = []
    fds = open_fds()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        prober: ReadinessProber | HealthChecker
        if kind == "ready":
            prober = ReadinessProber(spec, called.append)
        else:
            prober = HealthChecker(spec, 0.01, 60.0, 1, called.append,
                                   on_result=lambda ok, d: called.append(d))
        prober.start()
        leader, background = await pids_written(pidfile, 2)
        prober.cancel()
        # Killed by cancel() itself: waited for here with the loop blocked,
        # so nothing of the prober's task runs meanwhile (the kernel makes a
        # SIGKILLed process a zombie without any help from us).
        wait_until("the group killed by cancel()", lambda: live_group_members(leader) == [])
        # ... and the leader reaped through its pidfd while the loop runs.
        await loop.run_in_executor(None, wait_until, "the leader reaped",
                                   lambda: proc_stat(leader) is None)
        assert other_tasks() == set()
        assert proc_stat(background) is None or proc_stat(background).state == "Z"  # type: ignore[union-attr]
    # A real loop: the health checker's first probe waits its interval,
    # which the virtual clock would hold while the test waits in a thread.
    asyncio.run(main())
    assert called == []
    assert our_children() == []
    assert open_fds() == fds


def test_a_cancelled_probe_once_kills_and_reaps_its_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    spec = ProbeSpec("cmd", f"sh -c 'sleep 100 & echo $$ $! > {pidfile}; wait'")
    fds = open_fds()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        probe = asyncio.create_task(probe_once(spec, 60.0))
        leader, _ = await pids_written(pidfile, 2)
        probe.cancel()  # as the lead's own task would be, or asyncio.run's end
        with pytest.raises(asyncio.CancelledError):
            await probe
        await loop.run_in_executor(None, wait_until, "the group killed and the leader reaped",
                                   lambda: live_group_members(leader) == [] and proc_stat(leader) is None)
    run(main())
    assert our_children() == []
    assert open_fds() == fds


def test_cancel_at_random_moments_leaves_no_process_or_fd() -> None:
    rng = random.Random(15)
    fds = open_fds()

    async def main() -> None:
        for _ in range(30):
            prober = ReadinessProber(ProbeSpec("cmd", "sh -c 'exit 1'"), lambda d: None)
            prober.start()
            await asyncio.sleep(rng.uniform(0, 0.03))  # sleep-ok: the moment itself is what varies
            prober.cancel()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, wait_until, "every probe reaped", lambda: our_children() == [])
        assert other_tasks() == set()
    asyncio.run(main())
    assert open_fds() == fds
