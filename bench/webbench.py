"""The `web` measure (issue 17): taskmaster-web with 1,000 processes.

    python bench/run.py --only web --daemons taskmasterd [--quick] [--web N]

Setup: taskmasterd with N `sleep infinity` programs on a private bus (the
driver's), all RUNNING; `python -m taskweb` (the service as packaged:
`taskmaster-web`) on a free loopback port with a token file (mode 600),
ready when it has said READY=1 on a NOTIFY_SOCKET the bench binds and its
/api/processes shows the N RUNNING; Debian's `chromium` headless, driven
over the DevTools protocol by tests/chromium.py (aiohttp's WebSocket
client; imported, not copied: importing it only looks `chromium` up).

1. /metrics: GET with keep-alive (one aiohttp session), the Accept header
   Prometheus sends (OpenMetrics) and none (the classic text format, curl);
   wall time from the request to the last byte of the body.
2. page load -> first full status: a fresh page each repetition, a probe
   injected before the document exists (Page.addScriptToEvaluateOnNewDocument:
   a MutationObserver on the document) stamps performance.now() (relative to
   the navigation's start, the Performance API's time origin; Chromium
   coarsens it to 0.1 ms) when the table's tbody first holds N rows, each
   with its state; then the first frame drawn after it (requestAnimationFrame,
   then a message posted from it: runs once that frame is done; 60 Hz frames,
   so ~16 ms granularity). Logged in (the session cookie set in the browser:
   every row has its buttons) and read-only, alternately; one warm-up load
   first, not counted.
3. state change -> page: one page open (logged in); `Stop` and `Start` of one
   program called over D-Bus by the bench, cycle after cycle; every
   ProcessStateChanged of that program seen by the bench's own D-Bus
   subscriber (dbus-next, AddMatch) is stamped time.monotonic() on receipt;
   the probe's MutationObserver stamps performance.now() each time that
   row's state text changes (the same clock, CLOCK_MONOTONIC: the offset is
   measured once by round trips, Cristian's algorithm, and checked again
   after the cycles); each signal is matched with the first DOM change to
   its state after the previous match. The probe also stamps the page's
   EventSource delivering the `state` event, and a second /events client in
   the bench stamps the service's frame (the service's share). Cycles with
   the page idle (no `rows` event drawn for IDLE_QUIET s), then back to back
   (the next call once the page has drawn the `rows` event that follows the
   previous change).

supervisord: n/a (its [inet_http_server] page is a server-rendered table
reloaded by hand: no live updates, no metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import select
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers import Program

PROGRAM = "sleep infinity"
IDLE_QUIET = 1.0  # s without a `rows` event drawn before an "idle page" cycle
WATCHED = "p0"  # the program stopped and started by the state-change measure
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,"
                     "application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
NA = ("n/a: supervisord's [inet_http_server] page is a server-rendered table reloaded by hand "
      "(no live updates, no metrics endpoint): nothing equivalent to time")

# Injected into every document of a page before its own scripts run.
PROBE = r"""
(() => {
  const N = %(n)d, WATCHED = %(watched)s;
  const STATES = new Set(["STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED",
                          "FATAL", "UNKNOWN"]);
  const probe = window.__bench = {full: null, painted: null, statesOk: null, changes: [],
                                  waiters: []};
  let last = "";
  let tbody = null;
  function check() {
    tbody = tbody || document.querySelector("#processes tbody");
    if (!tbody) return;
    const now = performance.now();
    if (probe.full === null && tbody.children.length >= N) {
      probe.full = now;
      requestAnimationFrame(() => {
        const channel = new MessageChannel();
        channel.port1.onmessage = () => { probe.painted = performance.now(); wake(); };
        channel.port2.postMessage(0);
      });
      const states = tbody.querySelectorAll("tr[data-name] .st");
      probe.statesOk = states.length >= N &&
        Array.prototype.every.call(states, (s) => STATES.has(s.textContent));
    }
    const cell = tbody.querySelector('tr[data-name="' + WATCHED + '"] .st');
    const state = cell ? cell.textContent : "";
    if (state !== last) {
      last = state;
      probe.changes.push({state, t: now});
      wake();
    }
  }
  function wake() {
    probe.waiters = probe.waiters.filter((w) => !w());
  }
  // resolves when cond() is true (checked now and at every change)
  probe.until = (cond) => new Promise((resolve) => {
    const w = () => { if (cond()) { resolve(true); return true; } return false; };
    if (!w()) probe.waiters.push(w);
  });
  new MutationObserver(check).observe(document, {childList: true, subtree: true,
                                                 characterData: true});
  // When the page's event stream delivers a `state` event of WATCHED (these
  // listeners are added before the page's own: they run first); and when a
  // `rows` event with WATCHED has been handled by the page and drawn (settled).
  probe.messages = [];
  probe.settled = [];
  probe.rowsCost = [];  // each `rows` event: its rows, ms until handled, until drawn
  probe.lastRows = 0;  // when the last `rows` event was drawn
  const Original = window.EventSource;
  window.EventSource = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener("state", (e) => {
        const data = JSON.parse(e.data);
        if (data.name === WATCHED) {
          probe.messages.push({state: data.state, t: performance.now()});
        }
      });
      this.addEventListener("rows", (e) => {
        const t0 = performance.now();
        const rows = JSON.parse(e.data).rows;
        const mine = rows.find((r) => r.name === WATCHED);
        let handled = null;
        const after = new MessageChannel();  // runs once the page's handler is done
        after.port1.onmessage = () => { handled = performance.now(); };
        after.port2.postMessage(0);
        requestAnimationFrame(() => {
          const channel = new MessageChannel();
          channel.port1.onmessage = () => {
            probe.lastRows = performance.now();
            probe.rowsCost.push({rows: rows.length, handled: handled - t0,
                                 drawn: probe.lastRows - t0});
            if (mine) { probe.settled.push(mine.state); wake(); }
          };
          channel.port2.postMessage(0);
        });
      });
    }
  };
  // The page's main thread busy for more than 50 ms at a time.
  probe.longtasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) probe.longtasks.push(e.duration);
  }).observe({type: "longtask"});
})();
"""


def row(measure: str, unit: str, samples: list[float], note: str = "",
        better: str = "lower") -> dict:
    return {"measure": measure, "unit": unit, "samples": samples, "note": note, "better": better}


def names(n: int) -> dict[str, str]:
    return {
        "metrics": f"web /metrics N={n} (GET, keep-alive, Prometheus's Accept: OpenMetrics)",
        "metrics_text": f"web /metrics N={n} (GET, keep-alive, no Accept: classic text)",
        "load": f"web page load -> first full status N={n} (logged in: DOM holds N rows)",
        "load_ro": f"web page load -> first full status N={n} (read-only: DOM holds N rows)",
        "paint": f"web page load -> first frame drawn with N={n} rows (logged in)",
        "paint_ro": f"web page load -> first frame drawn with N={n} rows (read-only)",
        "change": f"web state change -> page N={n} (D-Bus signal -> DOM row): page idle "
                  f"({IDLE_QUIET:g} s without a refresh)",
        "change_busy": f"web state change -> page N={n} (D-Bus signal -> DOM row): back to "
                       "back (the next call once the previous refresh is drawn)",
        "change_max": f"web state change -> page N={n}, slowest of the run",
        "skipped": "web page in headless Chromium (skipped)",
    }


def web(drv_cls, opts) -> list[dict]:
    n = opts.web_n
    label = names(n)
    if drv_cls.name != "taskmasterd":
        return [row(label["metrics"], "ms", [], NA), row(label["load"], "ms", [], "n/a"),
                row(label["change"], "ms", [], "n/a")]
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        return [row("web (skipped)", "", [], f"skipped: taskmaster-web needs {exc.name} "
                    "(apt-get install python3-aiohttp python3-prometheus-client)")]
    from tests.chromium import CHROMIUM

    with running(drv_cls, n, opts.mass_timeout) as svc:
        rows = asyncio.run(measure(svc, n, opts, svc.dir if CHROMIUM else None))
    if CHROMIUM is None:
        rows.append(row(label["skipped"], "", [], "skipped: no chromium (apt-get install "
                        "chromium): page load and state change not measured"))
    return rows


@dataclass
class Service:
    base: str  # http://127.0.0.1:PORT
    token: str
    address: str  # the private bus
    dir: Path  # the daemon's temporary directory (removed afterwards)
    web_pid: int
    daemon_pid: int


@contextlib.contextmanager
def running(drv_cls, n: int, timeout: float) -> Iterator[Service]:
    """taskmasterd with `n` programs all RUNNING, taskmaster-web ready in
    front of it; both stopped on exit. (Also what a profiling session
    starts: py-spy record -p Service.web_pid.)"""
    d = drv_cls()
    web_proc: subprocess.Popen[bytes] | None = None
    notify: socket.socket | None = None
    try:
        d.start({f"p{i}": Program(PROGRAM, stoptime=2) for i in range(n)})
        d.wait_ready()
        deadline = time.monotonic() + timeout
        while sum(1 for _, s, _ in d.list_processes() if s == "RUNNING") < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all {n} RUNNING after {timeout:g} s")
            time.sleep(0.05)
        token = secrets.token_urlsafe(24)
        token_file = d.dir / "web.token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, token.encode() + b"\n")
        os.close(fd)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        notify.bind(str(d.dir / "web-notify.sock"))
        port = free_port()
        env = dict(os.environ, NOTIFY_SOCKET=str(d.dir / "web-notify.sock"))
        log = open(d.dir / "web.txt", "ab")  # noqa: SIM115 (closed once handed over)
        web_proc = subprocess.Popen(
            [d.python, "-m", "taskweb", "--listen", f"127.0.0.1:{port}",
             "--token-file", str(token_file), "--address", d.address],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=d.dir, env=env,
            start_new_session=True)
        log.close()
        wait_ready(notify, web_proc, d.dir / "web.txt", 30.0)
        yield Service(f"http://127.0.0.1:{port}", token, d.address, d.dir, web_proc.pid, d.pid)
    finally:
        if web_proc is not None:
            stop_process(web_proc)
        if notify is not None:
            notify.close()
        d.stop()


def match(signals: list[tuple[str, float]], seen: list[tuple[str, float]]
          ) -> list[float | None]:
    """For each signal (state, monotonic s), the first of `seen` (state,
    monotonic ms) with its state after the previous match: the delay in ms
    (None: not seen)."""
    out: list[float | None] = []
    i = 0
    for state, t in signals:
        while i < len(seen) and seen[i][0] != state:
            i += 1
        if i == len(seen):
            out.append(None)
            continue
        out.append(seen[i][1] - t * 1000)
        i += 1
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(notify: socket.socket, proc: subprocess.Popen[bytes], log: Path,
               timeout: float) -> None:
    """Until the service says READY=1 (it listens then)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"taskmaster-web exited ({proc.returncode}): "
                               f"{log.read_text(errors='replace')[-500:]}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"taskmaster-web not READY after {timeout:g} s")
        if select.select([notify], [], [], min(left, 0.5))[0] and \
                b"READY=1" in notify.recv(4096).split(b"\n"):
            return


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def measure(svc: Service, n: int, opts, browser_dir: Path | None) -> list[dict]:
    import aiohttp

    base, token, address = svc.base, svc.token, svc.address
    label = names(n)
    rows: list[dict] = []
    async with aiohttp.ClientSession() as http:
        await until_mirror(http, base, n, 30.0)
        rows += await metrics(http, base, n, opts.reps_metrics, label)
        if browser_dir is None:
            return rows
        async with http.post(base + "/login", json={"token": token}) as r:
            assert r.status == 200, await r.text()
            sid = r.cookies["taskmaster_session"].value
        from tests.chromium import Browser
        async with Browser.launch(browser_dir) as browser:
            rows += await page_loads(browser, base, sid, n, opts.reps_web_load, label)
            rows += await state_changes(browser, http, base, sid, address, n, opts.web_cycles,
                                        label)
    return rows


