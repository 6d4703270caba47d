"""The page: every process with its state, live (server-sent events fed by
the daemon's signals, no polling), start/stop/restart/signal buttons for a
logged-in browser, and the tail of a process's output.

    GET  /                                 the page (static/page.html)
    GET  /api/processes                    {"present", "version", "processes": [...]}
    GET  /events                           text/event-stream (below)
    POST /api/processes/{name}/start|stop|restart
    POST /api/processes/{name}/signal      {"signal": "HUP"}
    GET  /api/processes/{name}/tail?bytes=N&stream=stdout|stderr
    GET  /api/processes/{name}/follow?bytes=N&stream=...  the tail, then what is added (SSE)

The event stream subscribes first and then sends the whole table
(`snapshot`), so nothing that happens in between is missed; then `state`
(a ProcessStateChanged, at once), `rows` (the mirror's changed rows, once
refreshed), `presence`, and `snapshot` again when the stream fell behind
(Lagged). A comment line every HEARTBEAT seconds keeps proxies from closing
it. The stream's follower is closed when the browser goes away.

Who may do what mirrors the daemon's D-Bus policy: state and events are
everyone's (ListProcesses, the signals); Start/Stop/Restart/Signal and
OpenLog are for the group taskmaster only, so here for a login (or the
token) only, with the CSRF token on every POST of a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from aiohttp import web

from taskctl.filefollow import FOLLOW_POLL, FileFollow
from taskctl.model import ProcessRow
from taskweb.app import error, link_of, require_control
from taskweb.link import DaemonError, DaemonLink, Follower, Lagged, Presence, RowsChanged, Signal

HEARTBEAT = 15.0  # seconds between keep-alive comments on an idle stream
GONE_CHECK = 1.0  # seconds: how soon an idle stream notices its client left
TAIL_DEFAULT = 16384
TAIL_MAX = 1 << 20
ACTIONS = {"start": "Start", "stop": "Stop", "restart": "Restart"}
STREAMS = "taskweb.page.streams"  # the open event streams' tasks (closed at shutdown)
ENDING = "taskweb.page.ending"  # those the shutdown cancelled
FOLLOWS = "taskweb.page.follows"  # the followed outputs' tasks
MAX_FOLLOWS = 32  # each holds a file open and reads it every FOLLOW_POLL s


# ---- pure parts --------------------------------------------------------------------


def row_json(row: ProcessRow) -> dict[str, Any]:
    """A row as the page and scripts get it (times in µs since the epoch)."""
    return {
        "name": row.name, "program": row.program, "state": row.state, "pid": row.pid,
        "exit_status": row.exit_status, "started_us": row.started_at_us,
        "description": row.description, "spawn_error": row.spawn_error,
        "restarts": row.restarts, "last_exit_status": row.last_exit_status,
        "last_exit_us": row.last_exit_us, "last_exit_expected": row.last_exit_expected,
    }


def sse(event: str, data: Any) -> bytes:
    """One server-sent event; `data` as JSON on one line (JSON has no newline)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


HEARTBEAT_LINE = b": keep-alive\n\n"


# The daemon's description of a live process starts with its pid and uptime:
# the uptime differs at every ListProcesses, so every refresh of the mirror
# "changes" every running row. The page shows pid and uptime in their own
# columns (the uptime ticks in the browser): a row is sent again only when
# something else changed.
PID_UPTIME = re.compile(r"^pid \d+, uptime (\d+ days?, )?[\d:.]+")


def shown(row: ProcessRow) -> ProcessRow:
    """The row as far as the page shows it (the description's uptime left out)."""
    return row._replace(description=PID_UPTIME.sub("", row.description, count=1))


class StreamView:
    """One event stream: what its page shows, so that it gets only changes."""

    def __init__(self, link: DaemonLink) -> None:
        self.link = link
        self.shown: dict[str, ProcessRow] = {}

    def snapshot(self) -> bytes:
        rows = list(self.link.rows.values())
        self.shown = {row.name: shown(row) for row in rows}
        return sse("snapshot", {"present": self.link.present,
                                "processes": [row_json(r) for r in rows]})

    def frame(self, event: object) -> bytes | None:
        """What a follower's event becomes on the stream (None: nothing)."""
        if isinstance(event, Signal):
            if event.member == "ProcessStateChanged" and len(event.body) >= 7:
                process, program, old, new, pid, status, expected = event.body[:7]
                return sse("state", {"name": process, "program": program, "old": old,
                                     "state": new, "pid": pid, "exit_status": status,
                                     "expected": expected})
            return None  # the others change the table: the `rows` that follow say how
        if isinstance(event, RowsChanged):
            changed = []
            for row in event.rows:
                seen = shown(row)
                if self.shown.get(row.name) != seen:
                    self.shown[row.name] = seen
                    changed.append(row_json(row))
            removed = [name for name in event.removed if self.shown.pop(name, None)]
            if not changed and not removed:
                return None
            return sse("rows", {"rows": changed, "removed": removed})
        if isinstance(event, Presence):
            return sse("presence", {"present": event.present})
        if isinstance(event, Lagged):
            return self.snapshot()
        return None


