"""A task's and an activity's status file (taskmasterd/tasks/records.py):
round trips, the format other tools read (docs/tasks.md), and every reason
a file is refused -- refused with a reason, never an exception."""

from __future__ import annotations

import json
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskmasterd.lifecycle import SpawnError
from taskmasterd.statestore.records import Refused
from taskmasterd.tasks.records import (
    ACTIVITY_FORMAT,
    TASK_FORMAT,
    VERSION,
    ActivityState,
    ActivityStatus,
    TaskState,
    TaskStatus,
    activity_json,
    decode_activity,
    decode_task,
    encode_activity,
    encode_task,
    new_id,
    task_json,
)
from taskmasterd.tasks.spec import ID_RE, TaskSpec

T0 = 1764650000.25  # 2025-12-02T04:33:20.250000Z


def task(**kw: object) -> TaskStatus:
    base = TaskStatus(id="3df2bb24", spec=TaskSpec(command="/bin/sh", args=("-c", "exit 3"),
                                                   timeout=30.0),
                      state=TaskState.QUEUED, seq=7, submitted=T0, timeout=30.0)
    return base.replace(**kw)


def activity(**kw: object) -> ActivityStatus:
    base = ActivityStatus(id="0a1b2c3d", name="deploy", state=ActivityState.RUNNING,
                          tasks=("3df2bb24", "4eea0011"), seq=6, submitted=T0, started=T0 + 1)
    return base.replace(**kw)


def doc(status: TaskStatus | None = None, **changes: object) -> bytes:
    d = task_json(status or task())
    d.update(changes)
    return json.dumps(d).encode()


def refusal(data: bytes, what: str = "task") -> str:
    result = (decode_task if what == "task" else decode_activity)(data)
    assert isinstance(result, Refused), result
    return result.reason


# ---- round trips ------------------------------------------------------------------


ENDED = task(state=TaskState.FAILED, started=T0 + 1, ended=T0 + 2.5, heartbeat=T0 + 2,
             pid=4242, start_ticks=987654, runner_pid=4200, exit_code=3,
             reason="exited with status 3", activity="0a1b2c3d", position=1)


@pytest.mark.parametrize("status", [
    task(),
    task(state=TaskState.RUNNING, started=T0 + 0.000001, heartbeat=T0 + 30, pid=1, start_ticks=5,
         runner_pid=2),
    ENDED,
    task(state=TaskState.FAILED, ended=T0 + 1, signal=int(signal.SIGKILL),
         reason="killed by SIGKILL"),
    task(state=TaskState.FAILED, ended=T0 + 1, exit_code=None, spawn_error=SpawnError(
        "ENOENT", "spawn sbin/ssh-bootstrap", "No such file or directory")),
    task(state=TaskState.CANCELLED, ended=T0 + 1, reason="cancelled by taskctl cancel (uid 0)"),
    task(state=TaskState.LOST, reason="its task runner died while it ran (last heartbeat "
         "2026-12-02T06:00:00.000000Z)"),
    task(state=TaskState.SUCCEEDED, exit_code=0, spec=TaskSpec(
        command="rsync", args=("é", "", "a\nb"), env=(("B", "x"), ("A", "")), workingdir="/srv",
        timeout=0.0, user="backup", name="nightly"), timeout=0.0),
    task(id="cli"),
    task(id="0" * 32),
])
def test_task_round_trip(status: TaskStatus) -> None:
    assert decode_task(encode_task(status)) == status


@pytest.mark.parametrize("status", [
    activity(),
    activity(state=ActivityState.QUEUED, started=0.0, tasks=("3df2bb24",), name=""),
    activity(state=ActivityState.FAILED, ended=T0 + 9, failed_task="4eea0011",
             reason="task 4eea0011 failed: exited with status 3"),
    activity(state=ActivityState.SUCCEEDED, ended=T0 + 9),
    activity(state=ActivityState.CANCELLED, ended=T0 + 9, reason="cancelled by taskctl"),
])
def test_activity_round_trip(status: ActivityStatus) -> None:
    assert decode_activity(encode_activity(status)) == status


