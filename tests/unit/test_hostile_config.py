"""Hostile configuration files (issue 11, section 3): refused with a located
error, cheaply, never a traceback."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from taskmasterd import hostcheck, yamlnodes
from taskmasterd.config import (
    MAX_FILE_SIZE,
    ConfigError,
    ConfigIssue,
    OutputKind,
    load_config,
    parse_config,
)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "/etc/t.yaml")
    assert exc.value.issues
    return exc.value.issues


def check_config(path: Path | str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """`taskmasterd --check-config PATH` with 1 GiB of address space at most:
    a reader that does not stop fails here instead of eating the machine."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    return subprocess.run([sys.executable, "-m", "taskmasterd", "--check-config", str(path)],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


# ---- nesting ----------------------------------------------------------------


@pytest.mark.parametrize("depth", [150, 1000, 100_000])
def test_deeply_nested_flow_lists_are_a_located_error(depth: int) -> None:
    [issue] = issues("programs: " + "[" * depth + "]" * depth + "\n")
    # the 100th "[" (the top-level mapping is the first level)
    assert (issue.line, issue.column) == (1, 10 + yamlnodes.MAX_DEPTH)
    assert "nested more than 100 levels deep" in issue.message


def test_deeply_nested_block_mappings_are_a_located_error() -> None:
    text = "programs:\n" + "".join(" " * (i + 2) + f"k{i}:\n" for i in range(300)) + "\n"
    [issue] = issues(text)
    assert issue.line == yamlnodes.MAX_DEPTH + 1 and "nested more than 100" in issue.message


def test_nesting_up_to_the_limit_is_read() -> None:
    depth = yamlnodes.MAX_DEPTH - 4  # programs.web.env.X: 4 levels used by the file itself
    text = ("programs:\n  web:\n    cmd: /bin/true\n    env: {A: " + "[" * depth + "]" * depth
            + "}\n")
    [issue] = issues(text)  # refused by the schema, not by the depth check
    assert issue.keypath == "programs.web.env.A" and "strings or numbers" in issue.message


def test_a_long_chain_of_merge_keys_is_a_located_error() -> None:
    lines = ["programs:", "  m0: &m0 {cmd: /bin/true}"]
    lines += [f"  m{i}: &m{i} {{<<: *m{i - 1}}}" for i in range(1, 2000)]
    found = issues("\n".join(lines) + "\n")
    deep = [i for i in found if "chained more than 100 levels deep" in i.message]
    assert deep and all(i.line > 1 for i in deep)


