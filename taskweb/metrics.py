"""GET /metrics: taskmasterd for Prometheus (docs/web.md), with
python3-prometheus-client (0.16 API: a custom Collector yielding metric
families, the exposition's own encoders).

The OpenMetrics text format when the scraper asks for it (`Accept:
application/openmetrics-text`, as Prometheus does), else the classic text
format (curl, older scrapers). Readable without authentication: the D-Bus
policy lets everyone read this state.

What a scrape costs the daemon: one GetAll of the Manager's properties and
one ListTasks, side by side. The processes come from the link's mirror
(`link.rows`, kept current by the daemon's signals): no ListProcesses per
scrape. A daemon that cannot be reached is `taskmaster_daemon_up 0` and no
other series (a 200, not an error: the scrape itself worked).

    taskmaster_daemon_up                      1 if taskmasterd answered this scrape
    taskmaster_daemon_info{version}           1
    taskmaster_daemon_start_time_seconds      when taskmasterd (this process image) started
    taskmaster_daemon_reloads_total           reloads applied since then
    taskmaster_daemon_alerts_sent_total       alert messages delivered since then
    taskmaster_daemon_alerts_failed_total     alert messages given up since then
    taskmaster_process_state{process,program,state}   1, for its current state (one
                                              series per process, not one per state:
                                              1,000 processes stay under 50 ms a scrape)
    taskmaster_process_up{process,program}    1 if RUNNING
    taskmaster_process_restarts_total{process,program}
                                              automatic restarts since its last
                                              administrative start (resets then)
    taskmaster_process_start_time_seconds{process,program}     its last start (if any)
    taskmaster_process_last_exit_status{process,program}       its last exit's status
                                              (< 0: killed by that signal), if it exited
    taskmaster_process_last_exit_time_seconds{process,program} when
    taskmaster_tasks{state}                   tasks kept, by state
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from taskctl.model import ProcessRow
from taskctl.taskapi import PROPERTIES_IFACE
from taskctl.taskformat import TASK_STATES
from taskmasterd.bus.names import MANAGER_IFACE
from taskmasterd.states import State
from taskweb.app import link_of
from taskweb.link import DaemonError, DaemonLink, Unavailable

LABELS = ("process", "program")


@dataclass
class Scrape:
    """What one scrape shows: the daemon's answers, the mirror's rows."""

    up: bool = False
    manager: dict[str, Any] = field(default_factory=dict)  # Manager's properties
    tasks: Counter[str] | None = None  # by state; None: the daemon has no tasks
    rows: list[ProcessRow] = field(default_factory=list)


async def gather(link: DaemonLink) -> Scrape:
    """Ask the daemon what the mirror does not have; never raises for it."""
    if link.bus is None:
        return Scrape()
    answers: tuple[list[Any] | BaseException, ...] = await asyncio.gather(
        link.call("GetAll", "s", [MANAGER_IFACE], interface=PROPERTIES_IFACE),
        link.call("ListTasks"), return_exceptions=True)
    props, tasks = answers
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, DaemonError):
            raise answer  # a bug of ours: not to be hidden as "down"
    if isinstance(props, BaseException) or isinstance(tasks, Unavailable):
        return Scrape()  # (or it left between the two calls)
    counts = None if isinstance(tasks, BaseException) else \
        Counter(str(t[2]) for t in tasks[0])  # a daemon without tasks: an error
    return Scrape(True, {str(k): v.value for k, v in props[0].items()}, counts,
                  list(link.rows.values()))


def seconds(us: Any) -> float:
    return int(us) / 1e6


class TaskmasterCollector(Collector):
    """The metric families of one scrape."""

    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        s = self.scrape
        yield GaugeMetricFamily("taskmaster_daemon_up",
                                "1 if taskmasterd answered this scrape over D-Bus",
                                value=1 if s.up else 0)
        if not s.up:
            return
        m = s.manager
        if "Version" in m:
            yield InfoMetricFamily("taskmaster_daemon", "taskmasterd's version",
                                   value={"version": str(m["Version"])})
        if "StartTime" in m:
            yield GaugeMetricFamily("taskmaster_daemon_start_time_seconds",
                                    "when taskmasterd started (this process image), "
                                    "seconds since the epoch", value=seconds(m["StartTime"]))
        for prop, name, doc in (
                ("Reloads", "taskmaster_daemon_reloads",
                 "configuration reloads applied since taskmasterd started"),
                ("AlertsSent", "taskmaster_daemon_alerts_sent",
                 "alert messages delivered since taskmasterd started"),
                ("AlertsFailed", "taskmaster_daemon_alerts_failed",
                 "alert messages given up after their retries since taskmasterd started")):
            if prop in m:
                yield CounterMetricFamily(name, doc, value=int(m[prop]))
        yield from self.processes(s.rows)
        if s.tasks is not None:
            tasks = GaugeMetricFamily("taskmaster_tasks", "one-shot tasks kept, by state",
                                      labels=("state",))
            for state in TASK_STATES:
                tasks.add_metric((state,), s.tasks.get(state, 0))
            yield tasks

    @staticmethod
    def processes(rows: list[ProcessRow]) -> Iterator[Metric]:
        state = GaugeMetricFamily("taskmaster_process_state",
                                  "1, labelled with the process's state (STOPPED STARTING "
                                  "RUNNING BACKOFF STOPPING EXITED FATAL UNKNOWN)",
                                  labels=(*LABELS, "state"))
        up = GaugeMetricFamily("taskmaster_process_up", "1 if the process is RUNNING",
                               labels=LABELS)
        restarts = CounterMetricFamily(
            "taskmaster_process_restarts", "automatic restarts since the process's last "
            "administrative start (start, restart: back to 0)", labels=LABELS)
        started = GaugeMetricFamily("taskmaster_process_start_time_seconds",
                                    "when the process last started, seconds since the epoch",
                                    labels=LABELS)
        last_status = GaugeMetricFamily(
            "taskmaster_process_last_exit_status",
            "the exit status of the process's last exit (negative: killed by that signal)",
            labels=LABELS)
        last_time = GaugeMetricFamily("taskmaster_process_last_exit_time_seconds",
                                      "when the process last exited, seconds since the epoch",
                                      labels=LABELS)
        for row in rows:
            labels = (row.name, row.program)
            state.add_metric((*labels, row.state), 1)
            up.add_metric(labels, 1 if row.state == State.RUNNING else 0)
            restarts.add_metric(labels, row.restarts)
            if row.started_at_us:
                started.add_metric(labels, seconds(row.started_at_us))
            if row.last_exit_us:
                last_status.add_metric(labels, row.last_exit_status)
                last_time.add_metric(labels, seconds(row.last_exit_us))
        yield from (state, up, restarts, started, last_status, last_time)


def exposition(scrape: Scrape, accept: str) -> tuple[bytes, str]:
    """The scrape's text, in the format `accept` asks for, and its Content-Type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TaskmasterCollector(scrape))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


async def metrics(request: web.Request) -> web.StreamResponse:
    scrape = await gather(link_of(request))
    body, content_type = exposition(scrape, request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
