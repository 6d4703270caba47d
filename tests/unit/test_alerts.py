"""Alerts without a daemon: which events match, the rate limit and its
summaries on a fake clock, message text, URL redaction, and the `alerts:`
section of the config (templates, positions; apprise's URL check, made by
the daemon's loader, hostcheck.load, not by the pure schema).

Runs on apprise 2.x (PyPI) and 1.2 (Debian 12) alike."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmasterd.alerts import (
    Batch,
    Message,
    Sender,
    Throttle,
    Worker,
    alert_name,
    display_name,
    matches,
    message_fields,
    read_tail,
    render,
    scrub,
    secrets_of,
    short_url,
)
from taskmasterd.alerts.sender import route_apprise_log
from taskmasterd.alerts.urls import url_issues, url_problem
from taskmasterd.config import (
    ALERT_EVENTS,
    DEFAULT_ALERT_RATE,
    TEMPLATE_FIELDS,
    AlertConfig,
    ConfigError,
    ConfigIssue,
    load_config,
)
from taskmasterd.events import Event
from taskmasterd.hostcheck import load as daemon_load

ROOT = Path(__file__).resolve().parents[2]
T0 = time.mktime((2026, 11, 23, 10, 31, 2, 0, 0, -1))  # 10:31:02 local time


def exited(pid: int = 4242, status: int = 1, expected: bool = False, program: str = "web",
           process: str | None = None, t: float = T0) -> Event:
    return Event(kind="EXITED", message=f"exited (status {status})", process=process or program,
                 program=program, old_state="RUNNING", new_state="EXITED", pid=pid,
                 exit_status=status, expected=expected, time=t)


def state(kind: str, program: str = "web", process: str | None = None, pid: int = 0) -> Event:
    return Event(kind=kind, message=f"entered {kind}", process=process or program, program=program,
                 new_state=kind, pid=pid, time=T0)


def daemon_event(kind: str) -> Event:
    return Event(kind=kind, message=f"{kind} happened", time=T0)


def alert(**kw: object) -> AlertConfig:
    return replace(AlertConfig(url="json://localhost/hook"), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# matching


def test_alert_names_split_exits_and_leave_out_what_no_alert_can_ask_for() -> None:
    assert alert_name(exited(expected=False)) == "EXITED_UNEXPECTED"
    assert alert_name(exited(expected=True)) == "EXITED_EXPECTED"
    for kind in ("STARTING", "RUNNING", "BACKOFF", "STOPPING", "STOPPED", "FATAL", "SPAWN_ERROR",
                 "ADOPTED"):
        assert alert_name(state(kind)) == kind
    for kind in ("RELOAD", "RELOAD_FAILED", "DAEMON_START", "DAEMON_STOP"):
        assert alert_name(daemon_event(kind)) == kind
    for kind in ("KILLED", "SIGNALLED", "UNKNOWN"):
        assert alert_name(state(kind)) is None
    # Every name an event can have is one `events:` accepts.
    assert {"EXITED_EXPECTED", "EXITED_UNEXPECTED"} <= set(ALERT_EVENTS)
    assert display_name(exited(expected=False)) == "EXITED (unexpected)"
    assert display_name(exited(expected=True)) == "EXITED (expected)"


def test_default_events_are_fatal_and_unexpected_exits() -> None:
    a = alert()
    assert matches(a, state("FATAL"))
    assert matches(a, exited(expected=False))
    assert not matches(a, exited(expected=True))
    assert not matches(a, state("BACKOFF"))
    assert not matches(a, state("RUNNING"))
    assert not matches(a, daemon_event("RELOAD_FAILED"))


def test_exited_means_both_kinds_of_exit() -> None:
    a = alert(events=frozenset({"EXITED"}))
    assert matches(a, exited(expected=True)) and matches(a, exited(expected=False))
    only_expected = alert(events=frozenset({"EXITED_EXPECTED"}))
    assert matches(only_expected, exited(expected=True))
    assert not matches(only_expected, exited(expected=False))


def test_program_globs_match_program_or_process_names() -> None:
    a = alert(events=frozenset({"FATAL"}), programs=("web-*", "db"))
    assert matches(a, state("FATAL", program="web-front"))
    assert matches(a, state("FATAL", program="db", process="db:3"))
    assert not matches(a, state("FATAL", program="web"))
    assert not matches(a, state("FATAL", program="dbx"))
    by_process = alert(events=frozenset({"FATAL"}), programs=("worker:1",))
    assert matches(by_process, state("FATAL", program="worker", process="worker:1"))
    assert not matches(by_process, state("FATAL", program="worker", process="worker:0"))
    assert matches(alert(events=frozenset({"FATAL"})), state("FATAL", program="anything"))


def test_daemon_events_ignore_the_program_filter() -> None:
    a = alert(events=frozenset({"RELOAD_FAILED", "DAEMON_START", "FATAL"}), programs=("web",))
    assert matches(a, daemon_event("RELOAD_FAILED"))
    assert matches(a, daemon_event("DAEMON_START"))
    assert not matches(a, daemon_event("DAEMON_STOP"))
    assert not matches(a, state("FATAL", program="db"))


# ---------------------------------------------------------------------------
# the rate limit, on a fake clock


def test_first_event_goes_at_once_then_a_summary_when_the_interval_has_passed() -> None:
    th = Throttle(rate=60)
    assert th.deadline is None
    first = th.offer(exited(pid=1), now=100.0)
    assert first is not None and first.count == 1 and not first.summary
    th.done()
    assert th.deadline is None  # nothing pending: no timer
    for i in range(12):
        assert th.offer(exited(pid=10 + i, t=T0 + i), now=101.0 + i) is None
    assert th.deadline == 160.0
    assert th.due(159.9) is None
    summary = th.due(160.0)
    assert summary is not None and summary.summary and summary.count == 12
    assert summary.first.pid == 10 and summary.last.pid == 21
    assert summary.kinds == {"EXITED (unexpected)": 12}
    assert th.deadline is None  # sent; busy until done
    th.done()
    assert th.deadline is None
    # Quiet for a whole interval: the next event goes at once again.
    assert th.offer(exited(pid=99), now=220.0) is not None


def test_nothing_goes_while_a_message_is_still_being_delivered() -> None:
    th = Throttle(rate=0)
    assert th.offer(exited(pid=1), now=0.0) is not None
    # rate 0, but the first message is not delivered yet: gather.
    assert th.offer(exited(pid=2), now=0.1) is None
    assert th.offer(exited(pid=3), now=0.2) is None
    assert th.deadline is None and th.due(5.0) is None  # busy: no timer either
    th.done()
    batch = th.due(5.0)
    assert batch is not None and batch.count == 2 and batch.summary
    th.done()
    single = th.offer(exited(pid=4), now=5.1)
    assert single is not None and single.count == 1 and not single.summary
    # One event held back is sent as itself, not as a summary of one.
    assert th.offer(exited(pid=5), now=5.2) is None
    th.done()
    alone = th.due(5.3)
    assert alone is not None and alone.count == 1 and not alone.summary


def test_a_long_delivery_lets_the_summary_go_as_soon_as_it_is_done() -> None:
    th = Throttle(rate=3)
    assert th.offer(exited(pid=1), now=0.0) is not None
    assert th.offer(exited(pid=2), now=1.0) is None
    assert th.deadline is None  # busy
    th.done()  # retries took 20 s
    assert th.deadline == 3.0  # already past: the caller's timer fires at once
    assert th.due(20.0) is not None


def test_drain_gives_what_is_pending_regardless_of_the_rate() -> None:
    th = Throttle(rate=3600)
    th.offer(exited(pid=1), now=0.0)
    th.done()
    th.offer(exited(pid=2), now=1.0)
    th.offer(state("FATAL"), now=2.0)
    batch = th.drain()
    assert batch is not None and batch.count == 2
    assert batch.kinds == {"EXITED (unexpected)": 1, "FATAL": 1}
    assert th.drain() is None and th.deadline is None


def test_a_crash_loop_of_50_exits_in_10_s_costs_at_most_2_messages() -> None:
    for rate, expected in ((60.0, 1), (10.0, 1), (3.0, 4)):
        th = Throttle(rate)
        sent: list[Batch] = []
        now = 0.0
        for i in range(50):
            now = i * 0.2  # one exit every 0.2 s: 50 in 10 s
            if th.deadline is not None and th.deadline <= now:
                batch = th.due(now)
                if batch is not None:
                    sent.append(batch)
                    th.done()
            batch = th.offer(exited(pid=i), now)
            if batch is not None:
                sent.append(batch)
                th.done()
        assert len(sent) == expected, (rate, [b.count for b in sent])
        assert len(sent) <= 2 or rate < 5
        pending = th.pending.count if th.pending else 0
        assert sum(b.count for b in sent) + pending == 50  # no event lost


@settings(max_examples=200, deadline=None)
@given(rate=st.sampled_from([0.0, 0.5, 3.0, 60.0]),
       steps=st.lists(st.tuples(st.floats(0, 5), st.booleans()), max_size=60))
def test_rate_limit_properties(rate: float, steps: list[tuple[float, bool]]) -> None:
    """Whatever the timing: two sends are at least `rate` apart, never while
    one is under way, and every event is sent once (or still pending)."""
    th = Throttle(rate)
    now = 0.0
    sends: list[float] = []
    counted = 0
    offered = 0
    busy = False

    def record(batch: Batch | None) -> None:
        nonlocal counted, busy
        if batch is not None:
            assert not busy
            if sends:
                # the throttle checks now >= last + rate; the difference can
                # round one ulp below rate (0.49999... for 0.5)
                assert now - sends[-1] >= rate - 1e-9
            sends.append(now)
            counted += batch.count
            busy = True

    for dt, finish in steps:
        now += dt
        if finish and busy:
            th.done()
            busy = False
        if th.deadline is not None and th.deadline <= now:
            record(th.due(now))
        offered += 1
        record(th.offer(exited(pid=offered), now))
    assert counted + (th.pending.count if th.pending else 0) == offered


# ---------------------------------------------------------------------------
# messages


def test_single_message_says_host_program_process_pid_signal_state_time_and_stderr() -> None:
    ev = exited(pid=4242, status=-9, program="web", process="web:1")
    batch = Batch.of(ev)
    msg = render(alert(), batch, "vogon", "Traceback...\nValueError: boom")
    assert msg.title == "[vogon] web:1: EXITED (unexpected)"
    for text in ("EXITED (unexpected): web:1 on vogon", "program: web, process: web:1", "state: EXITED",
                 "pid: 4242", "status: killed by SIGKILL", "time: 2026-11-23 10:31:02",
                 "last lines of the stderr of web:1:\nTraceback...\nValueError: boom"):
        assert text in msg.body, msg.body
    assert msg.kind == "warning"
    assert render(alert(), Batch.of(state("FATAL")), "vogon").kind == "failure"
    assert render(alert(), Batch.of(state("RUNNING")), "vogon").kind == "info"


def test_summary_counts_events_by_kind_since_the_first() -> None:
    batch = Batch.of(exited(pid=1, process="web:0", t=T0), summary=True)
    for i in range(11):
        batch.add(exited(pid=2 + i, process=f"web:{i % 2}", t=T0 + 1 + i))
    batch.add(Event(kind="BACKOFF", message="exited too quickly", process="web:1", program="web",
                    new_state="BACKOFF", pid=77, exit_status=1, time=T0 + 20))
    msg = render(alert(), batch, "vogon")
    assert msg.title == "[vogon] web: 13 more events"
    assert msg.body.startswith(
        "13 more events for web since 10:31:02: 12 × EXITED (unexpected), 1 × BACKOFF\n"), msg.body
    assert "processes: web:0, web:1" in msg.body
    assert "latest: BACKOFF of web:1 at 2026-11-23 10:31:22" in msg.body
    assert "pid: 77" in msg.body and "status: exit status 1" in msg.body
    assert msg.kind == "warning"


def test_daemon_events_carry_their_message() -> None:
    ev = Event(kind="RELOAD_FAILED", time=T0,
               message="/etc/t.yaml: 1 error(s); still running the previous configuration:\n"
                       "  /etc/t.yaml:7:10: alerts[0].url: apprise has no service 'nonsense://'")
    msg = render(alert(), Batch.of(ev), "vogon")
    assert msg.title == "[vogon] taskmasterd: RELOAD_FAILED"
    assert "/etc/t.yaml:7:10: alerts[0].url" in msg.body
    assert "pid:" not in msg.body and "program:" not in msg.body
    assert msg.kind == "failure"


def test_templates_get_every_field_as_text() -> None:
    ev = exited(pid=4242, status=-15, program="web", process="web:1")
    fields = message_fields(Batch.of(ev), "vogon", "last words")
    assert tuple(fields) == TEMPLATE_FIELDS
    assert fields["status"] == "killed by SIGTERM" and fields["count"] == "1"
    assert fields["since"] == fields["time"]
    a = alert(title="{program} is down on {host}",
              body="{count}× {event} {process} pid={pid} {status} [{state}] at {time}: {stderr_tail}")
    msg = render(a, Batch.of(ev), "vogon", "last words")
    assert msg.title == "web is down on vogon"
    assert msg.body.startswith("1× EXITED (unexpected) web:1 pid=4242 killed by SIGTERM [EXITED] at 2026-")
    assert msg.body.endswith(": last words")
    summary = Batch.of(ev, summary=True)
    summary.add(exited(pid=4243, program="db"))
    fields = message_fields(summary, "vogon")
    assert fields["program"] == "web, db" and fields["event"] == "2 × EXITED (unexpected)"
    assert fields["pid"] == "4243" and fields["count"] == "2"


# ---------------------------------------------------------------------------
# secrets


def test_short_url_drops_the_query_and_undoes_escapes() -> None:
    assert short_url("json://127.0.0.1:8000/path?method=POST&format=text") == "json://127.0.0.1:8000/path"
    assert short_url("mailto://user:****@smtp.example.com/b%40example.com?from=a%40x") == \
        "mailto://user:****@smtp.example.com/b@example.com"
    assert short_url("rsyslog://127.0.0.1:5514/user/?logpid=yes") == "rsyslog://127.0.0.1:5514/user"


def test_secrets_are_what_the_privacy_url_leaves_out() -> None:
    url = "json://user:s3cretpass@hooks.example.com/path?+X-Token=tok12345"
    privacy = "json://user:****@hooks.example.com/path?method=POST"
    secrets = secrets_of(url, privacy)
    assert "s3cretpass" in secrets and "tok12345" in secrets
    assert "hooks.example.com" not in secrets and "path" not in secrets
    assert scrub("failed for user:s3cretpass token tok12345", secrets) == \
        "failed for user:**** token ****"


@pytest.mark.parametrize(("url", "secret", "shown"), [
    ("form://user:s3cretpw@127.0.0.1:8000/hook", "s3cretpw", "form://user:****@127.0.0.1:8000/hook"),
    ("mailto://bob:hunter22@smtp.example.com?from=a@example.com&to=b@example.com", "hunter22",
     "mailto://bob:****@smtp.example.com/b@example.com"),
    ("json://127.0.0.1:8000/path", None, "json://127.0.0.1:8000/path"),
])
def test_sender_names_its_target_without_secrets(url: str, secret: str | None, shown: str) -> None:
    sender = Sender(url)
    assert sender.ok
    assert sender.url == shown
    if secret is not None:
        assert secret not in sender.url and secret in sender.secrets


def test_telegram_token_is_masked() -> None:
    sender = Sender("tgram://123456789:abcdefg_hijklmnop/12315544/")
    assert "abcdefg_hijklmnop" not in sender.url and sender.url.startswith("tgram://")


def test_a_failed_send_says_why_without_the_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    route_apprise_log()
    sender = Sender(f"json://user:pa55word@127.0.0.1:{port}/hook")
    sender_plain = Sender(f"json://127.0.0.1:{port}/hook")
    ok, detail = sender.send(Message("t", "b"))
    assert not ok and detail and "pa55word" not in detail
    ok, detail = sender_plain.send(Message("t", "b"))
    assert not ok and "127.0.0.1" in detail  # apprise's own reason


def test_every_plugin_is_unthrottled_and_tagged() -> None:
    sender = Sender("mailto://user:pw@smtp.example.com?to=ops@example.com")
    plugins = list(sender._targets)
    assert len(plugins) == 1
    assert plugins[0].request_rate_per_sec == 0  # apprise's default for e-mail is 5.5 s
    assert sender.tag in {str(t) for t in plugins[0].tags}


# ---------------------------------------------------------------------------
# the worker thread of a target


def test_worker_runs_jobs_in_order_in_one_daemon_thread() -> None:
    import threading

    worker = Worker("alert-7")
    gate = threading.Event()
    first = worker.submit(gate.wait, 30)
    names = [worker.submit(lambda i=i: (i, threading.current_thread().name,
                                         threading.current_thread().daemon)) for i in range(3)]
    queued = worker.submit(lambda: "never")
    worker.shutdown(wait=False, cancel_futures=True)  # the running job goes on; the queue is dropped
    assert queued.cancelled() and all(f.cancelled() for f in names)
    with pytest.raises(RuntimeError):
        worker.submit(lambda: None)
    gate.set()
    assert first.result(timeout=30) is True
    again = Worker("alert-8")
    results = [again.submit(lambda i=i: (i, threading.current_thread().name,
                                          threading.current_thread().daemon)) for i in range(3)]
    assert [f.result(timeout=30) for f in results] == [(i, "alert-8", True) for i in range(3)]
    failing = again.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=30)
    again.shutdown(wait=True)


# ---------------------------------------------------------------------------
# stderr tail


def test_read_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "err.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert read_tail(str(path)) == "\n".join(f"line {i}" for i in range(80, 100))
    assert read_tail(str(path), lines=3) == "line 97\nline 98\nline 99"
    # Only the end is read; a line cut in two at the start is left out.
    assert read_tail(str(path), lines=50, limit=30).splitlines()[0].startswith("line 9")
    assert read_tail(str(tmp_path / "missing")) == ""
    (tmp_path / "bin").write_bytes(b"\xff\xfeok\n")
    assert read_tail(str(tmp_path / "bin")).endswith("ok")


# ---------------------------------------------------------------------------
# the alerts: section of the config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taskmaster.yaml"
    path.write_text(text)
    return path


def issues(tmp_path: Path, text: str) -> list[ConfigIssue]:
    """What the daemon's loader (at start, at reload, for --check-config) says."""
    with pytest.raises(ConfigError) as exc:
        daemon_load(write(tmp_path, text))
    return exc.value.issues


