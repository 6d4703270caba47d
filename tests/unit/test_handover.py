"""The re-exec handover: round trip, refusals, the memfd and its variable."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmasterd.states import State
from taskmasterd.statestore import Refused, Snapshot
from taskmasterd.statestore.handover import ENV, Down, Handover, decode, encode, take, write_memfd
from tests.unit.test_statestore import record


def handover() -> Handover:
    return Handover(Snapshot((record(),), daemon_pid=42), {"web:1": 9},
                    (Down("db", State.EXITED, 3, False, 2, False),
                     Down("idle", State.STOPPED, None, False, 0, False),
                     Down("lost", State.EXITED, None, True, 0, True)),
                    "0.1.0", None, (4321,))


def test_round_trip() -> None:
    assert decode(encode(handover())) == handover()


def test_memfd_and_variable_round_trip() -> None:
    fd = write_memfd(handover())
    assert os.get_inheritable(fd)
    env = {ENV: str(fd), "OTHER": "1"}
    assert take(env) == handover()
    assert env == {"OTHER": "1"}  # children do not inherit it
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    assert take({}) is None
    refused = take({ENV: "nope"})
    assert isinstance(refused, Refused) and "cannot read the handover" in refused.reason


@pytest.mark.parametrize(("change", "reason"), [
    ({"format": "x"}, "not a taskmasterd handover"),
    ({"version": 2}, "not a taskmasterd handover"),
    ({"pidfds": {"web:1": -1}}, "pidfds"),
    ({"pidfds": ["web:1"]}, "pidfds"),
    ({"reap": [True]}, "reap"),
    ({"down": [{"process": "db"}]}, "down: malformed"),
    ({"down": [{"process": "db", "state": "NOPE", "exit_status": None, "exit_unknown": False,
                "restarts": 0, "restart_pending": False}]}, "down: malformed"),
    ({"state": {"format": "taskmaster-state", "version": 9}}, "version 9"),
])
def test_refusals(change: dict[str, object], reason: str) -> None:
    doc = json.loads(encode(handover()))
    doc.update(change)
    result = decode(json.dumps(doc).encode())
    assert isinstance(result, Refused) and reason in result.reason, result


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_decode_never_raises(data: bytes) -> None:
    assert isinstance(decode(data), Handover | Refused)