# Times are microseconds on disk: a time that is a whole number of
# microseconds (what time.time() rounded to µs gives) comes back the same float.
times = st.integers(min_value=1, max_value=4_102_444_800 * 10**6).map(lambda us: us / 10**6)
no_time = st.just(0.0)
texts = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
                max_size=20)
labels = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF,
                               exclude_categories=("Cs",), exclude_characters="\x7f"), max_size=20)
ids = st.from_regex(r"[0-9a-f]{8,32}", fullmatch=True)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
signals = st.sampled_from([int(s) for s in signal.Signals] + [35, 40, 63])


@st.composite
def task_statuses(draw: st.DrawFn) -> TaskStatus:
    timeout = draw(st.sampled_from([0.0, 0.5, 30.0, 86400.0]))
    spec = TaskSpec(command=draw(texts.filter(bool)), args=tuple(draw(st.lists(texts, max_size=4))),
                    env=tuple(draw(st.dictionaries(env_names, texts, max_size=3)).items()),
                    workingdir=draw(st.none() | texts.filter(bool).map(lambda p: "/" + p)),
                    timeout=timeout, user=draw(st.none() | texts.filter(bool)),
                    name=draw(labels))
    ended = draw(st.booleans())
    return TaskStatus(
        id=draw(ids | st.just("cli")), spec=spec, state=draw(st.sampled_from(list(TaskState))),
        seq=draw(st.integers(0, 2**62)), submitted=draw(times), timeout=timeout,
        activity=draw(st.just("") | ids), position=draw(st.integers(0, 10000)),
        started=draw(times | no_time), ended=draw(times) if ended else 0.0,
        heartbeat=draw(times | no_time), pid=draw(st.integers(0, 4194304)),
        start_ticks=draw(st.integers(0, 2**62)), runner_pid=draw(st.integers(0, 4194304)),
        exit_code=draw(st.none() | st.integers(0, 255)), signal=draw(st.none() | signals),
        spawn_error=draw(st.none() | st.builds(SpawnError, st.sampled_from(["ENOENT", "EACCES"]),
                                               texts, texts)),
        reason=draw(texts))


@given(task_statuses())
def test_random_task_round_trip(status: TaskStatus) -> None:
    assert decode_task(encode_task(status)) == status


@given(st.builds(ActivityStatus, id=ids, name=texts, state=st.sampled_from(list(ActivityState)),
                 tasks=st.lists(ids, max_size=5).map(tuple), seq=st.integers(0, 2**62),
                 submitted=times, started=times | no_time, ended=times | no_time,
                 failed_task=st.just("") | ids, reason=texts))
def test_random_activity_round_trip(status: ActivityStatus) -> None:
    assert decode_activity(encode_activity(status)) == status


# ---- the format (docs/tasks.md documents these keys; other tools read them) ---------


def test_task_file_keys_and_values() -> None:
    d = json.loads(encode_task(ENDED))
    assert list(d) == ["format", "version", "id", "name", "state", "command", "args", "env",
                       "workingdir", "user", "label", "timeout", "activity", "position", "seq",
                       "submitted", "started", "ended", "heartbeat", "pid", "start_ticks",
                       "runner_pid", "exit_code", "signal", "spawn_error", "reason"]
    assert d["format"] == TASK_FORMAT == "taskmaster-task" and d["version"] == VERSION == 1
    assert d["name"] == "sh" and d["label"] == ""  # name: shown; label: as given
    assert d["args"] == ["-c", "exit 3"] and d["env"] == {}
    assert d["submitted"] == "2025-12-02T04:33:20.250000Z"
    assert d["started"] == "2025-12-02T04:33:21.250000Z"
    assert d["ended"] == "2025-12-02T04:33:22.750000Z"
    assert d["heartbeat"] == "2025-12-02T04:33:22.250000Z"
    assert (d["pid"], d["start_ticks"], d["runner_pid"]) == (4242, 987654, 4200)
    assert (d["exit_code"], d["signal"], d["spawn_error"]) == (3, None, None)
    assert d["activity"] == "0a1b2c3d" and d["position"] == 1 and d["seq"] == 7
    assert d["timeout"] == 30.0 and d["reason"] == "exited with status 3"


