"""`taskctl history`'s pure parts: lifecycle log lines and journal entries
(both produced by the daemon's own writers, so a change of their format
fails here), the old states a log file does not carry, --since, the
selection, and the output."""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import logging
import os
import time
from pathlib import Path

import pytest

from taskctl import history
from taskctl.history import Entry, parse_time
from taskctl.parser import build_parser
from taskmasterd import journal, logsink
from taskmasterd.events import Event, Kind
from taskmasterd.lifecycle import SpawnError
from taskmasterd.states import State

T0 = dt.datetime(2026, 12, 2, 10, 0, 0).timestamp()

EVENTS = [
    Event(Kind.DAEMON_START, "taskmasterd 0.1.0 started", pid=40, time=T0),
    Event(State.STARTING, "spawned with pid 41", "web:0", "web", State.STOPPED, State.STARTING,
          pid=41, time=T0 + 1),
    Event(State.RUNNING, "entered RUNNING state", "web:0", "web", State.STARTING, State.RUNNING,
          pid=41, time=T0 + 2.5),
    Event(State.STARTING, "spawned with pid 42", "db", "db", State.STOPPED, State.STARTING,
          pid=42, time=T0 + 3),
    Event(State.EXITED, "exited (exit status 3; not expected)", "web:0", "web", State.RUNNING,
          State.EXITED, pid=41, exit_status=3, expected=False, time=T0 + 4),
    Event(Kind.SPAWN_ERROR, "spawn error: ENOENT (execve /x): No such file or directory",
          "web:0", "web", spawn_error=SpawnError("ENOENT", "execve /x", "No such file or directory"),
          time=T0 + 5),
    Event(State.BACKOFF, "exited too quickly", "web:0", "web", State.STARTING, State.BACKOFF,
          pid=43, exit_status=-9, time=T0 + 6),
]


def line(event: Event) -> str:
    """The event's line as the daemon's LifecycleLog formats it, at the event's time."""
    record = logging.makeLogRecord({"msg": logsink.format_event(event),
                                    "levelno": logsink.level_of(event),
                                    "levelname": logging.getLevelName(logsink.level_of(event))})
    record.created, record.msecs = event.time, int(event.time % 1 * 1000)
    return logsink._FORMAT.format(record) + "\n"


def written_log(tmp_path: Path, events: list[Event], name: str = "taskmasterd.log") -> Path:
    path = tmp_path / name
    path.write_text("".join(line(e) for e in events))
    return path


def test_the_daemons_log_file_is_read_back(tmp_path: Path) -> None:
    """Through the real writer (LifecycleLog), at the real time."""
    path = tmp_path / "taskmasterd.log"
    lifelog = logsink.LifecycleLog(str(path), stderr=False)
    before = time.time()
    try:
        for e in EVENTS:
            lifelog.write(e)
    finally:
        lifelog.close()
    entries = list(history.read_log(str(path)))
    assert [(e.process, e.kind, e.pid, e.exit_status, e.message) for e in entries] == [
        (e.process, e.kind, e.pid, e.exit_status, e.message) for e in EVENTS]
    assert before - 1 <= entries[0].time <= time.time()


def as_read(event: Event) -> dict[str, object]:
    """journal.fields(event) as systemd.journal.Reader gives it back."""
    out: dict[str, object] = dict(journal.fields(event))
    out["__REALTIME_TIMESTAMP"] = dt.datetime.fromtimestamp(event.time)
    out["PRIORITY"] = int(str(out["PRIORITY"]))
    return out


def test_log_lines_parse_back_to_the_events(tmp_path: Path) -> None:
    entries = list(history.read_log(str(written_log(tmp_path, EVENTS))))
    assert [(e.process, e.kind) for e in entries] == [(e.process, e.kind) for e in EVENTS]
    exited = entries[4]
    assert exited == Entry(T0 + 4, "web:0", "web", "EXITED", "RUNNING", 41, 3, False,
                           "exited (exit status 3; not expected)")
    assert entries[0].program == "" and entries[0].time == T0
    assert entries[2].time == pytest.approx(T0 + 2.5)
    assert entries[3].program == "db" and entries[3].old == ""  # its first line: unknown
    assert entries[5].message.startswith("spawn error: ENOENT") and entries[5].old == ""
    assert entries[6].exit_status == -9 and entries[6].old == "EXITED"  # SPAWN_ERROR is no state