async def until_mirror(http, base: str, n: int, timeout: float) -> None:
    """The service's mirror shows the N processes RUNNING."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(base + "/api/processes") as r:
            data = await r.json()
        if data["present"] and len(data["processes"]) == n and \
                all(p["state"] == "RUNNING" for p in data["processes"]):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"taskmaster-web's table is not the {n} processes RUNNING")
        await asyncio.sleep(0.05)  # sleep-ok: poll step of a wait with a deadline


async def metrics(http, base: str, n: int, reps: int, label: dict[str, str]) -> list[dict]:
    out = []
    for key, headers in (("metrics", {"Accept": PROMETHEUS_ACCEPT}), ("metrics_text", {})):
        samples: list[float] = []
        size = 0
        for i in range(reps + 1):  # the first one warms up (imports, the connection)
            t = time.perf_counter()
            async with http.get(base + "/metrics", headers=headers) as r:
                body = await r.read()
            dt = (time.perf_counter() - t) * 1000
            assert r.status == 200, body[:200]
            assert body.count(b"\ntaskmaster_process_up{") == n, "not one series per process"
            size = len(body)
            if i:
                samples.append(dt)
        ctype = r.headers.get("Content-Type", "").split(";")[0]
        out.append(row(label[key], "ms", samples, f"{size / 1024:.0f} KiB {ctype}"))
    return out


async def open_page(browser, base: str, sid: str | None, n: int):
    """A fresh page (tab) with the probe, and the session cookie set or cleared."""
    page = await browser.new_page()
    await page.send("Page.addScriptToEvaluateOnNewDocument",
                    {"source": PROBE % {"n": n, "watched": json.dumps(WATCHED)}})
    if sid is None:
        await page.send("Network.deleteCookies", {"name": "taskmaster_session", "url": base})
    else:
        await page.send("Network.setCookie", {"name": "taskmaster_session", "value": sid,
                                              "url": base, "httpOnly": True})
    return page


async def close_page(browser, page) -> None:
    with contextlib.suppress(Exception):
        await page.send("Page.close")
    browser.pages.pop(page.session, None)


async def load_once(browser, base: str, sid: str | None, n: int) -> dict[str, Any]:
    page = await open_page(browser, base, sid, n)
    try:
        await page.navigate(base + "/", timeout=30)
        await page.evaluate("window.__bench.until(() => window.__bench.painted !== null)")
        got = await page.evaluate(
            "(() => { const nav = performance.getEntriesByType('navigation')[0];"
            " return {full: window.__bench.full, painted: window.__bench.painted,"
            " statesOk: window.__bench.statesOk, html: nav.responseEnd,"
            " dcl: nav.domContentLoadedEventEnd,"
            " rows: document.querySelectorAll('#processes tbody tr').length,"
            " buttons: document.querySelectorAll('button[data-act]').length}; })()")
        assert got["rows"] == n and got["statesOk"], got
        assert got["buttons"] == (5 * n if sid else 0), got
        assert page.errors == [], page.errors
        return got
    finally:
        await close_page(browser, page)


async def page_loads(browser, base: str, sid: str, n: int, reps: int,
                     label: dict[str, str]) -> list[dict]:
    await load_once(browser, base, sid, n)  # warm-up: the browser's first page
    full: list[float] = []
    ro: list[float] = []
    painted: list[float] = []
    painted_ro: list[float] = []
    html: list[float] = []
    dcl: list[float] = []
    for i in range(reps):
        for logged in ((True, False) if i % 2 == 0 else (False, True)):
            got = await load_once(browser, base, sid if logged else None, n)
            if logged:
                full.append(got["full"])
                painted.append(got["painted"])
                html.append(got["html"])
                dcl.append(got["dcl"])
            else:
                ro.append(got["full"])
                painted_ro.append(got["painted"])
    note = (f"fresh tab each; median: HTML in {statistics.median(html):.0f} ms, "
            f"page.js run (DOMContentLoaded) {statistics.median(dcl):.0f} ms")
    return [row(label["load"], "ms", full, note),
            row(label["load_ro"], "ms", ro, "no buttons"),
            row(label["paint"], "ms", painted, "rAF + posted message: ~16 ms granularity"),
            row(label["paint_ro"], "ms", painted_ro)]


async def state_changes(browser, http, base: str, sid: str, address: str, n: int, cycles: int,
                        label: dict[str, str]) -> list[dict]:
    """`cycles` stop/start cycles of WATCHED on an idle page (no `rows` event
    drawn for IDLE_QUIET s), then `cycles` back to back (the next call as
    soon as the page has drawn the previous change's refresh)."""
    from dbus_next import Message, MessageType
    from dbus_next.aio import MessageBus

    dest, path = "org.taskmaster.Taskmaster1", "/org/taskmaster/Taskmaster1"
    iface = "org.taskmaster.Taskmaster1.Manager"
    mode = ""
    signals: list[tuple[str, float]] = []  # (new state, time.monotonic() on receipt)
    modes: list[str] = []  # the mode each of `signals` was received in
    frames: list[tuple[str, float]] = []  # the service's `state` frames: (state, monotonic)

    def on_message(msg: Message) -> bool:
        if msg.message_type is MessageType.SIGNAL and msg.member == "ProcessStateChanged" \
                and msg.body[0] == WATCHED:
            signals.append((msg.body[3], time.monotonic()))
            modes.append(mode)
        return False

    bus = await MessageBus(bus_address=address).connect()
    sse = None
    page = None
    niced = raise_priority()
    try:
        bus.add_message_handler(on_message)
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',sender='{dest}',member='ProcessStateChanged',arg0='{WATCHED}'"]))
        assert reply.message_type is not MessageType.ERROR, reply.body

        async def follow(response) -> None:
            # by chunks, not readline(): the snapshot is one line longer than
            # aiohttp's line limit (128 KiB) at 1,000 rows
            buf = b""
            async for chunk in response.content.iter_any():
                now = time.monotonic()
                buf += chunk
                *done, buf = buf.split(b"\n\n")
                for frame in done:
                    if frame.startswith(b"event: state\n"):
                        data = json.loads(frame.split(b"\ndata: ", 1)[1])
                        if data["name"] == WATCHED:
                            frames.append((data["state"], now))

        events = await http.get(base + "/events")
        sse = asyncio.create_task(follow(events))

        page = await open_page(browser, base, sid, n)
        await page.navigate(base + "/", timeout=30)
        await page.evaluate("window.__bench.until(() => window.__bench.painted !== null)")
        assert await page.evaluate("window.__bench.changes.at(-1).state") == "RUNNING"
        await page.evaluate("window.__bench.longtasks = []; window.__bench.rowsCost = []")
        offset, error = await clock_offset(page)
        for mode in ["idle"] * cycles + ["busy"] * cycles:
            for member, final in (("Stop", "STOPPED"), ("Start", "RUNNING")):
                if mode == "idle":
                    await until_quiet(page, IDLE_QUIET, 15.0)
                mark = await page.evaluate("window.__bench.settled.length")
                reply = await bus.call(Message(destination=dest, path=path, interface=iface,
                                               member=member, signature="s", body=[WATCHED]))
                assert reply.message_type is not MessageType.ERROR, reply.body
                # the row shows `final`, then the mirror's refresh (a `rows`
                # event with it) has been handled and drawn
                await asyncio.wait_for(page.evaluate(
                    "window.__bench.until(() => window.__bench.changes.at(-1).state === "
                    f"{json.dumps(final)} && window.__bench.settled.slice({mark})"
                    f".includes({json.dumps(final)}))"), 15)
        drift = (await clock_offset(page))[0] - offset
        probe = await page.evaluate("(({changes, messages, longtasks, rowsCost}) => "
                                    "({changes, messages, longtasks, rowsCost}))(window.__bench)")
        assert page.errors == [], page.errors
    finally:
        if page is not None:
            await close_page(browser, page)
        if sse is not None:
            sse.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sse
        bus.disconnect()
        if niced is not None:
            os.setpriority(os.PRIO_PROCESS, 0, niced)
    changes = probe["changes"]
    # the page's times on the bench's clock; [0] is the snapshot's state
    dom = match(signals, [(c["state"], c["t"] - offset) for c in changes[1:]])
    service = match(signals, [(st, t * 1000) for st, t in frames])
    delivered = match(signals, [(m["state"], m["t"] - offset) for m in probe["messages"]])
    cost = probe["rowsCost"]
    kinds = " ".join(sorted({st for st, _ in signals}))
    out = []
    for key, which in (("change", "idle"), ("change_busy", "busy")):
        pick = [i for i, m in enumerate(modes) if m == which]

        def of(values: list[float | None], pick: list[int] = pick) -> list[float]:
            return [v for i in pick if i < len(values) and (v := values[i]) is not None]

        lat, srv, dlv = of(dom), of(service), of(delivered)
        note = (f"{len(lat)}/{len(pick)} signals ({kinds}), {cycles} stop/start; signal -> "
                f"the service's SSE frame at a bench client: median {med(srv):.1f} ms, max "
                f"{max(srv, default=0):.1f}; -> the page's EventSource event: median "
                f"{med(dlv):.1f}, max {max(dlv, default=0):.1f}")
        out.append(row(label[key], "ms", lat, note))
    lat = [v for v in dom if v is not None]
    out.append(row(label["change_max"], "ms", [max(lat)] if lat else [],
                   f"the page's main thread: {len(probe['longtasks'])} tasks > 50 ms, the "
                   f"longest {max(probe['longtasks'], default=0):.0f} ms; its `rows` events "
                   f"(the refresh after a signal): median {med([c['rows'] for c in cost]):.0f} "
                   f"rows, handled in {med([c['handled'] for c in cost]):.0f} ms, drawn in "
                   f"{med([c['drawn'] for c in cost]):.0f} ms (max "
                   f"{max((c['drawn'] for c in cost), default=0):.0f}); the page's clock set to "
                   f"the bench's ± {error:.2f} ms (after the cycles: {drift:+.2f} ms off)"))
    return out


def raise_priority() -> int | None:
    """As root, nice -10 for this thread (the bench's loop) while it stamps
    signals: on a loaded machine a woken process may wait several ms for a
    CPU, and the bench's receipt is the reference. Not inherited by what is
    already running (daemon, service, browser). The old value, or None."""
    if os.geteuid() != 0:
        return None
    old = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, -10)
    return old


async def clock_offset(page, tries: int = 15) -> tuple[float, float]:
    """performance.now() in the page minus time.monotonic() here, in ms: one
    clock (Chromium's TimeTicks and Python's monotonic are both Linux's
    CLOCK_MONOTONIC), so a constant; from the round trip with the smallest
    time (Cristian's algorithm), ± half that round trip."""
    best = (0.0, float("inf"))
    for _ in range(tries):
        t0 = time.monotonic()
        now = await page.evaluate("performance.now()")
        t1 = time.monotonic()
        half = (t1 - t0) * 500
        if half < best[1]:
            best = (now - (t0 + t1) * 500, half)
    return best


async def until_quiet(page, quiet: float, timeout: float) -> None:
    """Until the page has drawn no `rows` event for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        since = await page.evaluate("performance.now() - window.__bench.lastRows")
        if since >= quiet * 1000:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page drew `rows` events for {timeout:g} s on end")
        await asyncio.sleep(quiet - since / 1000)  # sleep-ok: the rest of the quiet window


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