def test_nulls_of_a_queued_task() -> None:
    d = json.loads(encode_task(task()))
    for key in ("workingdir", "user", "activity", "started", "ended", "heartbeat", "pid",
                "start_ticks", "runner_pid", "exit_code", "signal", "spawn_error", "reason"):
        assert d[key] is None, key
    assert d["position"] == 0


def test_spawn_error_and_signal_on_disk() -> None:
    d = json.loads(encode_task(task(state=TaskState.FAILED, spawn_error=SpawnError(
        "ENOENT", "spawn sbin/ssh-bootstrap", "No such file or directory"))))
    assert d["spawn_error"] == {"code": "ENOENT", "syscall": "spawn sbin/ssh-bootstrap",
                                "message": "No such file or directory"}
    assert json.loads(encode_task(task(signal=9)))["signal"] == "SIGKILL"


@pytest.mark.parametrize(("number", "name"), [
    (9, "SIGKILL"), (15, "SIGTERM"), (6, "SIGABRT"), (34, "SIGRTMIN"), (64, "SIGRTMAX"),
    (40, "SIG40"), (None, ""),
])
def test_signal_names(number: int | None, name: str) -> None:
    status = task(signal=number)
    assert status.signal_name == name
    assert decode_task(encode_task(status)) == status


@pytest.mark.parametrize("alias", ["SIGIOT", "SIGCLD", "SIGPOLL"])
def test_signal_aliases_are_read(alias: str) -> None:
    decoded = decode_task(doc(signal=alias))
    assert isinstance(decoded, TaskStatus)
    assert decoded.signal == int(signal.Signals[alias])


def test_the_file_is_small_readable_utf8() -> None:
    data = encode_task(task(spec=TaskSpec(command="é", timeout=30.0)))
    assert data.endswith(b"\n") and "é".encode() in data  # not \u00e9
    assert len(encode_task(ENDED)) < 1000


def test_activity_file_keys() -> None:
    d = activity_json(activity(state=ActivityState.FAILED, ended=T0 + 9, failed_task="4eea0011",
                               reason="r"))
    assert list(d) == ["format", "version", "id", "name", "state", "tasks", "seq", "submitted",
                       "started", "ended", "failed_task", "reason"]
    assert d["format"] == ACTIVITY_FORMAT == "taskmaster-activity"
    assert d["tasks"] == ["3df2bb24", "4eea0011"] and d["ended"] == "2025-12-02T04:33:29.250000Z"
    queued = activity_json(activity(state=ActivityState.QUEUED, started=0.0))
    assert queued["started"] is None and queued["ended"] is None
    assert queued["failed_task"] is None and queued["reason"] is None


# ---- times: ISO 8601 UTC --------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("2025-12-02T04:33:20.250000Z", T0),
    ("2025-12-02T04:33:20.25Z", T0),
    ("2025-12-02T05:33:20.250000+01:00", T0),  # another offset: the same instant
    ("2025-12-02T04:33:20.250000", T0),  # no offset: UTC
    ("2025-12-02T04:33:20Z", T0 - 0.25),
])
def test_times_read(text: str, seconds: float) -> None:
    decoded = decode_task(doc(submitted=text))
    assert isinstance(decoded, TaskStatus) and decoded.submitted == seconds


