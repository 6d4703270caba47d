"""The task runner's protocol (taskmasterd/tasks/runproto.py): the log
writer's framing with its own schema; statuses travel as status.json text;
bad messages are refused with a reason."""

from __future__ import annotations

import json
import socket

import pytest

from taskmasterd import logproto
from taskmasterd.tasks.records import TaskState, TaskStatus, encode_task
from taskmasterd.tasks.runproto import (
    FROZEN,
    MAX_MESSAGE,
    OPS,
    PROTOCOL,
    TO_DAEMON,
    TO_RUNNER,
    ProtocolError,
    decode,
    encode,
    receive,
    status_of,
    status_text,
)
from taskmasterd.tasks.spec import parse_task

STATUS = TaskStatus(id="3df2bb24", spec=parse_task({"command": "true", "env": {"K": "v"}, "timeout": 0}),
                    state=TaskState.QUEUED, seq=1, submitted=1000.0)
TEXT = status_text(STATUS)
VALID: dict[str, dict[str, object]] = {
    "run": {"status": TEXT, "stopsignal": 15, "stoptime": 10.0},
    "cancel": {"id": "3df2bb24", "reason": "cancelled by taskctl cancel (uid 0)"},
    "status": {"status": TEXT}, "refused": {"message": "no"}, "hello": {"pid": 10},
    "welcome": {"pid": 11, "tasks": 0}, "held": {"status": TEXT}, "end": {}, "busy": {"pid": 12},
}


def raw(**msg: object) -> bytes:
    return json.dumps(msg).encode()


def test_every_op_has_an_example_and_a_direction() -> None:
    assert set(VALID) == set(OPS) == TO_RUNNER | TO_DAEMON
    assert not TO_RUNNER & TO_DAEMON


@pytest.mark.parametrize("op", sorted(VALID))
def test_each_message_round_trips_with_its_version(op: str) -> None:
    assert decode(encode(op, **VALID[op]), 0, {op}) == {"v": PROTOCOL, "op": op, **VALID[op]}


def test_a_status_travels_as_the_text_of_its_file() -> None:
    msg = decode(encode("status", status=TEXT), 0, {"status"})
    assert status_of(msg) == STATUS
    assert str(msg["status"]).encode() == encode_task(STATUS)
    with pytest.raises(ProtocolError, match=r"status: status refused: .*state"):
        status_of({"op": "status", "status": TEXT.replace('"queued"', '"asleep"')})


def test_every_op_but_run_crosses_versions() -> None:
    assert set(OPS) - {"run"} == FROZEN
    assert decode(raw(v=PROTOCOL + 1, op="cancel", **VALID["cancel"]), 0, {"cancel"})["id"] == "3df2bb24"
    with pytest.raises(ProtocolError, match=f"run: protocol version {PROTOCOL + 1}"):
        decode(raw(v=PROTOCOL + 1, op="run", **VALID["run"]), 0, {"run"})


@pytest.mark.parametrize(("fields", "reason"), [
    ({**VALID["run"], "stopsignal": 0}, "run: stopsignal must be an integer >= 1"),
    ({**VALID["run"], "stoptime": -1}, "run: stoptime must be a number >= 0"),
    ({**VALID["run"], "stoptime": "10"}, "run: stoptime must be a number >= 0"),
    ({**VALID["run"], "stoptime": True}, "run: stoptime must be a number >= 0"),
    ({**VALID["run"], "status": 3}, "run: status must be a string, not int"),
    ({"stopsignal": 15, "stoptime": 1}, "run: status must be a string, not NoneType"),
])
def test_bad_runs_are_refused_with_the_reason(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(raw(v=PROTOCOL, op="run", **fields), 0, TO_RUNNER)
    assert reason in str(exc.value)


def test_nan_and_infinity_are_no_stoptime() -> None:
    for bad in (b"NaN", b"Infinity"):
        data = encode("run", **VALID["run"]).replace(b'"stoptime":10.0', b'"stoptime":' + bad)
        with pytest.raises(ProtocolError, match="stoptime must be a number"):
            decode(data, 0, {"run"})


def test_a_message_the_size_of_the_limit_is_refused_and_a_big_one_passes() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        big = encode("refused", message="x" * 8000)
        a.send(big)
        assert receive(b, {"refused"})[0]["message"] == "x" * 8000
        status = STATUS.replace(spec=parse_task({"command": "true", "args": ["a" * 60000] * 3, "timeout": 0}))
        a.send(encode("held", status=status_text(status)))  # larger than the log writer's limit
        assert status_of(receive(b, {"held"})[0]) == status
    with pytest.raises(ProtocolError, match="too long"):
        decode(b" " * MAX_MESSAGE, 0, {"held"})


def test_the_log_writer_protocol_is_unchanged_by_the_sharing() -> None:
    assert logproto.LOG.max_message == logproto.MAX_MESSAGE
    with pytest.raises(ProtocolError, match="unexpected op 'run'"):
        logproto.decode(encode("run", **VALID["run"]), 0, logproto.TO_WRITER)


def test_the_runner_listens_beside_the_log_writer_keyed_the_same() -> None:
    from taskmasterd.logattach import writer_socket
    from taskmasterd.tasks.runnerclient import runner_socket

    runner = runner_socket("/run/taskmaster", "/var/lib/taskmaster", "/etc/taskmaster/taskmaster.yaml")
    writer = writer_socket("/run/taskmaster", "/var/lib/taskmaster", "/etc/taskmaster/taskmaster.yaml")
    assert runner.startswith("/run/taskmaster/taskrunner-") and runner.endswith(".sock")
    assert runner.removeprefix("/run/taskmaster/taskrunner-") == \
        writer.removeprefix("/run/taskmaster/logwriter-")
    assert runner != runner_socket("/run/taskmaster", "/var/lib/other", "/etc/taskmaster/taskmaster.yaml")