def read_tail(fd: int, size: int) -> tuple[str, bool]:
    """The last `size` bytes of the file open at `fd` as text, from a line's
    start when the file is longer; and whether it was cut."""
    end = os.fstat(fd).st_size
    start = max(0, end - size)
    os.lseek(fd, start, os.SEEK_SET)
    chunks = []
    left = end - start
    while left > 0:
        chunk = os.read(fd, min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    cut = start > 0
    if cut:
        newline = data.find(b"\n")
        if 0 <= newline < len(data) - 1:
            data = data[newline + 1:]
    return data.decode("utf-8", "replace"), cut


def render_page(template: str, csrf: str | None) -> str:
    """The page for a browser logged in (its CSRF token in a <meta>) or not."""
    meta = f'<meta name="csrf-token" content="{html.escape(csrf)}">' if csrf else ""
    return template.replace("<!--CSRF-->", meta).replace(
        "@AUTH@", "session" if csrf else "none")


# ---- handlers ----------------------------------------------------------------------


def static_text(name: str) -> str:
    return (resources.files("taskweb") / "static" / name).read_text(encoding="utf-8")


async def page(request: web.Request) -> web.StreamResponse:
    session = request["session"]
    body = render_page(request.app["taskweb.page.html"], session.csrf if session else None)
    return web.Response(text=body, content_type="text/html", headers={
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                   "frame-ancestors 'none'; form-action 'self'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"})


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    files = request.app["taskweb.page.static"]
    if name not in files:
        raise web.HTTPNotFound()
    text, ctype = files[name]
    return web.Response(text=text, content_type=ctype,
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


async def version(link: DaemonLink) -> str:
    """The daemon's Version ("" when it cannot say)."""
    if not link.present:
        return ""
    try:
        return str(await link.get_property("Version"))
    except DaemonError:
        return ""


async def processes(request: web.Request) -> web.StreamResponse:
    link = link_of(request)
    return web.json_response({"present": link.present,
                              "version": await version(link),
                              "processes": [row_json(r) for r in link.rows.values()]})


SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-store",
               "X-Accel-Buffering": "no"}  # nginx: pass each event on at once


@contextlib.asynccontextmanager
async def event_stream(request: web.Request) -> AsyncIterator[web.StreamResponse]:
    """An event-stream response for this handler, counted in STREAMS while
    it runs, ended properly (not cut) when the service stops (close_streams),
    quietly when the browser went away. The body prepares it first, so that
    a browser gone before that ends quietly too (a context manager cannot
    skip its body)."""
    task = asyncio.current_task()
    assert task is not None
    request.app[STREAMS].add(task)
    response = web.StreamResponse(headers=SSE_HEADERS)
    try:
        yield response
    except ConnectionResetError:  # the browser went away
        pass
    except asyncio.CancelledError:
        if task not in request.app[ENDING]:
            raise
        # The service stops: end the stream properly (the browser reconnects
        # after `retry`, with no error for a cut response).
        with contextlib.suppress(Exception):
            await response.write_eof()
    finally:
        request.app[STREAMS].discard(task)
        request.app[ENDING].discard(task)


async def events(request: web.Request) -> web.StreamResponse:
    link = link_of(request)
    follower: Follower = link.follow()  # before the snapshot: nothing missed in between
    view = StreamView(link)
    try:
        async with event_stream(request) as response:
            await response.prepare(request)
            await response.write(b"retry: 2000\n" + view.snapshot())
            idle = 0.0
            while True:
                try:
                    event = await asyncio.wait_for(follower.get(), GONE_CHECK)
                except TimeoutError:
                    # aiohttp 3.8 does not cancel a handler whose client went away
                    # (3.9 does, opt-in): look at the connection while idle.
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    idle += GONE_CHECK
                    if idle >= HEARTBEAT:
                        idle = 0.0
                        await response.write(HEARTBEAT_LINE)
                    continue
                idle = 0.0
                frame = view.frame(event)
                if frame is not None:
                    await response.write(frame)
    finally:
        follower.close()
    return response


async def control(request: web.Request) -> web.StreamResponse:
    require_control(request)
    name, action = request.match_info["name"], request.match_info["action"]
    link = link_of(request)
    if action == "signal":
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            return error(400, "the body is not valid JSON: expected {\"signal\": \"HUP\"}")
        sig = data.get("signal") if isinstance(data, dict) else None
        if not isinstance(sig, str) or not sig:
            return error(400, "expected {\"signal\": NAME}, e.g. {\"signal\": \"HUP\"}")
        [names] = await link.call("Signal", "ss", [name, sig])
    elif action in ACTIONS:
        [names] = await link.call(ACTIONS[action], "s", [name])
    else:
        return error(404, f"no action {action!r}: start, stop, restart or signal")
    return web.json_response({"processes": list(names)})


def output_request(request: web.Request) -> tuple[str, str, int] | web.Response:
    """The process, stream and size asked for (or the 400 answer); 401
    without login: OpenLog is the group taskmaster's on the bus
    (dbus/org.taskmaster.Taskmaster1.conf), so here a login's."""
    require_control(request)
    stream = request.query.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        return error(400, "stream: stdout or stderr")
    try:
        size = int(request.query.get("bytes", TAIL_DEFAULT))
    except ValueError:
        return error(400, "bytes: a number")
    return request.match_info["name"], stream, max(1, min(size, TAIL_MAX))


async def open_log(link: DaemonLink, name: str, stream: str) -> int:
    [fd] = await link.call("OpenLog", "ss", [name, stream])
    if not isinstance(fd, int) or fd < 0:
        raise DaemonError("org.freedesktop.DBus.Error.Failed",
                          "OpenLog returned no file descriptor (fd passing refused by the bus?)")
    return fd


async def tail(request: web.Request) -> web.StreamResponse:
    asked = output_request(request)
    if isinstance(asked, web.Response):
        return asked
    name, stream, size = asked
    try:
        fd = await open_log(link_of(request), name, stream)
    except DaemonError as exc:
        if exc.short not in ("NotAFile", "NoOutput"):
            raise
        # Not an error of the request: there is no file to show (the journal's, or none yet).
        return web.json_response({"name": name, "stream": stream, "text": "", "cut": False,
                                  "unavailable": exc.short, "message": exc.text})
    try:
        text, cut = await asyncio.get_running_loop().run_in_executor(None, read_tail, fd, size)
    finally:
        os.close(fd)
    return web.json_response({"name": name, "stream": stream, "text": text, "cut": cut})


async def follow(request: web.Request) -> web.StreamResponse:
    """The tail, then what is added, as `output` events: `taskctl tail -f`
    for the page, through the same taskctl/filefollow.py (the file read
    every FOLLOW_POLL s; after REOPEN_AFTER s without news the daemon is
    asked for the file again, a rotated file is finished, then the new one
    read from its start)."""
    import codecs

    asked = output_request(request)
    if isinstance(asked, web.Response):
        return asked
    name, stream, size = asked
    follows: set[asyncio.Task[Any]] = request.app[FOLLOWS]
    if len(follows) >= MAX_FOLLOWS:
        return error(503, f"{MAX_FOLLOWS} outputs are followed already: close one")
    link = link_of(request)
    fd = await open_log(link, name, stream)  # NotAFile: 409 (the page follows files only)
    task = asyncio.current_task()
    assert task is not None
    follows.add(task)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    file = FileFollow(fd)
    try:
        async with event_stream(request) as response:
            await response.prepare(request)
            text, cut = read_tail(fd, size)
            file.seek(os.lseek(fd, 0, os.SEEK_CUR))
            await response.write(b"retry: 2000\n" + sse("output", {"text": text, "cut": cut,
                                                                    "start": True}))
            idle = 0.0
            while True:
                await asyncio.sleep(FOLLOW_POLL)
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                data = file.read(max_chunks=4)  # the rest on the next turn: the loop goes on
                if data:
                    idle = 0.0
                    await response.write(sse("output", {"text": decoder.decode(data)}))
                    continue
                idle += FOLLOW_POLL
                if idle >= HEARTBEAT:
                    idle = 0.0
                    await response.write(HEARTBEAT_LINE)
                if file.quiet():
                    try:
                        new: int | None = await open_log(link, name, stream)
                    except DaemonError:
                        new = None  # stopped, removed, daemon gone: keep the file we have
                    _switched, rest = file.switch(new)
                    if rest:
                        await response.write(sse("output", {"text": decoder.decode(rest)}))
    finally:
        file.close()
        follows.discard(task)
    return response


async def close_streams(app: web.Application) -> None:
    """At shutdown: end the event streams (they would hold it up until they time out)."""
    app[ENDING].update(app[STREAMS])
    for task in list(app[STREAMS]):
        task.cancel()


def setup(app: web.Application) -> None:
    app[STREAMS] = set()
    app[ENDING] = set()
    app[FOLLOWS] = set()
    app["taskweb.page.html"] = static_text("page.html")
    app["taskweb.page.static"] = {
        "page.js": (static_text("page.js"), "application/javascript"),
        "page.css": (static_text("page.css"), "text/css")}
    app.on_shutdown.append(close_streams)  # type: ignore[arg-type]  # aiohttp 3.8 stubs
    app.router.add_get("/", page)
    app.router.add_get("/static/{file}", static_file)
    app.router.add_get("/api/processes", processes)
    app.router.add_get("/events", events)
    app.router.add_post("/api/processes/{name}/{action}", control)
    app.router.add_get("/api/processes/{name}/tail", tail)
    app.router.add_get("/api/processes/{name}/follow", follow)


__all__ = ["StreamView", "read_tail", "render_page", "row_json", "setup", "shown", "sse"]
