"""taskmaster-web's page, its pure parts: rows as JSON, server-sent event
frames, the tail of a file, the page with or without a session (taskweb.page)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from taskctl.model import ProcessRow
from taskweb.link import DaemonLink, Lagged, Presence, RowsChanged, Signal
from taskweb.page import HEARTBEAT_LINE, StreamView, read_tail, render_page, row_json, shown, sse

ROW = ProcessRow("web:0", "web", "RUNNING", 42, 0, 1_700_000_000_000_000, "pid 42, uptime 0:00:05",
                 "", 2, -15, 1_699_999_999_000_000, True)


def parse(frame: bytes) -> tuple[str, object]:
    text = frame.decode()
    assert text.endswith("\n\n") and text.count("\n\n") == 1, text
    fields = dict(line.split(": ", 1) for line in text.strip("\n").split("\n"))
    return fields["event"], json.loads(fields["data"])


def test_row_json_has_every_column() -> None:
    assert row_json(ROW) == {
        "name": "web:0", "program": "web", "state": "RUNNING", "pid": 42, "exit_status": 0,
        "started_us": 1_700_000_000_000_000, "description": "pid 42, uptime 0:00:05",
        "spawn_error": "", "restarts": 2, "last_exit_status": -15,
        "last_exit_us": 1_699_999_999_000_000, "last_exit_expected": True}


def test_sse_frames_are_one_event_each() -> None:
    # A newline inside the data would end the event early: JSON escapes it.
    assert parse(sse("rows", {"text": "two\nlines"})) == ("rows", {"text": "two\nlines"})
    assert HEARTBEAT_LINE.startswith(b":") and HEARTBEAT_LINE.endswith(b"\n\n")


def test_events_become_frames() -> None:
    link = DaemonLink()
    link.present = True
    link.rows = {ROW.name: ROW}
    view = StreamView(link)
    assert parse(view.snapshot()) == ("snapshot", {"present": True, "processes": [row_json(ROW)]})
    state = Signal("ProcessStateChanged", ("web:0", "web", "RUNNING", "STOPPING", 42, 0, True))
    assert parse(view.frame(state) or b"") == ("state", {
        "name": "web:0", "program": "web", "old": "RUNNING", "state": "STOPPING", "pid": 42,
        "exit_status": 0, "expected": True})
    # Other signals change the table: the rows that follow carry it.
    assert view.frame(Signal("Reloaded", ([], [], []))) is None
    assert view.frame(Signal("TaskStateChanged", ())) is None
    stopping = ROW._replace(state="STOPPING", description="pid 42, uptime 0:00:06")
    other = ROW._replace(name="web:1", pid=43)
    assert parse(view.frame(RowsChanged((stopping, other), ("gone",))) or b"") == \
        ("rows", {"rows": [row_json(stopping), row_json(other)], "removed": []})
    assert parse(view.frame(Presence(False)) or b"") == ("presence", {"present": False})
    # Behind: the page gets the whole table again.
    link.rows = {"web:1": other}
    assert parse(view.frame(Lagged()) or b"") == \
        ("snapshot", {"present": True, "processes": [row_json(other)]})
    assert parse(view.frame(RowsChanged((), ("web:1",))) or b"") == \
        ("rows", {"rows": [], "removed": ["web:1"]})


def test_only_what_the_page_shows_is_sent_again() -> None:
    # Every ListProcesses gives a new uptime in each running row's description:
    # that alone sends nothing (the page's uptime column ticks by itself).
    link = DaemonLink()
    link.rows = {ROW.name: ROW}
    view = StreamView(link)
    view.snapshot()
    later = ROW._replace(description="pid 42, uptime 1:00:05")
    assert view.frame(RowsChanged((later,), ())) is None
    days = ROW._replace(description="pid 42, uptime 2 days, 1:00:05")
    assert view.frame(RowsChanged((days,), ())) is None
    assert shown(days) == shown(ROW)
    # What follows the uptime (readiness, health, STATUS=) is news.
    health = ROW._replace(description="pid 42, uptime 1:00:06; unhealthy (1/3: HTTP 503)")
    assert parse(view.frame(RowsChanged((health,), ())) or b"")[0] == "rows"
    restarted = health._replace(restarts=3)
    assert parse(view.frame(RowsChanged((restarted,), ())) or b"") == \
        ("rows", {"rows": [row_json(restarted)], "removed": []})
    assert view.frame(RowsChanged((restarted._replace(description="pid 42, uptime 1:00:07; "
                                                      "unhealthy (1/3: HTTP 503)"),), ())) is None


def test_a_lagging_follower_gets_a_snapshot_not_stale_events() -> None:
    link = DaemonLink()
    follower = link.follow()
    from taskweb.link import QUEUE_SIZE

    for _ in range(QUEUE_SIZE + 5):
        follower.put(Presence(True))
    assert follower._queue.qsize() == 1  # only the Lagged marker
    assert isinstance(follower._queue.get_nowait(), Lagged)
    follower.close()
    assert not link.followers


def test_read_tail(tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_bytes(b"first line\nsecond line\nthird \xff line\n")
    fd = os.open(f, os.O_RDONLY)
    try:
        assert read_tail(fd, 1000) == ("first line\nsecond line\nthird \ufffd line\n", False)
        # Cut: from the next line's start, not in the middle of one.
        assert read_tail(fd, 20) == ("third \ufffd line\n", True)
        # One long line cut: what there is.
        assert read_tail(fd, 5) == ("line\n", True)
    finally:
        os.close(fd)
    f.write_bytes(b"")
    fd = os.open(f, os.O_RDONLY)
    try:
        assert read_tail(fd, 100) == ("", False)
    finally:
        os.close(fd)


def test_the_page_carries_the_csrf_token_only_for_a_session() -> None:
    template = '<head><!--CSRF--></head><body data-auth="@AUTH@">'
    assert render_page(template, None) == '<head></head><body data-auth="none">'
    assert render_page(template, 'a"b<') == \
        '<head><meta name="csrf-token" content="a&quot;b&lt;"></head><body data-auth="session">'


def test_the_static_files_are_package_data() -> None:
    from taskweb.page import static_text

    html = static_text("page.html")
    assert "<!--CSRF-->" in html and "@AUTH@" in html and "/static/page.js" in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    assert "EventSource" in static_text("page.js")
    assert static_text("page.css")
