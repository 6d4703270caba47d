"""/metrics the way users will read it: Debian's own Prometheus (the
`prometheus` package; bootstrap installs it without starting its service)
scrapes taskmaster-web on loopback every second, with a config and a
storage directory of the test's; its HTTP query API must then return
`taskmaster_process_up` for every process of the daemon. Waits: the
query polled with a deadline (a scrape is up to a second away)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import wait_until
from tests.integration.test_web_api import PROCESSES, Web
from tests.integration.test_web_api import web as web  # the fixture: the same daemon and service
from tests.procs import terminate
from tests.sshd import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                                reason="Debian's prometheus is not installed (sh bootstrap setup)")


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "taskmaster", "scrape_interval": "1s",
                                "scrape_timeout": "1s",
                                "static_configs": [{"targets": [target]}]}]}))
        self.port = free_port()
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=workdir)

    def query(self, promql: str) -> list[dict[str, Any]] | None:
        """The query's result vector; None while Prometheus is not answering yet."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                answer = json.load(r)
        except (urllib.error.URLError, ConnectionError):
            assert self.proc.poll() is None, self.log.read_text()
            return None
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


@pytest.fixture
def prometheus(workdir: Path, web: Web) -> Iterator[Prometheus]:
    p = Prometheus(workdir, web.url.removeprefix("http://"))
    yield p
    terminate(p.proc, timeout=10)


def test_prometheus_scrapes_every_process(web: Web, prometheus: Prometheus) -> None:
    seen: dict[str, str] = {}

    def every_process_up() -> bool:
        result = prometheus.query("taskmaster_process_up") or []
        seen.clear()
        seen.update({s["metric"]["process"]: s["value"][1] for s in result})
        return seen == {"sleeper:0": "1", "sleeper:1": "1", "idle": "0"}

    wait_until("Prometheus to have taskmaster_process_up for every process", every_process_up,
               timeout=15)
    assert set(seen) == set(PROCESSES)
    [target] = prometheus.query('up{job="taskmaster"}') or []
    assert target["value"][1] == "1"  # the scrape itself succeeded (format accepted)
    [version] = prometheus.query("taskmaster_daemon_info") or []
    assert version["metric"]["version"]
    [state] = prometheus.query('taskmaster_process_state{process="idle"}') or []
    assert state["metric"]["state"] == "STOPPED"