def test_alert_keys_and_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """\
programs: {}
alerts:
  - url: json://127.0.0.1:8000/hook
  - url: "mailto://u:p@smtp.example.com?to=ops@example.com"
    events: [EXITED, fatal]
    programs: ["web-*"]
    rate: 2.5
    title: "{program} on {host}"
    body: |
      {count} × {event}
      {stderr_tail}
"""))
    first, second = config.alerts
    assert first == AlertConfig(url="json://127.0.0.1:8000/hook")
    assert first.rate == DEFAULT_ALERT_RATE == 60.0
    assert first.events == frozenset({"FATAL", "EXITED_UNEXPECTED", "TASK_FAILED", "ACTIVITY_FAILED",
                                      "ACTIVITY_SUCCEEDED"}) and first.programs == ("*",)
    assert first.title is None and first.body is None
    assert (first.line, first.column) == (3, 10)
    assert (second.line, second.column) == (4, 10)
    assert second.events == frozenset({"EXITED", "FATAL"}) and second.rate == 2.5
    assert second.title == "{program} on {host}"
    assert second.body == "{count} × {event}\n{stderr_tail}\n"


def test_url_positions_do_not_make_alerts_different(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, "alerts:\n  - url: json://x/hook\n")).alerts[0]
    b = load_config(write(tmp_path, "\n\nalerts:\n\n  -   url: json://x/hook\n")).alerts[0]
    assert (a.line, b.line) == (2, 5) and a.column != b.column
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize(("url", "phrase"), [
    ("nonsense://foo", "apprise has no service 'nonsense://'"),
    ("https://example.com/hook", "for a web hook write jsons://"),
    ("json://", "apprise cannot use this json:// URL"),
    ('"mailto://user:s3cret@"', "apprise cannot use this mailto:// URL"),
    ('"json://a/x, json://b/y"', "write one '- url:' item per target"),
    ("example.com/hook", "expected a URL like json://example.com/hook"),
])
def test_an_url_apprise_cannot_use_is_an_error_at_its_line(tmp_path: Path, url: str, phrase: str) -> None:
    found = issues(tmp_path, f"programs: {{}}\nalerts:\n  - url: json://ok/hook\n  - url: {url}\n")
    assert len(found) == 1, found
    issue = found[0]
    assert (issue.line, issue.column, issue.keypath) == (4, 10, "alerts[1].url"), str(issue)
    assert phrase in issue.message, str(issue)
    assert "s3cret" not in str(issue)  # an URL is never quoted back


