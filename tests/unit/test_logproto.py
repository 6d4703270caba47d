"""The log writer's protocol (taskmasterd/logproto.py): versioned messages,
every field checked, hostile or garbled input refused with a reason, never
a crash."""

from __future__ import annotations

import json
import os
import socket

import pytest

from taskmasterd.logproto import (
    FROZEN,
    PROTOCOL,
    SCHEMA,
    TO_DAEMON,
    TO_WRITER,
    ProtocolError,
    decode,
    encode,
    receive,
)

PIPE = {"id": 3, "process": "web:0", "stream": "stdout", "path": "/var/log/web.log",
        "maxbytes": 1024, "backups": 2}
VALID = {
    "follow": PIPE, "finish": {}, "rename": {"id": 3, "process": "web"}, "eof": {"id": 1},
    "error": {"path": "/x", "message": "m"},
    "recovered": {"path": "/x", "message": "m"}, "hello": {"pid": 10}, "welcome": {"pid": 11, "pipes": 0},
    "pipe": PIPE, "end": {}, "busy": {"pid": 12}, "refused": {"message": "no"}, "leave": {},
    "watch": {"id": 3},
}


def raw(**msg: object) -> bytes:
    return json.dumps(msg).encode()


def test_every_op_has_an_example_and_a_direction() -> None:
    assert set(VALID) == set(SCHEMA) == TO_WRITER | TO_DAEMON
    assert not TO_WRITER & TO_DAEMON


@pytest.mark.parametrize("op", sorted(VALID))
def test_each_message_round_trips_with_its_version(op: str) -> None:
    data = encode(op, **VALID[op])
    msg = decode(data, SCHEMA[op][1], {op})
    assert msg == {"v": PROTOCOL, "op": op, **VALID[op]}


def test_fields_may_be_added_by_a_later_version() -> None:
    assert decode(raw(v=PROTOCOL, op="eof", id=1, extra=[1, 2]), 0, {"eof"})["id"] == 1


def test_frozen_messages_cross_versions_the_others_do_not() -> None:
    assert {"hello", "welcome", "pipe", "end", "busy", "refused", "leave"} == FROZEN
    for op in sorted(FROZEN):
        assert decode(raw(v=PROTOCOL + 7, op=op, **VALID[op]), SCHEMA[op][1], {op})["v"] == PROTOCOL + 7
    with pytest.raises(ProtocolError, match=rf"follow: protocol version 1, this side speaks {PROTOCOL}"):
        decode(raw(v=1, op="follow", **PIPE), 1, {"follow"})


@pytest.mark.parametrize(("data", "nfds", "reason"), [
    (b"", 0, "not JSON"),
    (b"\xff\xfe", 0, "not JSON"),
    (b"{\"op\": \"eof\"", 0, "not JSON"),
    (b"[" * 100_000, 0, "too long"),
    (b"[" * 60_000, 0, "not JSON"),  # nesting deeper than the parser's recursion
    (b"[1, 2]", 0, "not a JSON object but list"),
    (b"null", 0, "not a JSON object but NoneType"),
    (raw(v=PROTOCOL), 0, "unexpected op 'None'"),
    (raw(v=PROTOCOL, op=["eof"]), 0, "unexpected op"),
    (raw(v=PROTOCOL, op="shutdown"), 0, "unexpected op 'shutdown'"),
    (raw(v=PROTOCOL, op="hello", pid=1), 0, "unexpected op 'hello'"),  # not expected here
    (raw(op="eof", id=1), 0, "eof: no protocol version"),
    (raw(v="2", op="eof", id=1), 0, "eof: no protocol version"),
    (raw(v=True, op="eof", id=1), 0, "eof: no protocol version"),
    (raw(v=0, op="end"), 0, "end: no protocol version"),
    (raw(v=PROTOCOL, op="eof"), 0, "eof: id must be an integer >= 1, not 'None'"),
    (raw(v=PROTOCOL, op="eof", id=0), 0, "eof: id must be an integer >= 1"),
    (raw(v=PROTOCOL, op="eof", id=True), 0, "eof: id must be an integer >= 1"),
    (raw(v=PROTOCOL, op="eof", id=2 ** 64), 0, "eof: id must be an integer >= 1"),
    (raw(v=PROTOCOL, op="eof", id=1.5), 0, "eof: id must be an integer >= 1"),
    (raw(v=PROTOCOL, op="follow", **{**PIPE, "maxbytes": 0}), 1, "follow: maxbytes must be an integer >= 1"),
    (raw(v=PROTOCOL, op="follow", **{**PIPE, "backups": -1}), 1, "follow: backups must be an integer >= 0"),
    (raw(v=PROTOCOL, op="follow", **{**PIPE, "path": "web.log"}), 1, "follow: path must be an absolute path"),
    (raw(v=PROTOCOL, op="follow", **{**PIPE, "path": "/a\0b"}), 1, "follow: path is too long or holds a NUL"),
    (raw(v=PROTOCOL, op="follow", **{**PIPE, "path": 7}), 1, "follow: path must be a string, not int"),
    (raw(v=PROTOCOL, op="follow", **{**PIPE, "stream": "stdin"}), 1,
     "follow: stream must be stdout, stderr or console"),
    (raw(v=PROTOCOL, op="follow", **{**PIPE, "process": "x" * 300}), 1, "follow: process is too long"),
    (raw(v=PROTOCOL, op="follow", **PIPE), 0, "follow: carries 0 fd(s), expected 1"),
    (raw(v=PROTOCOL, op="eof", id=1), 2, "eof: carries 2 fd(s), expected 0"),
    (raw(v=PROTOCOL, op="error", path="/x", message="m" * 10_000), 0, "error: message is too long"),
])
def test_bad_messages_are_refused_with_the_reason(data: bytes, nfds: int, reason: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(data, nfds, (TO_WRITER | TO_DAEMON) - {"hello"})
    assert reason in str(exc.value)


def test_a_bad_message_with_fds_gets_them_closed() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    socket.send_fds(a, [raw(v=PROTOCOL, op="eof", id=1)], [r, w])  # fds where none belong
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ProtocolError, match="carries 2 fd"):
        receive(b, {"eof"})
    assert set(os.listdir("/proc/self/fd")) == before  # the two received copies were closed
    socket.send_fds(a, [encode("follow", **PIPE)], [r, w, r, w, r, w])  # more than 4: cut
    with pytest.raises(ProtocolError, match="truncated"):
        receive(b, {"follow"})
    assert set(os.listdir("/proc/self/fd")) == before
    socket.send_fds(a, [encode("follow", **PIPE)], [r])
    _msg, [got] = receive(b, {"follow"})
    assert not os.get_inheritable(got)  # never leaks into a program
    os.close(got)
    a.close()
    with pytest.raises(EOFError):
        receive(b, {"eof"})
    for fd in (r, w):
        os.close(fd)
    b.close()
