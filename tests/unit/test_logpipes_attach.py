"""LogPipes at start (taskmasterd/logpipes.py, logattach.py): a writer left
by a dead daemon is re-attached with its pipes (the daemon holds copies
again: a later death of the writer loses nothing), a writer of another
protocol version is dismissed and its pipes go to a fresh one, a writer
that does not answer is left alone. The dead daemon is played by a socket
the test closes; the writers are real processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmasterd import logattach
from taskmasterd.logpipes import LogPipes, writer_socket
from taskmasterd.logproto import PROTOCOL, encode
from tests.unit.test_logwriter_attach import wait_listening

ROOT = Path(__file__).resolve().parents[2]


def orphan_writer(sock_path: str, out: Path, version: int = PROTOCOL) -> tuple[subprocess.Popen[bytes], int]:
    """A writer whose daemon died, still draining one pipe ("web", stdout)
    into `out`: (the writer, the pipe's write end, the program's)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(sock_path)
    ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds = (theirs.fileno(), listener.fileno())
    code = ("import sys, taskmasterd.logproto as p\n"
            f"p.PROTOCOL = {version}  # a writer of another release\n"
            "p.LOG = p.Schema(p.PROTOCOL, p.SCHEMA, p.FROZEN)\n"
            "from taskmasterd import logwriter\n"
            f"sys.exit(logwriter.main(['logwriter', '{fds[0]}', '{fds[1]}']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=fds, cwd=ROOT)
    theirs.close()
    listener.close()
    r, w = os.pipe()
    msg = {"v": version, "op": "follow", "id": 7, "process": "web", "stream": "stdout", "path": str(out),
           "maxbytes": 10 ** 9, "backups": 1}
    socket.send_fds(ctl, [json.dumps(msg).encode()], [r])
    os.close(r)
    ctl.close()  # the daemon is SIGKILLed
    wait_listening(sock_path)
    return proc, w


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


async def until(what: str, cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # sleep-ok: the poll step of a wait on a condition, with a deadline


def lines(start: int, end: int) -> bytes:
    return b"".join(b"%d\n" % i for i in range(start, end))


def test_the_socket_is_per_statedir_and_config(tmp_path: Path) -> None:
    a = writer_socket("/run/taskmaster", "/var/lib/taskmaster", "/etc/taskmaster/taskmaster.yaml")
    assert a.startswith("/run/taskmaster/logwriter-") and a.endswith(".sock") and len(a) < 100
    assert a == writer_socket("/run/taskmaster", "/var/lib/taskmaster/", "/etc/taskmaster/taskmaster.yaml")
    assert a != writer_socket("/run/taskmaster", "/var/lib/other", "/etc/taskmaster/taskmaster.yaml")
    assert a != writer_socket("/run/taskmaster", "/var/lib/taskmaster", "/etc/taskmaster/b.yaml")
    undecodable = os.fsdecode(b"/etc/\xfe.yaml")  # a config path that is not UTF-8
    assert writer_socket("/run/taskmaster", "/var/lib/taskmaster", undecodable).endswith(".sock")


def test_a_surviving_writer_is_reattached_and_its_death_loses_nothing(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture) -> None:
    path, out = str(tmp_path / "w.sock"), tmp_path / "web.log"
    old, w = orphan_writer(path, out)
    procs.append(old)
    os.write(w, lines(0, 1000))  # while no daemon is attached

    async def main() -> None:
        pipes = LogPipes()
        got = pipes.attach_surviving(path)
        assert pipes.attach_surviving(path) is got  # once per daemon
        assert list(got) == [("web", "stdout")]
        held = got[("web", "stdout")]
        assert (held.id, held.path, held.maxbytes, held.backups) == (7, str(out), 10 ** 9, 1)
        assert pipes.pid == old.pid and pipes.held() == 1
        assert pipes.adopt("web", "stdout") == 7 and pipes.adopt("web", "stderr") is None
        pipes.rename("web", "web:0")  # a reload: numprocs 1 -> 2
        assert pipes.adopt("web", "stdout") is None and pipes.adopt("web:0", "stdout") == 7
        os.write(w, lines(1000, 2000))
        old.send_signal(signal.SIGKILL)  # the daemon holds a copy: a new writer takes over
        await until("a new writer", lambda: pipes.pid not in (0, old.pid))
        procs.append(pipes._proc)  # type: ignore[arg-type]
        os.write(w, lines(2000, 3000))
        drained: list[int] = []
        pipes.when_drained([7], lambda: drained.append(7), timeout=10)
        os.close(w)
        await until("the pipe drained", lambda: drained == [7])
        assert pipes.held() == 0 and pipes.adopt("web:0", "stdout") is None
        follow_r, follow_w = os.pipe()  # a program started by this daemon
        pipes.follow(follow_r, str(tmp_path / "new.log"), 1000, 0, process="db", stream="stderr")
        os.close(follow_w)
        await pipes.finish()
        assert not os.path.exists(path)  # a clean shutdown leaves nothing

    with caplog.at_level(logging.INFO, "taskmasterd"):
        asyncio.run(main())
    assert f"re-attached the log writer (pid {old.pid}) and its 1 pipe(s)" in caplog.text
    # Replaced at once (a writer that had run long is no crash loop to slow down).
    assert f"log writer (pid {old.pid}) died (killed by signal 9); starting a new one" in caplog.text
    assert out.read_bytes() == lines(0, 3000)


def test_a_writer_of_another_version_hands_its_pipes_over_and_leaves(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture) -> None:
    path, out = str(tmp_path / "w.sock"), tmp_path / "web.log"
    old, w = orphan_writer(path, out, version=PROTOCOL + 1)
    procs.append(old)
    os.write(w, lines(0, 1000))

    async def main() -> None:
        pipes = LogPipes()
        got = pipes.attach_surviving(path)
        assert old.poll() is not None  # gone before anybody else reads its pipes
        assert list(got) == [("web", "stdout")] and pipes.pid not in (0, old.pid)
        procs.append(pipes._proc)  # type: ignore[arg-type]
        os.write(w, lines(1000, 2000))
        os.close(w)
        await pipes.finish()

    with caplog.at_level(logging.INFO, "taskmasterd"):
        asyncio.run(main())
    assert (f"the surviving log writer (pid {old.pid}) speaks protocol {PROTOCOL + 1}, this daemon "
            f"{PROTOCOL}: it left; a new writer takes its 1 pipe(s)") in caplog.text
    assert out.read_bytes() == lines(0, 2000)


def test_a_writer_that_does_not_answer_is_left_alone(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logattach, "ATTACH_TIMEOUT", 0.3)
    path = str(tmp_path / "w.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # accepts (backlog), never answers
    mute.bind(path)
    mute.listen(8)

    async def main() -> None:
        pipes = LogPipes()
        started = time.monotonic()
        assert pipes.attach_surviving(path) == {}
        assert time.monotonic() - started < 2
        r, w = os.pipe()
        pipes.follow(r, str(tmp_path / "out.log"), 1000, 0, process="web", stream="stdout")
        procs.append(pipes._proc)  # type: ignore[arg-type]
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The new writer listens there now (once it runs: refused until then;
        # the mute socket, unlinked, is out of reach).
        await until("the new writer to listen", lambda: probe.connect_ex(path) == 0)
        probe.send(encode("hello", pid=os.getpid()))
        assert json.loads(probe.recv(1000))["op"] == "busy"
        os.close(w)
        await pipes.finish()

    with caplog.at_level(logging.INFO, "taskmasterd"):
        asyncio.run(main())
    assert (f"a log writer survived but is unusable: pid {os.getpid()} at {path} does not answer"
            in caplog.text)
    mute.close()


def test_no_writer_and_a_stale_socket_are_nothing_to_say(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()  # a writer that was killed: the file stays

    async def main() -> None:
        assert LogPipes().attach_surviving(str(tmp_path / "none.sock")) == {}
        pipes = LogPipes()
        assert pipes.attach_surviving(str(tmp_path / "stale.sock")) == {}
        pipes.release("web")  # harmless for an unknown process
        await pipes.finish()

    with caplog.at_level(logging.INFO, "taskmasterd"):
        asyncio.run(main())
    assert caplog.text == ""


def test_a_shutdown_leaves_the_pipes_of_programs_not_readopted_draining(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture) -> None:
    """Killing the writer at shutdown would SIGPIPE a program this daemon
    found alive but did not take back: it is left draining alone."""
    path, out = str(tmp_path / "w.sock"), tmp_path / "web.log"
    old, w = orphan_writer(path, out)
    procs.append(old)

    async def main() -> None:
        pipes = LogPipes()
        assert list(pipes.attach_surviving(path)) == [("web", "stdout")]
        pipes.release("web")  # not re-adopted
        await pipes.finish(timeout=0.2)

    with caplog.at_level(logging.INFO, "taskmasterd"):
        asyncio.run(main())
    assert (f"log writer (pid {old.pid}): 1 pipe(s) of programs this daemon did not re-adopt are still "
            "open; left draining them on its own") in caplog.text
    os.write(w, lines(0, 1000))
    assert old.poll() is None and os.path.exists(path)  # still there for the next daemon
    os.close(w)
    assert old.wait(timeout=10) == 0  # told to finish: gone once its last pipe is at EOF
    assert out.read_bytes() == lines(0, 1000)
    assert not os.path.exists(path)  # and its socket with it


def test_no_socket_in_a_directory_others_may_write(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   procs: list[subprocess.Popen[bytes]]) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # as /tmp/taskmaster-UID created by somebody else could be

    async def main() -> None:
        pipes = LogPipes()
        assert pipes.attach_surviving(str(shared / "w.sock")) == {}
        r, w = os.pipe()
        pipes.follow(r, str(tmp_path / "out.log"), 1000, 0, process="web", stream="stdout")
        procs.append(pipes._proc)  # type: ignore[arg-type]
        os.write(w, b"still written\n")  # the writer runs, only without a socket
        os.close(w)
        await pipes.finish()

    with caplog.at_level(logging.INFO, "taskmasterd"):
        asyncio.run(main())
    assert f"the log writer cannot listen on {shared}/w.sock: {shared} is not ours alone" in caplog.text
    assert not (shared / "w.sock").exists() and (tmp_path / "out.log").read_bytes() == b"still written\n"