def test_journal_entries_parse_back_to_the_events() -> None:
    entries = [history.from_journal(as_read(e)) for e in EVENTS]
    log_entries = list(history.with_old_states(history.parse_log_line(line(e)) for e in EVENTS))
    assert entries[4] == Entry(T0 + 4, "web:0", "web", "EXITED", "RUNNING", 41, 3, False,
                               "exited (exit status 3; not expected)")
    # the journal knows every old state (the log file infers them)
    assert entries[1] is not None and entries[1].old == "STOPPED"
    assert entries[3] is not None and entries[3].old == "STOPPED"
    for j, f in zip(entries, log_entries, strict=True):
        assert j is not None and f is not None
        assert j._replace(old="") == f._replace(old="")


def test_other_lines_and_entries_are_not_events() -> None:
    assert history.parse_log_line("2026-12-02 10:00:00.000 WARNING log: cannot write the log "
                                  "file /x (No space left on device); supervision goes on") is None
    assert history.parse_log_line("Traceback (most recent call last):") is None
    assert history.parse_log_line("2026-12-02 10:00:00.000 INFO web:0 RUNN") is None  # cut short
    assert history.parse_log_line("2026-12-02 10:00:00.000 INFO web NOTAKIND: x") is None
    # the daemon's stderr under systemd: same identifier, no TASKMASTER_ fields
    assert history.from_journal({"MESSAGE": "dbus: lost the bus", "SYSLOG_IDENTIFIER":
                                 "taskmasterd"}) is None


def test_a_daemon_start_forgets_the_old_states() -> None:
    e = [Entry(T0, "web", "web", "RUNNING", "", 1, None, None, ""),
         Entry(T0 + 1, "taskmasterd", "", "DAEMON_START", "", 0, None, None, ""),
         Entry(T0 + 2, "web", "web", "STARTING", "", 2, None, None, "")]
    assert [x.old for x in history.with_old_states(e)] == ["", "", ""]


def test_rotated_log_files_are_read_oldest_first(tmp_path: Path) -> None:
    path = written_log(tmp_path, EVENTS[4:])
    written_log(tmp_path, EVENTS[1:4], "taskmasterd.log.1")
    with gzip.open(tmp_path / "taskmasterd.log.2.gz", "wt") as f:
        f.write(line(EVENTS[0]))
    written_log(tmp_path, EVENTS, "taskmasterd.log.old")  # not logrotate's: ignored
    assert history.log_files(str(path)) == [str(path) + ".2.gz", str(path) + ".1", str(path)]
    entries = list(history.read_log(str(path)))
    assert [e.kind for e in entries] == [e.kind for e in EVENTS]
    assert entries[4].old == "RUNNING"  # across files


def test_a_missing_or_unreadable_log_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(history.SourceError, match=r"no log file at .*/nope.*--file PATH"):
        list(history.read_log(str(tmp_path / "nope")))
    if os.geteuid() == 0:
        return  # root reads anything
    path = written_log(tmp_path, EVENTS)
    path.chmod(0)
    with pytest.raises(history.SourceError, match="permission denied"):
        list(history.read_log(str(path)))


def test_selection_by_program_process_glob_and_all() -> None:
    entries = [history.from_journal(as_read(e)) for e in EVENTS]
    got = [e for e in entries if e is not None]

    def names(target: str) -> list[str]:
        return [f"{e.process} {e.kind}" for e in history.window(got, target, None, None, None)]

    assert names("db") == ["db STARTING"]
    assert names("web") == names("web:0") == names("w*") == [
        "web:0 STARTING", "web:0 RUNNING", "web:0 EXITED", "web:0 SPAWN_ERROR", "web:0 BACKOFF"]
    assert names("web:1") == [] and names("we") == []
    assert names("all")[0] == "taskmasterd DAEMON_START" and len(names("all")) == len(EVENTS)
    assert [e.kind for e in history.window(got, "web", T0 + 2, T0 + 5, None)] == [
        "RUNNING", "EXITED", "SPAWN_ERROR"]
    assert [e.kind for e in history.window(got, "all", None, None, 2)] == ["SPAWN_ERROR", "BACKOFF"]


