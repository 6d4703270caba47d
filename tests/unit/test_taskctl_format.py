"""taskctl's pure parts: rendering, target filtering, exit codes, JSON shapes,
bus resolution, shell completion. No daemon, no bus."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskctl import cli, commands, context, follow, parser, shell
from taskctl import format as fmt
from taskctl.client import candidates
from taskctl.model import CallError, OwnerChanged, ProcessRow, Reloaded, StateChange, Unreachable
from taskctl.plan import Setting
from taskmasterd import states
from taskmasterd.busaddr import BusChoice

NOW = 1_700_000_000.0
US = 1_000_000


def row(name: str, state: str = "RUNNING", *, program: str | None = None, pid: int = 0,
        status: int = 0, up: float | None = None, description: str = "",
        spawn_error: str = "", restarts: int = 0) -> ProcessRow:
    started = int((NOW - up) * US) if up is not None else 0
    return ProcessRow(name, program or name.partition(":")[0], state, pid, status, started,
                      description, spawn_error, restarts)


ROWS = [
    row("web:0", pid=101, up=62, description="pid 101, uptime 0:01:02"),
    row("web:1", pid=102, up=3723, description="pid 102, uptime 1:02:03"),
    row("web-api", pid=103, up=5, description="pid 103, uptime 0:00:05"),
    row("crashy", "FATAL", spawn_error="ENOENT (execve /x): No such file or directory",
        description="spawn error: ENOENT (execve /x): No such file or directory"),
    row("idle", "STOPPED", description="not started"),
    row("flaky", "EXITED", status=-9, description="killed by SIGKILL"),
]
LOOP = row("loop", "FATAL", status=5, restarts=10,
           description="start limit hit (10 restarts in 0.04 s); last: exit status 5")


# ---- rendering ----------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0:00:00"), (59.9, "0:00:59"), (62, "0:01:02"), (3723, "1:02:03"),
    (100 * 3600 + 1, "100:00:01"), (-5, "0:00:00"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert fmt.format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**7))
def test_format_duration_round_trips(seconds: int) -> None:
    h, m, s = fmt.format_duration(seconds).split(":")
    assert len(m) == len(s) == 2 and int(h) * 3600 + int(m) * 60 + int(s) == seconds


@pytest.mark.parametrize(("status", "text"), [
    (0, "exit status 0"), (1, "exit status 1"), (255, "exit status 255"),
    (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM"), (-200, "killed by signal 200"),
])
def test_describe_status(status: int, text: str) -> None:
    assert states.describe_status(status) == text


def test_describe_row_uses_uptime_for_live_processes_and_the_daemon_otherwise() -> None:
    by = {r.name: r for r in ROWS}
    assert fmt.describe_row(by["web:0"], NOW) == "uptime 0:01:02"
    assert fmt.describe_row(by["web:1"], NOW + 10) == "uptime 1:02:13"  # computed, not copied
    assert fmt.describe_row(by["crashy"], NOW) == by["crashy"].description
    assert fmt.describe_row(by["idle"], NOW) == "not started"
    assert fmt.describe_row(by["flaky"], NOW) == "killed by SIGKILL"


def test_describe_row_fallbacks() -> None:
    # An up state without a start time: the daemon's text, minus the pid (its own column).
    r = row("w", "STOPPING", pid=7, description="pid 7, uptime 0:00:03")
    assert fmt.describe_row(r, NOW) == "uptime 0:00:03"
    # A spawn error the description does not mention; an exit status with no text.
    assert fmt.describe_row(row("c", "BACKOFF", spawn_error="EACCES (execve /x)"), NOW) == \
        "spawn error: EACCES (execve /x)"
    assert fmt.describe_row(row("e", "EXITED", status=3), NOW) == "exit status 3"


def test_describe_row_counts_automatic_restarts_once_there_are_any() -> None:
    by = {r.name: r for r in ROWS}
    assert fmt.describe_row(LOOP, NOW) == \
        "start limit hit (10 restarts in 0.04 s); last: exit status 5, restarts 10"
    looping = row("w", pid=7, up=0, description="pid 7, uptime 0:00:00", restarts=1234)
    assert fmt.describe_row(looping, NOW) == "uptime 0:00:00, restarts 1234"
    assert fmt.describe_row(row("w", "STOPPED", restarts=3), NOW) == "restarts 3"
    assert "restarts" not in fmt.describe_row(by["web:0"], NOW)  # none: nothing said


def test_status_table_is_aligned_with_a_header() -> None:
    lines = fmt.status_lines(ROWS, NOW)
    assert lines[0].split() == ["NAME", "STATE", "PID", "DESCRIPTION"]
    assert len(lines) == len(ROWS) + 1
    width = max(len(r.name) for r in ROWS)
    state_col = lines[0].index("STATE")
    pid_col = lines[0].index("PID")
    desc_col = lines[0].index("DESCRIPTION")
    assert state_col == width + 3
    for line, r in zip(lines[1:], ROWS, strict=True):
        assert line[:state_col].rstrip() == r.name
        assert line[state_col:pid_col].rstrip() == r.state
        assert line[pid_col:desc_col].rstrip() == (str(r.pid) if r.pid else "-")
        assert line[desc_col:] == fmt.describe_row(r, NOW)
    assert lines[1].endswith("uptime 0:01:02") and "FATAL" in lines[4]
    assert all(line == line.rstrip() for line in lines)


def test_format_table_does_not_pad_the_last_column() -> None:
    assert fmt.format_table(("A", "B"), [("xx", ""), ("y", "z")]) == ["A    B", "xx", "y    z"]


# ---- targets ------------------------------------------------------------------------


@pytest.mark.parametrize(("targets", "names", "missing"), [
    ([], ["web:0", "web:1", "web-api", "crashy", "idle", "flaky"], []),
    (["all"], ["web:0", "web:1", "web-api", "crashy", "idle", "flaky"], []),
    (["web"], ["web:0", "web:1"], []),
    (["web:1"], ["web:1"], []),
    (["web-*"], ["web-api"], []),
    (["web*"], ["web:0", "web:1", "web-api"], []),
    (["web:?"], ["web:0", "web:1"], []),
    (["[ci]*"], ["crashy", "idle"], []),
    (["idle", "web:0"], ["web:0", "idle"], []),  # the daemon's order, not the targets'
    (["web", "web:0"], ["web:0", "web:1"], []),  # no duplicates
    (["nope", "idle"], ["idle"], ["nope"]),
    (["web:2", "x*"], [], ["web:2", "x*"]),
    (["we"], [], ["we"]),  # no prefix matching
])
def test_filter_rows_follows_the_daemon_rules(targets: list[str], names: list[str],
                                              missing: list[str]) -> None:
    shown, not_found = fmt.filter_rows(ROWS, targets)
    assert [r.name for r in shown] == names
    assert not_found == missing


@given(st.lists(st.sampled_from([r.name for r in ROWS] + ["web", "all", "*", "nope"]), max_size=4))
def test_filter_rows_is_a_subsequence(targets: list[str]) -> None:
    shown, missing = fmt.filter_rows(ROWS, targets)
    assert [r for r in ROWS if r in shown] == shown
    assert set(missing) <= set(targets)
    assert all(any(fmt.matches(t, r) for t in targets) for r in shown) or not targets


# ---- exit codes ------------------------------------------------------------------------


def test_status_exit_codes() -> None:
    running = [r for r in ROWS if r.state == "RUNNING"]
    assert fmt.status_exit_code(running) == 0
    assert fmt.status_exit_code([]) == 0
    assert fmt.status_exit_code(ROWS) == 3
    assert fmt.status_exit_code([row("s", "STARTING")]) == 3
    assert fmt.status_exit_code(running, ["nope"]) == 4


@pytest.mark.parametrize(("error", "code"), [
    ("NoSuchProgram", 4), ("BadName", 4), ("AlreadyStarted", 1), ("NotRunning", 1),
    ("ConfigInvalid", 1), ("AccessDenied", 1), ("ShuttingDown", 1), ("Failed", 1),
    ("ServiceUnknown", 7), ("NameHasNoOwner", 7), ("NoReply", 7), ("Whatever", 1),
    ("NoConsole", 1),
])
def test_exit_code_for_errors(error: str, code: int) -> None:
    assert fmt.exit_code_for(error) == code


def test_error_lines() -> None:
    exc = CallError("org.taskmaster.Taskmaster1.Error.AlreadyStarted", "idle is already RUNNING")
    assert exc.name == "AlreadyStarted" and exc.message == "idle is already RUNNING"
    assert fmt.error_line("idle", exc) == "idle: ERROR (already started): idle is already RUNNING"
    denied = CallError("org.freedesktop.DBus.Error.AccessDenied", "Rejected send message, 2 matched")
    line = fmt.error_line("web", denied)
    assert line.startswith("web: ERROR (access denied): ") and "group taskmaster" in line
    assert fmt.error_line("x", CallError("a.b.Odd", "")) == "x: ERROR (Odd)"


def test_unreachable_is_one_line_with_a_hint() -> None:
    exc = Unreachable("the system bus", "org.taskmaster.Taskmaster1 has no owner", kind="system")
    assert exc.line() == ("cannot reach taskmasterd on the system bus (org.taskmaster.Taskmaster1 "
                          "has no owner); start it with: systemctl start taskmasterd  "
                          "(or: taskmasterd -c FILE)")
    for kind, hint in [("user", "systemctl --user start"), ("private", "taskmasterd -c FILE"),
                       ("address", "taskmasterd --address 'unix:path=/x' -c FILE")]:
        line = Unreachable("b", "r", kind=kind, address="unix:path=/x").line()
        assert "\n" not in line and hint in line


def test_action_lines() -> None:
    assert fmt.action_lines("start", ["web:0", "web:1"]) == ["web:0: started", "web:1: started"]
    assert fmt.action_lines("stop", ["idle"]) == ["idle: stopped"]
    assert fmt.action_lines("restart", ["w"]) == ["w: restarted"]
    assert fmt.action_lines("signal", ["w"]) == ["w: signalled"]


# ---- JSON shapes ----------------------------------------------------------------------------


def test_row_json_shape() -> None:
    by = {r.name: r for r in ROWS}
    live = fmt.row_json(by["web:0"], NOW)
    assert live == {"name": "web:0", "program": "web", "state": "RUNNING", "pid": 101,
                    "exit_status": 0, "started_at": NOW - 62, "uptime": 62,
                    "description": "uptime 0:01:02", "spawn_error": None, "restarts": 0,
                    "last_exit": None}
    assert fmt.row_json(LOOP, NOW)["restarts"] == 10
    crashed = LOOP._replace(last_exit_status=-9, last_exit_us=int((NOW - 5) * 1_000_000),
                            last_exit_expected=False)
    assert fmt.row_json(crashed, NOW)["last_exit"] == {"status": -9, "time": NOW - 5,
                                                        "expected": False}
    dead = fmt.row_json(by["crashy"], NOW)
    assert dead["pid"] is None and dead["started_at"] is None and dead["uptime"] is None
    assert dead["spawn_error"].startswith("ENOENT")
    assert json.loads(json.dumps([fmt.row_json(r, NOW) for r in ROWS]))


def test_result_and_reload_json() -> None:
    assert fmt.result_json("web", ["web:0"]) == {"target": "web", "ok": True,
                                                 "processes": ["web:0"]}
    err = fmt.result_json("nope", None, CallError("org.taskmaster.Taskmaster1.Error.NoSuchProgram",
                                                  "no such program: 'nope'"))
    assert err == {"target": "nope", "ok": False, "error": "NoSuchProgram",
                   "message": "no such program: 'nope'"}
    result = Reloaded(("c",), ("b",), ("a", "d"))
    assert fmt.reload_json(result) == {"added": ["c"], "changed": ["b"], "removed": ["a", "d"]}
    assert fmt.reload_json(result, ())["settings"] == []
    assert fmt.reload_lines(result) == ["added: c", "changed: b", "removed: a, d"]
    assert fmt.reload_lines(Reloaded((), ("b",), ())) == ["changed: b"]
    assert fmt.reload_lines(Reloaded((), (), ())) == ["no changes"]
    # the settings it changed (API 1.7), after the programs; alone, they are a change
    keep = Setting("tasks.keep", "7", "1", "applied")
    assert fmt.reload_lines(result, [keep])[-1] == "tasks.keep: 7 -> 1"
    assert fmt.reload_lines(Reloaded((), (), ()), [keep]) == ["tasks.keep: 7 -> 1"]
    assert fmt.reload_json(Reloaded((), (), ()), [keep])["settings"] == [
        {"setting": "tasks.keep", "old": "7", "new": "1", "effect": "applied"}]


def test_events_json_and_lines() -> None:
    t = NOW + 0.25
    stop = StateChange("web:0", "web", "STOPPING", "STOPPED", 101, -15, True, t)
    assert fmt.event_json(stop) == {"event": "ProcessStateChanged", "time": t, "process": "web:0",
                                    "program": "web", "old": "STOPPING", "new": "STOPPED",
                                    "pid": 101, "exit_status": -15, "expected": True}
    assert fmt.event_line(stop).endswith(" web:0: STOPPING -> STOPPED (pid 101, killed by SIGTERM)")
    assert fmt.event_line(stop).split()[0].endswith(".250")
    exited = StateChange("w", "w", "RUNNING", "EXITED", 5, 1, False, t)
    assert fmt.event_line(exited).endswith("w: RUNNING -> EXITED (pid 5, exit status 1, unexpected)")
    starting = StateChange("w", "w", "STOPPED", "STARTING", 0, 0, True, t)
    assert fmt.event_line(starting).endswith("w: STOPPED -> STARTING")
    assert fmt.event_json(starting)["pid"] is None
    reloaded = Reloaded(("c",), (), ("a",), t)
    assert fmt.event_json(reloaded) == {"event": "Reloaded", "time": t, "added": ["c"],
                                        "changed": [], "removed": ["a"]}
    assert fmt.event_line(reloaded).endswith("reloaded: added: c; removed: a")
    gone = OwnerChanged("", t)
    assert fmt.event_json(gone) == {"event": "NameOwnerChanged", "time": t, "owner": None}
    assert "left the bus" in fmt.event_line(gone)
    assert "is on the bus" in fmt.event_line(OwnerChanged(":1.5", t))
    for e in (stop, exited, reloaded, gone):
        assert json.loads(json.dumps(fmt.event_json(e)))["event"]


# ---- parsing, help --------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["frob"], ["start"], ["stop"], ["signal", "TERM"], ["tail"], ["--system", "--user", "status"],
    ["tail", "-c", "x", "web"], ["help", "nope"], ["--bogus"],
])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_json_flag_before_or_after_the_command() -> None:
    p = cli.build_parser()
    assert p.parse_args(["--json", "status"]).json is True
    assert p.parse_args(["status", "--json", "web"]).json is True
    assert p.parse_args(["status", "web"]).json is False
    args = p.parse_args(["--address", "unix:path=/x", "signal", "HUP", "web", "db:1"])
    assert (args.signal, args.targets) == ("HUP", ["web", "db:1"])
    assert parser.bus_choice(args) == BusChoice("address", "unix:path=/x")
    assert parser.bus_choice(p.parse_args(["--user", "pid"])) == BusChoice("user")
    assert parser.bus_choice(p.parse_args(["pid"])) is None
    tail = p.parse_args(["tail", "-f", "--stderr", "web:0"])
    assert (tail.follow, tail.stderr, tail.bytes, tail.process) == (True, True, 1600, "web:0")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["help"]) == 0
    out = capsys.readouterr().out
    for name in parser.COMMAND_NAMES:
        assert f"\n  {name}" in out
    assert cli.main(["help", "tail"]) == 0
    assert "--stderr" in capsys.readouterr().out
    assert set(commands.COMMAND_FUNCS) == set(parser.COMMAND_NAMES)


def test_help_and_usage_do_not_import_dbus_next() -> None:
    import subprocess
    import sys

    code = ("import sys; from taskctl.cli import main; main(['help']); "
            "main(['frob']); assert 'dbus_next' not in sys.modules, 'dbus_next'; "
            "assert 'asyncio' not in sys.modules, 'asyncio'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_no_import_circle_between_the_shell_and_the_command_line() -> None:
    """cli runs the shell; the shell uses the parser and the commands, never cli."""
    import subprocess
    import sys

    code = ("import sys, taskctl.shell, taskctl.commands, taskctl.waiting; "
            "assert 'taskctl.cli' not in sys.modules, sorted(sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


# ---- where to connect -------------------------------------------------------------------------


def test_candidates_forced_by_flags(tmp_path: Path) -> None:
    env = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/sys.sock",
           "DBUS_SESSION_BUS_ADDRESS": "unix:path=/sess.sock"}
    [c] = candidates(BusChoice("system"), 1000, env)
    assert (c.choice.kind, c.address) == ("system", "unix:path=/sys.sock")
    [c] = candidates(BusChoice("system"), 1000, {})
    assert c.address == "unix:path=/run/dbus/system_bus_socket"
    [c] = candidates(BusChoice("user"), 1000, env)
    assert (c.choice.kind, c.address) == ("user", "unix:path=/sess.sock")
    [c] = candidates(BusChoice("user"), 1000, {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert c.address is None and "DBUS_SESSION_BUS_ADDRESS" in c.why
    [c] = candidates(BusChoice("address", "tcp:host=x"), 0, env)
    assert (c.choice.kind, c.address) == ("address", "tcp:host=x")


def test_candidates_default_order_ends_with_the_system_bus(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/s"}
    # No embedded bus, no session bus: the system-wide daemon.
    [c] = candidates(None, 1000, env)
    assert (c.choice.kind, c.address) == ("system", "unix:path=/s")
    # A session bus socket in $XDG_RUNTIME_DIR comes first (the client takes
    # the first bus where taskmasterd owns its name).
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "bus"))
        session, system = candidates(None, 1000, env)
        assert (session.choice.kind, session.address) == ("user", f"unix:path={tmp_path}/bus")
        assert system.choice.kind == "system"
        # The embedded bus's address file comes before both.
        os.mkdir(tmp_path / "taskmaster")
        (tmp_path / "taskmaster" / "bus").write_text("unix:path=/emb.sock\n")
        kinds = [(c.choice.kind, c.address) for c in candidates(None, 1000, env)]
        assert kinds == [("private", "unix:path=/emb.sock"), ("user", f"unix:path={tmp_path}/bus"),
                         ("system", "unix:path=/s")]
    # root: never the session bus.
    assert [c.choice.kind for c in candidates(None, 0, {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/s",
                                                        "TASKMASTER_RUNTIME_DIR": str(tmp_path / "none")})
            ] == ["system"]


# ---- the shell's pure parts ---------------------------------------------------------------------


NAMES = ["all", "crashy", "idle", "web", "web-api", "web:0", "web:1"]


@pytest.mark.parametrize(("before", "text", "expected"), [
    ("", "sta", ["status", "start"]),
    ("", "st", ["status", "start", "stop"]),
    ("", "ex", ["exit"]),
    ("", "", list(shell.SHELL_WORDS)),
    ("--json ", "pi", ["pid"]),
    ("status ", "we", ["web", "web-api", "web:0", "web:1"]),
    ("status web ", "i", ["idle"]),
    ("start ", "", NAMES),
    ("signal ", "KI", ["KILL"]),
    ("signal ", "sigte", ["TERM"]),
    ("signal TERM ", "cr", ["crashy"]),
    ("tail ", "web:", ["web:0", "web:1"]),
    ("tail web:0 ", "", []),
    ("tail ", "--s", ["--stderr"]),
    ("restart ", "--n", ["--no-block"]),
    ("help ", "re", ["restart", "reload", "reread"]),
    ("help status ", "", []),
    ("reload ", "", []),
    ("events ", "", []),
])
def test_completion(before: str, text: str, expected: list[str]) -> None:
    assert sorted(shell.complete_words(before, text, lambda: NAMES)) == sorted(expected)


def test_completion_asks_for_names_only_when_needed() -> None:
    def boom() -> list[str]:
        raise AssertionError("names() called")
    assert shell.complete_words("", "st", boom)
    assert shell.complete_words("signal ", "H", boom) == ["HUP"]


def test_history_file_location(tmp_path: Path) -> None:
    assert shell.history_file({"TASKCTL_HISTFILE": "/h"}) == "/h"
    assert shell.history_file({"XDG_STATE_HOME": str(tmp_path)}) == \
        str(tmp_path / "taskmaster" / "taskctl_history")
    assert shell.history_file({"XDG_STATE_HOME": "relative"}) == os.path.expanduser(
        "~/.local/state/taskmaster/taskctl_history")


# ---- commands against a stand-in client -------------------------------------------------------


class FakeClient:
    """Answers like the daemon would; `fail` maps a method to the error it raises."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.choice = BusChoice("address", "unix:path=/x")

    def _call(self, name: str, *args: str) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]

    def list_processes(self) -> list[ProcessRow]:
        self._call("list_processes")
        return ROWS

    def start(self, target: str) -> list[str]:
        self._call("start", target)
        if target == "nope":
            raise CallError("org.taskmaster.Taskmaster1.Error.NoSuchProgram", "no such program")
        return [r.name for r in ROWS if fmt.matches(target, r)]

    def plan_settings(self) -> tuple[Setting, ...]:
        self._call("plan_settings")
        return (Setting("tasks.keep", "7", "1", "applied"),)

    def reload(self) -> Reloaded:
        self._call("reload")
        return Reloaded(("a",), (), ())

    def open_log(self, process: str, stream: str) -> int:
        self._call("open_log", process, stream)
        return -1


