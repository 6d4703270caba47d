"""taskmaster-web's task intake (POST/GET /v1/tasks) and /metrics as a
client sees them: the real taskmasterd with tasks on the test's private
bus, the real service (`python -m taskweb`) on a loopback port with a
token file made here, plain HTTP requests. Waits: the service's READY=1,
a task's state polled with a deadline; no sleeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon, event, wait_until
from tests.integration.conftest import WriteConfig
from tests.integration.test_notify import NotifySocket
from tests.integration.test_tasks import with_tasks
from tests.procs import terminate
from tests.sshd import free_port

TOKEN = "web-test-token-0123456789abcdef"
FINAL = ("succeeded", "failed", "cancelled", "lost")
PROGRAMS = {"sleeper": {"cmd": "sleep 600", "numprocs": 2, "autostart": True},
            "idle": {"cmd": "sleep 600", "autostart": False}}
PROCESSES = ("sleeper:0", "sleeper:1", "idle")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Web:
    """The service under test, its base URL and the daemon behind it."""

    url: str
    proc: subprocess.Popen[bytes]
    daemon: Daemon

    def request(self, method: str, path: str, body: bytes | None = None, *,
                token: str | None = TOKEN, headers: dict[str, str] | None = None) -> Reply:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return Reply(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read())

    def submit(self, task: dict[str, Any]) -> Reply:
        return self.request("POST", "/v1/tasks", json.dumps(task).encode())

    def wait_task(self, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """GET /v1/tasks/ID until the task ended (polled, with a deadline)."""
        seen: list[dict[str, Any]] = []

        def ended() -> bool:
            r = self.request("GET", f"/v1/tasks/{task_id}")
            assert r.status == 200, r.body
            seen.append(r.json())
            return seen[-1]["state"] in FINAL

        wait_until(f"task {task_id} to end", ended, timeout)
        return seen[-1]

    def task_count(self) -> int:
        r = self.request("GET", "/v1/tasks")
        assert r.status == 200, r.body
        return len(r.json()["tasks"])

    def metrics(self) -> str:
        r = self.request("GET", "/metrics", token=None)
        assert r.status == 200, r.body
        return r.body.decode()


def start_web(workdir: Path, address: str, daemon: Daemon) -> Iterator[Web]:
    """The service on a free loopback port, once it said READY=1."""
    token = workdir / "web.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    notify = NotifySocket(workdir / "web-notify.sock")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskweb", "--listen", f"127.0.0.1:{port}",
         "--token-file", str(token), "--address", address],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "NOTIFY_SOCKET": str(notify.path)})
    try:
        notify.next(lambda m: m.get("READY") == "1", timeout=15)
        yield Web(f"http://127.0.0.1:{port}", proc, daemon)
    finally:
        notify.sock.close()
        terminate(proc)
        assert proc.stderr is not None
        errors = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        assert "Traceback" not in errors, errors


@pytest.fixture
def web(workdir: Path, write_config: WriteConfig, daemons: Callable[..., Daemon],
        bus_address: str) -> Iterator[Web]:
    d = daemons(with_tasks(write_config(PROGRAMS), max_parallel=4))
    d.wait_for(event("DAEMON_START"))
    yield from start_web(workdir, bus_address, d)


def test_submit_and_follow_tasks_to_their_end(web: Web) -> None:
    r = web.submit({"command": "true", "name": "ok"})
    assert r.status == 201, r.body
    ok = r.json()
    assert set(ok) == {"taskId", "state"} and ok["state"] in ("queued", "running", "succeeded")
    assert r.headers["Location"] == f"/v1/tasks/{ok['taskId']}"
    r = web.submit({"command": "/nonexistent/program", "args": ["x"]})
    assert r.status == 201, r.body
    missing = r.json()

    done = web.wait_task(ok["taskId"])
    assert done["taskId"] == done["id"] == ok["taskId"]
    assert (done["state"], done["exit_code"], done["exit_status"], done["name"]) == \
        ("succeeded", 0, 0, "ok")
    assert done["spawn_error"] is None and done["started"] and done["ended"]
    assert done["args"] == [] and done["directory"]  # the task object's properties too

    failed = web.wait_task(missing["taskId"])
    assert failed["state"] == "failed" and failed["exit_code"] is None
    assert failed["spawn_error"]["code"] == "ENOENT" and failed["exit_status"] == 127
    assert failed["args"] == ["x"] and failed["command"] == "/nonexistent/program"

    listed = web.request("GET", "/v1/tasks").json()["tasks"]
    assert [t["taskId"] for t in listed] == [ok["taskId"], missing["taskId"]]
    only = web.request("GET", "/v1/tasks?state=failed").json()["tasks"]
    assert [t["taskId"] for t in only] == [missing["taskId"]]
    assert web.request("GET", "/v1/tasks?state=nope").status == 400
    # unknown ids: a well-formed one and a malformed one
    for unknown in ("0123abcd", "not-an-id"):
        r = web.request("GET", f"/v1/tasks/{unknown}")
        assert r.status == 404 and unknown in r.json()["error"], r.body


def test_bad_requests_are_refused_and_queue_nothing(web: Web) -> None:
    before = web.task_count()
    cases: list[tuple[bytes, str]] = [
        (b"{not json", "the request body:1:2: not valid JSON"),
        (b"", "the request body is empty"),
        (b'["true"]', "task: expected a mapping of command, args"),
        (b'{"comand": "true"}', "task: unknown key 'comand' (did you mean 'command'?)"),
        (b'{"command": "true", "args": "x"}', "task.args: expected a list"),
        (b'{"command": "true", "command": "false"}', "key 'command' given twice"),
        (b'{"command": "true", "timeout": -1}', "task.timeout"),
    ]
    for body, message in cases:
        r = web.request("POST", "/v1/tasks", body)
        assert r.status == 400, (body, r.status, r.body)
        assert message in r.json()["error"], (body, r.json())
    # no credentials, wrong ones, the wrong scheme: 401, the body not even read
    for token, headers in ((None, {}), ("wrong-token-wrong-token", {}),
                           (None, {"Authorization": f"Basic {TOKEN}"})):
        for method, path, body in (("POST", "/v1/tasks", b'{"command": "true"}'),
                                   ("GET", "/v1/tasks", None), ("GET", "/v1/tasks/0123abcd", None)):
            r = web.request(method, path, body, token=token, headers=headers)
            assert r.status == 401, (method, path, token, r.status)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert web.task_count() == before  # nothing was queued by any of them
    assert web.submit({"command": "true"}).status == 201  # and the count does see a task
    assert web.task_count() == before + 1


def test_metrics_follow_the_daemon(web: Web) -> None:
    expected = [f'taskmaster_process_up{{process="{name}",program="{name.split(":")[0]}"}} '
                f'{0 if name == "idle" else 1}.0' for name in PROCESSES]
    # the sleepers go RUNNING after their startsecs: the mirror follows the signals
    wait_until("every process's up series", lambda: all(e in web.metrics() for e in expected))
    text = web.metrics()
    assert 'taskmaster_process_state{process="idle",program="idle",state="STOPPED"} 1.0' in text
    assert "taskmaster_daemon_up 1.0" in text and 'taskmaster_daemon_info{version="' in text
    assert 'taskmaster_tasks{state="queued"} 0.0' in text
    r = web.request("GET", "/metrics", token=None,
                    headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert r.body.endswith(b"# EOF\n")
    # the daemon goes away: up 0, no process series, still a 200; intake: 503
    web.daemon.terminate()
    wait_until("the mirror to empty", lambda: "taskmaster_process_" not in web.metrics())
    assert "taskmaster_daemon_up 0.0" in web.metrics()
    r = web.submit({"command": "true"})
    assert r.status == 503 and "taskmasterd" in r.json()["error"], r.body