@pytest.mark.parametrize(("key", "value", "phrase"), [
    ("title", '"{programme} down"', "unknown template field {programme} (did you mean {program}?)"),
    ("body", '"{0} and {}"', "template fields must be named"),
    ("body", '"{pid.real}"', "only plain names are allowed, like {pid}"),
    ("title", '"{pid:d}"', "invalid template"),
    ("title", '"unclosed {host"', "invalid template"),
    ("body", '"}"', "invalid template"),
    ("title", '""', "found an empty string"),
    ("rate", "-1", "must be >= 0"),
    ("rate", '"60"', "expected a number of seconds"),
])
def test_bad_rate_or_template_is_an_error_at_its_line(tmp_path: Path, key: str, value: str,
                                                      phrase: str) -> None:
    found = issues(tmp_path, f"alerts:\n  - url: json://x/hook\n    {key}: {value}\n")
    assert len(found) == 1, found
    issue = found[0]
    assert (issue.line, issue.keypath) == (3, f"alerts[0].{key}"), str(issue)
    assert phrase in issue.message, str(issue)


def test_literal_braces_are_fine(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'alerts:\n  - url: json://x/hook\n    body: "{{json}} {host}"\n'))
    batch = Batch.of(exited())
    assert render(config.alerts[0], batch, "vogon").body == "{json} vogon"


