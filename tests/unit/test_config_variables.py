"""Variables (`%{name}`) and `redirect_stderr` through the real loader:
the values each process gets, located errors all at once, and every place
that computes a process's files agreeing (launch_spec/output_path, the
supervisor's output_file for OpenLog, the reload plan, the launch
fingerprint)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from taskmasterd import spawn
from taskmasterd.config import Config, ConfigError, OutputKind, ProgramConfig, load_config
from taskmasterd.errors import NotAFile
from taskmasterd.events import EventBus
from taskmasterd.reload import plan_reload
from taskmasterd.statestore.records import launch_fingerprint
from taskmasterd.supervisor import Supervisor
from tests.unit.test_config_after import load_text


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "taskmaster.yaml"
    path.write_text(text)
    return load_config(path)


def spec(program: ProgramConfig, index: int = 0, journal: bool = False) -> spawn.LaunchSpec:
    return spawn.launch_spec(program, index, logdir="/var/log/tm", journal=journal, base_env={})


WEB = """\
programs:
  web:
    cmd: /usr/bin/web --id %{process_num} --of %{numprocs} --name %{process} --home %{env.TM_HOME}
    env: {ME: "%{program}@%{host}", CONF: "%{here}/web.conf", PCT: "date +%Y", LIT: "%%{process}"}
    workingdir: "%{env.TM_HOME}/%{process_num}"
    stdout: "logs/%{program}-%{process_num}.log"
    stderr: "/var/log/%{process}.err"
    numprocs: 3