NOW = dt.datetime(2026, 12, 2, 15, 30, 20).timestamp()


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("1h", NOW - 3600), ("-1h", NOW - 3600), ("1h ago", NOW - 3600), ("1 hour ago", NOW - 3600),
    ("30min", NOW - 1800), ("2d 3h", NOW - 2 * 86400 - 3 * 3600), ("90s", NOW - 90),
    ("1w", NOW - 7 * 86400), ("1.5h", NOW - 5400),
    ("today", dt.datetime(2026, 12, 2).timestamp()),
    ("yesterday", dt.datetime(2026, 12, 1).timestamp()),
    ("10:00", dt.datetime(2026, 12, 2, 10, 0).timestamp()),
    ("10:00:05", dt.datetime(2026, 12, 2, 10, 0, 5).timestamp()),
    ("2026-11-30", dt.datetime(2026, 11, 30).timestamp()),
    ("2026-11-30 08:15", dt.datetime(2026, 11, 30, 8, 15).timestamp()),
    ("2026-11-30 08:15:09", dt.datetime(2026, 11, 30, 8, 15, 9).timestamp()),
    ("2026-11-30T08:15", dt.datetime(2026, 11, 30, 8, 15).timestamp()),
    ("@1764669600", 1764669600.0),
])
def test_since_takes_journalctl_times(text: str, expected: float) -> None:
    assert parse_time(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "soon", "1x", "1h x", "2026-13-01", "25:00", "@x", "h"])
def test_a_bad_time_says_what_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a time: .*examples: 1h"):
        parse_time(text, NOW)


class _Ctx:
    """What history.run uses of cli.Context; no daemon (client: never called with --file)."""

    def __init__(self, json_output: bool = False) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.json = json_output
        self.client = None

    def print(self, line: str = "") -> None:
        self.out.write(line + "\n")

    def error(self, line: str) -> None:
        self.err.write(line + "\n")


def run(argv: list[str], json_output: bool = False) -> tuple[int, str, str]:
    args = build_parser().parse_args(["history", *argv])
    ctx = _Ctx(json_output or bool(getattr(args, "json", False)))
    code = history.run(ctx, args, now=T0 + 60)  # type: ignore[arg-type]
    return code, ctx.out.getvalue(), ctx.err.getvalue()


def test_the_table(tmp_path: Path) -> None:
    path = written_log(tmp_path, EVENTS)
    code, out, err = run(["--file", str(path), "web"])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "PROCESS", "CHANGE", "PID", "STATUS", "MESSAGE"]
    assert lines[1].startswith("2026-12-02 10:00:01.000  web:0")
    assert "? -> STARTING" in lines[1]
    assert "RUNNING -> EXITED" in lines[3] and "exit 3 (unexpected)" in lines[3]
    assert lines[3].endswith("exited (exit status 3; not expected)")
    assert "  SPAWN_ERROR  " in lines[4] and "  -  " in lines[4]
    assert "EXITED -> BACKOFF" in lines[5] and "SIGKILL" in lines[5]
    # columns line up: the MESSAGE column starts at the same place on every line
    starts = {line.index(m) for line, m in zip(lines, ["MESSAGE", "spawned", "entered", "exited"],
                                                  strict=False)}
    assert len(starts) == 1


def test_json_is_one_object_per_line_with_the_events_keys(tmp_path: Path) -> None:
    path = written_log(tmp_path, EVENTS)
    code, out, _err = run(["--json", "--file", str(path), "-n", "2", "web:0"])
    objs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(objs) == 2
    assert objs[0] == {"time": T0 + 5, "process": "web:0", "program": "web",
                       "event": "SPAWN_ERROR", "old": None, "new": None, "pid": None,
                       "exit_status": None, "expected": None,
                       "message": "spawn error: ENOENT (execve /x): No such file or directory"}
    assert objs[1]["old"] == "EXITED" and objs[1]["new"] == "BACKOFF"
    assert objs[1]["exit_status"] == -9


