"""Alerts end to end: a real taskmasterd (or the dispatcher in-process) and
real servers the test owns on 127.0.0.1 — SMTP (aiosmtpd), HTTP for json://
and form://, a UDP socket for remote syslog, a socket that never accepts.

Waits are on a server receiving something, a log line or a D-Bus reply, with
timeouts; nothing sleeps. Works with apprise 2.x (PyPI) and 1.2 (Debian 12)."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskctl.client import Client
from taskmasterd.alerts import AlertDispatcher
from taskmasterd.busaddr import BusChoice
from taskmasterd.config import AlertConfig
from taskmasterd.events import Event
from tests.harness import Daemon, event, read_fifo
from tests.integration.conftest import WriteConfig

Start = Callable[..., Daemon]
SLEEPER = "sleep 100000"
NAME = "org.taskmaster.Taskmaster1"
PATH = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
HOST = socket.gethostname()
LAST_WORDS = "victim: the disk is on fire"


# ---------------------------------------------------------------------------
# servers the test owns


@dataclass
class Received:
    path: str
    content_type: str
    body: bytes
    at: float  # time.time() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in urllib.parse.parse_qs(self.body.decode()).items()}

    def text(self) -> str:
        """Title and message, whatever the format."""
        if "json" in self.content_type:
            data = self.json()
        else:
            data = self.form()
        return f"{data.get('title', '')}\n{data.get('message', '')}"


class Inbox:
    """Things received by a server thread; waited on with a timeout."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def put(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, n: int = 1, timeout: float = 15.0) -> list[Any]:
        """The first n items (waiting for them)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.items)} of {n} messages received within "
                                         f"{timeout}s: {self.items}")
                self._cond.wait(left)
            return list(self.items[:n])

    def count(self, pred: Callable[[Any], bool] = lambda _: True) -> int:
        with self._cond:
            return sum(1 for i in self.items if pred(i))


class HttpSink(Inbox):
    """json:// and form:// targets: an HTTP server in a thread; every POST is kept."""

    def __init__(self) -> None:
        super().__init__()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                sink.put(Received(self.path, self.headers.get("Content-Type", ""), body, time.time()))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, scheme: str = "json", path: str = "/hook") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink(Inbox):
    """mailto:// target: aiosmtpd's Controller (its own thread and loop)."""

    def __init__(self) -> None:
        super().__init__()
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.put(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        # aiosmtpd cannot report a port it chose itself (port=0): take a free one.
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=a@example.com&to=b@example.com"

    def close(self) -> None:
        self.controller.stop()


def mail_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    assert part is not None
    return f"{msg['Subject']}\n{part.get_content()}"


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.close()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


class BlackHole:
    """A TCP port that listens but never accepts nor reads: connections are
    queued by the kernel and then nothing happens (apprise's socket timeout),
    until `release()`: from then on every connection, the queued ones first,
    is reset at once (a delivery fails without waiting for a timeout)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self._resetter: threading.Thread | None = None

    def release(self) -> None:
        def reset_all() -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return  # closed by close()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # an RST
        self._resetter = threading.Thread(target=reset_all, daemon=True)
        self._resetter.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.sock.close()
        if self._resetter is not None:
            self._resetter.join(timeout=10)


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def syslog_url(port: int) -> str:
    """Remote syslog over UDP: `rsyslog://` on apprise 2.x; apprise 1.2 has no
    rsyslog:// and spells it syslog://host:port/facility (remote mode)."""
    import apprise

    if apprise.Apprise().add(f"rsyslog://127.0.0.1:{port}"):
        return f"rsyslog://127.0.0.1:{port}"
    return f"syslog://127.0.0.1:{port}/user"


# ---------------------------------------------------------------------------
# config and programs


def with_alerts(path: Path, alerts: list[dict[str, Any]]) -> Path:
    """Add an alerts: section to a file written by the write_config fixture."""
    doc = yaml.safe_load(path.read_text())
    doc["alerts"] = alerts
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Victim:
    """A program that writes a line to its stderr, then its pid to a FIFO
    (it is ready), then waits to be killed."""

    def __init__(self, workdir: Path) -> None:
        self.fifo = workdir / "victim-ready.fifo"
        os.mkfifo(self.fifo)

    def program(self) -> dict[str, Any]:
        return {"cmd": f"sh -c 'echo \"{LAST_WORDS}\" >&2; echo $$ > {self.fifo}; exec {SLEEPER}'",
                "starttime": 0}

    def kill(self, d: Daemon) -> int:
        """Wait until it has written its line, kill -9 it; its pid."""
        pid = int(read_fifo(self.fifo))
        os.kill(pid, signal.SIGKILL)
        d.wait_for(lambda ln: ln.kind == "EXITED" and ln.process == "victim" and ln.pid == pid)
        return pid


def assert_full_report(text: str, pid: int) -> None:
    """What an alert about a process killed by SIGKILL must say."""
    for part in ("victim", f"pid: {pid}", "killed by SIGKILL", HOST, "state: EXITED",
                 "EXITED (unexpected)", LAST_WORDS, "time: "):
        assert part in text, f"{part!r} not in:\n{text}"


def started(d: Daemon) -> None:
    d.wait_for(event("DAEMON_START"))


# ---------------------------------------------------------------------------
# delivery to each kind of target


def test_email_for_a_program_killed_by_sigkill(write_config: WriteConfig, daemons: Start, workdir: Path,
                                               smtp_sink: SmtpSink) -> None:
    victim = Victim(workdir)
    cfg = with_alerts(write_config({"victim": victim.program()}), [{"url": smtp_sink.url()}])
    d = daemons(cfg)
    started(d)
    pid = victim.kill(d)
    [msg] = smtp_sink.wait(1)
    assert msg["From"] == "a@example.com" and msg["To"] == "b@example.com"
    assert msg["Subject"] == f"[{HOST}] victim: EXITED (unexpected)"
    assert_full_report(mail_text(msg), pid)


def test_json_and_form_targets(write_config: WriteConfig, daemons: Start, workdir: Path,
                               http_sink: HttpSink, bus_address: str) -> None:
    victim = Victim(workdir)
    cfg = with_alerts(write_config({"victim": victim.program()}), [
        {"url": http_sink.url("json", "/json-hook")},
        {"url": http_sink.url("form", "/form-hook")},
    ])
    d = daemons(cfg)
    started(d)
    pid = victim.kill(d)
    got = {r.path: r for r in http_sink.wait(2)}
    assert set(got) == {"/json-hook", "/form-hook"}
    as_json = got["/json-hook"].json()
    assert got["/json-hook"].content_type.startswith("application/json")
    assert as_json["title"] == f"[{HOST}] victim: EXITED (unexpected)"
    assert as_json["type"] == "warning"
    assert_full_report(as_json["message"], pid)
    as_form = got["/form-hook"].form()
    assert got["/form-hook"].content_type.startswith("application/x-www-form-urlencoded")
    assert as_form["title"] == as_json["title"]
    assert_full_report(as_form["message"], pid)
    # The counters monitoring reads (Manager properties, API 1.4): two
    # delivered, none given up; a reload counted, a daemon started just now.
    with Client(BusChoice("address", bus_address)) as client:
        deadline = time.monotonic() + 10
        while client.get_property("AlertsSent") != 2:  # counted once send() returned
            assert time.monotonic() < deadline, client.get_property("AlertsSent")
            client.sleep(0.02)
        assert client.get_property("AlertsFailed") == 0
        assert client.get_property("Reloads") == 0
        client.reload()
        assert client.get_property("Reloads") == 1
        assert 0 < time.time() * 1e6 - client.get_property("StartTime") < 600e6


def test_remote_syslog_to_a_datagram_socket(write_config: WriteConfig, daemons: Start,
                                            workdir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(15)
        victim = Victim(workdir)
        cfg = with_alerts(write_config({"victim": victim.program()}),
                          [{"url": syslog_url(udp.getsockname()[1])}])
        d = daemons(cfg)
        started(d)
        pid = victim.kill(d)
        data, _ = udp.recvfrom(65536)
    text = data.decode()
    assert re.match(r"<\d+>", text), text  # a syslog priority
    assert f"[{HOST}] victim: EXITED (unexpected)" in text
    assert f"pid: {pid}" in text and "killed by SIGKILL" in text and LAST_WORDS in text


# ---------------------------------------------------------------------------
# rate limit: a crash loop


def test_crash_loop_sends_one_message_then_one_summary(write_config: WriteConfig, daemons: Start,
                                                       http_sink: HttpSink) -> None:
    # No start limit: the loop must outlast the 3 s rate (the limit's FATAL
    # alert is tested in test_start_limit.py).
    crashy = {"cmd": "sh -c 'echo crashing >&2; exit 1'", "starttime": 0, "autorestart": "always",
              "restartdelay": 0.2, "startlimit_burst": 0}
    cfg = with_alerts(write_config({"crashy": crashy}), [
        {"url": http_sink.url("json", "/fast"), "rate": 3},
        {"url": http_sink.url("form", "/slow"), "rate": 60},
    ])
    d = daemons(cfg)
    fast = [r for r in http_sink.wait(3, timeout=20) if r.path == "/fast"]
    # Three messages have arrived: the first at once on each target, then the
    # summary of the 3 s one. The 60 s target stays at one meanwhile.
    assert len(fast) == 2, [r.path for r in http_sink.items]
    assert http_sink.count(lambda r: r.path == "/slow") == 1
    first, summary = fast[0].json(), fast[1].json()
    # When the summary goes (at the end of the rate interval) is checked on the
    # virtual clock: tests/unit/test_alert_timing.py. Here: what it says.
    assert first["title"] == f"[{HOST}] crashy: EXITED (unexpected)"
    assert "crashing" in first["message"]  # the stderr tail
    m = re.match(r"(\d+) more events for crashy since \d\d:\d\d:\d\d: (\d+) × EXITED \(unexpected\)\n",
                 summary["message"])
    assert m, summary["message"]
    count = int(m[1])
    assert count == int(m[2]) >= 5
    assert summary["title"] == f"[{HOST}] crashy: {count} more events"
    # The count is that of the EXITED lines logged after the first message's
    # exit, up to the latest one the summary names (by pid).
    first_pid = int(re.search(r"pid: (\d+)", first["message"])[1])  # type: ignore[index]
    last_pid = int(re.search(r"pid: (\d+)", summary["message"])[1])  # type: ignore[index]
    exits = [ln for ln in d.lines if ln.kind == "EXITED" and ln.process == "crashy"]
    pids = [ln.pid for ln in exits]
    assert pids.index(last_pid) - pids.index(first_pid) == count


# ---------------------------------------------------------------------------
# a black-holed target delays nothing


def kill_and_wait_restart(d: Daemon, name: str) -> int:
    """kill -9 a running process; the index of its new STARTING line in the output."""
    pid = d.latest_pids()[name]
    os.kill(pid, signal.SIGKILL)
    line = d.wait_for(lambda ln: ln.kind == "STARTING" and ln.process == name and ln.pid != pid)
    d.wait_for(event("RUNNING", name))
    return d.raw.index(line.raw)


async def list_processes_while(address: str, pending: asyncio.Task[Any], n: int = 7) -> None:
    """n ListProcesses calls, each answered while `pending` is still waiting."""
    from dbus_next import Message, MessageType
    from dbus_next.aio import MessageBus

    bus = await MessageBus(bus_address=address).connect()
    try:
        for _ in range(n):
            reply = await bus.call(Message(destination=NAME, path=PATH, interface=MANAGER,
                                           member="ListProcesses"))
            assert reply is not None and reply.message_type is MessageType.METHOD_RETURN
            assert not pending.done()
    finally:
        bus.disconnect()


async def call_test_alerts(address: str, target: str) -> list[list[Any]]:
    from dbus_next import Message, MessageType
    from dbus_next.aio import MessageBus

    bus = await MessageBus(bus_address=address).connect()
    try:
        reply = await bus.call(Message(destination=NAME, path=PATH, interface=MANAGER,
                                       member="TestAlerts", signature="s", body=[target]))
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN, reply.body
        return list(reply.body[0])
    finally:
        bus.disconnect()


@pytest.mark.slow
def test_black_holed_target_delays_no_restart_no_reply_no_other_target(
        write_config: WriteConfig, daemons: Start, bus_address: str, http_sink: HttpSink,
        black_hole: BlackHole) -> None:
    """Causality, not durations: the restarts and the replies all happen while
    the hole still holds its first delivery (it never answers, and apprise's
    read timeout is 60 s: the test releases it once it has seen them, and its
    failure is logged then). A daemon that waited for the hole would time out
    waiting for the first restart."""
    path = write_config({"web": {"cmd": SLEEPER, "starttime": 0}})
    d = daemons(path)
    d.wait_for(event("RUNNING", "web"))
    hole = f"json://127.0.0.1:{black_hole.port}/hole"
    events_ = ["EXITED_UNEXPECTED", "STARTING", "RUNNING"]
    with_alerts(path, [{"url": hole + "?rto=60&cto=60", "events": events_, "rate": 0},
                       {"url": http_sink.url("json", "/ok"), "events": ["EXITED_UNEXPECTED"],
                        "rate": 0}])
    pid = d.latest_pids()["web"]
    assert d.reload().kind == "RELOAD"
    assert d.latest_pids()["web"] == pid  # alerts are no program setting

    restarts = []
    for i in range(3):
        restarts.append(kill_and_wait_restart(d, "web"))
        # The good target hears of each exit at once; the hole holds its own
        # thread only.
        [got] = http_sink.wait(i + 1, timeout=10)[i:]
        assert got.json()["title"] == f"[{HOST}] web: EXITED (unexpected)"

    async def replies_while_testing() -> list[list[Any]]:
        # TestAlerts waits on the black hole: meanwhile other calls are answered.
        test = asyncio.create_task(call_test_alerts(bus_address, ""))
        await list_processes_while(bus_address, test)
        assert not any(failure in raw for raw in d.raw), "the hole gave up before the release"
        black_hole.release()
        return await test

    failure = f"{hole}: alert delivery failed (try 1 of 3"
    results = asyncio.run(replies_while_testing())
    by_url = {url: (ok, detail) for url, ok, detail in results}
    assert by_url[hole][0] is False
    assert by_url[http_sink.url("json", "/ok")] == (True, by_url[http_sink.url("json", "/ok")][1])
    # The failures are logged with the target named, after every restart.
    d.wait_text(failure, timeout=30)
    failed = next(i for i, raw in enumerate(d.raw) if failure in raw)
    assert max(restarts) < failed, "a restart waited for the black hole"


# ---------------------------------------------------------------------------
# config: invalid URL at load and at reload; alerts changed by a reload


def test_check_config_points_at_the_bad_url(write_config: WriteConfig) -> None:
    cfg = with_alerts(write_config({"web": {"cmd": SLEEPER}}),
                      [{"url": "json://127.0.0.1:9/ok"}, {"url": "nonsense://user:s3cret@x"}])
    lines = cfg.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "nonsense://" in text)
    column = lines[line - 1].index("nonsense://") + 1
    r = subprocess.run([sys.executable, "-m", "taskmasterd", "--check-config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout
    assert f"{cfg}:{line}:{column}: alerts[1].url: apprise has no service 'nonsense://'" in r.stderr
    assert "s3cret" not in r.stderr
    assert "Traceback" not in r.stderr


def test_reload_with_a_bad_url_keeps_the_old_alerts(write_config: WriteConfig, daemons: Start,
                                                    workdir: Path, http_sink: HttpSink) -> None:
    victim = Victim(workdir)
    path = write_config({"victim": victim.program()})
    good = {"url": http_sink.url("json", "/old"), "rate": 0,
            "events": ["EXITED_UNEXPECTED", "RELOAD_FAILED"]}
    with_alerts(path, [good])
    d = daemons(path)
    started(d)
    with_alerts(path, [{**good, "url": "nonsense://example.com/x"}])
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "nonsense://" in t)
    failed = d.reload()
    assert failed.kind == "RELOAD_FAILED"
    assert f"{path}:{line}:" in d.text()
    [reload_alert] = http_sink.wait(1)
    assert reload_alert.json()["title"] == f"[{HOST}] taskmasterd: RELOAD_FAILED"
    assert f"{path}:{line}:" in reload_alert.json()["message"]
    pid = victim.kill(d)  # the old configuration, alerts included, still runs
    got = http_sink.wait(2)[1]
    assert got.path == "/old"
    assert_full_report(got.json()["message"], pid)


def test_reload_swaps_targets_without_touching_programs(write_config: WriteConfig, daemons: Start,
                                                       workdir: Path, http_sink: HttpSink) -> None:
    victim = Victim(workdir)
    path = with_alerts(write_config({"victim": victim.program(), "other": {"cmd": SLEEPER}}),
                       [{"url": http_sink.url("json", "/before"), "rate": 0}])
    d = daemons(path)
    d.wait_for(event("RUNNING", "other"))
    pids = d.latest_pids()
    with_alerts(path, [{"url": http_sink.url("form", "/after"), "rate": 0,
                        "title": "{program} {event} ({count})"}])
    line = d.reload()
    # no program touched; the targets counted, their URLs never in the log
    assert line.kind == "RELOAD", line
    assert line.message == "reloaded; settings: alerts 1 target -> 1 target, edited", line.message
    pid = victim.kill(d)
    [got] = http_sink.wait(1)
    assert got.path == "/after"
    assert got.form()["title"] == "victim EXITED (unexpected) (1)"
    assert f"pid: {pid}" in got.form()["message"]
    assert d.latest_pids()["other"] == pids["other"]


# ---------------------------------------------------------------------------
# taskctl alert test


def taskctl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "taskctl", "--address", address, *args],
                       capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_taskctl_alert_test(write_config: WriteConfig, daemons: Start, bus_address: str,
                            http_sink: HttpSink) -> None:
    closed = free_port()
    cfg = with_alerts(write_config({"web": {"cmd": SLEEPER}}), [
        {"url": http_sink.url("json", "/ok")},
        {"url": f"json://user:s3cretpw@127.0.0.1:{closed}/refused"},
        {"url": f"form://user:s3cretpw@127.0.0.1:{http_sink.port}/form-ok"},
    ])
    d = daemons(cfg)
    started(d)
    r = taskctl(bus_address, "alert", "test")
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0] == f"OK  json://127.0.0.1:{http_sink.port}/ok"
    assert lines[1].startswith(f"FAIL json://user:****@127.0.0.1:{closed}/refused : ")
    assert lines[2] == f"OK  form://user:****@127.0.0.1:{http_sink.port}/form-ok"
    assert "s3cretpw" not in r.stdout + r.stderr + d.text()
    received = {x.path: x for x in http_sink.wait(2)}
    assert received["/ok"].json()["title"] == f"[{HOST}] taskmaster: test alert"
    assert "form-ok" in received["/form-ok"].form()["message"]

    one = taskctl(bus_address, "alert", "test", "0")
    assert one.returncode == 0 and one.stdout == f"OK  json://127.0.0.1:{http_sink.port}/ok\n"
    by_url = taskctl(bus_address, "--json", "alert", "test", f"form://user:****@127.0.0.1:"
                     f"{http_sink.port}/form-ok")
    assert by_url.returncode == 0
    [only] = json.loads(by_url.stdout)
    assert only["ok"] is True and only["url"].endswith("/form-ok") and only["detail"]
    failing = taskctl(bus_address, "alert", "test", "1", "--json")
    assert failing.returncode == 1
    assert json.loads(failing.stdout)[0]["ok"] is False
    missing = taskctl(bus_address, "alert", "test", "7")
    assert missing.returncode == 4 and "there is no alert #7" in missing.stderr
    assert http_sink.wait(4)  # the three single tests reached their targets


