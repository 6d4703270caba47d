"""Who a task submitted over D-Bus runs as (bus/taskobjects.run_as_caller):
the group taskmaster may control a root daemon, not become root through it."""

from __future__ import annotations

import pwd

import pytest

from taskmasterd.bus.taskobjects import run_as_caller
from taskmasterd.errors import TaskInvalid
from taskmasterd.tasks.spec import TaskSpec

NOBODY = pwd.getpwnam("nobody")


def where(i: int) -> str:
    return f"activity.tasks[{i}]"


def test_a_task_from_another_user_runs_as_that_user() -> None:
    specs = [TaskSpec(command="id"), TaskSpec(command="true", user="nobody"),
             TaskSpec(command="true", user=str(NOBODY.pw_uid))]
    out = run_as_caller(specs, NOBODY.pw_uid, where, daemon_uid=0)
    assert [s.user for s in out] == ["nobody", "nobody", str(NOBODY.pw_uid)]
    assert [s.command for s in out] == ["id", "true", "true"]


def test_another_user_may_not_submit_a_task_running_as_root() -> None:
    specs = [TaskSpec(command="true"), TaskSpec(command="id", user="root")]
    with pytest.raises(TaskInvalid, match=r"^activity\.tasks\[1\]\.user: 'root' is not you "
                                          rf"\(uid {NOBODY.pw_uid}, nobody\): only root may"):
        run_as_caller(specs, NOBODY.pw_uid, where, daemon_uid=0)
    with pytest.raises(TaskInvalid, match="'no-such-user-here' is not you"):
        run_as_caller([TaskSpec(command="id", user="no-such-user-here")], NOBODY.pw_uid, where,
                      daemon_uid=0)


def test_a_uid_without_a_name_runs_as_the_number() -> None:
    uid = next(u for u in range(54321, 64000) if not _named(u))
    assert run_as_caller([TaskSpec(command="id")], uid, where, daemon_uid=0)[0].user == str(uid)


def test_root_and_a_daemon_that_is_not_root_are_left_alone() -> None:
    specs = [TaskSpec(command="id", user="root"), TaskSpec(command="id")]
    assert run_as_caller(specs, 0, where, daemon_uid=0) == specs
    assert run_as_caller(specs, NOBODY.pw_uid, where, daemon_uid=1000) == specs
    assert run_as_caller(specs, None, where, daemon_uid=1000) == specs


def test_an_unknown_caller_of_a_root_daemon_is_refused() -> None:
    with pytest.raises(TaskInvalid, match="the bus did not say which user is submitting"):
        run_as_caller([TaskSpec(command="id")], None, where, daemon_uid=0)


def _named(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