def test_since_until_and_what_nothing_found_says(tmp_path: Path) -> None:
    path = written_log(tmp_path, EVENTS)
    code, out, _ = run(["--file", str(path), "--since", "@" + str(T0 + 3), "--until",
                        "@" + str(T0 + 4), "all"])
    assert code == 0 and [line.split()[2] for line in out.splitlines()[1:]] == ["db", "web:0"]
    code, out, err = run(["--file", str(path), "--since", "10s", "web"])  # now is T0 + 60
    assert (code, out) == (0, "") and err == "taskctl history: no events of web in that time\n"
    code, out, err = run(["--file", str(path), "--since", "soon", "web"])
    assert code == 2 and "not a time: 'soon'" in err
    code, out, err = run(["--file", str(tmp_path / "none.log"), "web"])
    assert code == 1 and err.startswith("taskctl history: no log file at ")


def test_no_journal_access_names_the_fix(tmp_path: Path) -> None:
    machine = tmp_path / "journal" / "0123456789abcdef"
    machine.mkdir(parents=True)
    (machine / "system.journal").write_bytes(b"")
    (machine / "system.journal").chmod(0)
    dirs = (str(tmp_path / "journal"),)
    assert history.journal_problem(dirs, euid=0) is None  # root reads everything
    if os.geteuid() != 0:
        problem = history.journal_problem(dirs, euid=os.geteuid())
        assert problem is not None and "systemd-journal" in problem and "--file" in problem
    (machine / "system.journal").chmod(0o644)
    assert history.journal_problem(dirs, euid=12345) is None
    assert history.journal_problem((str(tmp_path / "none"),), euid=12345) is None  # no journal


def test_no_journal_access_as_another_user() -> None:
    """The same, as a user who cannot read a root-only file (needs root to be one)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to uid 65534")
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tm-test-") as d:  # pytest's tmp_path is 0700
        top = Path(d)
        machine = top / "journal" / "m"
        machine.mkdir(parents=True)
        (machine / "system.journal").write_bytes(b"")
        (machine / "system.journal").chmod(0o640)
        for sub in (top, top / "journal", machine):
            sub.chmod(0o755)
        code = (f"from taskctl.history import journal_problem as p; "
                f"print(p(({str(top / 'journal')!r},)))")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert "join the group systemd-journal" in r.stdout, r.stderr


def test_history_is_a_command_with_target_completion() -> None:
    from taskctl.parser import COMMAND_NAMES, TARGET_COMMANDS, help_text

    assert "history" in COMMAND_NAMES and "history" in TARGET_COMMANDS
    assert "--since TIME" in help_text("history")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["history", "-n", "0", "web"])
    args = build_parser().parse_args(["history", "web"])
    assert isinstance(args, argparse.Namespace) and args.target == "web" and args.lines is None


class _NoDaemon:
    def config_file(self) -> str:
        from taskctl.model import Unreachable

        raise Unreachable("the system bus", "no such file", kind="system")


def test_without_a_daemon_the_default_location_is_read_and_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(No journald here: the auto choice would read the journal.)"""
    monkeypatch.setattr(history, "JOURNAL_SOCKET", str(tmp_path / "no-journald"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no configuration there
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # a user's default locations
    args = build_parser().parse_args(["history", "web"])
    ctx = _Ctx()
    ctx.client = _NoDaemon()  # type: ignore[assignment]
    assert history.run(ctx, args, now=T0 + 60) == 1  # type: ignore[arg-type]
    expected = tmp_path / "state" / "taskmaster" / "log" / "taskmasterd.log"
    assert ctx.err.getvalue().startswith(f"taskctl history: no log file at {expected} ")
    assert "taskmasterd is not reachable to say where its log is" in ctx.err.getvalue()
    expected.parent.mkdir(parents=True)
    written_log(expected.parent, EVENTS)
    ctx = _Ctx()
    ctx.client = _NoDaemon()  # type: ignore[assignment]
    assert history.run(ctx, args, now=T0 + 60) == 0  # type: ignore[arg-type]
    assert len(ctx.out.getvalue().splitlines()) == 1 + 5


def test_the_shell_completes_history_names_and_options() -> None:
    from taskctl.shell import complete_words

    assert complete_words("history ", "w", lambda: ["web:0", "web:1", "db"]) == ["web:0", "web:1"]
    assert complete_words("history ", "--s", lambda: []) == ["--since"]
    assert complete_words("", "hi", lambda: []) == ["history"]
