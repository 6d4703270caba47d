"""Why each program is in a reload plan (PlanReloadReasons, API 1.6): pure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from taskmasterd.config import Config, GlobalConfig, ProgramConfig
from taskmasterd.reload import changed_keys, plan_reasons, plan_reload


def prog(name: str, **kw: object) -> ProgramConfig:
    return replace(ProgramConfig(name=name, cmd="sleep 1", argv=("sleep", "1")), **kw)  # type: ignore[arg-type]


def config(*programs: ProgramConfig, logdir: str | None = None) -> Config:
    return Config(path="/etc/t.yaml", daemon=GlobalConfig(logdir=logdir), programs=programs)


def reasons(old: Config, new: Config) -> dict[str, str]:
    return plan_reasons(plan_reload(old, new), old, new)


def test_every_kind_of_change_has_its_reason() -> None:
    old = config(prog("web"), prog("db"), prog("workers", numprocs=2), prog("old"))
    new = config(replace(prog("web", env=(("A", "1"),)), cmd="sleep 2", argv=("sleep", "2")),
                 prog("db", stoptime=30.0), prog("workers", numprocs=4), prog("cache"))
    assert reasons(old, new) == {
        "web": "restarted: cmd, env changed",
        "db": "changed in place: stoptime",
        "workers": "changed in place: numprocs 2 -> 4",
        "cache": "added",
        "old": "removed",
    }


def test_a_restart_names_the_other_keys_that_change_with_it() -> None:
    old = config(prog("web", numprocs=2))
    new = config(prog("web", numprocs=3, umask=0o22, stoptime=5.0))
    assert reasons(old, new) == {"web": "restarted: umask changed; also numprocs 2 -> 3, stoptime"}


def test_a_resize_names_its_in_place_keys_too() -> None:
    assert reasons(config(prog("w", numprocs=3)), config(prog("w", numprocs=1, autostart=False))) \
        == {"w": "changed in place: numprocs 3 -> 1, autostart"}


def test_moving_logdir_is_the_reason_for_automatic_output() -> None:
    assert reasons(config(prog("auto"), logdir="/a"), config(prog("auto"), logdir="/b")) \
        == {"auto": "restarted: logdir changed"}


def test_nothing_changed_no_reasons() -> None:
    assert reasons(config(prog("a")), config(prog("a"))) == {}


def test_plan_lists_in_place_and_restarted_apart() -> None:
    old = config(prog("r"), prog("s", numprocs=2), prog("u"))
    plan = plan_reload(old, config(prog("r", user="nobody"), prog("s", numprocs=1),
                                   prog("u", startretries=9)))
    assert plan.in_place == ["s", "u"] and [p.name for p in plan.restarted] == ["r"]
    assert sorted(plan.changed) == sorted([*plan.in_place, "r"])  # Reload's changed


def test_changed_keys_are_the_file_keys() -> None:
    new = replace(prog("a", env=(("B", "2"),)), cmd="sleep 3", argv=("sleep", "3"))
    assert changed_keys(prog("a"), new) == ["cmd", "env"]  # argv is derived, not a key


def test_a_new_log_file_a_reload_could_not_open_is_foreseen(tmp_path: Path) -> None:
    from taskmasterd.daemonreload import _log_file_problem

    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    assert _log_file_problem(str(tmp_path / "new" / "sub" / "t.log")) is None  # made at reload
    assert _log_file_problem(str(tmp_path / "file")) is None
    assert _log_file_problem(str(tmp_path / "file" / "t.log")) == "Not a directory"
    assert _log_file_problem(str(tmp_path / "dir")) == "Is a directory"
    assert not (tmp_path / "new").exists()  # nothing created
