"""The `tasks:` section of the configuration (Config.tasks: TaskSettings):
values, defaults, and errors at file:line:column like the rest of the file."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from taskmasterd.config import ConfigError, ConfigIssue, load_config
from taskmasterd.tasks.settings import TaskSettings


def load_text(tmp_path: Path, text: str) -> TaskSettings:
    path = tmp_path / "taskmaster.yaml"
    path.write_text(text)
    return load_config(path).tasks


def only_issue(tmp_path: Path, text: str) -> ConfigIssue:
    path = tmp_path / "taskmaster.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert len(exc.value.issues) == 1, exc.value.issues
    return exc.value.issues[0]


def test_absent_or_empty_is_the_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "programs: {}\n") == TaskSettings()
    assert load_text(tmp_path, "programs: {}\ntasks:\n") == TaskSettings()


def test_every_key(tmp_path: Path) -> None:
    s = load_text(tmp_path, "tasks:\n  max_parallel: 16\n  keep: 0.5\n  timeout: 7200\n"
                            "  stopsignal: INT\n  stoptime: 2.5\n  max_queued: 500\n")
    assert s == TaskSettings(max_parallel=16, keep=0.5, timeout=7200.0,
                             stopsignal=signal.SIGINT, stoptime=2.5, max_queued=500)
    assert load_text(tmp_path, "tasks: {timeout: 604800, stopsignal: 9}\n").timeout == 604800.0


@pytest.mark.parametrize("text, line, column, keypath, message", [
    ("tasks:\n  max_paralel: 2\n", 2, 3, "tasks.max_paralel",
     "unknown key 'max_paralel' (did you mean 'max_parallel'?)"),
    ("tasks:\n  bogus: 2\n", 2, 3, "tasks.bogus",
     "unknown key 'bogus'; tasks accepts: max_parallel, keep, timeout, stopsignal, stoptime, "
     "max_queued"),
    ("tasks:\n  max_queued: 0\n", 2, 15, "tasks.max_queued",
     "must be between 1 and 1000000, found 0"),
    ("tasks:\n  max_queued: 1e4\n", 2, 15, "tasks.max_queued",
     "expected an integer 1–1000000, found '1e4'"),
    ("tasks:\n  max_parallel: 0\n", 2, 17, "tasks.max_parallel", "must be between 1 and 4096, found 0"),
    ("tasks:\n  max_parallel: \"4\"\n", 2, 17, "tasks.max_parallel",
     "expected an integer 1–4096, found the quoted string '4' (remove the quotes)"),
    ("tasks:\n  keep: 0\n", 2, 9, "tasks.keep", "must be > 0, found 0"),
    ("tasks:\n  keep: a week\n", 2, 9, "tasks.keep",
     "expected a number of days like 7 or 0.5, found 'a week'"),
    ("tasks:\n  timeout: -1\n", 2, 12, "tasks.timeout", "must be >= 0, found -1"),
    ("tasks:\n  timeout: 1e9\n", 2, 12, "tasks.timeout",
     "expected a number of seconds like 60 or 0 (none), found '1e9'"),
    ("tasks:\n  timeout: 40000000\n", 2, 12, "tasks.timeout",
     "must be <= 31622400, found 40000000"),
    ("tasks:\n  stoptime: -2\n", 2, 13, "tasks.stoptime", "must be >= 0, found -2"),
    ("tasks: [1]\n", 1, 8, "tasks", "expected a mapping of task settings, found a sequence"),
    ("max_parallel: 3\n", 1, 1, "max_parallel",
     "unknown top-level key 'max_parallel'; 'max_parallel' is a task setting — indent it "
     "under 'tasks:'"),
    ("taks: {}\n", 1, 1, "taks", "unknown top-level key 'taks' (did you mean 'tasks'?)"),
])
def test_errors_are_located(tmp_path: Path, text: str, line: int, column: int, keypath: str,
                            message: str) -> None:
    issue = only_issue(tmp_path, text)
    assert (issue.line, issue.column, issue.keypath) == (line, column, keypath)
    assert issue.message == message


def test_a_bad_signal_is_named(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "tasks:\n  stopsignal: NOPE\n")
    assert (issue.line, issue.column, issue.keypath) == (2, 15, "tasks.stopsignal")
    assert "NOPE" in issue.message
