"""taskctl's reload preview and avail (taskctl.plan), the supervisorctl
words' notes (taskctl.habits): pure rendering, no daemon."""

from __future__ import annotations

import io

import pytest

from taskctl import habits, parser
from taskctl.hosts import RUN_THERE
from taskctl.model import ProcessRow
from taskctl.plan import NOTHING, Plan, avail_json, avail_lines, avail_rows, plan_json, plan_lines
from taskctl.shell import complete_words

PLAN = Plan.from_replies(
    [["cache"], ["db", "workers"], ["old"], ["web"]],
    {"cache": "added", "db": "changed in place: stoptime",
     "workers": "changed in place: numprocs 2 -> 4", "old": "removed",
     "web": "restarted: cmd, env changed"})


def row(name: str, program: str, state: str = "RUNNING") -> ProcessRow:
    return ProcessRow(name, program, state, 42 if state == "RUNNING" else 0, 0, 0, "", "", 0)


def test_one_line_per_program_with_why() -> None:
    assert plan_lines(PLAN) == [
        "cache: added",
        "web: restarted (cmd, env changed)",
        "db: changed in place (stoptime)",
        "workers: changed in place (numprocs 2 -> 4)",
        "old: removed",
    ]


def test_nothing_would_change() -> None:
    empty = Plan.from_replies([[], [], [], []], {})
    assert empty.is_empty and plan_lines(empty) == [NOTHING] == ["nothing would change"]


def test_a_program_without_a_reason_is_still_listed() -> None:
    plan = Plan.from_replies([[], [], [], ["web"]], {})  # the file changed between the two calls
    assert plan_lines(plan) == ["web: restarted"]


def test_json_has_the_lists_and_the_reasons() -> None:
    assert plan_json(PLAN) == {
        "added": ["cache"], "changed": ["db", "workers"], "removed": ["old"],
        "restarted": ["web"], "reasons": dict(PLAN.reasons), "settings": []}


SETTINGS = [("tasks.max_parallel", "4", "16", "applied"),
            ("taskmasterd.statedir", "/var/lib/taskmaster", "/srv/st", "restart"),
            ("alerts", "1 target", "2 targets", "someday")]  # a newer daemon's word


def test_settings_come_after_the_programs() -> None:
    plan = Plan.from_replies([[], [], [], ["web"]], {"web": "restarted: cmd changed"}, SETTINGS)
    assert plan_lines(plan) == [
        "web: restarted (cmd changed)",
        "tasks.max_parallel: 4 -> 16",
        "taskmasterd.statedir: /var/lib/taskmaster -> /srv/st (not applied: /var/lib/taskmaster "
        "stays in use until taskmasterd is restarted)",
        "alerts: 1 target -> 2 targets (someday)",
    ]
    assert plan_json(plan)["settings"][0] == {"setting": "tasks.max_parallel", "old": "4",
                                              "new": "16", "effect": "applied"}


def test_a_settings_change_alone_is_not_nothing() -> None:
    plan = Plan.from_replies([[], [], [], []], {}, SETTINGS[:1])
    assert not plan.is_empty
    assert plan_lines(plan) == ["tasks.max_parallel: 4 -> 16"]


def test_avail_lists_loaded_programs_then_those_only_in_the_file() -> None:
    rows = [row("web", "web"), row("db", "db", "STOPPED"), row("workers:0", "workers"),
            row("workers:1", "workers", "FATAL"), row("old", "old")]
    items = avail_rows(rows, PLAN)
    assert [(a.program, a.in_use, a.processes, a.up) for a in items] == [
        ("web", True, 1, 1), ("db", True, 1, 0), ("workers", True, 2, 1), ("old", True, 1, 1),
        ("cache", False, 0, 0)]
    assert avail_lines(items) == [
        "web      in use  1/1 up  (at the next reload: restarted (cmd, env changed))",
        "db       in use  0/1 up  (at the next reload: changed in place (stoptime))",
        "workers  in use  1/2 up  (at the next reload: changed in place (numprocs 2 -> 4))",
        "old      in use  1/1 up  (at the next reload: removed)",
        "cache    avail   -       (at the next reload: added)",
    ]
    assert avail_json(items)[-1] == {"program": "cache", "in_use": False, "processes": 0, "up": 0,
                                     "next_reload": "added"}


def test_avail_without_a_plan_shows_the_loaded_programs() -> None:
    items = avail_rows([row("web", "web")], None)
    assert avail_lines(items) == ["web  in use  1/1 up"]
    assert avail_json(items) == [{"program": "web", "in_use": True, "processes": 1, "up": 1,
                                  "next_reload": None}]
    assert avail_lines([]) == ["no programs"]


def test_each_word_says_once_what_it_is_here() -> None:
    err = io.StringIO()
    habits._said.clear()
    habits.say_once("reread", err)
    habits.say_once("reread", err)
    habits.say_once("status", err)  # not one of supervisorctl's words: nothing
    assert err.getvalue() == ("taskctl: (supervisorctl's 'reread' is 'taskctl reload --dry-run' "
                              "here (nothing is applied))\n")
    assert set(habits.NOTES) == {"update", "reread", "avail", "maintail"}


def test_words_taskctl_does_not_run_say_what_to_do_instead(
        capsys: pytest.CaptureFixture[str]) -> None:
    """fg, add, remove, clear, version: a usage error naming our way, not
    argparse's list of 25 choices; before any connection (none here)."""
    from taskctl import cli

    assert cli.main(["fg", "web:0"]) == 2
    err = capsys.readouterr().err
    assert err == ("taskctl: supervisorctl's 'fg' is 'taskctl attach PROCESS' here: a program "
                   "with 'console: true' runs on a terminal you attach to and detach from "
                   "(Ctrl-] d), and it keeps running\n")
    for word in ("add", "remove", "clear", "version"):
        assert cli.main(["--json", "-H", "fg", word, "x"]) == 2  # -H's value is no command
        assert f"supervisorctl's '{word}'" in capsys.readouterr().err
    assert not set(habits.ELSEWHERE) & set(parser.COMMAND_NAMES)


def test_the_command_word_skips_options_and_their_values() -> None:
    assert parser.command_word(["-H", "fg", "status", "web"]) == "status"
    assert parser.command_word(["--address", "unix:path=/x", "--json", "clear"]) == "clear"
    assert parser.command_word(["--address=unix:path=/x", "add", "web"]) == "add"
    assert parser.command_word(["--json"]) is None


def test_the_words_parse_complete_and_maintail_runs_on_the_host() -> None:
    p = parser.build_parser()
    assert p.parse_args(["reload", "--dry-run"]).dry_run
    assert not p.parse_args(["reload"]).dry_run
    m = p.parse_args(["maintail", "-f", "-c", "100"])
    assert (m.follow, m.bytes) == (True, 100)
    for word in ("update", "reread", "avail", "maintail"):
        assert word in parser.COMMAND_NAMES
        assert word in complete_words("", word[:3], list)
    assert complete_words("reload ", "--d", list) == ["--dry-run"]
    assert complete_words("maintail ", "--f", list) == ["--follow"]
    assert "maintail" in RUN_THERE
