"""The log writer on its own (a real process, real pipes) once its daemon
is gone: it keeps draining, hands every pipe to the next daemon that says
hello on its listening socket, tells a second one it is busy, refuses
strangers and garbage with a reason, and leaves at once when told to."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmasterd.logproto import PROTOCOL, TO_DAEMON, encode, receive


def wait_listening(path: str, timeout: float = 10.0) -> None:
    """Until somebody listens on the unix socket `path` (/proc/net/unix:
    flag __SO_ACCEPTCON); the writer calls listen() once it runs."""
    deadline = time.monotonic() + timeout
    while True:
        with open("/proc/net/unix") as f:
            rows = [ln.split() for ln in f]
            if any(len(r) == 8 and r[3] == "00010000" and r[-1] == path for r in rows):
                return
        assert time.monotonic() < deadline, f"nobody listens on {path}"
        time.sleep(0.01)  # sleep-ok: polling /proc, which has no notification


class Writer:
    """`python -m taskmasterd.logwriter CTL LISTEN`, as the daemon starts it."""

    def __init__(self, where: Path) -> None:
        self.path = str(where / "writer.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.path)
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = (theirs.fileno(), listener.fileno())
        self.proc = subprocess.Popen([sys.executable, "-m", "taskmasterd.logwriter", *map(str, fds)],
                                     pass_fds=fds)
        theirs.close()
        listener.close()
        wait_listening(self.path)
        self.next_id = 1

    def follow(self, path: Path, process: str, maxbytes: int = 10 ** 9, backups: int = 1) -> tuple[int, int]:
        """A new pipe into `path`: (its write end, its read end's inode)."""
        r, w = os.pipe()
        socket.send_fds(self.ctl, [encode("follow", id=self.next_id, process=process, stream="stdout",
                                          path=str(path), maxbytes=maxbytes, backups=backups)], [r])
        inode = os.fstat(r).st_ino
        os.close(r)
        self.next_id += 1
        return w, inode

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(10)
        sock.connect(self.path)
        return sock


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path)
    yield w
    if w.proc.poll() is None:
        w.proc.kill()
    w.proc.wait()


def hello(sock: socket.socket) -> dict[str, object]:
    sock.send(encode("hello", pid=os.getpid()))
    return receive(sock, TO_DAEMON)[0]


