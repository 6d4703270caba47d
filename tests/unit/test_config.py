"""Tests for taskmasterd.config: loading, validation and issue locations."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskmasterd.config import (
    ALERT_EVENTS,
    AlertConfig,
    AutoRestart,
    Config,
    ConfigError,
    ConfigIssue,
    GlobalConfig,
    Output,
    OutputKind,
    ProgramConfig,
    load_config,
    parse_config,
)

# ---------------------------------------------------------------------------
# helpers


def write(tmp_path: Path, text: str, name: str = "taskmaster.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def issues_of(tmp_path: Path, text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    assert exc.value.issues, "ConfigError without issues"
    return exc.value.issues


def only_issue(tmp_path: Path, text: str) -> ConfigIssue:
    found = issues_of(tmp_path, text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def prog(*lines: str, name: str = "web", cmd: str = "/bin/true") -> str:
    """A one-program file; the first extra line is line 4, indented 4."""
    body = "".join(f"    {line}\n" for line in lines)
    return f"programs:\n  {name}:\n    cmd: {cmd}\n{body}"


def program(tmp_path: Path, *lines: str) -> ProgramConfig:
    config = load(tmp_path, prog(*lines))
    assert len(config.programs) == 1
    return config.programs[0]


def value_col(key: str) -> int:
    """1-based column of the value in a `prog()` line `    key: value`."""
    return len(f"    {key}: ") + 1


def assert_issue(issue: ConfigIssue, line: int, column: int, keypath: str, phrase: str) -> None:
    assert (issue.line, issue.column, issue.keypath) == (line, column, keypath), str(issue)
    assert phrase in issue.message, str(issue)


SUBJECT_EXAMPLE = """\
programs:
  nginx:
  cmd: "/usr/local/bin/nginx -c /etc/nginx/test.conf"
  numprocs: 1
  umask: 022
  workingdir: /tmp
  autostart: true
  autorestart: unexpected
  exitcodes:
    - 0
    - 2
  startretries: 3
  starttime: 5
  stopsignal: TERM
  stoptime: 10
  stdout: /tmp/nginx.stdout
  stderr: /tmp/nginx.stderr
  env:
    STARTED_BY: taskmaster
    ANSWER: 42
vogsphere:
  cmd: "/usr/local/bin/vogsphere-worker --no-prefork"
  numprocs: 8
  umask: 077
  workingdir: /tmp
  autostart: true
  autorestart: unexpected
  exitcodes: 0
  startretries: 3
  starttime: 5
  stopsignal: USR1
  stoptime: 10
  stdout: /tmp/vgsworker.stdout
  stderr: /tmp/vgsworker.stderr
"""

SUBJECT_EXAMPLE_FIXED = """\
programs:
  nginx:
    cmd: "/usr/local/bin/nginx -c /etc/nginx/test.conf"
    numprocs: 1
    umask: 022
    workingdir: /tmp
    autostart: true
    autorestart: unexpected
    exitcodes:
      - 0
      - 2
    startretries: 3
    starttime: 5
    stopsignal: TERM
    stoptime: 10
    stdout: /tmp/nginx.stdout
    stderr: /tmp/nginx.stderr
    env:
      STARTED_BY: taskmaster
      ANSWER: 42
  vogsphere:
    cmd: "/usr/local/bin/vogsphere-worker --no-prefork"
    numprocs: 8
    umask: 077
    workingdir: /tmp
    autostart: true
    autorestart: unexpected
    exitcodes: 0
    startretries: 3
    starttime: 5
    stopsignal: USR1
    stoptime: 10
    stdout: /tmp/vgsworker.stdout
    stderr: /tmp/vgsworker.stderr
