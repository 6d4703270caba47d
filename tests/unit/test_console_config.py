"""`console:` and `console_scrollback:` through the real loader: values,
and the rules between a console and the output keys as located errors,
all at once (taskmasterd.consoleschema)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmasterd.config import ConfigError, load_config
from taskmasterd.consoleschema import DEFAULT_SCROLLBACK
from tests.unit.test_config_after import load_text


def test_values(tmp_path: Path) -> None:
    path = tmp_path / "taskmaster.yaml"
    path.write_text("programs:\n"
                    "  plain: {cmd: 'true'}\n"
                    "  shell: {cmd: bash, console: true}\n"
                    "  repl: {cmd: python3, console: yes, console_scrollback: 1MB, stdout: null}\n"
                    "  kept: {cmd: bash, console: true, stdout: /tmp/kept.out, stderr: ~}\n")
    with pytest.raises(ConfigError):  # `yes` is not a boolean here (YAML 1.1 trap)
        load_config(path)
    path.write_text(path.read_text().replace("console: yes", "console: true")
                    .replace(", stderr: ~", ""))
    programs = {p.name: p for p in load_config(path).programs}
    assert not programs["plain"].console
    assert programs["shell"].console and programs["shell"].console_scrollback == DEFAULT_SCROLLBACK
    assert programs["repl"].console_scrollback == 1024 ** 2
    assert programs["kept"].stdout.path == "/tmp/kept.out"


def test_every_rule_is_a_located_error_all_at_once(tmp_path: Path) -> None:
    _, found = load_text(tmp_path, (
        "programs:\n"
        "  a: {cmd: bash, console: true, stderr: /tmp/a.err}\n"
        "  b: {cmd: bash, console: true, stdout: journal}\n"
        "  c: {cmd: bash, console: true, console_scrollback: 17MB}\n"
        "  d: {cmd: bash, console: maybe}\n"
        "  e: {cmd: bash, console: true, stderr: null}\n"))
    by_key = {kp: (line, col, msg) for line, col, kp, msg in found}
    assert by_key["programs.a.stderr"][:2] == (2, 33)  # at the key
    assert "stderr is its terminal" in by_key["programs.a.stderr"][2]
    assert by_key["programs.b.stdout"][0] == 3 and "not journal" in by_key["programs.b.stdout"][2]
    assert by_key["programs.c.console_scrollback"][0] == 4
    assert "at most 16MB" in by_key["programs.c.console_scrollback"][2]
    assert by_key["programs.d.console"][0] == 5
    assert by_key["programs.e.stderr"][0] == 6  # even null: the terminal is where it goes
    assert len(found) == 5


def test_the_rules_say_nothing_without_a_console(tmp_path: Path) -> None:
    path = tmp_path / "taskmaster.yaml"
    path.write_text("programs:\n"
                    "  a: {cmd: bash, stderr: /tmp/a.err, stdout: journal, console_scrollback: 1KB}\n")
    assert not load_config(path).programs[0].console