def test_unknown_alert_key_lists_every_key(tmp_path: Path) -> None:
    (issue,) = issues(tmp_path, "alerts:\n  - url: json://x/hook\n    zzz: 1\n")
    assert "an alert accepts: url, events, programs, rate, title, body" in issue.message


def test_the_schema_leaves_apprise_to_the_loader(tmp_path: Path) -> None:
    """config.load_config checks an URL's syntax only; apprise's verdict comes
    from alerts.urls, at the place the config kept (here on line 4)."""
    path = write(tmp_path, "programs: {}\nalerts:\n  - url: json://ok/hook\n  -   url: nonsense://foo\n")
    config = load_config(path)
    assert [(a.line, a.column) for a in config.alerts] == [(3, 10), (4, 12)]
    [issue] = url_issues(config)
    assert (issue.file, issue.line, issue.column, issue.keypath) == (config.path, 4, 12, "alerts[1].url")
    assert str(issues(tmp_path, path.read_text())[0]) == f"{path}:4:12: alerts[1].url: {issue.message}"


def test_an_url_in_a_file_with_odd_line_breaks_is_placed_as_editors_count(tmp_path: Path) -> None:
    # A lone CR is a line break for YAML, not for editors or sed -n: issues
    # count lines at \n only, the URL check after loading included.
    text = "# a comment\r# with a lone CR in it\nalerts:\n  - url: nonsense://foo\n"
    [issue] = issues(tmp_path, text)
    assert (issue.line, issue.column, issue.keypath) == (3, 10, "alerts[0].url")


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(["json", "mailto", "tgram", "syslog", "https", "x", "Json"]),
       st.text(max_size=20), st.text(max_size=30))
