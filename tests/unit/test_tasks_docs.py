"""docs/tasks.md against the code, so the documented file format cannot
drift from what records.py writes: every key of status.json in its table
and in order, the examples are files the daemon would accept, the task
keys, states, limits and `tasks:` defaults are the code's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from taskmasterd.errors import TaskInvalid
from taskmasterd.tasks import spec
from taskmasterd.tasks.records import (
    ActivityState,
    ActivityStatus,
    TaskState,
    TaskStatus,
    activity_json,
    decode_activity,
    decode_task,
    task_json,
)
from taskmasterd.tasks.settings import TASK_SETTING_KEYS, TaskSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "tasks.md").read_text()
ROW = re.compile(r"^\| `([a-z_]+)` \|(.*)$")


def section(title: str) -> str:
    start = DOC.index(title)
    nxt = re.search(r"^#{2,3} ", DOC[start + len(title):], re.M)
    return DOC[start:start + len(title) + (nxt.start() if nxt else len(DOC))]


def keys(title: str) -> list[str]:
    return [m[1] for line in section(title).splitlines() if (m := ROW.match(line))]


def example(title: str) -> bytes:
    m = re.search(r"```json\n(.*?)```", section(title), re.S)
    assert m, title
    return m[1].encode()


def test_task_keys() -> None:
    assert keys("## A task") == list(spec.TASK_KEYS)


def test_status_json_of_a_task_is_documented_key_by_key() -> None:
    decoded = decode_task(example("### status.json of a task"))
    assert isinstance(decoded, TaskStatus), decoded
    assert keys("### status.json of a task") == list(task_json(decoded))
    assert list(json.loads(example("### status.json of a task"))) == list(task_json(decoded))


def test_status_json_of_an_activity_is_documented_key_by_key() -> None:
    decoded = decode_activity(example("### status.json of an activity"))
    assert isinstance(decoded, ActivityStatus), decoded
    assert keys("### status.json of an activity") == list(activity_json(decoded))


def test_states() -> None:
    rows = [m[1] for line in section("## States").splitlines()
            if (m := re.match(r"^\| `([a-z]+)` \| ", line))]
    assert rows == [s.value for s in TaskState]
    finals = [m[1] for line in section("## States").splitlines()
              if (m := re.match(r"^\| `([a-z]+)` \| [^|]+\| yes \|", line))]
    assert finals == [s.value for s in TaskState if s.final]
    for state in ActivityState:
        assert f"`{state.value}`" in section("### status.json of an activity")


def test_tasks_config_keys_and_defaults() -> None:
    title = "## Configuration: `tasks:`"
    assert keys(title) == list(TASK_SETTING_KEYS)
    defaults = {m[1]: m[2].split("|")[0].strip() for line in section(title).splitlines()
                if (m := ROW.match(line))}
    d = TaskSettings()
    assert defaults == {"max_parallel": str(d.max_parallel), "keep": f"{d.keep:g}",
                        "timeout": f"{d.timeout:g}", "stopsignal": d.stopsignal.name[3:],
                        "stoptime": f"{d.stoptime:g}", "max_queued": str(d.max_queued)}


def test_limits() -> None:
    text = " ".join(section("## A task").split())
    assert f"at most {spec.MAX_TEXT} characters" in text
    assert f"at most {spec.MAX_ARGS} `args` of at most {spec.MAX_ARG} characters" in text
    assert f"at most {spec.MAX_ENV} `env` variables" in text
    assert f"`args` and `env` together at most {spec.MAX_EXEC} characters" in text
    assert f"at most {spec.MAX_FILE // 2**20} MiB" in text
    assert f"at most {spec.MAX_TASKS:,} tasks" in text
    assert f"from 0 to {int(spec.MAX_TIMEOUT // 86400)} days" in text


@pytest.mark.parametrize(("task", "where"), [
    ({"command": "x", "args": ["a", "b", 3]}, "task"),
    ({"comand": "x"}, "task"),
    ({"command": "x", "workingdir": "srv"}, "task"),
])
def test_error_examples_are_real(task: dict[str, object], where: str) -> None:
    with pytest.raises(TaskInvalid) as info:
        spec.parse_task(task, where)
    assert f"\n{info.value}\n" in section("## A task")
