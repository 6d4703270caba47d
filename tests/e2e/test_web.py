"""taskmaster-web as Debian installs it, under a real systemd (issue 17,
docs/web.md): off by default, its token made by postinst, and once enabled
it runs as its system user with the group taskmaster, reaches taskmasterd on
the system bus, serves /metrics to anyone and takes tasks with the token
(they run as taskmaster-web); Debian's python3-aiohttp and
python3-prometheus-client underneath.

The tests run in order on the container of the whole run (conftest.booted);
the first starts both units, the last stops both (and disables the web
unit again). Every wait retries a request until a deadline.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.container import Container, wait_until
from tests.e2e.helpers import UNIT, start_and_wait, status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WEB = "taskmaster-web"
TOKEN = "/etc/taskmaster/web.token"
TASKS = "/var/lib/taskmaster/tasks"
# An HTTP client inside the container (nothing but python3 there): prints
# the status, then the body.
CLIENT = """
import sys, urllib.error, urllib.request
method, path, body, auth = sys.argv[1:5]
headers = {"Authorization": "Bearer " + open(sys.argv[5]).read().strip()} if auth == "1" else {}
req = urllib.request.Request("http://127.0.0.1:9737" + path, data=body.encode() or None,
                             method=method, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""


def http(box: Container, method: str, path: str, body: Any = None, *,
         token: bool = True) -> tuple[int, str]:
    data = "" if body is None else json.dumps(body)
    proc = box.run(["python3", "-c", CLIENT, method, path, data, "1" if token else "0", TOKEN])
    code, _, text = proc.stdout.partition("\n")
    return int(code), text


def test_off_by_default_with_a_private_token(booted: Container) -> None:
    box = booted
    enabled = box.run(["systemctl", "is-enabled", f"{WEB}.service"], check=False).stdout.strip()
    active = box.run(["systemctl", "is-active", f"{WEB}.service"], check=False).stdout.strip()
    assert (enabled, active) == ("disabled", "inactive")
    assert box.run(["stat", "-c", "%a %U %G %s", TOKEN]).stdout.split() == \
        ["600", "root", "root", "33"]  # 24 random bytes in base64, and a newline
    assert box.run(["getent", "passwd", WEB]).stdout.split(":")[5:7] == \
        ["/nonexistent", "/usr/sbin/nologin\n"]


def test_enabled_it_serves_metrics_to_anyone(booted: Container) -> None:
    box = booted
    start_and_wait(box)
    box.run(["systemctl", "enable", "--now", f"{WEB}.service"], timeout=60)
    assert box.run(["systemctl", "show", "-p", "MainPID", "--value", f"{WEB}.service"]).stdout.strip() != "0"
    names = set(status(box))

    def scraped() -> str:
        code, text = http(box, "GET", "/metrics", token=False)
        assert code == 200 and "taskmaster_daemon_up 1.0" in text, text[:500]
        for name in names:
            assert f'taskmaster_process_up{{process="{name}",' in text, name
        return text

    text = wait_until(scraped, 20, "/metrics with every process")
    assert 'taskmaster_daemon_info{version="' in text
    # as its own user, with the group taskmaster (the D-Bus policy's), from a credential
    pid = box.run(["systemctl", "show", "-p", "MainPID", "--value", f"{WEB}.service"]).stdout.strip()
    ids = box.run(["ps", "-o", "user:20=,group:20=,supgrp:60=", "-p", pid]).stdout.split()
    assert ids[:2] == [WEB, WEB] and "taskmaster" in ids[2].split(","), ids


def test_tasks_with_the_token_run_as_the_service_user(booted: Container) -> None:
    box = booted
    code, text = http(box, "POST", "/v1/tasks", {"command": "id", "name": "who"}, token=False)
    assert code == 401, text
    code, text = http(box, "POST", "/v1/tasks", {"command": "id", "user": "root"})
    assert code == 400 and "task.user: 'root' is not you" in text, text  # the daemon's check
    code, text = http(box, "POST", "/v1/tasks", {"command": "id", "name": "who"})
    assert code == 201, text
    task_id = json.loads(text)["taskId"]

    def ended() -> dict[str, Any]:
        code, text = http(box, "GET", f"/v1/tasks/{task_id}")
        assert code == 200, text
        row: dict[str, Any] = json.loads(text)
        assert row["state"] == "succeeded", row
        return row

    row = wait_until(ended, 20, f"task {task_id} to succeed")
    assert row["exit_status"] == 0
    out = box.read_file(f"{TASKS}/{task_id}/stdout")
    assert out.startswith("uid=") and f"({WEB})" in out.split()[0], out


def test_stopped_with_the_daemon(booted: Container) -> None:
    box = booted
    box.run(["systemctl", "disable", "--now", f"{WEB}.service"], timeout=60)
    box.run(["systemctl", "stop", UNIT], timeout=120)
    for unit in (WEB, UNIT):
        state = box.run(["systemctl", "is-active", f"{unit}.service"], check=False).stdout.strip()
        assert state == "inactive", unit