@pytest.mark.parametrize(("value", "reason"), [
    ("yesterday", "submitted: 'yesterday' is not an ISO 8601 time"),
    (1764650000, "submitted: expected an ISO 8601 time or null"),
    ("0001-01-01T00:00:00+01:00", "submitted: '0001-01-01T00:00:00+01:00' is out of range"),
    ("9999-12-31T23:59:59-01:00", "submitted: '9999-12-31T23:59:59-01:00' is out of range"),
    ("1969-12-31T23:59:59Z", "submitted: '1969-12-31T23:59:59Z' is out of range"),
])
def test_bad_times_are_refused(value: object, reason: str) -> None:
    """A time the file format could not write back (year 0 or 10000 in UTC)
    or before 1970 is refused: it used to be accepted, and writing that
    status again raised."""
    assert refusal(doc(submitted=value)) == reason


def test_null_times_are_zero() -> None:
    decoded = decode_task(doc(started=None, ended=None, heartbeat=None))
    assert isinstance(decoded, TaskStatus) and decoded.started == decoded.ended == 0.0


# ---- refusals: every reason -----------------------------------------------------------


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "Expecting value: line 1 column 1 (char 0)"),
    (b"[1]", "not a JSON object"),
    (b"\xff\xfe", None),
    (b"[" * 100_000, None),
    (doc(format="taskmaster-state"), "format is 'taskmaster-state', not 'taskmaster-task'"),
    (doc(version=2), "version 2 is not 1"),
    (doc(version="1"), "version '1' is not 1"),
    (doc(id="3DF2BB24"), "id: expected 8 to 32 lowercase hex digits"),
    (doc(id="3df2bb24\n"), "id: expected 8 to 32 lowercase hex digits"),
    (doc(id=12345678), "id: expected 8 to 32 lowercase hex digits"),
    (doc(id="../../etc"), "id: expected 8 to 32 lowercase hex digits"),
    (doc(state="done"), "state: 'done' is not a task state"),
    (doc(state=None), "state: None is not a task state"),
    (doc(command=None), "the recorded task.command: expected a string, got null"),
    (doc(args=[1]), "the recorded task.args[0]: expected a string, got a number"),
    (doc(env={"A": False}), "the recorded task.env.A: expected a string, got a boolean"),
    (doc(workingdir="rel"), "the recorded task.workingdir: must be an absolute path, got 'rel'"),
    (doc(label="a\tb"), "the recorded task.name: contains a control character"),
    (doc(timeout=-1), "timeout: expected a non-negative number"),
    (doc(timeout="30"), "timeout: expected a non-negative number"),
    (doc(timeout=True), "timeout: expected a non-negative number"),
    (doc(timeout=10**400), None),
    (doc(spawn_error="ENOENT"), "spawn_error: expected {code, syscall, message} strings"),
    (doc(spawn_error={"code": "ENOENT"}), "spawn_error: expected {code, syscall, message} strings"),
    (doc(activity="deploy"), "activity: expected an activity id or null"),
    (doc(activity=5), "activity: expected a string or null"),
    (doc(seq=None), "seq: expected a non-negative integer"),
    (doc(seq=-1), "seq: expected a non-negative integer"),
    (doc(seq=1.5), "seq: expected a non-negative integer"),
    (doc(position=True), "position: expected a non-negative integer"),
    (doc(pid="42"), "pid: expected a non-negative integer"),
    (doc(pid=4194305), "pid: 4194305 is above 4194304"),
    (doc(runner_pid=2**40), "runner_pid: 1099511627776 is above 4194304"),
    (doc(start_ticks=2**64), "start_ticks: 18446744073709551616 is above 9223372036854775807"),
    (doc(exit_code=-1), "exit_code: expected a non-negative integer"),
    (doc(exit_code=256), "exit_code: 256 is above 255"),
    (doc(signal=9), "signal: expected a name like SIGTERM or null"),
    (doc(signal="KILL"), "signal: expected a name like SIGTERM or null"),
    (doc(signal="SIGFOO"), "signal: unknown signal 'SIGFOO'"),
    (doc(signal="SIG"), "signal: unknown signal 'SIG'"),
    (doc(signal="SIG0"), "signal: unknown signal 'SIG0'"),
    (doc(signal="SIG65"), "signal: unknown signal 'SIG65'"),
    (doc(signal="SIG\u0663"), "signal: unknown signal 'SIG\u0663'"),  # an Arabic-Indic 3
    (doc(reason=5), "reason: expected a string or null"),
])
def test_task_refusals(data: bytes, reason: str | None) -> None:
    got = refusal(data)
    if reason is not None:
        assert got == reason
    else:
        assert got  # a reason, whatever Python's words for it