"""


# ---------------------------------------------------------------------------
# the 42 subject's example


def test_subject_example_as_shipped_is_rejected_with_located_hints(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, SUBJECT_EXAMPLE)
    by_line = {i.line: i for i in issues}
    assert len(by_line) == len(issues), "at most one issue per line"

    assert_issue(
        by_line[2],
        2,
        3,
        "programs.nginx",
        "program 'nginx' has no settings — the keys after it are at the same indentation "
        "as 'nginx:' and must be indented under it",
    )
    assert_issue(
        by_line[3],
        3,
        3,
        "programs.cmd",
        "program 'cmd' must be a mapping of settings, found a string; "
        "'cmd' is a program setting — indent it under its program",
    )
    assert_issue(
        by_line[4],
        4,
        3,
        "programs.numprocs",
        "program 'numprocs' must be a mapping of settings, found an integer; "
        "'numprocs' is a program setting — indent it under its program",
    )
    assert_issue(by_line[9], 9, 3, "programs.exitcodes", "found a sequence; 'exitcodes' is a program setting")
    assert_issue(by_line[18], 18, 3, "programs.env", "'env' is a program setting — indent it under")
    assert_issue(
        by_line[21],
        21,
        1,
        "vogsphere",
        "unknown top-level key 'vogsphere'; a program belongs under 'programs:' — indent it there",
    )
    # every setting-named key at the program level gets exactly one issue, on its own line
    setting_lines = [3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18]
    for line in setting_lines:
        assert "is a program setting" in by_line[line].message
    # nothing is reported inside the mis-placed values (no flood)
    assert sorted(by_line) == [2, *setting_lines, 21]


def test_subject_example_fixed_loads(tmp_path: Path) -> None:
    config = load(tmp_path, SUBJECT_EXAMPLE_FIXED)
    assert [p.name for p in config.programs] == ["nginx", "vogsphere"]
    nginx = config.program("nginx")
    vog = config.program("vogsphere")
    assert nginx is not None and vog is not None
    assert nginx.cmd == "/usr/local/bin/nginx -c /etc/nginx/test.conf"
    assert nginx.argv == ("/usr/local/bin/nginx", "-c", "/etc/nginx/test.conf")
    assert nginx.umask == 0o22
    assert vog.umask == 0o77
    assert nginx.exitcodes == frozenset({0, 2})
    assert vog.exitcodes == frozenset({0})
    assert nginx.stopsignal is signal.SIGTERM
    assert vog.stopsignal is signal.SIGUSR1
    assert nginx.env_dict == {"STARTED_BY": "taskmaster", "ANSWER": "42"}
    assert nginx.env == (("ANSWER", "42"), ("STARTED_BY", "taskmaster"))
    assert vog.env == ()
    assert nginx.numprocs == 1
    assert vog.numprocs == 8
    assert vog.process_names()[:2] == ["vogsphere:0", "vogsphere:1"]
    for p in (nginx, vog):
        assert p.workingdir == "/tmp"
        assert p.autostart is True
        assert p.autorestart is AutoRestart.UNEXPECTED
        assert p.startretries == 3
        assert p.starttime == 5.0
        assert p.stoptime == 10.0
    assert nginx.stdout == Output(OutputKind.FILE, "/tmp/nginx.stdout")
    assert nginx.stderr == Output(OutputKind.FILE, "/tmp/nginx.stderr")
    assert vog.stdout == Output(OutputKind.FILE, "/tmp/vgsworker.stdout")
    assert vog.stderr == Output(OutputKind.FILE, "/tmp/vgsworker.stderr")


# ---------------------------------------------------------------------------
# defaults and the top level


def test_minimal_program_gets_the_dataclass_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, prog())
    config = load_config(path)
    assert config.path == str(path)
    assert os.path.isabs(config.path)
    assert config.daemon == GlobalConfig()
    assert config.alerts == ()
    assert config.programs == (ProgramConfig(name="web", cmd="/bin/true", argv=("/bin/true",)),)
    p = config.programs[0]
    assert p.stdout == Output(OutputKind.AUTO) and p.stderr == Output(OutputKind.AUTO)
    assert p.umask is None and p.workingdir is None and p.user is None
    assert (p.startlimit_burst, p.startlimit_interval) == (10, 10.0)  # systemd's defaults


def test_load_config_accepts_str_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, prog())
    assert load_config(str(path)) == load_config(path)


def test_programs_keep_file_order(tmp_path: Path) -> None:
    text = "programs:\n  zeta: {cmd: z}\n  alpha: {cmd: a}\n  mid: {cmd: m}\n"
    assert [p.name for p in load(tmp_path, text).programs] == ["zeta", "alpha", "mid"]


@pytest.mark.parametrize(
    "text",
    [
        "programs:\n",
        "programs: {}\n",
        "programs: ~\n",
        "taskmasterd:\n  loglevel: info\n",
        "alerts: []\n",
        "taskmasterd:\nprograms:\nalerts:\n",
    ],
)
def test_zero_programs_is_valid(tmp_path: Path, text: str) -> None:
    assert load(tmp_path, text).programs == ()


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n", "null\n"])
def test_empty_file_is_an_error(tmp_path: Path, text: str) -> None:
    assert_issue(only_issue(tmp_path, text), 1, 1, "", "the file is empty")


@pytest.mark.parametrize(
    ("text", "found"),
    [("- a\n- b\n", "found a sequence"), ("hello\n", "found a string"), ("42\n", "found an integer")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    issue = only_issue(tmp_path, text)
    assert_issue(issue, 1, 1, "", "the top level must be a mapping")
    assert found in issue.message


@pytest.mark.parametrize(
    ("text", "keypath", "phrase"),
    [
        (
            "program:\n  web:\n    cmd: x\n",
            "program",
            "unknown top-level key 'program' (did you mean 'programs'?)",
        ),
        ("web:\n  cmd: /bin/true\n", "web", "a program belongs under 'programs:' — indent it there"),
        ("cmd: /bin/true\n", "cmd", "'cmd' is a program setting"),
        ("loglevel: debug\n", "loglevel", "'loglevel' is a daemon setting — indent it under 'taskmasterd:'"),
        ("zzz: 1\n", "zzz", "unknown top-level key 'zzz'; expected taskmasterd, programs, alerts or tasks"),
        ("taskmaster:\n  loglevel: info\n", "taskmaster", "did you mean 'taskmasterd'?"),
    ],
)
def test_unknown_top_level_keys(tmp_path: Path, text: str, keypath: str, phrase: str) -> None:
    assert_issue(only_issue(tmp_path, text), 1, 1, keypath, phrase)


@pytest.mark.parametrize(
    ("text", "column", "found"),
    [
        ("programs: [web]\n", 11, "found a sequence"),
        ("programs: web\n", 11, "found a string"),
    ],
)
def test_programs_must_be_a_mapping(tmp_path: Path, text: str, column: int, found: str) -> None:
    issue = only_issue(tmp_path, text)
    assert_issue(issue, 1, column, "programs", "expected a mapping of program name -> settings")
    assert found in issue.message


# ---------------------------------------------------------------------------
# taskmasterd:


def test_global_settings(tmp_path: Path) -> None:
    text = (
        "taskmasterd:\n"
        "  logfile: logs/taskmasterd.log\n"
        "  logdir: /var/log//tm/\n"
        "  statedir: ./state/../state2\n"
        "  loglevel: WARNING\n"
    )
    daemon = load(tmp_path, text).daemon
    assert daemon == GlobalConfig(
        logfile=str(tmp_path / "logs" / "taskmasterd.log"),
        loglevel="warning",
        logdir="/var/log/tm",
        statedir=str(tmp_path / "state2"),
    )


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "DEBUG", "Error", "'info'"])
def test_loglevels(tmp_path: Path, level: str) -> None:
    daemon = load(tmp_path, f"taskmasterd:\n  loglevel: {level}\n").daemon
    assert daemon.loglevel == level.strip("'").lower()


@pytest.mark.parametrize(
    ("line", "column", "keypath", "phrase"),
    [
        (
            "loglevel: verbose",
            13,
            "taskmasterd.loglevel",
            "expected debug, info, warning or error, found 'verbose'",
        ),
        ("loglevel: ~", 13, "taskmasterd.loglevel", "found null"),
        ("logfil: /x", 3, "taskmasterd.logfil", "unknown key 'logfil' (did you mean 'logfile'?)"),
        ("pidfile: /x", 3, "taskmasterd.pidfile", "taskmasterd accepts: logfile, loglevel, logdir, statedir"),
        ("logfile: ~", 12, "taskmasterd.logfile", "expected a path, found null"),
        ("logdir: 42", 11, "taskmasterd.logdir", "expected a path, found an integer"),
        ("statedir: ''", 13, "taskmasterd.statedir", "expected a path, found an empty string"),
        ("statedir: [a]", 13, "taskmasterd.statedir", "expected a path, found a sequence"),
    ],
)
def test_global_invalid(tmp_path: Path, line: str, column: int, keypath: str, phrase: str) -> None:
    assert_issue(only_issue(tmp_path, f"taskmasterd:\n  {line}\n"), 2, column, keypath, phrase)


def test_global_section_must_be_a_mapping(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "taskmasterd: [a]\n")
    assert_issue(issue, 1, 14, "taskmasterd", "expected a mapping of daemon settings, found a sequence")


# ---------------------------------------------------------------------------
# umask


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("022", 0o22),
        ("22", 0o22),
        ('"022"', 0o22),
        ("'0o22'", 0o22),
        ("0o22", 0o22),
        ("0O22", 0o22),
        ("0022", 0o22),
        ("0777", 0o777),
        ("777", 0o777),
        ("077", 0o77),
        ("0", 0),
        ("000", 0),
        ("'7'", 7),
    ],
)
def test_umask_valid(tmp_path: Path, raw: str, expected: int) -> None:
    assert program(tmp_path, f"umask: {raw}").umask == expected


@pytest.mark.parametrize(
    "raw",
    [
        "8",
        "089",
        "18",
        "1000",
        "0o1000",
        "0x12",
        "-022",
        "+022",
        "0o",
        "0o8",
        "0b11",
        "02_2",
        "1.5",
        "abc",
        "''",
        "'0 22'",
        "~",
        "[022]",
    ],
)
def test_umask_invalid(tmp_path: Path, raw: str) -> None:
    issue = only_issue(tmp_path, prog(f"umask: {raw}"))
    assert_issue(
        issue,
        4,
        value_col("umask"),
        "programs.web.umask",
        "umask must be octal digits like 022 (a digit 8 or 9 is not octal)",
    )


def test_umask_above_0777_says_so(tmp_path: Path) -> None:
    assert "above the largest umask 0777" in only_issue(tmp_path, prog("umask: 1000")).message


def test_umask_absent_is_none(tmp_path: Path) -> None:
    assert program(tmp_path).umask is None


@given(st.integers(min_value=0, max_value=0o777))
def test_umask_property_written_octal_digits_load_as_written(u: int) -> None:
    for raw in (f"{u:03o}", f'"{u:o}"', f"0o{u:o}"):
        config = parse_config(prog(f"umask: {raw}"), "/etc/taskmaster/taskmaster.yaml")
        assert config.programs[0].umask == u, raw


@given(st.integers(min_value=0, max_value=9999))
def test_umask_property_decimal_looking_values(n: int) -> None:
    text = str(n)
    octal = set(text) <= set("01234567") and int(text, 8) <= 0o777
    try:
        config = parse_config(prog(f"umask: {text}"), "/etc/t.yaml")
    except ConfigError as exc:
        assert not octal, text
        assert "umask must be octal digits" in exc.issues[0].message
    else:
        assert octal, text
        assert config.programs[0].umask == int(text, 8)


# ---------------------------------------------------------------------------
# booleans and autorestart


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("yes", True),
        ("Yes", True),
        ("on", True),
        ("ON", True),
        ('"on"', True),
        ("false", False),
        ("no", False),
        ("No", False),
        ("off", False),
        ("OFF", False),
        ("'off'", False),
    ],
)
def test_autostart_booleans(tmp_path: Path, raw: str, expected: bool) -> None:
    assert program(tmp_path, f"autostart: {raw}").autostart is expected


@pytest.mark.parametrize("raw", ["1", "0", "y", "n", "maybe", "~", "''", "[true]", "{a: 1}"])
def test_autostart_invalid(tmp_path: Path, raw: str) -> None:
    issue = only_issue(tmp_path, prog(f"autostart: {raw}"))
    assert_issue(issue, 4, value_col("autostart"), "programs.web.autostart", "expected true or false")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("always", AutoRestart.ALWAYS),
        ("Always", AutoRestart.ALWAYS),
        ("NEVER", AutoRestart.NEVER),
        ("unexpected", AutoRestart.UNEXPECTED),
        ("'never'", AutoRestart.NEVER),
        ("true", AutoRestart.ALWAYS),
        ("yes", AutoRestart.ALWAYS),
        ("false", AutoRestart.NEVER),
        ("off", AutoRestart.NEVER),
    ],
)
def test_autorestart_valid(tmp_path: Path, raw: str, expected: AutoRestart) -> None:
    assert program(tmp_path, f"autorestart: {raw}").autorestart is expected


@pytest.mark.parametrize("raw", ["sometimes", "1", "~", "[always]"])
def test_autorestart_invalid(tmp_path: Path, raw: str) -> None:
    issue = only_issue(tmp_path, prog(f"autorestart: {raw}"))
    assert_issue(
        issue, 4, value_col("autorestart"), "programs.web.autorestart", "expected always, never or unexpected"
    )


# ---------------------------------------------------------------------------
# integers: numprocs, startretries, exitcodes


@pytest.mark.parametrize(
    ("line", "attr", "expected"),
    [
        ("numprocs: 1", "numprocs", 1),
        ("numprocs: 1000", "numprocs", 1000),
        ("numprocs: 08", "numprocs", 8),
        ("startretries: 0", "startretries", 0),
        ("startretries: 1000", "startretries", 1000),
        ("startlimit_burst: 0", "startlimit_burst", 0),
        ("startlimit_burst: 1000", "startlimit_burst", 1000),
        ("exitcodes: 0", "exitcodes", frozenset({0})),
        ("exitcodes: 255", "exitcodes", frozenset({255})),
        ("exitcodes: 010", "exitcodes", frozenset({10})),
        ("exitcodes: [0, 2]", "exitcodes", frozenset({0, 2})),
        ("exitcodes: [1]", "exitcodes", frozenset({1})),
        ("exitcodes: [0, 0, 1]", "exitcodes", frozenset({0, 1})),
    ],
)
def test_integers_valid(tmp_path: Path, line: str, attr: str, expected: object) -> None:
    assert getattr(program(tmp_path, line), attr) == expected


@pytest.mark.parametrize(
    ("key", "raw", "phrase"),
    [
        ("numprocs", "0", "must be between 1 and 1000, found 0"),
        ("numprocs", "1001", "must be between 1 and 1000, found 1001"),
        ("numprocs", "-1", "must be between 1 and 1000, found -1"),
        ("numprocs", "99999999999999999999999", "must be between 1 and 1000"),
        ("numprocs", '"2"', "expected an integer 1–1000, found the quoted string '2' (remove the quotes)"),
        ("numprocs", "2.0", "expected an integer 1–1000, found '2.0'"),
        ("numprocs", "abc", "expected an integer 1–1000"),
        ("numprocs", "1_0", "expected an integer 1–1000"),
        ("numprocs", "0x10", "expected an integer 1–1000"),
        ("numprocs", "+2", "expected an integer 1–1000"),
        ("numprocs", "~", "expected an integer 1–1000, found null"),
        ("numprocs", "[1]", "expected an integer 1–1000, found a sequence"),
        ("startretries", "-1", "must be between 0 and 1000, found -1"),
        ("startretries", "1001", "must be between 0 and 1000"),
        ("startlimit_burst", "-1", "must be between 0 and 1000, found -1"),
        ("startlimit_burst", "1001", "must be between 0 and 1000, found 1001"),
        ("startlimit_burst", '"10"', "found the quoted string '10' (remove the quotes)"),
        ("startlimit_burst", "2.5", "expected an integer 0–1000, found '2.5'"),
        ("exitcodes", "256", "must be between 0 and 255, found 256"),
        ("exitcodes", "-1", "must be between 0 and 255"),
        ("exitcodes", '"2"', "expected an integer 0–255"),
        ("exitcodes", "1.5", "expected an integer 0–255"),
        ("exitcodes", "[]", "expected an exit code 0–255 or a list of them, found an empty list"),
        ("exitcodes", "{a: 1}", "expected an exit code 0–255 or a list of them, found a mapping"),
        ("exitcodes", "~", "expected an integer 0–255, found null"),
    ],
)
def test_integers_invalid(tmp_path: Path, key: str, raw: str, phrase: str) -> None:
    issue = only_issue(tmp_path, prog(f"{key}: {raw}"))
    assert_issue(issue, 4, value_col(key), f"programs.web.{key}", phrase)


def test_exitcodes_list_items_are_checked_one_by_one(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, prog('exitcodes: [0, "2", 300, x]'))
    assert len(issues) == 3
    assert_issue(issues[0], 4, 20, "programs.web.exitcodes[1]", "expected an integer 0–255")
    assert_issue(issues[1], 4, 25, "programs.web.exitcodes[2]", "must be between 0 and 255, found 300")
    assert_issue(issues[2], 4, 30, "programs.web.exitcodes[3]", "expected an integer 0–255, found 'x'")


def test_exitcodes_block_list_item_location(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, prog("exitcodes:", "  - 0", '  - "2"'))
    assert_issue(issue, 6, 9, "programs.web.exitcodes[1]", "expected an integer 0–255")


# ---------------------------------------------------------------------------
# seconds: starttime, stoptime, restartdelay


@pytest.mark.parametrize("key", ["starttime", "stoptime", "restartdelay", "startlimit_interval"])
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("5", 5.0), ("0.5", 0.5), ("0", 0.0), ("10.", 10.0), (".5", 0.5), ("1.50", 1.5), ("86400", 86400.0)],
)
def test_seconds_valid(tmp_path: Path, key: str, raw: str, expected: float) -> None:
    assert getattr(program(tmp_path, f"{key}: {raw}"), key) == expected


@pytest.mark.parametrize("key", ["starttime", "stoptime", "restartdelay", "startlimit_interval"])
@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ("-1", "must be >= 0, found -1"),
        ("-0.5", "must be >= 0"),
        ("86401", "must be <= 86400"),
        ('"5"', "expected a number of seconds like 5 or 0.5, found the quoted string '5'"),
        ("1e3", "expected a number of seconds"),
        (".inf", "expected a number of seconds"),
        ("abc", "expected a number of seconds"),
        ("~", "expected a number of seconds like 5 or 0.5, found null"),
        ("[1]", "found a sequence"),
    ],
)
def test_seconds_invalid(tmp_path: Path, key: str, raw: str, phrase: str) -> None:
    issue = only_issue(tmp_path, prog(f"{key}: {raw}"))
    assert_issue(issue, 4, value_col(key), f"programs.web.{key}", phrase)


# ---------------------------------------------------------------------------
# stopsignal


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("TERM", signal.SIGTERM),
        ("term", signal.SIGTERM),
        ("SIGTERM", signal.SIGTERM),
        ("sigterm", signal.SIGTERM),
        ("SigUsr1", signal.SIGUSR1),
        ("USR1", signal.SIGUSR1),
        ("USR2", signal.SIGUSR2),
        ("KILL", signal.SIGKILL),
        ("HUP", signal.SIGHUP),
        ("INT", signal.SIGINT),
        ("QUIT", signal.SIGQUIT),
        ('"SIGKILL"', signal.SIGKILL),
        (str(int(signal.SIGTERM)), signal.SIGTERM),
        (str(int(signal.SIGKILL)), signal.SIGKILL),
        (str(int(signal.SIGUSR1)), signal.SIGUSR1),
    ],
)
def test_stopsignal_valid(tmp_path: Path, raw: str, expected: signal.Signals) -> None:
    assert program(tmp_path, f"stopsignal: {raw}").stopsignal is expected


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ("FOO", "unknown signal 'FOO'; expected a signal name like TERM, HUP"),
        ("SIG", "unknown signal 'SIG'"),
        ("SIG_DFL", "unknown signal"),
        ("TERM!", "unknown signal"),
        ("0", "0 is not a signal number"),
        ("999", "999 is not a signal number"),
        ("99999999999", "is not a signal number"),
        ('"15"', "unknown signal '15' (a signal number is written without quotes)"),
        ("~", "expected a signal name, found null"),
        ("[TERM]", "expected a signal name, found a sequence"),
        # Signal names and numbers are ASCII: int("٩") is 9 and "ſ".upper() is "S".
        ("\u0669", "unknown signal '\u0669' (signal names and numbers are ASCII)"),
        ("\u0661\u0665", "(signal names and numbers are ASCII)"),
        ("\u017figterm", "(signal names and numbers are ASCII)"),
        ("k\u0131ll", "(signal names and numbers are ASCII)"),
    ],
)
def test_stopsignal_invalid(tmp_path: Path, raw: str, phrase: str) -> None:
    issue = only_issue(tmp_path, prog(f"stopsignal: {raw}"))
    assert_issue(issue, 4, value_col("stopsignal"), "programs.web.stopsignal", phrase)


# ---------------------------------------------------------------------------
# stdout / stderr


def test_output_absent_is_auto(tmp_path: Path) -> None:
    p = program(tmp_path)
    assert p.stdout == Output(OutputKind.AUTO, None)
    assert p.stderr == Output(OutputKind.AUTO, None)


@pytest.mark.parametrize("key", ["stdout", "stderr"])
@pytest.mark.parametrize(
    ("raw", "kind", "path"),
    [
        ("null", OutputKind.NULL, None),
        ("Null", OutputKind.NULL, None),
        ("~", OutputKind.NULL, None),
        ("", OutputKind.NULL, None),
        ("/dev/null", OutputKind.NULL, None),
        ('"/dev/null"', OutputKind.NULL, None),
        ("/dev/../dev/null", OutputKind.NULL, None),
        ("journal", OutputKind.JOURNAL, None),
        ("'journal'", OutputKind.JOURNAL, None),
        ("./journal", OutputKind.FILE, "{dir}/journal"),
        ('"null"', OutputKind.FILE, "{dir}/null"),
        ("/var/log/web.log", OutputKind.FILE, "/var/log/web.log"),
        ("/var/log//a/../web.log", OutputKind.FILE, "/var/log/web.log"),
        ("logs/web.out", OutputKind.FILE, "{dir}/logs/web.out"),
        ("../web.out", OutputKind.FILE, "{parent}/web.out"),
    ],
)
def test_output_forms(tmp_path: Path, key: str, raw: str, kind: OutputKind, path: str | None) -> None:
    p = program(tmp_path, f"{key}: {raw}".rstrip())
    if path is not None:
        path = path.format(dir=tmp_path, parent=tmp_path.parent)
    assert getattr(p, key) == Output(kind, path)
    other = "stderr" if key == "stdout" else "stdout"
    assert getattr(p, other) == Output(OutputKind.AUTO)


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ("42", "expected a file path, 'journal' or null, found an integer (42); quote it"),
        ("true", "found a boolean"),
        ("1.5", "found a number"),
        ("2024-01-01", "found a date"),
        ("''", "found an empty string"),
        ("[a]", "expected a file path, 'journal' or null, found a sequence"),
        ("{a: b}", "found a mapping"),
    ],
)
def test_output_invalid(tmp_path: Path, raw: str, phrase: str) -> None:
    issue = only_issue(tmp_path, prog(f"stdout: {raw}"))
    assert_issue(issue, 4, value_col("stdout"), "programs.web.stdout", phrase)


# ---------------------------------------------------------------------------
# env


def test_env_keeps_the_source_text(tmp_path: Path) -> None:
    p = program(
        tmp_path,
        "env:",
        "  ANSWER: 42",
        "  OCT: 022",
        "  ON: on",
        "  F: 1.50",
        "  E: ''",
        '  Q: "quoted: yes"',
        "  H: 0x1F",
        "  N: -1",
        "  T: TRUE",
        "  D: 2024-01-01",
        "  I: .inf",
        "  S: 1_000",
        "  M: |",
        "    two",
        "    lines",
    )
    assert p.env_dict == {
        "ANSWER": "42",
        "OCT": "022",
        "ON": "on",
        "F": "1.50",
        "E": "",
        "Q": "quoted: yes",
        "H": "0x1F",
        "N": "-1",
        "T": "TRUE",
        "D": "2024-01-01",
        "I": ".inf",
        "S": "1_000",
        "M": "two\nlines\n",
    }
    assert [k for k, _ in p.env] == sorted(p.env_dict)


def test_env_flow_mapping_and_numeric_names(tmp_path: Path) -> None:
    p = program(tmp_path, "env: {B: 2, A: x, 1: one}")
    assert p.env == (("1", "one"), ("A", "x"), ("B", "2"))


@pytest.mark.parametrize(
    ("value", "column", "phrase"),
    [
        ("null", 10, "env values must be strings or numbers, found null; use '' for an empty value"),
        ("~", 10, "use '' for an empty value"),
        ("", 9, "use '' for an empty value"),
        ("[a, b]", 10, "env values must be strings or numbers, found a sequence"),
        ("{a: b}", 10, "env values must be strings or numbers, found a mapping"),
    ],
)
def test_env_invalid_values(tmp_path: Path, value: str, column: int, phrase: str) -> None:
    issue = only_issue(tmp_path, prog("env:", f"  X: {value}".rstrip()))
    assert_issue(issue, 5, column, "programs.web.env.X", phrase)


@pytest.mark.parametrize("name", ['"A=B"', "''", '"A\\0B"'])
def test_env_invalid_names(tmp_path: Path, name: str) -> None:
    issue = only_issue(tmp_path, prog("env:", f"  {name}: x"))
    assert (issue.line, issue.column) == (5, 7)
    assert "invalid environment variable name" in issue.message
    assert "without '=' or NUL" in issue.message


@pytest.mark.parametrize(("raw", "found"), [("[A]", "a sequence"), ("A=1", "a string"), ("~", "null")])
def test_env_must_be_a_mapping(tmp_path: Path, raw: str, found: str) -> None:
    issue = only_issue(tmp_path, prog(f"env: {raw}"))
    assert_issue(
        issue, 4, value_col("env"), "programs.web.env", f"expected a mapping of NAME: value, found {found}"
    )


def test_env_reports_every_bad_entry(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, prog("env:", "  A: ~", "  B: ok", "  C: [1]"))
    assert [(i.line, i.keypath) for i in issues] == [(5, "programs.web.env.A"), (7, "programs.web.env.C")]


# ---------------------------------------------------------------------------
# cmd, user, workingdir


@pytest.mark.parametrize(
    ("raw", "argv"),
    [
        ("/bin/true", ("/bin/true",)),
        ("true", ("true",)),
        ("yes", ("yes",)),
        ("bin/relative --flag", ("bin/relative", "--flag")),
        ("\"sh -c 'echo a  b' x\\\\ y\"", ("sh", "-c", "echo a  b", "x y")),
        ("'nginx -g \"daemon off;\"'", ("nginx", "-g", "daemon off;")),
        ("prog#notacomment", ("prog#notacomment",)),
    ],
)
def test_cmd_split(tmp_path: Path, raw: str, argv: tuple[str, ...]) -> None:
    p = load(tmp_path, f"programs:\n  web:\n    cmd: {raw}\n").programs[0]
    assert p.argv == argv
    assert p.cmd == p.cmd.strip() and p.cmd  # kept as written (after YAML unquoting)


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ('"a \'b"', "cannot split cmd into words: No closing quotation"),
        ('"a \\\\"', "cannot split cmd into words"),
        ("''", "expected a command line, found an empty string"),
        ('"   "', "expected a command line, found an empty string"),
        ("\"''\"", "cmd has no program to run"),
        ("~", "expected a command line, found null"),
        ("[a, b]", "expected a command line, found a sequence"),
    ],
)
def test_cmd_invalid(tmp_path: Path, raw: str, phrase: str) -> None:
    issue = only_issue(tmp_path, f"programs:\n  web:\n    cmd: {raw}\n")
    assert_issue(issue, 3, value_col("cmd"), "programs.web.cmd", phrase)


def test_cmd_missing(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "programs:\n  web:\n    numprocs: 2\n")
    assert_issue(issue, 2, 3, "programs.web", "program 'web' has no 'cmd'")


def test_cmd_missing_and_bad_setting_are_both_reported(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, "programs:\n  web:\n    numprocs: 0\n")
    assert [(i.line, i.keypath) for i in issues] == [(2, "programs.web"), (3, "programs.web.numprocs")]


@pytest.mark.parametrize(("raw", "user"), [("www-data", "www-data"), ("1000", "1000"), ('"0"', "0")])
def test_user_valid(tmp_path: Path, raw: str, user: str) -> None:
    assert program(tmp_path, f"user: {raw}").user == user


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [("~", "found null"), ("''", "found an empty string"), ("[root]", "found a sequence")],
)
def test_user_invalid(tmp_path: Path, raw: str, phrase: str) -> None:
    issue = only_issue(tmp_path, prog(f"user: {raw}"))
    assert_issue(
        issue, 4, value_col("user"), "programs.web.user", "expected a user name or numeric uid, " + phrase
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/srv/../srv/app/", "/srv/app"),
        ("/tmp", "/tmp"),
        ("sub/dir", "{dir}/sub/dir"),
        (".", "{dir}"),
        ("'2024'", "{dir}/2024"),
    ],
)
def test_workingdir_valid(tmp_path: Path, raw: str, expected: str) -> None:
    assert program(tmp_path, f"workingdir: {raw}").workingdir == expected.format(dir=tmp_path)


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        ("42", "expected a path, found an integer (42); quote it if it is meant as text"),
        ("~", "expected a path, found null"),
        ("''", "expected a path, found an empty string"),
        ("[a]", "expected a path, found a sequence"),
        ('"a\\0b"', "NUL"),
    ],
)
def test_workingdir_invalid(tmp_path: Path, raw: str, phrase: str) -> None:
    issue = only_issue(tmp_path, prog(f"workingdir: {raw}"))
    assert_issue(issue, 4, value_col("workingdir"), "programs.web.workingdir", phrase)


def test_relative_paths_resolve_against_the_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = write(
        tmp_path,
        prog("workingdir: run", "stdout: out.log", "stderr: ../err.log") + "taskmasterd:\n  logdir: logs\n",
        name="etc/tm/taskmaster.yaml",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(conf))
    confdir = tmp_path / "etc" / "tm"
    p = config.programs[0]
    assert config.path == str(conf)
    assert p.workingdir == str(confdir / "run")
    assert p.stdout == Output(OutputKind.FILE, str(confdir / "out.log"))
    assert p.stderr == Output(OutputKind.FILE, str(tmp_path / "etc" / "err.log"))
    assert config.daemon.logdir == str(confdir / "logs")
    assert p.argv == ("/bin/true",)


def test_issue_file_is_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, prog("umask: 8"), name="conf/t.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_config("conf/t.yaml")
    assert [i.file for i in exc.value.issues] == ["conf/t.yaml"]
    assert str(exc.value.issues[0]).startswith("conf/t.yaml:4:12: programs.web.umask: umask must be")


# ---------------------------------------------------------------------------
# unknown keys


@pytest.mark.parametrize(
    ("key", "phrase"),
    [
        ("stopsignals", "unknown key 'stopsignals' (did you mean 'stopsignal'?)"),
        ("numproc", "unknown key 'numproc' (did you mean 'numprocs'?)"),
        ("workdir", "did you mean 'workingdir'?"),
        ("CMD", "unknown key 'CMD' (did you mean 'cmd'?)"),
        ("command", "unknown key 'command' (did you mean 'cmd'? 'command' is supervisord's name for it)"),
        ("directory", "did you mean 'workingdir'?"),
        ("startsecs", "did you mean 'starttime'?"),
        ("stopwaitsecs", "did you mean 'stoptime'?"),
        ("environment", "did you mean 'env'?"),
        ("stdout_logfile", "did you mean 'stdout'?"),
        ("stderr_logfile", "did you mean 'stderr'?"),
        ("process_name", "supervisord's 'process_name' is not supported"),
        ("numprocs_start", "supervisord's 'numprocs_start' is not supported"),
        ("StartLimitBurst", "unknown key 'StartLimitBurst' (did you mean 'startlimit_burst'?)"),
        ("StartLimitIntervalSec", "did you mean 'startlimit_interval'?"),
        ("start_limit_burst", "did you mean 'startlimit_burst'?"),
        ("zzzz", "unknown key 'zzzz'; a program accepts: cmd, numprocs, umask"),
    ],
)
def test_unknown_program_keys(tmp_path: Path, key: str, phrase: str) -> None:
    issue = only_issue(tmp_path, prog(f"{key}: x"))
    assert_issue(issue, 4, 5, f"programs.web.{key}", phrase)


# ---------------------------------------------------------------------------
# program names and program values


@pytest.mark.parametrize("name", ["web", "web-1", "web_1", "a.b", "Web", "42", "x" * 64, "-", "_x"])
def test_program_names_valid(tmp_path: Path, name: str) -> None:
    assert load(tmp_path, prog(name=name)).programs[0].name == name


@pytest.mark.parametrize(
    ("written", "keypath", "phrase"),
    [
        ("all", "programs.all", "program name 'all' is reserved"),
        ('"a:b"', "programs.a:b", "must not contain ':'"),
        ('"web*"', "programs.web*", "must not contain the glob characters * ? [ ]"),
        ('"w?b"', "programs.w?b", "glob characters"),
        ('"[x]"', "programs.[x]", "glob characters"),
        ("x" * 65, "programs." + "x" * 65, "program name is 65 characters long"),
        ('"a b"', "programs.a b", "has characters that are not allowed; use 1 to 64 letters"),
        ("é", "programs.é", "not allowed"),
        ("a/b", "programs.a/b", "not allowed"),
        ('".."', "programs...", "is not allowed"),
        ('""', "programs.", "a program name must not be empty"),
    ],
)
def test_program_names_invalid(tmp_path: Path, written: str, keypath: str, phrase: str) -> None:
    issue = only_issue(tmp_path, prog(name=written))
    assert_issue(issue, 2, 3, keypath, phrase)


@pytest.mark.parametrize(
    ("text", "line", "column", "phrase"),
    [
        (
            "programs:\n  web: /usr/bin/web\n",
            2,
            8,
            "program 'web' must be a mapping of settings, found a string",
        ),
        ("programs:\n  web: [a]\n", 2, 8, "found a sequence"),
        (
            "programs:\n  web:\n",
            2,
            3,
            "program 'web' has no settings; expected a mapping with at least 'cmd:'",
        ),
        ("programs:\n  web: ~\n", 2, 3, "program 'web' has no settings"),
        ("programs:\n  web: {}\n", 2, 3, "program 'web' has no 'cmd'"),
        (
            "programs:\n  web:\n  db:\n    cmd: x\n",
            2,
            3,
            "program 'web' has no settings; expected a mapping",
        ),
    ],
)
def test_program_value_forms(tmp_path: Path, text: str, line: int, column: int, phrase: str) -> None:
    assert_issue(only_issue(tmp_path, text), line, column, "programs.web", phrase)


def test_setting_named_program_with_cmd_is_a_program(tmp_path: Path) -> None:
    config = load(tmp_path, "programs:\n  env:\n    cmd: /usr/bin/env\n")
    assert config.programs[0].name == "env"


# ---------------------------------------------------------------------------
# duplicate keys


def test_duplicate_program_names(tmp_path: Path) -> None:
    text = "programs:\n  nginx:\n    cmd: a\n  other:\n    cmd: b\n  nginx:\n    cmd: c\n"
    issue = only_issue(tmp_path, text)
    assert_issue(issue, 6, 3, "programs.nginx", "duplicate key 'nginx' (first defined at line 2)")


def test_duplicate_setting(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, prog("umask: 022", "umask: 077"))
    assert_issue(issue, 5, 5, "programs.web.umask", "duplicate key 'umask' (first defined at line 4)")


def test_duplicate_top_level_section(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "programs: {}\nalerts: []\nprograms: {}\n")
    assert_issue(issue, 3, 1, "programs", "duplicate key 'programs' (first defined at line 1)")


def test_duplicate_env_name(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, prog("env:", "  A: 1", "  A: 2"))
    assert_issue(issue, 6, 7, "programs.web.env.A", "duplicate key 'A' (first defined at line 5)")


def test_duplicate_in_flow_mapping(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "programs: {a: {cmd: x}, a: {cmd: y}}\n")
    assert_issue(issue, 1, 25, "programs.a", "duplicate key 'a' (first defined at line 1)")


# ---------------------------------------------------------------------------
# invalid YAML


@pytest.mark.parametrize(
    ("text", "line", "column", "phrase"),
    [
        ("programs:\n  web:\n\tcmd: x\n", 3, 1, "found character '\\t' that cannot start any token"),
        ("programs:\n  web:\n    cmd: x\n      numprocs: 2\n", 4, 15, "mapping values are not allowed here"),
        ("programs:\n  web:\n    cmd: x\n   numprocs: 2\n", 4, 4, "expected <block end>"),
        ("programs: {web: {cmd: x}\n", 2, 1, "expected ',' or '}'"),
        ('programs:\n  web:\n    cmd: "x\n', 4, 1, "found unexpected end of stream"),
        ("programs:\n  web: *nope\n", 2, 8, "found undefined alias 'nope'"),
    ],
)
def test_invalid_yaml(tmp_path: Path, text: str, line: int, column: int, phrase: str) -> None:
    issue = only_issue(tmp_path, text)
    assert_issue(issue, line, column, "", "invalid YAML: " + phrase)


def test_tab_error_hints_at_spaces(tmp_path: Path) -> None:
    assert "indent with spaces, not tabs" in only_issue(tmp_path, "programs:\n\tweb: {}\n").message


def test_bad_indentation_hint(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "programs:\n  web:\n    cmd: x\n   numprocs: 2\n")
    assert "check the indentation" in issue.message
    assert "started at line 2" in issue.message


def test_control_character(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "programs:\n  web: {cmd: a\x07}\n")
    assert_issue(issue, 2, 15, "", "unacceptable character #x0007")


def test_multiple_documents(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "programs: {}\n---\nprograms: {}\n")
    assert_issue(issue, 2, 1, "", "more than one YAML document")


def test_multiple_documents_and_errors_in_the_first(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, "programs:\n  web: {cmd: x, umask: 9}\n...\n---\nfoo: 1\n")
    assert [(i.line, i.keypath) for i in issues] == [(2, "programs.web.umask"), (4, "")]


# ---------------------------------------------------------------------------
# aliases and merge keys


def test_merge_keys_share_settings(tmp_path: Path) -> None:
    text = """\
