"""The task runner's protocol: taskmasterd/tasks/runnerclient.py (the
daemon) <-> taskmasterd/tasks/runner.py (the runner). Pure: encoding and
checking only.

The framing is the log writer's (taskmasterd/logproto.py `Schema`): one
JSON object per SOCK_SEQPACKET datagram, with the protocol version "v" and
an "op"; no fds travel here. A task's status travels as the text of its
status.json (records.encode_task), so the file and the message never
disagree on a field:

    daemon -> runner  run {status, stopsignal, stoptime}: start this task
                      (status: its `queued` status); stopsignal/stoptime: how
                      a timeout or a cancel stops it
                      cancel {id, reason}: stop it (stopsignal to its process
                      group, SIGKILL after stoptime); it ends `cancelled`
    runner -> daemon  status {status}: the status it just recorded: running,
                      then its end (heartbeats are not sent)
                      refused {message}: a message of the daemon's refused

Re-attachment, on the runner's listening socket:

    daemon -> runner  hello {pid}
    runner -> daemon  welcome {pid, tasks}, then one `held {status}` per
                      task it holds (running, or ended with its final
                      status.json write still in progress: a held status is
                      never older than the file), then end; the connection
                      is the control socket from then on
                      or: busy {pid} (another daemon is attached), refused {message}

Every op but `run` is FROZEN (fields may be added, never changed): a daemon
of another version can still take the tasks back, see their ends and
cancel them. A message that is not what it claims raises ProtocolError
with the reason; the receiver logs or answers it and goes on.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable

from taskmasterd.logproto import ProtocolError, Schema
from taskmasterd.statestore.records import Refused
from taskmasterd.tasks.records import TaskStatus, decode_task, encode_task

PROTOCOL = 1
# A datagram must fit the sender's socket buffer (Debian's default
# net.core.wmem_default is 212992 bytes); a task whose status is larger
# (megabytes of arguments) is refused by the client before it is sent.
MAX_MESSAGE = 200_000

OPS: dict[str, tuple[dict[str, str], int]] = {
    "run": ({"status": "blob", "stopsignal": "pos", "stoptime": "num"}, 0),
    "cancel": ({"id": "name", "reason": "text"}, 0),
    "status": ({"status": "blob"}, 0),
    "refused": ({"message": "text"}, 0),
    "hello": ({"pid": "pos"}, 0),
    "welcome": ({"pid": "pos", "tasks": "nat"}, 0),
    "held": ({"status": "blob"}, 0),
    "end": ({}, 0),
    "busy": ({"pid": "nat"}, 0),
}
FROZEN = frozenset(OPS) - {"run"}
TO_RUNNER = frozenset({"run", "cancel", "hello"})
TO_DAEMON = frozenset(OPS) - TO_RUNNER
SCHEMA = Schema(PROTOCOL, OPS, FROZEN, MAX_MESSAGE)

encode = SCHEMA.encode
decode = SCHEMA.decode
receive = SCHEMA.receive


def status_text(status: TaskStatus) -> str:
    return encode_task(status).decode()


def status_of(msg: dict[str, object]) -> TaskStatus:
    """The TaskStatus a run/status/held message carries (ProtocolError when
    it is not a valid one)."""
    got = decode_task(str(msg["status"]).encode())
    if isinstance(got, Refused):
        raise ProtocolError(f"{msg['op']}: status refused: {got.reason}")
    return got


def flush(loop: asyncio.AbstractEventLoop, sock: socket.socket, outbox: deque[bytes],
          again: Callable[[], None]) -> bool:
    """Send the messages `outbox` holds on non-blocking `sock`, in order,
    never blocking (both ends of this protocol run an event loop that must
    not wait on the other): what it cannot take now waits until `sock` is
    writable, when `again` is called. False: the socket failed (the peer
    is gone), what is left stays in `outbox`."""
    while outbox:
        try:
            sock.send(outbox[0])
        except BlockingIOError:
            loop.add_writer(sock.fileno(), again)
            return True
        except OSError:
            return False
        outbox.popleft()
    loop.remove_writer(sock.fileno())
    return True


__all__ = ["FROZEN", "MAX_MESSAGE", "OPS", "PROTOCOL", "SCHEMA", "TO_DAEMON", "TO_RUNNER",
           "ProtocolError", "decode", "encode", "flush", "receive", "status_of", "status_text"]