"""


def test_each_process_gets_its_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TM_HOME", "/srv/web")
    web = load(tmp_path, WEB).programs[0]
    host = socket.gethostname()
    s = spec(web, 2)
    assert s.argv == ("/usr/bin/web", "--id", "2", "--of", "3", "--name", "web:2",
                      "--home", "/srv/web")
    assert {k: s.env[k] for k in ("ME", "CONF", "PCT", "LIT")} == {
        "ME": f"web@{host}", "CONF": f"{tmp_path}/web.conf", "PCT": "date +%Y",
        "LIT": "%{process}"}
    assert s.cwd == "/srv/web/2"
    assert spawn.output_path(s, "stdout") == f"{tmp_path}/logs/web-2.log"
    assert spawn.output_path(s, "stderr") == "/var/log/web:2.err"
    assert [spawn.output_path(spec(web, i), "stdout") for i in range(3)] == \
        [f"{tmp_path}/logs/web-{i}.log" for i in range(3)]
    # The command as shown (D-Bus Command): load-time names expanded, per-process ones written.
    assert web.cmd == ("/usr/bin/web --id %{process_num} --of 3 --name %{process} "
                       "--home /srv/web")


def test_a_single_process_is_named_like_its_program(tmp_path: Path) -> None:
    p = load(tmp_path, "programs:\n  db: {cmd: 'db --name %{process} --n %{process_num}'}\n"
             ).programs[0]
    assert spec(p).argv == ("db", "--name", "db", "--n", "0")
    assert p.cmd == "db --name db --n %{process_num}"


def test_cmd_is_split_after_expansion_as_supervisord_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TM_ARGS", "-v  --fast")
    p = load(tmp_path, "programs:\n  a: {cmd: \"run %{env.TM_ARGS} '%{env.TM_ARGS}'\"}\n").programs[0]
    assert p.argv == ("run", "-v", "--fast", "-v  --fast")


def test_numprocs_is_known_whatever_the_key_order(tmp_path: Path) -> None:
    p = load(tmp_path, "programs:\n  a:\n    cmd: run %{numprocs}\n    numprocs: 4\n").programs[0]
    assert p.argv == ("run", "4")


def test_here_is_the_directory_of_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    p = load(sub, "programs:\n  a: {cmd: run, workingdir: '%{here}', stdout: '%{here}/../a.out'}\n"
             ).programs[0]
    assert p.workingdir == str(sub)
    assert p.stdout.path == str(tmp_path / "a.out")


def test_other_keys_take_no_variables(tmp_path: Path) -> None:
    p = load(tmp_path, "programs:\n  a: {cmd: run, user: '%{program}', ready: {cmd: 'x %{program}'}}\n"
             ).programs[0]
    assert p.user == "%{program}"
    assert p.ready is not None and p.ready.target == "x %{program}"


def test_journal_and_null_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TM_OUT", "/dev/null")
    monkeypatch.setenv("TM_J", "journal")
    p = load(tmp_path, "programs:\n  a: {cmd: run, stdout: '%{env.TM_OUT}', stderr: '%{env.TM_J}'}\n"
             ).programs[0]
    assert p.stdout.kind is OutputKind.NULL
    # only `journal` written out is the journal: a variable makes a file path
    assert p.stderr.kind is OutputKind.FILE and p.stderr.path == str(tmp_path / "journal")


def test_every_bad_reference_is_located_all_at_once(tmp_path: Path) -> None:
    _, found = load_text(tmp_path, (
        "programs:\n"
        "  a:\n"
        "    cmd: run %{proces} %{env.TM_SURELY_UNSET}\n"
        "    env:\n"
        "      X: '%{HOME}'\n"
        "    workingdir: '%{nope'\n"
        "  b:\n"
        "    cmd: run\n"
        "    stdout: '/log/%{program_name}.log'\n"
        "    stderr: '%{env.}'\n"))
    got = [(line, col, kp) for line, col, kp, _ in found]
    assert got == [(3, 10, "programs.a.cmd"), (3, 10, "programs.a.cmd"),
                   (5, 10, "programs.a.env.X"), (6, 17, "programs.a.workingdir"),
                   (9, 13, "programs.b.stdout"), (10, 13, "programs.b.stderr")]
    messages = [m for *_, m in found]
    assert "unknown variable %{proces} (did you mean %{process}?)" in messages[0]
    assert "%{env.NAME}, %{program}, %{process}, %{process_num}" in messages[0]  # what exists
    assert "TM_SURELY_UNSET is not set in taskmasterd's environment" in messages[1]
    assert "did you mean %{env.HOME}?" in messages[2]
    assert "not closed" in messages[3]
    assert "did you mean %{program}?" in messages[4]
    assert "names no variable" in messages[5]


def test_an_empty_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TM_EMPTY", "")
    _, found = load_text(tmp_path, "programs:\n  a: {cmd: '%{env.TM_EMPTY}', stdout: '%{env.TM_EMPTY}'}\n")
    assert [(kp, "once its variables are expanded" in m) for _, _, kp, m in found] == \
        [("programs.a.cmd", True), ("programs.a.stdout", True)]


# ---- the places that compute a process's files agree ---------------------------------


def test_reload_and_fingerprint_follow_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TM_HOME", "/srv/a")
    before = load(tmp_path, WEB)
    same = load(tmp_path, WEB)
    assert plan_reload(before, same).is_empty  # re-read, unchanged
    monkeypatch.setenv("TM_HOME", "/srv/b")
    after = load(tmp_path, WEB)
    assert [p.name for p in plan_reload(before, after).restarted] == ["web"]
    fp = [launch_fingerprint(c.programs[0], "/l", False) for c in (before, same, after)]
    assert fp[0] == fp[1] != fp[2]


def test_a_resize_keeps_the_files_of_the_processes_kept(tmp_path: Path) -> None:
    base = WEB.replace("%{env.TM_HOME}", "/srv")
    fixed = base.replace("--of %{numprocs} ", "")
    three, five = load(tmp_path, fixed), load(tmp_path, fixed.replace("numprocs: 3", "numprocs: 5"))
    plan = plan_reload(three, five)
    assert [r.program.name for r in plan.resized] == ["web"] and not plan.restarted
    assert spawn.output_path(spec(three.programs[0], 1), "stdout") == \
        spawn.output_path(spec(five.programs[0], 1), "stdout")
    # %{numprocs} is in the values of every process: a change of numprocs restarts
    plan = plan_reload(load(tmp_path, base),
                       load(tmp_path, base.replace("numprocs: 3", "numprocs: 5")))
    assert [p.name for p in plan.restarted] == ["web"]


def test_one_process_to_several_restarts_a_program_naming_its_process(tmp_path: Path) -> None:
    one = load(tmp_path, "programs:\n  a: {cmd: run, stdout: '/l/%{process}.log'}\n")
    two = load(tmp_path, "programs:\n  a: {cmd: run, stdout: '/l/%{process}.log', numprocs: 2}\n")
    # process `a` becomes `a:0`: its file would change under it
    assert [p.name for p in plan_reload(one, two).restarted] == ["a"]


def output_files(config: Config, tmp_path: Path, names: list[str], stream: str) -> list[str]:
    """Supervisor.output_file (what OpenLog opens) for these processes."""
    async def main() -> list[str]:
        sup = Supervisor(config, EventBus(), logdir=str(tmp_path / "logs"),
                         notify_dir=str(tmp_path / "n"))
        try:
            return [sup.output_file(n, stream) for n in names]
        finally:
            await sup.shutdown()
    return asyncio.run(main())


def test_open_log_names_each_process_file(tmp_path: Path) -> None:
    config = load(tmp_path, WEB.replace("%{env.TM_HOME}", "/srv"))
    names = config.programs[0].process_names()
    assert output_files(config, tmp_path, names, "stdout") == \
        [spawn.output_path(spec(config.programs[0], i), "stdout") for i in range(3)] == \
        [f"{tmp_path}/logs/web-{i}.log" for i in range(3)]


def test_a_padded_process_number_names_each_file_as_supervisord_did(tmp_path: Path) -> None:
    """%(process_num)02d's files keep their names: %{process_num:02}."""
    config = load(tmp_path, WEB.replace("%{env.TM_HOME}", "/srv")
                  .replace("logs/%{program}-%{process_num}.log", "logs/%{program}_%{process_num:02}.log"))
    names = config.programs[0].process_names()
    assert output_files(config, tmp_path, names, "stdout") == \
        [spawn.output_path(spec(config.programs[0], i), "stdout") for i in range(3)] == \
        [f"{tmp_path}/logs/web_0{i}.log" for i in range(3)]


