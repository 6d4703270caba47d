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
                      batches {}: see Batches

Re-attachment, on the runner's listening socket:

    daemon -> runner  hello {pid[, batches]}
    runner -> daemon  welcome {pid, tasks[, batches]}, then one `held {status}`
                      per task it holds (running, or ended with its final
                      status.json write still in progress: a held status is
                      never older than the file), then end; the connection
                      is the control socket from then on
                      or: busy {pid} (another daemon is attached), refused {message}

Batches. A loop turn's messages to the other side may travel as one
datagram, one message per line (JSON never holds a raw newline), once
the other side has said it reads them: `batches: true` in hello (the
daemon does) or welcome (the runner does); on the control socket of a
runner the daemon starts, BATCHES_ENV=1 in the runner's environment says
it of the daemon, and the runner says it back with a first `batches`
message. A side that never said so (a runner or a daemon of a version
before batches) gets one message per datagram. Why: each datagram woke the
other process, and on a small virtual machine a wake-up across CPUs costs
the sender ~0.1 ms; 16 lanes of short tasks sent thousands.

Every op but `run` is FROZEN (fields may be added, never changed): a daemon
of another version can still take the tasks back, see their ends and
cancel them. A message that is not what it claims raises ProtocolError
with the reason; the receiver logs or answers it and goes on (the other
messages of its datagram too).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Callable, Collection

from taskmasterd.logproto import ProtocolError, Schema
from taskmasterd.statestore.records import Refused
from taskmasterd.tasks.records import TaskStatus, decode_task, encode_task

PROTOCOL = 1
# A datagram must fit the sender's socket buffer (Debian's default
# net.core.wmem_default is 212992 bytes); a task whose status is larger
# (megabytes of arguments) is refused by the client before it is sent.
MAX_MESSAGE = 200_000
# In the environment of a runner the daemon starts: "1" when the daemon
# reads batches (see Batches above). The runner removes it from its own
# environment: its tasks never see it.
BATCHES_ENV = "TASKMASTER_RUNNER_BATCHES"

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
    "batches": ({}, 0),
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


def receive_batch(sock: socket.socket, expect: Collection[str]) -> list[dict[str, object] | ProtocolError]:
    """The messages of one datagram (several when the peer batches), in
    order: each decoded, or the ProtocolError that refused it.
    BlockingIOError when there is none, EOFError at the end."""
    data, fds, truncated = SCHEMA.datagram(sock)
    for fd in fds:  # none of these ops carries one: nothing would ever close it
        os.close(fd)
    if truncated or fds:
        return [ProtocolError("message truncated" if truncated else
                              f"carries {len(fds)} fd(s), expected 0")]
    out: list[dict[str, object] | ProtocolError] = []
    for line in data.split(b"\n"):
        try:
            out.append(decode(line, 0, expect))
        except ProtocolError as exc:
            out.append(exc)
    return out


def _next_datagram(outbox: deque[bytes], batches: bool) -> tuple[bytes, int]:
    """The next datagram to send and how many messages of `outbox` it holds."""
    if not batches or len(outbox) == 1:
        return outbox[0], 1
    count, size = 0, -1
    for message in outbox:
        if count and size + 1 + len(message) >= MAX_MESSAGE:
            break
        count += 1
        size += 1 + len(message)
    return b"\n".join(outbox[i] for i in range(count)), count


def flush(loop: asyncio.AbstractEventLoop, sock: socket.socket, outbox: deque[bytes],
          again: Callable[[], None], *, batches: bool = False) -> bool:
    """Send the messages `outbox` holds on non-blocking `sock`, in order,
    as few datagrams as fit if the peer reads `batches`, never blocking
    (both ends of this protocol run an event loop that must not wait on the
    other): what it cannot take now waits until `sock` is writable, when
    `again` is called. False: the socket failed (the peer is gone), what is
    left stays in `outbox`."""
    while outbox:
        data, count = _next_datagram(outbox, batches)
        try:
            sock.send(data)
        except BlockingIOError:
            loop.add_writer(sock.fileno(), again)
            return True
        except OSError:
            return False
        for _ in range(count):
            outbox.popleft()
    loop.remove_writer(sock.fileno())
    return True


__all__ = ["BATCHES_ENV", "FROZEN", "MAX_MESSAGE", "OPS", "PROTOCOL", "SCHEMA", "TO_DAEMON",
           "TO_RUNNER", "ProtocolError", "decode", "encode", "flush", "receive", "receive_batch",
           "status_of", "status_text"]