def test_taskctl_alert_test_without_alerts(write_config: WriteConfig, daemons: Start,
                                           bus_address: str) -> None:
    d = daemons(write_config({"web": {"cmd": SLEEPER}}))
    started(d)
    r = taskctl(bus_address, "alert", "test")
    assert r.returncode == 1 and r.stdout == ""
    assert "no alert targets" in r.stderr


# ---------------------------------------------------------------------------
# the dispatcher in-process: timers, retries, independence of targets


class Records(logging.Handler):
    """taskmasterd's log records; `seen` is set when one matches `until`."""

    def __init__(self, until: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.until = until
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.until in record.getMessage():
            self.seen.set()

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def records() -> Iterator[Callable[[str], Records]]:
    logger = logging.getLogger("taskmasterd")
    made: list[Records] = []

    def make(until: str) -> Records:
        handler = Records(until)
        logger.addHandler(handler)
        made.append(handler)
        return handler

    yield make
    for h in made:
        logger.removeHandler(h)


def fatal(program: str = "web") -> Event:
    return Event(kind="FATAL", message="gave up", process=program, program=program, new_state="FATAL")


def alert_timers(loop: asyncio.AbstractEventLoop) -> list[Any]:
    return [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]


def test_idle_dispatcher_has_no_timer(http_sink: HttpSink) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        d = AlertDispatcher([AlertConfig(url=http_sink.url(), events=frozenset({"FATAL"}), rate=3600)],
                            host="h")
        assert alert_timers(loop) == [] and not d.busy
        d.on_event(fatal())
        d.on_event(fatal("db"))  # held back for an hour: one timer, the rate's
        await asyncio.to_thread(http_sink.wait, 1)
        assert await d.wait_idle(10)
        [timer] = alert_timers(loop)
        assert timer.when() == pytest.approx(d.targets[0].throttle.deadline)
        d.configure([])  # removed: the summary goes with it, and so does the timer
        assert alert_timers(loop) == []
        d.configure([AlertConfig(url=http_sink.url(), events=frozenset({"FATAL"}), rate=0)])
        d.on_event(fatal())
        await asyncio.to_thread(http_sink.wait, 2)
        assert await d.wait_idle(10)
        assert alert_timers(loop) == []  # delivered, nothing pending: nothing scheduled
        # Counted (Manager.AlertsSent/AlertsFailed): the summary dropped with
        # its target by configure() was neither delivered nor given up.
        assert (d.sent, d.failed) == (2, 0)
        await d.close()
    asyncio.run(main())


def test_failed_delivery_is_retried_then_dropped_with_the_url_redacted(
        records: Callable[[str], Records]) -> None:
    port = free_port()
    log = records("not delivered after 3 tries")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        d = AlertDispatcher([AlertConfig(url=f"json://user:pa55word@127.0.0.1:{port}/x", rate=0,
                                         events=frozenset({"FATAL"}), line=12)],
                            retry_delays=(0.05, 0.1))
        d.on_event(fatal())
        assert await d.wait_idle(30)
        assert alert_timers(loop) == []
        assert (d.sent, d.failed) == (0, 1)  # one message given up, its tries not counted
        await d.close()
    asyncio.run(main())
    assert log.seen.is_set()
    lines = [m for m in log.messages() if "alert" in m]
    name = f"alerts[0] (line 12) json://user:****@127.0.0.1:{port}/x"
    assert lines[0].startswith(f"{name}: alert delivery failed (try 1 of 3, next in 0.05 s): ")
    assert lines[1].startswith(f"{name}: alert delivery failed (try 2 of 3, next in 0.1 s): ")
    assert lines[2].startswith(f"{name}: alert not delivered after 3 tries, dropped (web: 1 × FATAL): ")
    assert len(lines) == 3
    assert not any("pa55word" in m for m in log.messages())


def test_a_black_hole_holds_only_its_own_thread(http_sink: HttpSink, black_hole: BlackHole,
                                               records: Callable[[str], Records]) -> None:
    log = records("hole: alert")

    async def main() -> None:
        d = AlertDispatcher([
            AlertConfig(url=f"json://127.0.0.1:{black_hole.port}/hole?rto=60&cto=60", rate=0,
                        events=frozenset({"FATAL"})),  # held for a minute
            AlertConfig(url=http_sink.url(), rate=0, events=frozenset({"FATAL"})),
        ])
        # Causality, not durations: each thing below happens while the hole
        # still holds its delivery (it never answers; only apprise's timeout
        # would end it).
        d.on_event(fatal())
        [first] = await asyncio.to_thread(http_sink.wait, 1)
        assert "web" in first.text()
        assert d.targets[0].throttle.busy  # still connecting / waiting for an answer
        # A second event: the good target gets it too; the hole gathers it.
        d.on_event(fatal("db"))
        [_, second] = await asyncio.to_thread(http_sink.wait, 2)
        assert "db" in second.text()
        assert d.targets[0].throttle.pending is not None
        hole = d.targets[0].pool._thread
        await d.close(timeout=0.2)  # exiting does not wait for the hole...
        assert hole is not None and hole.is_alive()  # ...which still holds its thread
        assert not log.seen.is_set()  # and has not given up yet
    asyncio.run(main())
