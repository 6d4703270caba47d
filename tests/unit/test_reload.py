"""The reload planner (config diff -> plan) and target resolution: pure."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest

from taskmasterd.config import (
    PROGRAM_KEYS,
    AutoRestart,
    Config,
    GlobalConfig,
    Output,
    OutputKind,
    ProgramConfig,
)
from taskmasterd.errors import BadName, NoSuchProgram
from taskmasterd.probeschema import Check, HealthCheck
from taskmasterd.programschema import PROGRAM_TABLE, ProgramKey, RestartMode
from taskmasterd.reload import LAUNCH_KEYS, ReloadPlan, Resize, in_place_fields, plan_reload
from taskmasterd.targets import resolve


def prog(name: str, **kw: object) -> ProgramConfig:
    return replace(ProgramConfig(name=name, cmd="sleep 1", argv=("sleep", "1")), **kw)  # type: ignore[arg-type]


def config(*programs: ProgramConfig, logdir: str | None = None) -> Config:
    return Config(path="/etc/t.yaml", daemon=GlobalConfig(logdir=logdir), programs=programs)


def test_identical_configs_plan_nothing() -> None:
    a = config(prog("a"), prog("b", numprocs=3))
    plan = plan_reload(a, config(prog("a"), prog("b", numprocs=3)))
    assert plan == ReloadPlan() and plan.is_empty and plan.changed == []


def test_added_and_removed() -> None:
    plan = plan_reload(config(prog("a"), prog("b")), config(prog("b"), prog("c")))
    assert [p.name for p in plan.added] == ["c"]
    assert plan.removed == ("a",)
    assert plan.changed == []


@pytest.mark.parametrize(("key", "value"), [
    ("cmd", "sleep 2"), ("env", (("A", "1"),)), ("workingdir", "/srv"), ("umask", 0o77),
    ("user", "nobody"), ("stdout", Output(OutputKind.NULL)),
    ("stderr", Output(OutputKind.FILE, "/tmp/x")),
])
def test_launch_keys_restart(key: str, value: object) -> None:
    new = prog("a", **{key: value})
    if key == "cmd":
        new = replace(new, argv=("sleep", "2"))
    plan = plan_reload(config(prog("a")), config(new))
    assert plan.restarted == (new,) and plan.changed == ["a"]
    assert not plan.updated and not plan.resized


@pytest.mark.parametrize(("key", "value"), [
    ("autorestart", AutoRestart.NEVER), ("exitcodes", frozenset({0, 2})), ("startretries", 9),
    ("starttime", 0.5), ("stopsignal", signal.SIGUSR1), ("stoptime", 30.0),
    ("restartdelay", 2.0), ("autostart", False), ("startlimit_burst", 0),
    ("startlimit_interval", 60.0),
])
def test_other_keys_apply_in_place(key: str, value: object) -> None:
    new = prog("a", **{key: value})
    plan = plan_reload(config(prog("a")), config(new))
    assert plan.updated == (new,) and not plan.restarted and not plan.resized
    assert in_place_fields(prog("a"), new) == [key]


# Another value for every program key: a key added to the table without
# one here fails the test below, which then says what a change of it does.
OTHER_VALUE: dict[str, object] = {
    "cmd": "sleep 2", "numprocs": 3, "umask": 0o77, "workingdir": "/srv", "autostart": False,
    "autorestart": AutoRestart.NEVER, "exitcodes": frozenset({0, 2}), "startretries": 9,
    "starttime": 0.5, "startlimit_burst": 0, "startlimit_interval": 60.0,
    "stopsignal": signal.SIGUSR1, "stoptime": 30.0, "stdout": Output(OutputKind.NULL),
    "stderr": Output(OutputKind.FILE, "/tmp/x"), "env": (("A", "1"),), "user": "nobody",
    "restartdelay": 2.0, "restart": RestartMode.OVERLAP, "stdout_maxbytes": 0, "stdout_backups": 1,
    "stderr_maxbytes": 1024,
    "stderr_backups": 0, "ready": Check("notify"), "readytimeout": 5.0, "watchdog": 3.0,
    "health": HealthCheck(Check("tcp", "127.0.0.1:80")),
    "after": ("db",),  # start ordering: applies in place
    "console": True, "console_scrollback": 4096,  # a terminal: shapes the process
    "redirect_stderr": True,  # where stderr goes: shapes the process
}


def test_the_key_lists_come_from_one_table() -> None:
    assert tuple(k.name for k in PROGRAM_TABLE) == PROGRAM_KEYS
    assert tuple(k.name for k in PROGRAM_TABLE if k.launch) == LAUNCH_KEYS
    assert set(OTHER_VALUE) == set(PROGRAM_KEYS)
    base = prog("a")
    for entry in PROGRAM_TABLE:
        if entry.name != "cmd":  # required: no default
            assert getattr(base, entry.name) == entry.default, entry.name


@pytest.mark.parametrize("entry", PROGRAM_TABLE, ids=lambda k: k.name)
def test_a_launch_key_restarts_numprocs_resizes_any_other_applies_in_place(entry: ProgramKey) -> None:
    name = entry.name
    new = prog("a", **{name: OTHER_VALUE[name]})
    if name == "cmd":
        new = replace(new, argv=("sleep", "2"))
    plan = plan_reload(config(prog("a")), config(new))
    assert plan.changed == ["a"]
    if entry.launch:
        assert plan.restarted == (new,) and not plan.updated and not plan.resized
    elif name == "numprocs":
        assert plan.resized == (Resize(new, 1),) and not plan.restarted and not plan.updated
    else:
        assert plan.updated == (new,) and not plan.restarted and not plan.resized
        assert in_place_fields(prog("a"), new) == [name]


def test_numprocs_alone_resizes_but_with_a_launch_key_restarts() -> None:
    plan = plan_reload(config(prog("a", numprocs=2)), config(prog("a", numprocs=3)))
    assert plan.resized == (Resize(prog("a", numprocs=3), 2),) and not plan.restarted
    both = prog("a", numprocs=3, umask=0o22)
    plan = plan_reload(config(prog("a", numprocs=2)), config(both))
    assert plan.restarted == (both,) and not plan.resized


def test_moving_logdir_restarts_only_programs_with_automatic_output() -> None:
    auto, files = prog("auto"), prog("files", stdout=Output(OutputKind.NULL),
                                      stderr=Output(OutputKind.FILE, "/tmp/e"))
    plan = plan_reload(config(auto, files, logdir="/a"), config(auto, files, logdir="/b"))
    assert [p.name for p in plan.restarted] == ["auto"] and plan.changed == ["auto"]


PROGRAMS = (prog("web", numprocs=3), prog("db"), prog("web-admin"))


@pytest.mark.parametrize(("target", "names"), [
    ("all", ["web:0", "web:1", "web:2", "db", "web-admin"]),
    ("web", ["web:0", "web:1", "web:2"]),
    ("web:1", ["web:1"]),
    ("db", ["db"]),
    ("db:0", ["db"]),
    ("web-*", ["web-admin"]),
    ("web*", ["web:0", "web:1", "web:2", "web-admin"]),
    ("web:[02]", ["web:0", "web:2"]),
    ("d?", ["db"]),
])
def test_targets(target: str, names: list[str]) -> None:
    assert resolve(target, PROGRAMS) == names


@pytest.mark.parametrize(("target", "error", "phrase"), [
    ("nope", NoSuchProgram, "no such program: 'nope'"),
    ("web:3", NoSuchProgram, "numbered 0 to 2"),
    ("db:1", NoSuchProgram, "numbered 0 to 0"),
    ("zz*", NoSuchProgram, "no program matches"),
    ("web:x", BadName, "expected web:N"),
    ("web:-1", BadName, "expected web:N"),
    ("", BadName, "1 to 256"),
    ("a" * 257, BadName, "1 to 256"),
    ("web\n", BadName, "control characters"),
    ("we b", BadName, "spaces"),
    ("web:\u0663", BadName, "expected web:N"),  # a non-ASCII digit
])
def test_bad_targets(target: str, error: type[Exception], phrase: str) -> None:
    with pytest.raises(error, match=phrase.replace("(", r"\(").replace("*", r"\*")):
        resolve(target, PROGRAMS)