programs:
  web: &defaults
    cmd: /bin/web
    autostart: false
    umask: 027
    env:
      A: "1"
  api:
    <<: *defaults
    cmd: /bin/api --port 8080
"""
    config = load(tmp_path, text)
    web, api = config.programs
    assert api.name == "api"
    assert api.argv == ("/bin/api", "--port", "8080")
    assert api.autostart is False
    assert api.umask == 0o27
    assert api.env_dict == {"A": "1"}
    assert web.argv == ("/bin/web",)


def test_merge_list_first_wins_and_env_merge(tmp_path: Path) -> None:
    text = """\
programs:
  a: &a
    cmd: /bin/a
    numprocs: 2
    env: &env
      X: "1"
      Y: "2"
  b: &b
    cmd: /bin/b
    numprocs: 3
    stoptime: 7
  c:
    <<: [*a, *b]
    env:
      <<: *env
      Y: over
"""
    c = load(tmp_path, text).program("c")
    assert c is not None
    assert c.cmd == "/bin/a"
    assert c.numprocs == 2
    assert c.stoptime == 7.0
    assert c.env_dict == {"X": "1", "Y": "over"}


def test_alias_as_a_whole_program_and_as_a_value(tmp_path: Path) -> None:
    text = "programs:\n  a: &p\n    cmd: &c /bin/x\n  b: *p\n  c:\n    cmd: *c\n"
    config = load(tmp_path, text)
    assert [(p.name, p.cmd) for p in config.programs] == [("a", "/bin/x"), ("b", "/bin/x"), ("c", "/bin/x")]


def test_error_in_merged_settings_points_at_the_anchor(tmp_path: Path) -> None:
    text = "programs:\n  a: &d\n    cmd: x\n    umask: 9\n  b:\n    <<: *d\n"
    issues = issues_of(tmp_path, text)
    assert [(i.line, i.column, i.keypath) for i in issues] == [
        (4, 12, "programs.a.umask"),
        (4, 12, "programs.b.umask"),
    ]


@pytest.mark.parametrize("value", ["5", "[1, 2]", "~"])
def test_bad_merge_value(tmp_path: Path, value: str) -> None:
    issue = only_issue(tmp_path, prog(f"<<: {value}"))
    assert_issue(issue, 4, 9, "programs.web", "a merge key '<<' expects an alias to a mapping")


def test_self_referential_merge_does_not_loop(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, "programs:\n  web: &w\n    cmd: x\n    <<: *w\n")
    assert any("refers to the mapping that contains it" in i.message for i in issues)


# ---------------------------------------------------------------------------
# alerts


def test_alert_events_constant() -> None:
    assert ALERT_EVENTS == (
        "STARTING",
        "RUNNING",
        "BACKOFF",
        "STOPPING",
        "STOPPED",
        "EXITED",
        "EXITED_EXPECTED",
        "EXITED_UNEXPECTED",
        "FATAL",
        "SPAWN_ERROR",
        "ADOPTED",
        "UNHEALTHY",
        "RELOAD",
        "RELOAD_FAILED",
        "DAEMON_START",
        "DAEMON_STOP",
        "TASK_QUEUED",
        "TASK_STARTED",
        "TASK_SUCCEEDED",
        "TASK_FAILED",
        "TASK_CANCELLED",
        "TASK_LOST",
        "TASK_ADOPTED",
        "ACTIVITY_STARTED",
        "ACTIVITY_SUCCEEDED",
        "ACTIVITY_FAILED",
        "ACTIVITY_CANCELLED",
    )


def test_alerts_valid(tmp_path: Path) -> None:
    text = """\