def test_url_problem_never_raises_nor_quotes_the_url(scheme: str, user: str, rest: str) -> None:
    # What the schema lets through: scheme://anything (the scheme is named back).
    problem = url_problem(f"{scheme}://{user}:S3cretZ@{rest}")
    assert problem is None or "S3cretZ" not in problem


def test_a_schema_error_comes_before_the_url_check(tmp_path: Path) -> None:
    """apprise is asked once the file is otherwise valid (as for journald)."""
    found = issues(tmp_path, "alerts:\n  - url: nonsense://foo\n    rate: -1\n")
    assert [(i.line, i.keypath) for i in found] == [(3, "alerts[0].rate")]


def _imports(code: str, *, block_apprise: bool = False) -> set[str]:
    """Which of apprise and asyncio `code` imports (run in a fresh interpreter)."""
    shim = "import sys; sys.modules['apprise'] = None\n" if block_apprise else ""
    r = subprocess.run([sys.executable, "-c", shim + code + "\nimport sys; print(sorted("
                        "m for m in ('apprise', 'asyncio') if sys.modules.get(m) is not None))"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return set(eval(r.stdout.strip().splitlines()[-1]))


def test_apprise_is_imported_only_for_a_file_with_alerts(tmp_path: Path) -> None:
    plain = write(tmp_path, "programs:\n  web: {cmd: /bin/true}\n")
    load = f"from taskmasterd.hostcheck import load; load({str(plain)!r})"
    assert "apprise" not in _imports(load)
    assert "apprise" not in _imports("import taskctl.cli, taskctl.client, taskmasterd.daemon")
    with_alerts = tmp_path / "alerts.yaml"
    with_alerts.write_text("alerts:\n  - url: json://x/hook\n")
    assert "apprise" in _imports(f"from taskmasterd.hostcheck import load; load({str(with_alerts)!r})")
    # The schema alone never imports it, and works without it.
    schema = f"from taskmasterd.config import load_config; load_config({str(with_alerts)!r})"
    assert "apprise" not in _imports(schema)
    assert "apprise" not in _imports(schema, block_apprise=True)


def test_without_apprise_the_loader_says_to_install_it(tmp_path: Path) -> None:
    path = write(tmp_path, "alerts:\n  - url: json://x/hook\n")
    code = ("from taskmasterd.hostcheck import load\nfrom taskmasterd.config import ConfigError\n"
            f"try:\n    load({str(path)!r})\nexcept ConfigError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", "import sys; sys.modules['apprise'] = None\n" + code],
                       capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert f"{path}:2:10: alerts[0].url: alerts need the apprise package" in r.stdout, r.stdout + r.stderr


def test_the_pure_alert_modules_import_neither_asyncio_nor_apprise() -> None:
    pure = ", ".join(f"taskmasterd.alerts.{m}" for m in ("match", "throttle", "render", "redact", "tail"))
    assert _imports(f"import {pure}") == set()
    # The package re-exports the dispatcher's names, imported on first use.
    assert _imports("from taskmasterd.alerts import AlertDispatcher") == {"asyncio"}


def test_the_schema_tests_pass_without_apprise() -> None:
    """tests/unit/test_config.py, with `import apprise` failing: the schema
    needs no apprise (issue 12: 37 of them failed)."""
    shim = ("import sys; sys.modules['apprise'] = None\nimport pytest\n"
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/unit/test_config.py']))")
    r = subprocess.run([sys.executable, "-c", shim], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and " failed" not in r.stdout


# ---------------------------------------------------------------------------
# tasks and activities


def task_end(state: str = "failed", kind: str = "TASK_FAILED", name: str = "deploy",
             activity: str = "0a1b2c3d", status: int | None = 3,
             reason: str = "exited with status 3") -> Event:
    from taskmasterd.events import TaskChange

    return Event(kind=kind, message=f"task {name} (3df2bb24) {state}: {reason}", process="3df2bb24",
                 program=name, pid=77, exit_status=status, time=T0,
                 task=TaskChange("3df2bb24", name, "running", state, activity, status, None, reason))


def activity_end(state: str = "failed", kind: str = "ACTIVITY_FAILED") -> Event:
    from taskmasterd.events import TaskChange

    return Event(kind=kind, message=f"activity release (0a1b2c3d) {state}", process="0a1b2c3d",
                 program="release", time=T0,
                 task=TaskChange("0a1b2c3d", "release", "running", state, "0a1b2c3d",
                                 reason="its task 3df2bb24 failed", is_activity=True))


def test_task_events_can_be_asked_for_and_some_are_in_the_defaults() -> None:
    a = alert()
    assert matches(a, task_end())
    assert matches(a, activity_end())
    assert matches(a, activity_end("succeeded", "ACTIVITY_SUCCEEDED"))
    assert not matches(a, task_end("succeeded", "TASK_SUCCEEDED", status=0, reason=""))
    assert not matches(a, task_end("lost", "TASK_LOST", status=None))
    assert matches(alert(events=frozenset({"TASK_LOST"})), task_end("lost", "TASK_LOST"))
    for kind in ("TASK_FAILED", "TASK_LOST", "ACTIVITY_FAILED", "ACTIVITY_SUCCEEDED"):
        assert kind in ALERT_EVENTS and alert_name(task_end(kind=kind)) == kind
    # programs: globs match a task's name or id
    assert matches(alert(programs=("dep*",)), task_end())
    assert matches(alert(programs=("3df2bb24",)), task_end())
    assert not matches(alert(programs=("web",)), task_end())


def test_a_task_message_says_name_id_state_activity_reason_status_and_its_stderr() -> None:
    msg = render(alert(), Batch.of(task_end()), "vogon", "ssh: connect refused")
    assert msg.title == "[vogon] task deploy (3df2bb24): TASK_FAILED"
    for text in ("task deploy (3df2bb24): failed", "activity: 0a1b2c3d",
                 "reason: exited with status 3", "status: exit status 3", "pid: 77",
                 "last lines of the stderr of task 3df2bb24:\nssh: connect refused"):
        assert text in msg.body, msg.body
    assert "program:" not in msg.body
    assert msg.kind == "failure"
    act = render(alert(), Batch.of(activity_end()), "vogon", "boom")
    assert act.title == "[vogon] activity release (0a1b2c3d): ACTIVITY_FAILED"
    assert "activity release (0a1b2c3d): failed" in act.body
    assert "reason: its task 3df2bb24 failed" in act.body
    assert "last lines of the stderr of its failed task:\nboom" in act.body
    assert act.kind == "failure"
    ok = render(alert(), Batch.of(activity_end("succeeded", "ACTIVITY_SUCCEEDED")), "vogon")
    assert ok.kind == "info"
    assert message_fields(Batch.of(task_end()), "vogon")["state"] == "failed"