def run(client: FakeClient, *argv: str, interactive: bool = False) -> tuple[int, str, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    args = cli.build_parser().parse_args(argv)
    code = commands.execute(client, args, out=out, err=err, interactive=interactive)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


def test_execute_status_and_actions() -> None:
    code, out, err = run(FakeClient(), "status", "web")
    assert code == 0 and out.splitlines()[1].startswith("web:0 ") and err == ""
    # --no-block: as soon as the daemon accepted (waiting: test_taskctl_waiting.py)
    code, out, err = run(FakeClient(), "start", "--no-block", "web", "nope", "idle")
    assert code == 4
    assert out == "web:0: started\nweb:1: started\nidle: started\n"
    assert err == "nope: ERROR (no such process): no such program\n"
    code, out, _ = run(FakeClient(), "--json", "start", "--no-block", "idle")
    assert json.loads(out) == [{"target": "idle", "ok": True, "processes": ["idle"]}]


def test_execute_reports_unreachable_in_one_line() -> None:
    gone = Unreachable("the system bus", "org.taskmaster.Taskmaster1 has no owner", kind="system",
                       cause=Unreachable.NO_OWNER)
    code, out, err = run(FakeClient({"list_processes": gone}), "status")
    assert (code, out) == (7, "")
    assert err.count("\n") == 1 and err.startswith("taskctl: cannot reach taskmasterd on the "
                                                   "system bus (org.taskmaster")


def test_execute_reload_with_an_invalid_config() -> None:
    bad = CallError("org.taskmaster.Taskmaster1.Error.ConfigInvalid",
                    "/etc/t.yaml:3:5: programs.web.stoptime: must be >= 0\n/etc/t.yaml:9:1: x")
    # the preview of the settings refuses the same file first: Reload's error is the one told
    code, out, err = run(FakeClient({"plan_settings": bad, "reload": bad}), "reload")
    assert (code, out) == (1, "")
    assert "/etc/t.yaml:3:5: programs.web.stoptime" in err and "/etc/t.yaml:9:1: x" in err
    assert err.count("programs.web.stoptime") == 1, err
    assert run(FakeClient(), "reload")[:2] == (0, "added: a\ntasks.keep: 7 -> 1\n")


def test_tail_falls_back_to_journalctl(monkeypatch: pytest.MonkeyPatch) -> None:
    journal = CallError("org.taskmaster.Taskmaster1.Error.NotAFile",
                        "the stdout of web:0 goes to the journal; with the journal, use ...")
    execs: list[list[str]] = []

    class Exec(Exception):
        pass

    def fake_execv(path: str, argv: list[str]) -> None:
        execs.append(argv)
        raise Exec

    monkeypatch.setattr(os, "execv", fake_execv)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(Exec):
        run(FakeClient({"open_log": journal}), "tail", "-f", "web:0")
    with pytest.raises(Exec):
        run(FakeClient({"open_log": journal}), "tail", "web-api")
    assert execs == [["/usr/bin/journalctl", "--no-pager", "-f", "-t", "web"],
                     ["/usr/bin/journalctl", "--no-pager", "-n", "20", "-t", "web-api"]]
    # No journalctl: the daemon's message, exit 1.
    monkeypatch.setattr("shutil.which", lambda name: None)
    code, _, err = run(FakeClient({"open_log": journal}), "tail", "web:0")
    assert code == 1 and err.startswith("web:0: ERROR (not a file): the stdout of web:0 goes")
    # Discarded output: nothing to follow anywhere.
    discarded = CallError("org.taskmaster.Taskmaster1.Error.NotAFile",
                          "the stdout of idle is discarded; with the journal, use ...")
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    code, _, err = run(FakeClient({"open_log": discarded}), "tail", "idle")
    assert code == 1 and "discarded" in err and not execs[2:]


def test_tail_prints_the_end_of_the_file(tmp_path: Path) -> None:
    import io

    path = tmp_path / "out.log"
    path.write_bytes(b"x" * 5000 + b"\nlast line \xc3\xa9\n")
    fd = os.open(path, os.O_RDONLY)
    out = io.StringIO()
    ctx = context.Context(FakeClient(), out, io.StringIO())  # type: ignore[arg-type]
    assert follow.follow_fd(ctx, fd, 1600, follow=False) == 0  # and closes fd
    text = out.getvalue()
    assert text.endswith("\nlast line é\n") and len(text.encode()) == 1600