alerts:
  - url: jsons://hooks.example.com/x
    events: [fatal, Exited_Unexpected, BACKOFF, "daemon_stop"]
    programs: ["web*", db, 42]
  - url: mailto://ops@example.com
"""
    config = load(tmp_path, text)
    assert config.alerts == (
        AlertConfig(
            url="jsons://hooks.example.com/x",
            events=frozenset({"FATAL", "EXITED_UNEXPECTED", "BACKOFF", "DAEMON_STOP"}),
            programs=("web*", "db", "42"),
        ),
        AlertConfig(url="mailto://ops@example.com"),
    )
    assert config.alerts[1].events == frozenset({"FATAL", "EXITED_UNEXPECTED", "TASK_FAILED",
                                                 "ACTIVITY_FAILED", "ACTIVITY_SUCCEEDED"})
    assert config.alerts[1].programs == ("*",)


@pytest.mark.parametrize(
    ("item", "line", "column", "keypath", "phrase"),
    [
        ("- url: example.com", 2, 10, "alerts[0].url", "expected a URL like json://example.com/hook"),
        ("- url: 42", 2, 10, "alerts[0].url", "expected a URL, found an integer"),
        ("- url: ~", 2, 10, "alerts[0].url", "expected a URL, found null"),
        ("- events: [FATAL]", 2, 5, "alerts[0]", "an alert needs a 'url:'"),
        ("- url: json://x\n    events: [FATAL, NOPE]", 3, 21, "alerts[0].events[1]", "unknown event 'NOPE'"),
        ("- url: json://x\n    events: [FATAL, ~]", 3, 21, "alerts[0].events[1]", "expected one of STARTING"),
        ("- url: json://x\n    events: []", 3, 13, "alerts[0].events", "found an empty list"),
        ("- url: json://x\n    events: FATAL", 3, 13, "alerts[0].events", "expected a list of event names"),
        ("- url: json://x\n    programs: ['']", 3, 16, "alerts[0].programs[0]", "found an empty string"),
        ("- url: json://x\n    programs: []", 3, 15, "alerts[0].programs", "found an empty list"),
        ("- url: json://x\n    programs: web", 3, 15, "alerts[0].programs", "expected a list of program"),
        ("- url: json://x\n    evnts: [FATAL]", 3, 5, "alerts[0].evnts", "did you mean 'events'?"),
        ("- url: json://x\n    zzz: 1", 3, 5, "alerts[0].zzz", "an alert accepts: url, events, programs"),
        ("- hello", 2, 5, "alerts[0]", "an alert must be a mapping with at least 'url:', found a string"),
    ],
)
def test_alerts_invalid(tmp_path: Path, item: str, line: int, column: int, keypath: str, phrase: str) -> None:
    assert_issue(only_issue(tmp_path, f"alerts:\n  {item}\n"), line, column, keypath, phrase)


def test_alerts_second_item_keypath(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "alerts:\n  - url: json://a\n  - url: nope\n")
    assert_issue(issue, 3, 10, "alerts[1].url", "expected a URL")


def test_alerts_must_be_a_list(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "alerts:\n  url: json://x\n")
    assert_issue(issue, 2, 3, "alerts", "expected a list of alerts (each '- url: ...'), found a mapping")


# ---------------------------------------------------------------------------
# every issue at once


def test_all_issues_are_reported_at_once(tmp_path: Path) -> None:
    text = """\
