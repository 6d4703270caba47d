"""The task runner's protocol (taskmasterd/tasks/runproto.py): the log
writer's framing with its own schema; statuses travel as status.json text;
bad messages are refused with a reason."""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
from collections import deque

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
    flush,
    receive,
    receive_batch,
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
    "batches": {},
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


# ---- batches: several messages per datagram, once the peer said it reads them


class FakeLoop:
    """What flush() asks of the loop: watch for writability, or stop."""

    def __init__(self) -> None:
        self.writer: object = None

    def add_writer(self, fd: int, cb: object) -> None:
        self.writer = cb

    def remove_writer(self, fd: int) -> bool:
        self.writer = None
        return True


def send_all(messages: list[bytes], *, batches: bool) -> list[bytes]:
    """The datagrams flush() makes of `messages`."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        outbox = deque(messages)
        loop = FakeLoop()
        got = []
        while True:
            assert flush(loop, a, outbox, lambda: None, batches=batches)  # type: ignore[arg-type]
            while True:  # what the peer reads meanwhile (a full socket waits for it)
                try:
                    got.append(b.recv(MAX_MESSAGE + 10))
                except BlockingIOError:
                    break
            if not outbox:
                assert loop.writer is None
                return got


def test_without_batches_each_message_is_its_own_datagram() -> None:
    msgs = [encode("status", status=TEXT), encode("refused", message="no"), encode("end")]
    assert send_all(msgs, batches=False) == msgs


def test_with_batches_a_burst_is_one_datagram_one_message_per_line() -> None:
    msgs = [encode("status", status=TEXT.replace("3df2bb24", f"{i:08x}")) for i in range(16)]
    (datagram,) = send_all(msgs, batches=True)
    assert datagram.split(b"\n") == msgs
    assert b"\n" not in encode("refused", message="two\nlines")  # JSON escapes it


def test_a_batch_never_reaches_the_size_limit() -> None:
    big = encode("refused", message="x" * 70_000)
    datagrams = send_all([big] * 7, batches=True)
    assert [d.count(b"\n") + 1 for d in datagrams] == [2, 2, 2, 1]
    assert all(len(d) < MAX_MESSAGE for d in datagrams)
    assert b"\n".join(datagrams).split(b"\n") == [big] * 7


def test_receive_batch_reads_each_line_and_refuses_only_the_bad_ones() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.send(b"\n".join([encode("status", status=TEXT), b"{not json", encode("run", **VALID["run"]),
                           encode("end")]))
        got = receive_batch(b, TO_DAEMON)
        assert [m["op"] if isinstance(m, dict) else type(m).__name__ for m in got] == \
            ["status", "ProtocolError", "ProtocolError", "end"]
        assert "not JSON" in str(got[1]) and "unexpected op 'run'" in str(got[2])
        a.send(encode("cancel", **VALID["cancel"]))  # a peer that does not batch
        assert receive_batch(b, TO_RUNNER) == [decode(encode("cancel", **VALID["cancel"]), 0, {"cancel"})]
        a.close()
        with pytest.raises(EOFError):
            receive_batch(b, TO_RUNNER)


def test_receive_batch_closes_fds_it_was_sent() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    with a, b:
        a.sendmsg([encode("end")], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
        os.close(r)
        (got,) = receive_batch(b, TO_DAEMON)
        assert isinstance(got, ProtocolError) and "carries 1 fd(s), expected 0" in str(got)
        with pytest.raises(BrokenPipeError):  # the received copy was closed: no reader is left
            os.write(w, b"x")
    os.close(w)


def test_flush_waits_for_a_full_socket_and_keeps_what_is_left() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.setblocking(False)
        loop = FakeLoop()
        big = encode("refused", message="x" * 60_000)
        outbox = deque([big] * 200)
        again = object()
        assert flush(loop, a, outbox, again, batches=True)  # type: ignore[arg-type]
        assert outbox and loop.writer is again  # the rest waits for writability
        b.close()
        assert not flush(loop, a, outbox, again, batches=True)  # type: ignore[arg-type]
        assert outbox  # the peer is gone: nothing lost silently, the caller decides


def test_asyncio_is_what_flush_is_given() -> None:
    loop = asyncio.new_event_loop()
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b:
            a.setblocking(False)
            assert flush(loop, a, deque([encode("end"), encode("end")]), lambda: None, batches=True)
            assert b.recv(100) == encode("end") + b"\n" + encode("end")
    finally:
        loop.close()
