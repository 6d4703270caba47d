"""What the config fuzz (test_config_fuzz.py) found, each pinned by a test."""

from __future__ import annotations

import pytest

from taskmasterd.config import ConfigError, parse_config

FILE = "/etc/taskmaster/t.yaml"


def issues(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, FILE)
    return [(i.line, i.column, i.message) for i in exc.value.issues]


@pytest.mark.parametrize("brk", ["\r", "\x85", "\u2028", "\u2029"])
def test_odd_line_breaks_do_not_shift_positions(brk: str) -> None:
    """YAML counts a lone CR, NEL, LS and PS as line breaks; editors, grep -n
    and sed -n do not: positions are given in lines split at '\\n'."""
    text = f"programs:\n  web: {{cmd: 'sleep{brk}1', numprocs: q}}\n"
    [(line, column, message)] = issues(text)
    assert (line, column) == (2, text.split("\n")[1].index("q") + 1), message


def test_a_lone_cr_before_a_syntax_error() -> None:
    """The fuzz's first find: 'found a string' at line 2 of a one-line text."""
    [(line, column, _)] = issues("\r T")
    assert (line, column) == (1, 3)


def test_crlf_files_keep_their_positions() -> None:
    """CR LF is one break for everybody: the fast path, same positions."""
    text = "programs:\r\n  web: {cmd: x, numprocs: q}\r\n"
    [(line, column, _)] = issues(text)
    assert (line, column) == (2, 27)


@pytest.mark.parametrize("setting", ['cmd: "sleep \\udfff"', 'stdout: "/tmp/out\\udc00"',
                                     'user: "\\ud800"', 'env: {A: "\\udc80"}', 'env: {"\\ud800": x}',
                                     'workingdir: "/tmp/\\udfff"'])
def test_lone_surrogates_are_refused(setting: str) -> None:
    """A "\\udXXX" escape is no character: it passed the validator, then an
    stdout path holding one crashed the daemon at spawn (UnicodeEncodeError
    from os.open), and one in cmd/env was an EINVAL spawn error."""
    text = f"programs:\n  web:\n    cmd: sleep 1\n    {setting}\n".replace("cmd: sleep 1\n    cmd:", "cmd:")
    [(line, _, message)] = issues(text)
    assert line in (3, 4), message
    assert "surrogate" in message or "invalid environment variable name" in message
    message.encode("utf-8")  # and the issue itself can be printed, logged, sent


def test_a_surrogate_pair_gets_the_escape_to_write() -> None:
    [(_, _, message)] = issues('programs:\n  web: {cmd: "echo \\ud83d\\ude00"}\n')
    assert "surrogate pair \\ud83d\\ude00" in message and "write \\U0001F600" in message


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_nesting_is_a_located_error(opening: str) -> None:
    text = "programs:\n  web: " + opening * 1000 + "\n"
    assert all(line >= 1 and column >= 1 for line, column, _ in issues(text))


@pytest.mark.parametrize("value", ["!!binary aGVsbG8=", '!!int "sleep 1"',
                                   "!!python/object:os.system x", "!!float sleep"])
def test_tags_outside_the_core_schema_are_refused(value: str) -> None:
    [(line, column, _)] = issues(f"programs:\n  web:\n    cmd: {value}\n")
    assert (line, column) == (3, 10)