def test_merge_keys_are_expanded_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8 levels of 8 aliases to the level below: 8**8 = 16 million expansions
    # when each reference is followed, 8 per level when each mapping is
    # expanded once.
    lines = ["x:", "  l0: &l0 {cmd: /bin/true}"]
    for level in range(1, 9):
        refs = ", ".join([f"*l{level - 1}"] * 8)
        lines.append(f"  l{level}: &l{level} {{<<: [{refs}]}}")
    lines += ["programs:", "  web:", "    <<: *l8"]
    calls = 0
    library = yamlnodes.NodeReader.entries

    def counted(self: yamlnodes.NodeReader, *args: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        return library(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(yamlnodes.NodeReader, "entries", counted)
    found = issues("\n".join(lines) + "\n")
    assert [i.keypath for i in found] == ["x"]  # web itself is fine: cmd came through 8 merges
    assert calls < 100


def test_a_recursion_error_is_still_a_located_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskmasterd import configschema

    def overflow(self: object, root: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(configschema.Validator, "_top", overflow)
    [issue] = issues("programs: {}\n")
    assert str(issue).startswith("/etc/t.yaml:1:1: ") and "nested too deeply" in issue.message


def test_check_config_on_1000_nested_brackets_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("programs: " + "[" * 1000 + "\n")
    r = check_config(path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{path}:1:110: invalid YAML: mappings and lists nested more than 100" in r.stderr


# ---- tags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tag", "phrase"),
    [
        ("!!binary aGVsbG8=", "!!binary", "unsupported YAML tag '!!binary'"),
        ("!!python/object:os.system x", "!!python/object:os.system", "unsupported YAML tag"),
        ("!!python/name:os.system ''", "!!python/name:os.system", "unsupported YAML tag"),
        ('!!int "sleep 1"', "!!int", "the tag '!!int' does not fit the value 'sleep 1'"),
        ("!!bool maybe", "!!bool", "does not fit the value 'maybe'"),
        ("!!float 1.5.5", "!!float", "does not fit"),
        ("!!null x", "!!null", "does not fit"),
        ("!local x", "!local", "unsupported YAML tag '!local'"),
        ("!!set {a, b}", "!!set", "unsupported YAML tag '!!set'"),
        ("!!omap [a: 1]", "!!omap", "unsupported YAML tag '!!omap'"),
        ("!!seq {a: 1}", "!!seq", "unsupported YAML tag '!!seq'"),
        ("!!map [a]", "!!map", "unsupported YAML tag '!!map'"),
    ],
)
def test_tags_outside_the_core_schema_are_refused_and_located(value: str, tag: str,
                                                              phrase: str) -> None:
    found = issues(f"programs:\n  web:\n    cmd: /bin/true\n    env:\n      A: {value}\n")
    assert [(i.line, i.column, i.keypath) for i in found] == [(5, 10, "programs.web.env.A")]
    assert phrase in found[0].message and tag in found[0].message


def test_a_tag_anywhere_is_refused_even_where_the_schema_would_ignore_it() -> None:
    found = issues("programs:\n  web:\n    cmd: !!python/object/apply:os.system [id]\n")
    assert [(i.line, i.keypath) for i in found] == [(3, "programs.web.cmd")]
    assert "unsupported YAML tag '!!python/object/apply:os.system'" in found[0].message


def test_tags_that_restate_the_type_and_plain_yaml_still_work() -> None:
    config = parse_config(
        "programs: !!map\n"
        "  base: &base\n"
        "    cmd: /bin/true\n"
        "    numprocs: !!int 2\n"
        "    autostart: !!bool no\n"
        "    starttime: !!float 0.5\n"
        "    exitcodes: !!seq [0, !!int 2]\n"
        "    env: {A: !!str 042, B: !!str true, C: 042, D: ! 7}\n"
        "    stdout: !!str journal.log\n"
        "    stderr: !!null ''\n"
        "  web:\n"
        "    <<: *base\n"
        "    numprocs: 1\n", "/etc/t.yaml")
    base, web = config.programs
    assert base.numprocs == 2 and web.numprocs == 1 and not web.autostart
    assert base.starttime == 0.5 and base.exitcodes == frozenset({0, 2})
    assert base.env_dict == {"A": "042", "B": "true", "C": "042", "D": "7"}
    assert base.stdout.path == "/etc/journal.log" and base.stderr.kind is OutputKind.NULL


# ---- the file itself --------------------------------------------------------------


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    r = check_config(fifo, timeout=20)
    assert r.returncode == 1
    assert f"{fifo}:1:1: cannot read the config file: it is a FIFO; expected a regular file" \
        in r.stderr


def test_dev_zero_is_refused_before_reading() -> None:
    r = check_config("/dev/zero")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "/dev/zero:1:1: cannot read the config file: it is a character device" in r.stderr


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    [issue] = exc.value.issues
    assert issue.file == str(tmp_path) and "it is a directory; expected a regular file" \
        in issue.message


def test_a_file_over_16_mib_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)  # sparse: costs no disk
    with pytest.raises(ConfigError) as exc:
        load_config(big)
    [issue] = exc.value.issues
    assert str(issue) == (f"{big}:1:1: cannot read the config file: it is {MAX_FILE_SIZE + 1} "
                          f"bytes; at most {MAX_FILE_SIZE} (16 MiB) are read")


def test_a_file_of_exactly_16_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    head = b"programs:\n  web:\n    cmd: /bin/true\n"
    path.write_bytes(head + b"#" * (MAX_FILE_SIZE - len(head) - 1) + b"\n")
    assert load_config(path).programs[0].name == "web"


# ---- stdout: journal on a host without journald ------------------------------------------


JOURNAL_FILE = ("programs:\n  web:\n    cmd: /bin/true\n    stdout: journal\n"
                "  db:\n    cmd: /bin/true\n    stderr: journal\n    stdout: /tmp/x\n")


def test_journal_output_without_journald_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(JOURNAL_FILE)
    with pytest.raises(ConfigError) as exc:
        hostcheck.load(path, journal=lambda: False)
    assert [(i.file, i.line, i.column, i.keypath) for i in exc.value.issues] == [
        (str(path), 4, 13, "programs.web.stdout"), (str(path), 7, 13, "programs.db.stderr")]
    assert all("no journal on this host" in i.message for i in exc.value.issues)


def test_journal_output_with_journald_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(JOURNAL_FILE)
    config = hostcheck.load(path, journal=lambda: True)
    assert config.programs[0].stdout.kind is OutputKind.JOURNAL
    assert hostcheck.host_issues(config, journal=lambda: True, journal_module=lambda: False)


def test_the_output_location_is_not_part_of_its_value() -> None:
    a = parse_config("programs:\n  web: {cmd: /bin/true, stdout: journal}\n", "/t.yaml")
    b = parse_config("programs:\n  web:\n    cmd: /bin/true\n    stdout: journal\n", "/t.yaml")
    assert a == b and a.programs[0].stdout.line == 2 and b.programs[0].stdout.line == 4


@pytest.mark.skipif(hostcheck.journal_present(), reason="this host has journald: the refusal "
                    "is covered with an injected check above")
def test_check_config_says_no_journal_on_this_host(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(JOURNAL_FILE)
    r = check_config(path)
    assert r.returncode == 1
    assert f"{path}:4:13: programs.web.stdout: no journal on this host" in r.stderr


# ---- many errors -----------------------------------------------------------------


def test_reading_stops_after_100_errors() -> None:
    # A 16 MB file of bad keys made 1.3 million issues: a minute of work and
    # a ConfigInvalid reply larger than any bus carries.
    found = issues("programs: {}\n" + "".join(f"key{i}: 1\n" for i in range(5000)))
    assert len(found) == yamlnodes.MAX_ISSUES + 1
    assert [i.line for i in found[:2]] == [2, 3]
    last = found[-1]
    assert last.line == yamlnodes.MAX_ISSUES + 2 and last.keypath == ""
    assert last.message == ("more than 100 errors: the rest of the file was not checked; "
                            "fix these first")
    assert sum(len(str(i)) for i in found) < 20_000


def test_a_huge_key_is_not_quoted_whole() -> None:
    found = issues("programs:\n  web:\n    cmd: /bin/true\n    ? " + "x" * 2_000_000 + "\n    : 1\n"
                   "  ? " + "y" * 1_000_000 + "\n  : {cmd: /bin/true}\n")
    assert [(i.line, i.column) for i in found] == [(4, 7), (6, 5)]
    assert found[0].keypath.endswith("... (2000013 characters)")
    assert found[0].message.startswith("unknown key 'xxx") and "characters)" in found[0].message
    assert "program name is 1000000 characters long" in found[1].message
    assert all(len(str(i)) < 1500 for i in found)
