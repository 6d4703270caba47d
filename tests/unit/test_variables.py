"""taskmasterd.variables: `%{name}` expansion at load, markers for the
per-process names, their filling per process (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskmasterd.variables import Facts, display, expand, for_process, has_markers

FACTS = Facts(program="web", numprocs=3, here="/etc/taskmaster/conf.d", host="box",
              environ={"HOME": "/root", "PATH": "/usr/bin:/bin", "SPACED": "a b", "PCT": "50%",
                       "BRACE": "x%{process}y", "EMPTY": ""})
ONE = Facts(program="web", numprocs=1, here="/h", host="box", environ={})


def full(text: str, facts: Facts = FACTS, process: str = "web:2", num: int = 2) -> str:
    value, problems = expand(text, facts)
    assert problems == []
    return for_process(value, process, num)


@pytest.mark.parametrize(("text", "want"), [
    ("%{env.HOME}/x", "/root/x"),
    ("%{program}", "web"),
    ("%{process}", "web:2"),
    ("%{process_num}", "2"),
    ("%{numprocs}", "3"),
    ("%{here}/a.yaml", "/etc/taskmaster/conf.d/a.yaml"),
    ("%{host}", "box"),
    ("--id=%{process_num} --of=%{numprocs}", "--id=2 --of=3"),
    ("%{env.EMPTY}", ""),
    ("%{env.SPACED}", "a b"),
    ("%{process_num:02}", "02"),  # supervisord's %(process_num)02d
    ("w-%{process_num:03}-%{process_num:01}", "w-002-2"),
])
def test_each_name(text: str, want: str) -> None:
    assert full(text) == want


@pytest.mark.parametrize(("text", "want"), [
    ("date +%Y-%m-%d", "date +%Y-%m-%d"),  # any other % is literal
    ("%%{program}", "%{program}"),  # the escape
    ("%%%{program}", "%%{program}"),  # a literal %, then the escape
    ("100%", "100%"),
    ("%", "%"),
    ("%(program_name)s", "%(program_name)s"),  # supervisord's spelling is plain text here
    ("{program}", "{program}"),
    ("%%", "%%"),
    ("a%%{b}%{program}", "a%{b}web"),
])
def test_percent_is_literal_but_for_a_reference(text: str, want: str) -> None:
    assert full(text) == want


def test_values_are_not_expanded_again() -> None:
    # An environment value holding %{...} is text: never a reference, never a marker.
    assert full("%{env.BRACE}") == "x%{process}y"
    assert full("%{env.PCT}%{process_num}") == "50%2"
    assert full("%{env.PCT}{program}") == "50%{program}"


def test_process_is_written_out_with_one_process() -> None:
    value, problems = expand("%{process}-%{process_num}", ONE)
    assert problems == []
    # %{process} is the program's name (a resize past 1 renames the process:
    # the value changes with it); %{process_num} stays a marker.
    assert value.startswith("web-") and has_markers(value)
    assert for_process(value, "web", 0) == "web-0"


def test_load_time_values_have_no_markers() -> None:
    value, _ = expand("%{program} %{env.HOME} %{here} %{host} %{numprocs}", FACTS)
    assert not has_markers(value)
    assert for_process(value, "web:0", 0) == value


def test_markers_differ_per_process_only() -> None:
    value, _ = expand("/var/log/%{program}-%{process_num}.log", FACTS)
    assert has_markers(value)
    assert [for_process(value, f"web:{i}", i) for i in range(3)] == \
        [f"/var/log/web-{i}.log" for i in range(3)]


@pytest.mark.parametrize(("text", "says"), [
    ("%{proces}", ["unknown variable %{proces} (did you mean %{process}?)", "%{env.NAME}",
                   "%{here}", "%{host}"]),
    ("%{HOME}", ["did you mean %{env.HOME}?"]),
    ("%{}", ["unknown variable %{}"]),
    ("%{env.NOPE}", ["NOPE is not set in taskmasterd's environment"]),
    ("%{env.PAHT}", ["did you mean %{env.PATH}?"]),
    ("%{env.}", ["names no variable"]),
    ("a %{program", ["not closed"]),
    ("%{program_name}", ["did you mean %{program}?"]),
    ("%{process_num:2}", ["the width is written :0N, N from 1 to 9"]),
    ("%{process_num:010}", ["the width is written :0N"]),
    ("%{process_num:}", ["the width is written :0N"]),
    ("%{program:02}", ["only %{process_num} takes a width"]),
    ("%{env.HOME:02}", ["only %{process_num} takes a width"]),
])
def test_problems(text: str, says: list[str]) -> None:
    _, problems = expand(text, FACTS)
    assert len(problems) == 1
    for part in says:
        assert part in problems[0]


def test_every_problem_of_a_value_at_once() -> None:
    _, problems = expand("%{a} %{env.NOPE} %{program} %{b", FACTS)
    assert len(problems) == 3


def test_an_undecodable_environment_value_is_a_problem() -> None:
    facts = Facts("web", 1, "/h", "box", {"RAW": "caf\udce9"})
    _, problems = expand("%{env.RAW}", facts)
    assert problems and "not UTF-8" in problems[0]


def test_a_padded_number_is_padded_per_process_and_displayed_as_written() -> None:
    value, _ = expand("/var/log/web_%{process_num:02}.log", Facts("web", 12, "/h", "box", {}))
    assert [for_process(value, f"web:{i}", i) for i in (0, 9, 10, 11)] == \
        ["/var/log/web_00.log", "/var/log/web_09.log", "/var/log/web_10.log", "/var/log/web_11.log"]
    assert for_process(value, "web:123", 123) == "/var/log/web_123.log"  # wider: never cut
    assert display(value) == "/var/log/web_%{process_num:02}.log"


def test_display_writes_markers_back() -> None:
    value, _ = expand("run --id %{process_num} %%{x} +%Y", FACTS)
    assert display(value) == "run --id %{process_num} %%{x} +%Y"
    plain, _ = expand("run %%{x}", FACTS)
    assert display(plain) == "run %{x}"  # no markers: shown as it runs


safe = st.text(st.characters(min_codepoint=1, max_codepoint=0xD7FF),
               max_size=30)


@given(safe)
def test_text_without_references_is_unchanged(text: str) -> None:
    if "%{" in text:
        return
    assert full(text) == text


@given(st.lists(st.one_of(safe.filter(lambda s: "%" not in s),
                          st.sampled_from(["%{program}", "%{process}", "%{process_num}", "%%{",
                                           "%{env.HOME}"])), max_size=8))
def test_expansion_is_substitution(parts: list[str]) -> None:
    """Expanding a concatenation is concatenating the expansions of its parts."""
    want = "".join({"%{program}": "web", "%{process}": "web:2", "%{process_num}": "2",
                    "%%{": "%{", "%{env.HOME}": "/root"}.get(p, p) for p in parts)
    assert full("".join(parts)) == want