programs:
  web:
    cmd: /bin/true
    umask: 8
    stopsignal: NOPE
  "bad name":
    cmd: x
"""
    issues = issues_of(tmp_path, text)
    assert [(i.line, i.column, i.keypath) for i in issues] == [
        (4, 12, "programs.web.umask"),
        (5, 17, "programs.web.stopsignal"),
        (6, 3, "programs.bad name"),
    ]


def test_issues_across_sections_are_sorted_by_position(tmp_path: Path) -> None:
    text = (
        "alerts:\n  - url: nope\n"
        "programs:\n  web: {cmd: x, numprocs: 0}\n"
        "taskmasterd:\n  loglevel: loud\n"
        "extra: 1\n"
    )
    issues = issues_of(tmp_path, text)
    assert [i.keypath for i in issues] == [
        "alerts[0].url",
        "programs.web.numprocs",
        "taskmasterd.loglevel",
        "extra",
    ]
    assert [i.line for i in issues] == [2, 4, 6, 7]


# ---------------------------------------------------------------------------
# unreadable files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    (issue,) = exc.value.issues
    assert issue == ConfigIssue(str(path), 1, 1, "", "cannot read the config file: No such file or directory")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    (issue,) = exc.value.issues
    assert (issue.line, issue.column, issue.keypath) == (1, 1, "")
    assert "cannot read the config file: it is a directory; expected a regular file" in issue.message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, prog())
    path.chmod(0)
    try:
        with pytest.raises(ConfigError) as exc:
            load_config(path)
    finally:
        path.chmod(0o600)
    (issue,) = exc.value.issues
    assert "cannot read the config file: Permission denied" in issue.message


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"programs:\n  w\xff: {cmd: x}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    (issue,) = exc.value.issues
    assert (issue.line, issue.column) == (2, 4)
    assert "not valid UTF-8" in issue.message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + prog().encode())
    assert load_config(path).programs[0].name == "web"


# ---------------------------------------------------------------------------
# formatting and parse_config


def test_issue_str_format() -> None:
    issue = ConfigIssue("/etc/t.yaml", 3, 5, "programs.web.umask", "bad umask")
    assert str(issue) == "/etc/t.yaml:3:5: programs.web.umask: bad umask"
    assert str(ConfigIssue("t.yaml", 1, 1, "", "the file is empty")) == "t.yaml:1:1: the file is empty"


def test_error_str_lists_every_issue(tmp_path: Path) -> None:
    path = write(tmp_path, prog("umask: 8", "numprocs: 0"))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = str(exc.value).splitlines()
    assert lines[0].startswith(f"{path}:4:12: programs.web.umask: umask must be octal digits")
    assert lines[1].startswith(f"{path}:5:15: programs.web.numprocs: must be between 1 and 1000")
    assert len(lines) == 2


def test_parse_config_uses_the_given_path() -> None:
    config = parse_config(prog("stdout: out.log"), "/etc/taskmaster/taskmaster.yaml")
    assert config.path == "/etc/taskmaster/taskmaster.yaml"
    assert config.programs[0].stdout == Output(OutputKind.FILE, "/etc/taskmaster/out.log")
    with pytest.raises(ConfigError) as exc:
        parse_config("programs: [\n", "rel/t.yaml")
    assert exc.value.issues[0].file == "rel/t.yaml"


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_env_property_integers_keep_their_text(n: int) -> None:
    config = parse_config(prog("env:", f"  N: {n}", f"  Z: 0{abs(n)}"), "/t.yaml")
    assert config.programs[0].env_dict == {"N": str(n), "Z": f"0{abs(n)}"}


# ---- libyaml fast path ------------------------------------------------------

TRAPS = """\
taskmasterd:
  logfile: /tmp/tm.log