# ---- redirect_stderr ---------------------------------------------------------------------


def test_redirect_rules_are_located_errors(tmp_path: Path) -> None:
    _, found = load_text(tmp_path, (
        "programs:\n"
        "  a: {cmd: run, redirect_stderr: true, stderr: /tmp/a.err}\n"
        "  b: {cmd: run, redirect_stderr: true, stderr: null}\n"
        "  c: {cmd: run, redirect_stderr: maybe}\n"
        "  d: {cmd: run, redirect_stderr: true, console: true, stderr: null}\n"))
    by_key = {kp: (line, col, msg) for line, col, kp, msg in found}
    assert by_key["programs.a.stderr"][:2] == (2, 40)  # at the key
    assert "stderr goes where stdout goes (redirect_stderr: true)" in by_key["programs.a.stderr"][2]
    assert by_key["programs.b.stderr"][0] == 3  # even null: stdout's destination is stderr's
    assert by_key["programs.c.redirect_stderr"][0] == 4
    assert "stderr is its terminal" in by_key["programs.d.stderr"][2]  # the console's rule, once
    assert len(found) == 4


def test_redirect_values(tmp_path: Path) -> None:
    config = load(tmp_path, (
        "programs:\n"
        "  plain: {cmd: run}\n"
        "  file: {cmd: run, redirect_stderr: true, stdout: '/l/%{program}.out'}\n"
        "  auto: {cmd: run, redirect_stderr: yes}\n"
        "  null: {cmd: run, redirect_stderr: on, stdout: null}\n"
        "  shell: {cmd: bash, redirect_stderr: true, console: true}\n"
        "  off: {cmd: run, redirect_stderr: false, stderr: /l/off.err}\n"))
    p = {c.name: c for c in config.programs}
    assert not p["plain"].redirect_stderr and not p["off"].redirect_stderr
    assert all(p[n].redirect_stderr for n in ("file", "auto", "null", "shell"))
    assert spawn.output_path(spec(p["file"]), "stderr") == "/l/file.out"
    assert spawn.output_path(spec(p["auto"]), "stderr") == "/var/log/tm/auto.stdout.log"
    assert spawn.output_path(spec(p["auto"], journal=True), "stderr") is None
    assert spawn.output_path(spec(p["null"]), "stderr") is None
    assert spawn.output_path(spec(p["off"]), "stderr") == "/l/off.err"


def test_open_log_of_a_redirected_stderr_is_the_stdout_file(tmp_path: Path) -> None:
    config = load(tmp_path, (
        "programs:\n"
        "  file: {cmd: run, redirect_stderr: true, stdout: '/l/%{process_num}.out', numprocs: 2}\n"
        "  auto: {cmd: run, redirect_stderr: true}\n"
        "  gone: {cmd: run, redirect_stderr: true, stdout: null}\n"))
    assert output_files(config, tmp_path, ["file:0", "file:1", "auto"], "stderr") == \
        ["/l/0.out", "/l/1.out", f"{tmp_path}/logs/auto.stdout.log"]
    with pytest.raises(NotAFile, match=r"stdout: null, redirect_stderr: true"):
        output_files(config, tmp_path, ["gone"], "stderr")


def test_redirect_is_a_launch_setting(tmp_path: Path) -> None:
    a = load(tmp_path, "programs:\n  a: {cmd: run}\n")
    b = load(tmp_path, "programs:\n  a: {cmd: run, redirect_stderr: true}\n")
    assert [p.name for p in plan_reload(a, b).restarted] == ["a"]
    with pytest.raises(ConfigError):
        load(tmp_path, "programs:\n  a: {cmd: run, redirect_stderr: 1}\n")
