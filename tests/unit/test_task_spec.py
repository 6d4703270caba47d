"""The one checker of task input (taskmasterd/tasks/spec.py): every error
names the key and where it is, nothing half-parsed gets through."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskmasterd.errors import TaskInvalid
from taskmasterd.tasks.spec import (
    ID_RE,
    MAX_ARG,
    MAX_ARGS,
    MAX_ENV,
    MAX_EXEC,
    MAX_FILE,
    MAX_TASKS,
    MAX_TEXT,
    TASK_KEYS,
    TaskSpec,
    load_activity_file,
    load_json,
    load_task_file,
    parse_activity,
    parse_task,
)


def refused(obj: object, where: str = "task") -> str:
    with pytest.raises(TaskInvalid) as info:
        parse_task(obj, where)
    return str(info.value)


# ---- what a good task gives ---------------------------------------------------


def test_a_full_task() -> None:
    spec = parse_task({"command": "/usr/bin/rsync", "args": ["-a", "", "/src", "/dst"],
                       "env": {"B": "2", "A": "1"}, "workingdir": "/srv", "timeout": 30,
                       "user": "backup", "activity": "3df2bb24", "name": "nightly copy"})
    assert spec == TaskSpec(command="/usr/bin/rsync", args=("-a", "", "/src", "/dst"),
                            env=(("B", "2"), ("A", "1")), workingdir="/srv", timeout=30.0,
                            user="backup", activity="3df2bb24", name="nightly copy")
    assert isinstance(spec.timeout, float)
    assert spec.argv == ("/usr/bin/rsync", "-a", "", "/src", "/dst")
    assert spec.label == "nightly copy"


def test_defaults_and_label() -> None:
    spec = parse_task({"command": "/usr/bin/true"})
    assert spec == TaskSpec(command="/usr/bin/true")
    assert spec.timeout is None  # the configured tasks.timeout applies
    assert spec.label == "true"  # the command's basename when no name
    assert parse_task({"command": "true"}).label == "true"
    assert parse_task({"command": "/"}).label == "/"  # no basename: the command itself


def test_null_means_missing_for_the_optional_paths_and_timeout() -> None:
    spec = parse_task({"command": "x", "workingdir": None, "user": None, "timeout": None})
    assert (spec.workingdir, spec.user, spec.timeout) == (None, None, None)


def test_zero_timeout_is_no_limit_and_fractions_are_kept() -> None:
    assert parse_task({"command": "x", "timeout": 0}).timeout == 0.0
    assert parse_task({"command": "x", "timeout": 0.25}).timeout == 0.25


def test_env_numbers_become_their_text_and_order_is_kept() -> None:
    spec = parse_task({"command": "x", "env": {"Z": 1, "A": 2.5, "M": ""}})
    assert spec.env == (("Z", "1"), ("A", "2.5"), ("M", ""))


def test_to_json_reads_back_to_the_same_spec() -> None:
    full = TaskSpec(command="c", args=("a",), env=(("K", "v"),), workingdir="/w", timeout=0.0,
                    user="u", activity="0123abcd", name="n")
    for spec in (full, TaskSpec(command="c")):
        assert parse_task(json.loads(json.dumps(spec.to_json()))) == spec
    assert TaskSpec(command="c").to_json() == {"command": "c"}  # empty values left out


texts = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
                max_size=30)


@given(command=texts.filter(bool), args=st.lists(texts, max_size=5),
       env=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), texts,
                           max_size=4),
       timeout=st.none() | st.floats(min_value=0, max_value=86400),
       name=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF,
                                  exclude_categories=("Cs",), exclude_characters="\x7f"),
                    max_size=20))
def test_random_specs_survive_json(command: str, args: list[str], env: dict[str, str],
                                   timeout: float | None, name: str) -> None:
    spec = TaskSpec(command=command, args=tuple(args), env=tuple(env.items()), timeout=timeout,
                    name=name)
    assert parse_task(json.loads(json.dumps(spec.to_json()))) == spec


# ---- wrong types: the key, where, what was expected, what was given -------------------


@pytest.mark.parametrize(("task", "message"), [
    ({"command": 3}, "task.command: expected a string, got a number"),
    ({"command": None}, "task.command: expected a string, got null"),
    ({"command": ["ls"]}, "task.command: expected a string, got a list"),
    ({"command": "x", "args": "a b"}, "task.args: expected a list of strings, got a string"),
    ({"command": "x", "args": ["a", "b", 3]}, "task.args[2]: expected a string, got a number"),
    ({"command": "x", "args": [True]}, "task.args[0]: expected a string, got a boolean"),
    ({"command": "x", "args": [{}]}, "task.args[0]: expected a string, got a mapping"),
    ({"command": "x", "args": None}, "task.args: expected a list of strings, got null"),
    ({"command": "x", "env": ["A=1"]},
     "task.env: expected a mapping of NAME: value strings, got a list"),
    ({"command": "x", "env": {"A": True}}, "task.env.A: expected a string, got a boolean"),
    ({"command": "x", "env": {"A": None}}, "task.env.A: expected a string, got null"),
    ({"command": "x", "env": {"A": [1]}}, "task.env.A: expected a string, got a list"),
    ({"command": "x", "workingdir": 5}, "task.workingdir: expected a string, got a number"),
    ({"command": "x", "timeout": "30"},
     "task.timeout: expected a number of seconds, got a string"),
    ({"command": "x", "timeout": True},
     "task.timeout: expected a number of seconds, got a boolean"),
    ({"command": "x", "user": 0}, "task.user: expected a string, got a number"),
    ({"command": "x", "activity": 12345678},
     "task.activity: expected a string, got a number"),
    ({"command": "x", "activity": None}, "task.activity: expected a string, got null"),
    ({"command": "x", "activity": False}, "task.activity: expected a string, got a boolean"),
    ({"command": "x", "name": 1}, "task.name: expected a string, got a number"),
    ({"command": "x", "name": None}, "task.name: expected a string, got null"),
])
def test_wrong_types_are_named(task: dict[str, object], message: str) -> None:
    assert refused(task) == message


def test_where_is_the_callers() -> None:
    assert refused({"command": "x", "args": ["a", 1]}, "activity.tasks[3]") == \
        "activity.tasks[3].args[1]: expected a string, got a number"
    assert refused({"command": "x", "env": {"K": False}}, "/tmp/t.json") == \
        "/tmp/t.json.env.K: expected a string, got a boolean"


@pytest.mark.parametrize("value", [[], "x", 3, None, ("command",)])
def test_not_a_mapping(value: object) -> None:
    assert refused(value).startswith(f"task: expected a mapping of {', '.join(TASK_KEYS)}; got ")


# ---- keys -----------------------------------------------------------------------------


def test_command_is_required_and_not_empty() -> None:
    assert refused({}) == "task: 'command' is required (the program to run)"
    assert refused({"args": ["x"]}) == "task: 'command' is required (the program to run)"
    assert refused({"command": ""}) == "task.command: must not be empty"
    assert refused({"command": "x", "workingdir": ""}) == "task.workingdir: must not be empty"
    assert refused({"command": "x", "user": ""}) == "task.user: must not be empty"


@pytest.mark.parametrize(("key", "hint"), [
    ("comand", " (did you mean 'command'?)"),
    ("arg", " (did you mean 'args'?)"),
    ("environment", ""),
    ("timout", " (did you mean 'timeout'?)"),
    ("working_dir", " (did you mean 'workingdir'?)"),
    ("zzz", ""),
])
def test_unknown_keys_with_a_suggestion(key: str, hint: str) -> None:
    assert refused({"command": "x", key: 1}) == \
        f"task: unknown key '{key}'{hint}; a task has {', '.join(TASK_KEYS)}"


def test_a_key_that_is_not_a_string() -> None:
    assert refused({"command": "x", 1: 2}) == \
        f"task: unknown key '1'; a task has {', '.join(TASK_KEYS)}"  # repr of the int


def test_unknown_key_is_found_before_anything_else() -> None:
    """A misspelt key is the first thing said, not a missing `command`."""
    assert refused({"comand": "x"}).startswith("task: unknown key 'comand' (did you mean")


def test_workingdir_must_be_absolute() -> None:
    assert refused({"command": "x", "workingdir": "srv"}) == \
        "task.workingdir: must be an absolute path, got 'srv'"


@pytest.mark.parametrize("bad", ["3DF2BB24", "3df2bb2", "3df2bb24-1", "x" * 8, "0" * 33,
                                 "3df2bb24\n", " 3df2bb24"])
def test_activity_must_be_an_id(bad: str) -> None:
    assert refused({"command": "x", "activity": bad}) == \
        f"task.activity: {bad!r} is not an activity id (8 to 32 lowercase hex digits, as " \
        "SubmitActivity returns)"


def test_an_empty_activity_is_none() -> None:
    assert parse_task({"command": "x", "activity": ""}).activity == ""


@pytest.mark.parametrize("bad", ["1A", "A-B", "", "A B", "Ä", "A\n"])
def test_env_names(bad: str) -> None:
    assert refused({"command": "x", "env": {bad: "v"}}) == \
        f"task.env: {bad!r} is not a variable name (letters, digits and _, not starting " \
        "with a digit)"


@pytest.mark.parametrize("bad", ["a\x01b", "tab\there", "line\n", "\x7f", "end\r"])
def test_names_refuse_control_characters(bad: str) -> None:
    assert refused({"command": "x", "name": bad}) == "task.name: contains a control character"


def test_ids_are_lowercase_hex_8_to_32_whole() -> None:
    assert ID_RE.match("3df2bb24") and ID_RE.match("0" * 32)
    for bad in ("3df2bb24\n", "cli", "3DF2BB24", "0" * 33, "3df2bb2"):
        assert not ID_RE.match(bad), bad


# ---- NUL bytes and limits --------------------------------------------------------------


@pytest.mark.parametrize(("task", "where"), [
    ({"command": "a\x00b"}, "task.command"),
    ({"command": "x", "args": ["ok", "a\x00"]}, "task.args[1]"),
    ({"command": "x", "env": {"K": "\x00"}}, "task.env.K"),
    ({"command": "x", "workingdir": "/a\x00"}, "task.workingdir"),
    ({"command": "x", "user": "r\x00oot"}, "task.user"),
    ({"command": "x", "name": "\x00"}, "task.name"),
    ({"command": "x", "activity": "3df2bb24\x00"}, "task.activity"),
])
def test_nul_bytes(task: dict[str, object], where: str) -> None:
    assert refused(task) == f"{where}: contains a NUL character"


def test_args_and_env_together_are_bounded() -> None:
    # What one task holds in the daemon's memory until tasks.keep removes it.
    big = MAX_ARG - 1
    n = MAX_EXEC // big
    fits = ["a" * big] * n
    assert parse_task({"command": "x", "args": fits}).args == tuple(fits)
    env = {"K": "v" * 4000}
    size = n * big + 4003
    assert size > MAX_EXEC
    assert refused({"command": "x", "args": fits, "env": env}) == \
        f"task: its args and env are {size} characters together; at most {MAX_EXEC} are accepted"


def test_limits() -> None:
    assert refused({"command": "x" * (MAX_TEXT + 1)}) == \
        f"task.command: {MAX_TEXT + 1} characters long; at most {MAX_TEXT} are accepted"
    assert parse_task({"command": "x" * MAX_TEXT}).command == "x" * MAX_TEXT
    assert refused({"command": "x", "args": ["a" * (MAX_ARG + 1)]}) == \
        f"task.args[0]: {MAX_ARG + 1} characters long; at most {MAX_ARG} are accepted"
    assert len(parse_task({"command": "x", "args": ["a"] * MAX_ARGS}).args) == MAX_ARGS
    assert refused({"command": "x", "args": ["a"] * (MAX_ARGS + 1)}) == \
        f"task.args: {MAX_ARGS + 1} arguments; at most {MAX_ARGS} are accepted"
    many = {f"V{i}": "" for i in range(MAX_ENV + 1)}
    assert refused({"command": "x", "env": many}) == \
        f"task.env: {MAX_ENV + 1} variables; at most {MAX_ENV} are accepted"
    assert refused({"command": "x", "env": {"K": "v" * (MAX_TEXT + 1)}}) == \
        f"task.env.K: {MAX_TEXT + 1} characters long; at most {MAX_TEXT} are accepted"
    assert refused({"command": "x", "user": "u" * 257}) == \
        "task.user: 257 characters long; at most 256 are accepted"
    assert refused({"command": "x", "name": "n" * 257}) == \
        "task.name: 257 characters long; at most 256 are accepted"


# ---- timeouts -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    (-1, "task.timeout: expected 0 (no limit) or a positive number of seconds, got -1"),
    (-0.5, "task.timeout: expected 0 (no limit) or a positive number of seconds, got -0.5"),
    (float("nan"), "task.timeout: expected 0 (no limit) or a positive number of seconds, got nan"),
    (float("inf"), "task.timeout: expected 0 (no limit) or a positive number of seconds, got inf"),
    (366 * 86400 + 1, "task.timeout: 31622401 seconds is more than a year; use 0 for no limit"),
])
def test_timeouts(value: float, message: str) -> None:
    assert refused({"command": "x", "timeout": value}) == message


def test_a_timeout_too_large_for_a_float_is_refused_not_raised() -> None:
    """10**400 from JSON is a Python int no float holds: it used to raise
    OverflowError out of parse_task (a crash, not a named error)."""
    assert refused({"command": "x", "timeout": 10 ** 400}).startswith(
        "task.timeout: 1000000000")
    assert refused({"command": "x", "timeout": 10 ** 400}).endswith(
        " seconds is more than a year; use 0 for no limit")


def test_a_year_is_accepted() -> None:
    assert parse_task({"command": "x", "timeout": 366 * 86400}).timeout == 366 * 86400.0


# ---- activities ---------------------------------------------------------------------


def test_an_activity() -> None:
    name, specs = parse_activity({"name": "deploy", "tasks": [{"command": "a"}, {"command": "b"}]})
    assert name == "deploy" and [s.command for s in specs] == ["a", "b"]
    assert parse_activity({"tasks": [{"command": "a"}]})[0] == ""  # name optional


@pytest.mark.parametrize(("obj", "message"), [
    ([], "activity: expected a mapping with name and tasks; got a list"),
    ({"name": "n"}, "activity.tasks: expected a non-empty list of tasks, got null"),
    ({"tasks": []}, "activity.tasks: expected a non-empty list of tasks, got an empty list"),
    ({"tasks": {"command": "x"}},
     "activity.tasks: expected a non-empty list of tasks, got a mapping"),
    ({"tasks": [{"command": "a"}, {"command": "b", "args": [1]}]},
     "activity.tasks[1].args[0]: expected a string, got a number"),
    ({"tasks": [{"command": "a"}, "b"]},
     f"activity.tasks[1]: expected a mapping of {', '.join(TASK_KEYS)}; got a string"),
    ({"tasks": [{"command": "a", "activity": "3df2bb24"}]},
     "activity.tasks[0].activity: a task of an activity cannot name another activity"),
    ({"name": "n", "task": []}, "activity: unknown key 'task' (did you mean 'tasks'?); an "
     "activity has name and tasks"),
    ({"name": "a\nb", "tasks": [{"command": "a"}]}, "activity.name: contains a control character"),
    ({"name": 5, "tasks": [{"command": "a"}]}, "activity.name: expected a string, got a number"),
])
def test_activity_errors(obj: object, message: str) -> None:
    with pytest.raises(TaskInvalid) as info:
        parse_activity(obj)
    assert str(info.value) == message


def test_activity_task_limit() -> None:
    with pytest.raises(TaskInvalid) as info:
        parse_activity({"tasks": [{"command": "x"}] * (MAX_TASKS + 1)})
    assert str(info.value) == \
        f"activity.tasks: {MAX_TASKS + 1} tasks; at most {MAX_TASKS} are accepted"


# ---- files: JSON errors with path:line:col ---------------------------------------------


def file_refused(text: str | bytes, path: str = "/etc/t.json", activity: bool = False) -> str:
    with pytest.raises(TaskInvalid) as info:
        (load_activity_file if activity else load_task_file)(text, path)
    return str(info.value)


def test_task_file() -> None:
    assert load_task_file('{"command": "true"}', "t.json") == TaskSpec(command="true")
    assert load_task_file(b'{"command": "\\u00e9"}', "t.json").command == "é"
    assert load_activity_file('{"name": "a", "tasks": [{"command": "x"}]}', "a.json")[0] == "a"


def test_json_errors_give_path_line_and_column() -> None:
    assert file_refused('{\n  "command": "x",\n  "args": [1,]\n}') == \
        "/etc/t.json:3:14: not valid JSON: Expecting value"
    assert file_refused('{"command": "x"') == \
        "/etc/t.json:1:16: not valid JSON: Expecting ',' delimiter"
    assert file_refused("") == "/etc/t.json:1:1: not valid JSON: Expecting value"
    assert file_refused('{"command": "x"} trailing') == \
        "/etc/t.json:1:18: not valid JSON: Extra data"


def test_file_errors_name_the_file_as_where() -> None:
    assert file_refused('{"command": "x", "args": [1]}') == \
        "/etc/t.json.args[0]: expected a string, got a number"
    assert file_refused('{"tasks": [{"command": 2}]}', "a.json", activity=True) == \
        "a.json.tasks[0].command: expected a string, got a number"


def test_nul_escaped_in_json() -> None:
    assert file_refused('{"command": "a\\u0000b"}') == "/etc/t.json.command: contains a NUL character"


def test_undecodable_bytes_too_deep_too_big() -> None:
    assert file_refused(b'{"command": "\xff"}').startswith("/etc/t.json: not valid JSON: ")
    assert file_refused("[" * 100_000).startswith("/etc/t.json: not valid JSON: ")
    big = " " * (MAX_FILE + 1)
    assert file_refused(big) == f"/etc/t.json: {MAX_FILE + 1} bytes; at most {MAX_FILE} are accepted"


def test_an_integer_too_long_for_python_is_a_named_error() -> None:
    """Python >= 3.11 refuses to convert an integer of more than 4300
    digits with a plain ValueError (not a JSONDecodeError): it used to
    escape load_json."""
    assert file_refused('{"command": "x", "timeout": ' + "1" * 5000 + "}").startswith(
        "/etc/t.json: not valid JSON: ")


def test_load_json_is_the_parser_of_both() -> None:
    assert load_json('{"a": [1, 2.5, null, true]}', "f") == {"a": [1, 2.5, None, True]}


def test_a_key_given_twice_is_refused() -> None:
    """JSON itself lets the last one win: `{"command": "rm", "command": "ls"}`
    ran `ls` without a word. The configuration file refuses duplicates too."""
    assert file_refused('{"command": "rm", "args": [], "command": "ls"}') == \
        "/etc/t.json: key 'command' given twice in one object"
    assert file_refused('{"tasks": [{"command": "a", "env": {"A": "1", "A": "2"}}]}',
                        "a.json", activity=True) == "a.json: key 'A' given twice in one object"