programs:
  base: &defaults
    cmd: /bin/sleep 1
    autostart: no
    umask: 022
    stopsignal: USR1
  web:
    <<: *defaults
    cmd: "/usr/bin/python3 -m http.server 8042"
    numprocs: 3
    env: {A: "1", B: on, EMPTY: ""}
    exitcodes: [0, 2]
  other: {cmd: /bin/true, autorestart: unexpected, starttime: 1.5, stdout: null}
"""


@pytest.mark.parametrize("source", ["etc", "traps"])
def test_libyaml_and_pyyaml_read_the_same_config(tmp_path: Path, source: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    if not getattr(yaml, "CSafeLoader", None):
        pytest.skip("PyYAML without libyaml: only one path to compare")
    if source == "etc":
        path = Path(__file__).resolve().parents[2] / "etc" / "taskmaster.yaml"
    else:
        path = write(tmp_path, TRAPS)
    used: list[str] = []
    real = yaml.CSafeLoader

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, stream: str) -> None:
            used.append("libyaml")
            super().__init__(stream)

    monkeypatch.setattr(yaml, "CSafeLoader", Counting)
    fast = load_config(str(path))
    assert used == ["libyaml"]
    monkeypatch.delattr(yaml, "CSafeLoader")
    slow = load_config(str(path))
    assert fast == slow
    assert fast.programs and fast.programs == slow.programs


def test_libyaml_rejection_is_reported_by_pyyaml(tmp_path: Path) -> None:
    # libyaml's message would be "mapping values are not allowed in this context".
    issue = only_issue(tmp_path, "programs:\n  web:\n    cmd: a: b\n")
    assert "mapping values are not allowed here" in issue.message
    assert "quote a value" in issue.message