def test_the_next_daemon_gets_every_pipe_back_and_becomes_the_daemon(writer: Writer, tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    w1, ino1 = writer.follow(out, "web:0")
    w2, ino2 = writer.follow(tmp_path / "other.log", "db", maxbytes=4096, backups=3)
    writer.ctl.close()  # the daemon is SIGKILLed
    data = b"".join(b"%d\n" % i for i in range(100_000))  # several pipes' worth: it drains
    os.write(w1, data[:50_000])
    sock = writer.connect()
    welcome = hello(sock)
    assert welcome == {"v": PROTOCOL, "op": "welcome", "pid": writer.proc.pid, "pipes": 2}
    pipes = {}
    while True:
        msg, fds = receive(sock, TO_DAEMON)
        if msg["op"] == "end":
            break
        pipes[msg["process"]] = (msg, os.fstat(fds[0]).st_ino)
        os.close(fds[0])
    assert pipes["web:0"] == ({"v": PROTOCOL, "op": "pipe", "id": 1, "process": "web:0", "stream": "stdout",
                               "path": str(out), "maxbytes": 10 ** 9, "backups": 1, "scrollback": 0},
                              ino1)
    assert pipes["db"][0]["maxbytes"] == 4096 and pipes["db"][0]["backups"] == 3
    assert pipes["db"][1] == ino2  # a copy of the very same pipe: the daemon holds it again
    os.write(w1, data[50_000:])
    os.close(w1)
    assert receive(sock, TO_DAEMON)[0] == {"v": PROTOCOL, "op": "eof", "id": 1}  # our socket now
    assert out.read_bytes() == data
    sock.send(encode("finish"))
    assert writer.proc.poll() is None  # db's pipe is still open: draining
    os.close(w2)
    assert writer.proc.wait(timeout=10) == 0


def test_a_second_daemon_is_told_busy(writer: Writer, tmp_path: Path) -> None:
    w, _ino = writer.follow(tmp_path / "out.log", "web")
    assert hello(writer.connect()) == {"v": PROTOCOL, "op": "busy", "pid": os.getpid()}  # the socketpair's
    writer.ctl.close()
    first = writer.connect()
    assert hello(first)["op"] == "welcome"
    assert hello(writer.connect())["op"] == "busy"
    first.close()  # that daemon died too: the writer is free again
    assert hello(writer.connect())["op"] == "welcome"
    os.close(w)


@pytest.mark.parametrize(("data", "reason"), [
    (b"hello", "not JSON"),
    (b'{"op": "hello", "pid": 1}', "hello: no protocol version"),
    (encode("hello", pid=0), "hello: pid must be an integer >= 1"),
    (encode("finish"), "unexpected op 'finish'"),  # control messages only after hello
    (encode("leave"), "unexpected op 'leave'"),
])
def test_garbage_on_the_socket_is_refused_with_a_reason(writer: Writer, tmp_path: Path, data: bytes,
                                                          reason: str) -> None:
    out = tmp_path / "out.log"
    w, _ino = writer.follow(out, "web")
    writer.ctl.close()
    sock = writer.connect()
    sock.send(data)
    msg = receive(sock, TO_DAEMON)[0]
    assert msg["op"] == "refused" and reason in str(msg["message"])
    os.write(w, b"still here\n")  # the writer is alive and drains on
    os.close(w)
    assert writer.proc.wait(timeout=10) == 0  # no daemon, every pipe at EOF: it exits
    assert out.read_bytes() == b"still here\n"


def test_a_bad_control_message_is_answered_and_the_writer_goes_on(writer: Writer, tmp_path: Path) -> None:
    writer.ctl.send(encode("follow", id=1, process="x", stream="stdout", path="relative", maxbytes=1,
                           backups=0))  # no fd, a relative path
    msg = receive(writer.ctl, TO_DAEMON)[0]
    assert msg["op"] == "error"
    assert "message refused: follow: path must be an absolute path" in str(msg["message"])
    w, _ino = writer.follow(tmp_path / "out.log", "web")
    os.write(w, b"ok\n")
    os.close(w)
    assert receive(writer.ctl, TO_DAEMON)[0]["op"] == "eof"
    assert (tmp_path / "out.log").read_bytes() == b"ok\n"


def test_another_uid_is_refused(writer: Writer) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another uid")
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        # The writer's socket where uid nobody may connect (the daemon's is 0600 in a 0700 directory).
        link = os.path.join(d, "s")
        os.link(writer.path, link)
        os.chmod(link, 0o666)
        os.chmod(os.path.dirname(writer.path), 0o755)
        code = ("import os, socket, sys; from taskmasterd.logproto import encode, receive, TO_DAEMON\n"
                "os.setgid(65534); os.setuid(65534)\n"
                "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.settimeout(10)\n"
                f"s.connect({link!r})\n"
                "s.send(encode('hello', pid=os.getpid())); print(receive(s, TO_DAEMON)[0]['message'])\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "uid 65534 may not attach to a log writer of uid 0", out.stderr


def test_leave_stops_reading_at_once(writer: Writer, tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    w, _ino = writer.follow(out, "web")
    writer.ctl.close()
    sock = writer.connect()
    assert hello(sock)["op"] == "welcome"
    msg, fds = receive(sock, TO_DAEMON)
    assert msg["op"] == "pipe"
    assert receive(sock, TO_DAEMON)[0]["op"] == "end"
    sock.send(encode("leave"))
    assert writer.proc.wait(timeout=10) == 0  # the pipe is open: a finish would have waited
    os.write(w, b"for the next writer\n")
    assert os.read(fds[0], 100) == b"for the next writer\n"  # nobody else read it
    assert out.read_bytes() == b""
    os.close(w)
    os.close(fds[0])


def test_a_renamed_process_is_handed_back_under_its_new_name(writer: Writer, tmp_path: Path) -> None:
    w, _ino = writer.follow(tmp_path / "out.log", "prog")  # numprocs 1 -> 2: prog becomes prog:0
    writer.ctl.send(encode("rename", id=1, process="prog:0"))
    writer.ctl.close()
    sock = writer.connect()
    assert hello(sock)["op"] == "welcome"
    msg, fds = receive(sock, TO_DAEMON)
    assert (msg["op"], msg["id"], msg["process"]) == ("pipe", 1, "prog:0")
    os.close(fds[0])
    os.close(w)


def test_a_follow_of_something_not_a_pipe_is_refused(writer: Writer, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    fd = os.open(plain, os.O_RDONLY)
    socket.send_fds(writer.ctl, [encode("follow", id=1, process="x", stream="stdout",
                                        path=str(tmp_path / "out.log"), maxbytes=10, backups=0)], [fd])
    os.close(fd)
    msg = receive(writer.ctl, TO_DAEMON)[0]
    assert msg["op"] == "error" and "follow 1: not a pipe" in str(msg["message"])
    assert receive(writer.ctl, TO_DAEMON)[0] == {"v": PROTOCOL, "op": "eof", "id": 1}
    w, _ino = writer.follow(tmp_path / "out.log", "web")  # and it goes on
    os.write(w, b"ok\n")
    os.close(w)
    assert receive(writer.ctl, TO_DAEMON)[0]["op"] == "eof"
    assert (tmp_path / "out.log").read_bytes() == b"ok\n"


def test_a_daemon_gone_a_moment_ago_is_not_taken_for_a_live_one(writer: Writer, tmp_path: Path) -> None:
    """Its EOF may still be unread when the next daemon's hello is (both
    came while the writer was busy): that daemon is welcome, not busy."""
    w, _ino = writer.follow(tmp_path / "out.log", "web")
    fds = len(os.listdir(f"/proc/{writer.proc.pid}/fd"))
    sock = writer.connect()
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{writer.proc.pid}/fd")) == fds:  # until accepted
        assert time.monotonic() < deadline
        time.sleep(0.01)  # sleep-ok: polling /proc, which has no notification
    writer.proc.send_signal(signal.SIGSTOP)  # busy elsewhere: both events wait, the hello first
    try:
        sock.send(encode("hello", pid=os.getpid()))
        writer.ctl.close()
    finally:
        writer.proc.send_signal(signal.SIGCONT)
    assert receive(sock, TO_DAEMON)[0]["op"] == "welcome"
    os.close(w)