def test_a_missing_key_is_refused_not_raised() -> None:
    for key in task_json(ENDED):
        d = task_json(ENDED)
        del d[key]
        result = decode_task(json.dumps(d).encode())
        if key in ("format", "version", "id", "state", "command", "seq", "position"):
            assert isinstance(result, Refused), key
        else:
            assert isinstance(result, TaskStatus), key  # optional (null, or derived: name)


@pytest.mark.parametrize(("data", "reason"), [
    (b"{}", "format is None, not 'taskmaster-activity'"),
    (json.dumps({**activity_json(activity()), "format": "taskmaster-task"}).encode(),
     "format is 'taskmaster-task', not 'taskmaster-activity'"),
    (json.dumps({**activity_json(activity()), "state": "lost"}).encode(),
     "state: 'lost' is not an activity state"),
    (json.dumps({**activity_json(activity()), "tasks": "3df2bb24"}).encode(),
     "tasks: expected a list of task ids"),
    (json.dumps({**activity_json(activity()), "tasks": ["cli"]}).encode(),
     "tasks: expected a list of task ids"),
    (json.dumps({**activity_json(activity()), "id": "cli!"}).encode(),
     "id: expected 8 to 32 lowercase hex digits"),
    (json.dumps({**activity_json(activity()), "failed_task": 3}).encode(),
     "failed_task: expected a string or null"),
    (json.dumps({**activity_json(activity()), "ended": "never"}).encode(),
     "ended: 'never' is not an ISO 8601 time"),
    (json.dumps({**activity_json(activity()), "seq": -2}).encode(),
     "seq: expected a non-negative integer"),
    (b"\x00", None),
])
def test_activity_refusals(data: bytes, reason: str | None) -> None:
    got = refusal(data, "activity")
    assert got == reason if reason is not None else got


def test_a_task_file_is_not_an_activity_file() -> None:
    assert refusal(encode_task(task()), "activity") == \
        "format is 'taskmaster-task', not 'taskmaster-activity'"


# ---- states and ids ---------------------------------------------------------------------


def test_final_states() -> None:
    assert [s.value for s in TaskState if s.final] == ["succeeded", "failed", "cancelled", "lost"]
    assert [s.value for s in ActivityState if s.final] == ["succeeded", "failed", "cancelled"]


def test_name_is_the_label() -> None:
    assert task().name == "sh"
    assert task(spec=TaskSpec(command="/bin/sh", name="boot")).name == "boot"


def test_new_id_is_8_hex_and_never_taken() -> None:
    seen: list[str] = []

    def taken(candidate: str) -> bool:
        seen.append(candidate)
        return len(seen) < 4  # the first three are taken

    got = new_id(taken)
    assert got == seen[-1] and len(seen) == 4
    assert len(got) == 8 and ID_RE.match(got)
    assert len({new_id(lambda _: False) for _ in range(200)}) == 200


def test_the_recorded_limit_is_the_specs_timeout_once_read() -> None:
    """A file holds one `timeout`, the limit in force: read back, the spec's
    timeout is that value (no longer None, "the configured default")."""
    submitted = task(spec=TaskSpec(command="/bin/true"), timeout=45.0)  # spec.timeout None
    decoded = decode_task(encode_task(submitted))
    assert isinstance(decoded, TaskStatus)
    assert decoded.timeout == decoded.spec.timeout == 45.0
