"""The log writer's protocol: taskmasterd/logpipes.py (the daemon) <->
taskmasterd/logwriter.py (the writer). Pure: encoding and checking only.

Messages travel on SOCK_SEQPACKET sockets (one datagram, one message), as
one JSON object each, with the protocol version "v" and an "op"; a pipe's
read end travels with its message (SCM_RIGHTS, one fd):

    daemon -> writer  follow {id, process, stream, path, maxbytes, backups[, scrollback]} + fd
                      watch {id} + fd: a viewer of console `id` (a stream socket: its
                      scrollback, then its output as it comes; taskmasterd/consolefan.py)
                      finish: drain every pipe to EOF, then exit
                      rename {id, process}: the pipe's process was renamed (a reload)
    writer -> daemon  eof {id}: drained and closed
                      error / recovered {path, message}: a file fails / works again

Re-attachment, on the writer's listening socket (see logpipes.py):

    daemon -> writer  hello {pid}
    writer -> daemon  welcome {pid, pipes}, then one `pipe {id, process,
                      stream, path, maxbytes, backups[, scrollback]} + fd` per pipe, then end;
                      the connection is the control socket from then on
                      or: busy {pid} (another daemon is attached), refused {message}
    daemon -> writer  leave: stop reading at once and exit (the daemon
                      took the pipes over for a writer of its own version)

A console (stream "console", protocol 3) is a pseudo-terminal's master
rather than a pipe's read end: the writer reads it (EIO is its end), keeps
its last `scrollback` bytes and copies its output to its viewers.
`scrollback` is optional (0 when absent: an older writer's pipe).

That second group is FROZEN: every version of the writer answers hello
that way and obeys leave (fields may be added, never changed), so a daemon
of another version can still take the pipes over. The first group must
carry this version; a message of another version is refused.

A message that is not what it claims (not JSON, unknown op, a field of the
wrong type, fds missing or extra) raises ProtocolError with the reason;
the receiver logs or answers it and goes on.

The framing and the checks are a `Schema`; `LOG` is this protocol's, and
the task runner's (taskmasterd/tasks/runproto.py) is another.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass

PROTOCOL = 3  # 1 was the unversioned protocol before re-attachment; 2 had no consoles
MAX_MESSAGE = 65536  # bytes; a receive buffer this size never truncates a valid message
MAX_TEXT = 8192
STREAMS = ("stdout", "stderr", "console", "")  # "": a pipe with no key (an old writer's)
MAX_SCROLLBACK = 16 * 1024 * 1024

_PIPE = {"id": "pos", "process": "name", "stream": "stream", "path": "path",
         "maxbytes": "pos", "backups": "nat"}
# op -> (fields, fds carried)
SCHEMA: dict[str, tuple[dict[str, str], int]] = {
    "follow": (_PIPE, 1),
    "watch": ({"id": "pos"}, 1),
    "finish": ({}, 0),
    "rename": ({"id": "pos", "process": "name"}, 0),
    "eof": ({"id": "pos"}, 0),
    "error": ({"path": "text", "message": "text"}, 0),
    "recovered": ({"path": "text", "message": "text"}, 0),
    "hello": ({"pid": "pos"}, 0),
    "welcome": ({"pid": "pos", "pipes": "nat"}, 0),
    "pipe": (_PIPE, 1),
    "end": ({}, 0),
    "busy": ({"pid": "nat"}, 0),
    "refused": ({"message": "text"}, 0),
    "leave": ({}, 0),
}
FROZEN = frozenset({"hello", "welcome", "pipe", "end", "busy", "refused", "leave"})
TO_WRITER = frozenset({"follow", "watch", "finish", "rename", "hello", "leave"})
TO_DAEMON = frozenset(SCHEMA) - TO_WRITER


_INT = array.array("i")


class ProtocolError(ValueError):
    """A message refused; str() is the reason."""


@dataclass(frozen=True)
class Schema:
    """One protocol over this framing: its version, its ops (fields and fds
    carried) and those that cross versions. The log writer's is `LOG`; the
    task runner's is taskmasterd/tasks/runproto.py's."""

    protocol: int
    ops: Mapping[str, tuple[Mapping[str, str], int]]
    frozen: frozenset[str]
    max_message: int = MAX_MESSAGE  # bytes; a receive buffer this size never truncates

    def encode(self, op: str, **fields: object) -> bytes:
        return json.dumps({"v": self.protocol, "op": op, **fields}, separators=(",", ":")).encode()

    def decode(self, data: bytes, nfds: int, expect: Collection[str]) -> dict[str, object]:
        """The message in `data` (which came with `nfds` fds), checked: its op is
        one of `expect`, its fields have their types, its fd count is right.
        The caller closes the fds when this raises."""
        if len(data) >= self.max_message:
            raise ProtocolError(f"message too long ({len(data)} bytes)")
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise ProtocolError(f"not JSON ({exc})") from None
        if not isinstance(msg, dict):
            raise ProtocolError(f"not a JSON object but {type(msg).__name__}")
        op = msg.get("op")
        if not isinstance(op, str) or op not in expect:
            raise unexpected_op(op, expect)
        version = msg.get("v")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ProtocolError(f"{op}: no protocol version (v)")
        if version != self.protocol and op not in self.frozen:
            raise ProtocolError(f"{op}: protocol version {version}, this side speaks {self.protocol}")
        fields, fds = self.ops[op]
        for name, kind in fields.items():
            problem = _check(kind, msg.get(name), self.max_message)
            if problem:
                raise ProtocolError(f"{op}: {name} {problem}")
        if nfds != fds:
            raise ProtocolError(f"{op}: carries {nfds} fd(s), expected {fds}")
        return msg

    def receive(self, sock: socket.socket,
                expect: Collection[str]) -> tuple[dict[str, object], list[int]]:
        """One message and its fds from `sock` (BlockingIOError when there is
        none, EOFError at the end). On a bad message the fds are closed and
        ProtocolError raised."""
        data, fds, truncated = self.datagram(sock)
        try:
            if truncated:
                raise ProtocolError("message or its fds truncated")
            return self.decode(data, len(fds), expect), fds
        except ProtocolError:
            for fd in fds:
                os.close(fd)
            raise

    def datagram(self, sock: socket.socket) -> tuple[bytes, list[int], bool]:
        """One datagram's bytes, the fds it carried and whether either was
        truncated (BlockingIOError when there is none, EOFError at the end)."""
        # CLOEXEC: a received read end must never leak into a program. (Not
        # socket.recv_fds: Python 3.11's ignores its flags.)
        data, ancdata, flags, _addr = sock.recvmsg(self.max_message,
                                                   socket.CMSG_LEN(4 * _INT.itemsize),
                                                   socket.MSG_CMSG_CLOEXEC)
        received = array.array("i")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
        fds = list(received)
        if not data and not fds:
            raise EOFError
        return data, fds, bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))


LOG = Schema(PROTOCOL, SCHEMA, FROZEN)


def encode(op: str, **fields: object) -> bytes:
    return LOG.encode(op, **fields)


def unexpected_op(op: object, expect: Collection[str]) -> ProtocolError:
    """The refusal of a message whose op is not one of `expect` here."""
    return ProtocolError(f"unexpected op {str(op)[:40]!r} (expected one of {', '.join(sorted(expect))})")


def decode(data: bytes, nfds: int, expect: Collection[str]) -> dict[str, object]:
    return LOG.decode(data, nfds, expect)


def receive(sock: socket.socket, expect: Collection[str]) -> tuple[dict[str, object], list[int]]:
    return LOG.receive(sock, expect)


def scrollback(msg: Mapping[str, object]) -> int:
    """A follow or pipe message's optional `scrollback` (0 when absent);
    ProtocolError when it is there and not a size."""
    value = msg.get("scrollback", 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SCROLLBACK:
        raise ProtocolError(f"{msg.get('op')}: scrollback must be an integer from 0 to "
                            f"{MAX_SCROLLBACK}, not {str(value)[:40]!r}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(kind: str, value: object, max_message: int = MAX_MESSAGE) -> str:
    """Why `value` is not a `kind`, or "". Kinds: pos/nat (integers >= 1/0),
    num (a finite number >= 0), text/name/path/stream (strings), blob (a
    string as long as a message)."""
    if kind == "num":
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not 0 <= value < 2 ** 63:
            return f"must be a number >= 0, not {str(value)[:40]!r}"
        return ""
    if kind in ("pos", "nat"):
        low = 1 if kind == "pos" else 0
        if not _is_int(value) or not low <= value < 2 ** 63:  # type: ignore[operator]
            return f"must be an integer >= {low}, not {str(value)[:40]!r}"
        return ""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if kind == "blob":
        return "" if len(value) < max_message else "is too long"
    if kind == "stream":
        return "" if value in STREAMS else f"must be stdout, stderr or console, not {value[:40]!r}"
    if len(value) > (255 if kind == "name" else MAX_TEXT) or (kind != "text" and "\0" in value):
        return "is too long or holds a NUL"
    if kind == "path" and not os.path.isabs(value):
        return f"must be an absolute path, not {value[:80]!r}"
    return ""


def peer_uid_pid(sock: socket.socket) -> tuple[int, int]:
    """(uid, pid) of the process at the other end (SO_PEERCRED: set by the
    kernel at connect time, so it cannot be forged)."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    return uid, pid
