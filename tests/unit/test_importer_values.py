"""supervisord's %(name)s expansions and environment= quoting -> ours (issue 19's syntax)."""

from __future__ import annotations

import pytest

from taskmasterd.importer.envstr import EnvironmentError_, parse_environment
from taskmasterd.importer.expand import Names, translate


def test_per_program_names_are_written_out() -> None:
    names = Names(program="web", group="site")
    ex = translate("/srv/%(program_name)s/%(group_name)s -n %(numprocs)d -p %(process_num)02d", names)
    assert ex.text == "/srv/web/site -n 1 -p 00"  # one process: supervisord's value, as is
    assert not ex.problems and not ex.variables


def test_per_process_and_host_names_become_variables() -> None:
    names = Names(program="worker", group="worker", numprocs=4)
    ex = translate("run %(process_num)d on %(host_node_name)s home %(ENV_HOME)s", names)
    assert ex.text == "run %{process_num} on %{host} home %{env.HOME}"
    assert ex.variables and not ex.problems


def test_zero_padding_is_carried_over_other_formats_reported() -> None:
    two = Names(program="w", group="w", numprocs=2)
    ex = translate("w%(process_num)02d-%(process_num)03i", two)
    assert ex.text == "w%{process_num:02}-%{process_num:03}" and not ex.problems
    ex = translate("w%(process_num)2d", two)  # padded with spaces: not carried over
    assert ex.text == "w%{process_num}"
    assert "only a zero padding is" in ex.problems[0]
    ex = translate("w%(process_num)x", two)
    assert "the format is not carried over" in ex.problems[0]


def test_numprocs_start_is_reported() -> None:
    ex = translate("w%(process_num)d", Names(program="w", group="w", numprocs=2, numprocs_start=5))
    assert "counts from 0, not 5" in ex.problems[0]


def test_program_environment_is_expanded_in_place() -> None:
    # supervisord adds the program's own environment= to the names
    names = Names(program="w", group="w", env={"APP": "/srv/app"})
    assert translate("%(ENV_APP)s/run %(ENV_HOME)s", names).text == "/srv/app/run %{env.HOME}"


def test_percent_escapes() -> None:
    names = Names(program="w", group="w")
    assert translate("date +%%Y", names).text == "date +%Y"  # ours: a lone % is literal
    assert translate("echo %%{x}", names).text == "echo %%{x}"  # a literal %{ is escaped
    ex = translate("date +%Y", names)
    assert ex.text == "date +%Y" and "supervisord refuses" in ex.problems[0]
    ex = translate("%(nope)s", names)
    assert ex.text == "%(nope)s" and "no such name" in ex.problems[0]


def test_keys_without_variables_report_them() -> None:
    ex = translate("%(ENV_USER)s", Names(program="w", group="w"), allow_vars=False)
    assert ex.text == "%(ENV_USER)s" and "cannot" in ex.problems[0]


def test_environment_quoting() -> None:
    assert parse_environment('A="1,2",B=x,C=\'y z\'') == [("A", "1,2"), ("B", "x"), ("C", "y z")]
    assert parse_environment("PATH=/opt/bin:%(ENV_PATH)s,LANG=C.UTF-8") == [
        ("PATH", "/opt/bin:%(ENV_PATH)s"), ("LANG", "C.UTF-8")]
    assert parse_environment("") == []
    assert parse_environment("A=1,A=2") == [("A", "2")]
    with pytest.raises(EnvironmentError_):
        parse_environment("A=1,B")
