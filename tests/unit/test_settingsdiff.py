"""What a reload changes outside `programs:` (settingsdiff, pure): the
daemon's paths and level, `tasks:`, `alerts:`; statedir left for a restart."""

from __future__ import annotations

import dataclasses
import signal

from taskmasterd.config import AlertConfig, Config, GlobalConfig
from taskmasterd.describe import reload_message
from taskmasterd.paths import Paths
from taskmasterd.reload import ReloadPlan
from taskmasterd.settingsdiff import Effect, SettingChange, not_applied, settings_changes
from taskmasterd.tasks.settings import TaskSettings

PATHS = Paths(logfile="/var/log/taskmaster/taskmasterd.log", logdir="/var/log/taskmaster",
              statedir="/var/lib/taskmaster", runtimedir="/run/taskmaster")
BASE = Config(path="/etc/taskmaster/taskmaster.yaml")


def changes(new: Config, new_paths: Paths = PATHS) -> tuple[SettingChange, ...]:
    return settings_changes(BASE, new, PATHS, new_paths)


def test_the_same_file_changes_nothing() -> None:
    assert changes(BASE) == ()
    # a default written out is no change: the resolved paths are compared
    spelled = dataclasses.replace(BASE, daemon=GlobalConfig(statedir="/var/lib/taskmaster"))
    assert changes(spelled) == ()


def test_each_tasks_key_as_text() -> None:
    new = dataclasses.replace(BASE, tasks=TaskSettings(max_parallel=16, timeout=2.5,
                                                       stopsignal=signal.SIGINT))
    assert [(c.setting, c.old, c.new, c.effect) for c in changes(new)] == [
        ("tasks.max_parallel", "4", "16", Effect.APPLIED),
        ("tasks.timeout", "0", "2.5", Effect.APPLIED),
        ("tasks.stopsignal", "TERM", "INT", Effect.APPLIED),
    ]


def test_the_daemon_settings_and_statedir_left_for_a_restart() -> None:
    new = dataclasses.replace(BASE, daemon=GlobalConfig(loglevel="debug"))
    moved = dataclasses.replace(PATHS, logfile="/srv/t.log", logdir="/srv/logs", statedir="/srv/st")
    got = changes(new, moved)
    assert [(c.setting, c.old, c.new, c.effect) for c in got] == [
        ("taskmasterd.logfile", PATHS.logfile, "/srv/t.log", Effect.APPLIED),
        ("taskmasterd.loglevel", "info", "debug", Effect.APPLIED),
        ("taskmasterd.logdir", PATHS.logdir, "/srv/logs", Effect.APPLIED),
        ("taskmasterd.statedir", PATHS.statedir, "/srv/st", Effect.RESTART),
    ]
    assert [c.setting for c in not_applied(got)] == ["taskmasterd.statedir"]
    assert got[3].describe() == ("taskmasterd.statedir /var/lib/taskmaster -> /srv/st (not applied: "
                                 "/var/lib/taskmaster stays in use until taskmasterd is restarted)")
    assert got[1].describe() == "taskmasterd.loglevel info -> debug"


def test_alert_targets_are_counted_never_shown() -> None:
    secret = "mailtos://user:hunter2@example.org"
    one = dataclasses.replace(BASE, alerts=(AlertConfig(url=secret),))
    two = dataclasses.replace(BASE, alerts=(AlertConfig(url=secret), AlertConfig(url="json://x")))
    edited = dataclasses.replace(BASE, alerts=(AlertConfig(url=secret, rate=5),))
    assert [(c.old, c.new) for c in settings_changes(one, two, PATHS, PATHS)] == [
        ("1 target", "2 targets")]
    [c] = settings_changes(one, edited, PATHS, PATHS)
    assert (c.setting, c.old, c.new) == ("alerts", "1 target", "1 target, edited")
    assert "hunter2" not in repr(settings_changes(BASE, one, PATHS, PATHS))
    # where an alert is in the file is not part of it
    moved = dataclasses.replace(BASE, alerts=(AlertConfig(url=secret, line=9, column=3),))
    assert settings_changes(one, moved, PATHS, PATHS) == ()


def test_the_reload_sentence_names_the_settings() -> None:
    new = dataclasses.replace(BASE, tasks=TaskSettings(max_parallel=8))
    assert reload_message(ReloadPlan(), {}, changes(new)) == \
        "reloaded; settings: tasks.max_parallel 4 -> 8"
    assert reload_message(ReloadPlan(), {}) == "reloaded; nothing changed"
