"""notifysock: a process's own NOTIFY_SOCKET, with real sockets and real
senders (Debian's systemd-notify, Python children), on a real event loop;
every wait is on a condition, with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskmasterd.notifyproto import Notice
from taskmasterd.notifysock import SUN_PATH_MAX, NotifyEndpoint, NotifySetupError, file_name

SYSTEMD_NOTIFY = "/usr/bin/systemd-notify"
BARRIER_TIMEOUT = 5.0  # systemd-notify gives up on BARRIER=1 after this (and exits 1)


class Heard:
    """What an endpoint handed over, and a way to wait for it."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.ignored: list[str] = []
        self._changed = asyncio.Event()

    def notice(self, n: Notice) -> None:
        self.notices.append(n)
        self._changed.set()

    def ignore(self, reason: str) -> None:
        self.ignored.append(reason)
        self._changed.set()

    async def until(self, what: Callable[[], bool], timeout: float = 10) -> None:
        async def wait() -> None:
            while not what():
                self._changed.clear()
                await self._changed.wait()
        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"not seen within {timeout}s: notices {self.notices}, "
                                 f"ignored {self.ignored}") from None


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory (pytest's tmp_path can be too long for sun_path),
    0755 so that a child running as another user can reach the socket."""
    d = tempfile.mkdtemp(prefix="tmn-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SEND = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(data, fds=()):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(__import__("array").array("i", fds)))] if fds else []
    s.sendmsg([data], anc, 0, os.environ["NOTIFY_SOCKET"])
"""

# sd_notify_barrier(3) as libsystemd does it: a pipe's write end goes with
# BARRIER=1; the receiver has handled everything sent before once it closed it.
BARRIER = SEND + """
import select
def barrier():
    r, w = os.pipe()
    send(b"BARRIER=1", [w])
    os.close(w)
    p = select.poll()
    p.register(r, 0)
    print("barrier ok" if p.poll(5000) else "barrier timeout", flush=True)
"""


async def spawn(argv: list[str], endpoint: NotifyEndpoint, *, leader: bool = True,
                **kw: object) -> asyncio.subprocess.Process:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": endpoint.path}
    return await asyncio.create_subprocess_exec(*argv, env=env, start_new_session=leader, **kw)  # type: ignore[arg-type]


async def finish(proc: asyncio.subprocess.Process, timeout: float = 10) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"pid {proc.pid} still running after {timeout}s") from None


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# (a) -------------------------------------------------------------------------

@pytest.mark.skipif(not os.access(SYSTEMD_NOTIFY, os.X_OK), reason="systemd-notify is not installed")
def test_systemd_notify_from_a_program_script_is_heard_and_not_kept_waiting(short_dir: Path) -> None:
    """The usual use: the program (a shell script, leading its group) runs
    systemd-notify. READY and STATUS arrive, and systemd-notify returns at
    once with 0: it waits on BARRIER=1 until its fd is closed here (5 s,
    then exit 1, if it were kept)."""
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "web:0")
        heard = Heard()
        script = f'{SYSTEMD_NOTIFY} --ready --status="warming up"; echo "rc=$?"'
        started = time.monotonic()
        proc = await spawn(["sh", "-c", script], ep, stdout=subprocess.PIPE)
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        took = time.monotonic() - started
        assert line == b"rc=0\n"
        assert took < BARRIER_TIMEOUT - 1, f"systemd-notify took {took:.1f}s: its barrier fd was kept"
        await heard.until(lambda: any(n.barrier for n in heard.notices))
        assert heard.notices[0] == Notice(ready=True, status="warming up")
        assert heard.notices[1] == Notice(barrier=True)
        assert heard.ignored == []
        await finish(proc)
        ep.close()
    asyncio.run(main())


@pytest.mark.skipif(not os.access(SYSTEMD_NOTIFY, os.X_OK), reason="systemd-notify is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="only root's systemd-notify speaks for its parent")
def test_systemd_notify_as_root_speaks_for_its_parent(short_dir: Path) -> None:
    """systemd-notify (run by root) sends READY with its parent's pid as
    the sender: run straight from a supervisor, that is the supervisor,
    outside the process's group, so READY is ignored (systemd does the
    same). Its barrier is its own and still released at once."""
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "direct")
        heard = Heard()
        started = time.monotonic()
        proc = await spawn([SYSTEMD_NOTIFY, "--ready"], ep)
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        assert await finish(proc) == 0
        assert time.monotonic() - started < BARRIER_TIMEOUT - 1
        await heard.until(lambda: bool(heard.ignored) and bool(heard.notices))
        assert heard.ignored == [f"datagram ignored: sender pid {os.getpid()} is in process group "
                                 f"{os.getpgid(0)}, not the process's group {proc.pid}"]
        assert heard.notices == [Notice(barrier=True)]
        ep.close()
    asyncio.run(main())


@pytest.mark.skipif(not os.access(SYSTEMD_NOTIFY, os.X_OK), reason="systemd-notify is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_systemd_notify_from_a_program_with_a_user(short_dir: Path) -> None:
    """A root daemon, a `user:` program: the socket is the user's, and
    systemd-notify (unprivileged: it cannot speak for its parent) sends with
    its own pid, a member of the program's group."""
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir / "n"), "web", owner_uid=65534)
        heard = Heard()
        script = f'{SYSTEMD_NOTIFY} --ready --status="as nobody"; echo "rc=$?"'
        proc = await spawn(["sh", "-c", script], ep, stdout=subprocess.PIPE, user=65534, group=65534,
                           extra_groups=[])
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), BARRIER_TIMEOUT - 1) == b"rc=0\n"
        await heard.until(lambda: len(heard.notices) == 2)
        assert heard.notices == [Notice(ready=True, status="as nobody"), Notice(barrier=True)]
        assert heard.ignored == []
        await finish(proc)
        ep.close()
    asyncio.run(main())


# (b) -------------------------------------------------------------------------

def test_watchdog_pings_from_a_member_of_the_group(short_dir: Path) -> None:
    """A sender that is not the leader but in its group (a child of the
    program) is heard; it sends with a plain socket."""
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "pinger")
        heard = Heard()
        pinger = BARRIER + """
for _ in range(5):
    s.sendto(b"WATCHDOG=1", os.environ["NOTIFY_SOCKET"])
barrier()
"""
        # The leader is the shell; python is its child (not exec'd: a command follows).
        proc = await spawn(["sh", "-c", '"$0" -c "$1"; true', sys.executable, pinger], ep,
                           stdout=subprocess.PIPE)
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"barrier ok\n"
        # The barrier is released only after every earlier datagram was handed over.
        assert heard.notices == [Notice(watchdog=True)] * 5 + [Notice(barrier=True)]
        assert heard.ignored == []
        await finish(proc)
        ep.close()
    asyncio.run(main())


def test_a_flood_is_drained_in_order_over_many_wake_ups(short_dir: Path) -> None:
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "flood")
        heard = Heard()
        n = 2000  # far more than the kernel queues (max_dgram_qlen): the sender blocks meanwhile
        proc = await spawn(python(SEND + f"\nfor i in range({n}): send(b'STATUS=%d' % i)\n"), ep)
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        await heard.until(lambda: len(heard.notices) == n, timeout=30)
        assert [x.status for x in heard.notices] == [str(i) for i in range(n)]
        assert await finish(proc) == 0
        ep.close()
    asyncio.run(main())


# (c) -------------------------------------------------------------------------

def test_senders_from_another_process_group_are_ignored_with_their_pid(short_dir: Path) -> None:
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "guarded")
        heard = Heard()
        leader = await asyncio.create_subprocess_exec("sleep", "60", start_new_session=True)
        ep.watch(asyncio.get_running_loop(), leader.pid, heard.notice, heard.ignore)
        # The test process itself...
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", ep.path)
        await heard.until(lambda: len(heard.ignored) == 1)
        assert heard.ignored[0] == (f"datagram ignored: sender pid {os.getpid()} is in process group "
                                    f"{os.getpgid(0)}, not the process's group {leader.pid}")
        # ...and a child of ours (our group), still there while it is judged.
        outsider = await spawn(python(SEND + "\nsend(b'READY=1')\nsys.stdin.read()\n"), ep,
                               leader=False, stdin=subprocess.PIPE)
        await heard.until(lambda: len(heard.ignored) == 2)
        assert heard.ignored[1] == (f"datagram ignored: sender pid {outsider.pid} is in process group "
                                    f"{os.getpgid(0)}, not the process's group {leader.pid}")
        assert outsider.stdin is not None
        outsider.stdin.close()
        assert await finish(outsider) == 0
        assert heard.notices == []
        leader.kill()
        await leader.wait()
        ep.close()
    asyncio.run(main())


def test_a_sender_gone_before_it_is_heard_is_ignored(short_dir: Path) -> None:
    """Its group cannot be checked any more (a member, not the leader:
    the leader's own pid is the group's)."""
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "gone")
        heard = Heard()
        proc = await spawn(["sh", "-c", '"$0" -c "$1"; echo exited; exec sleep 60', sys.executable,
                            SEND + "\nsend(b'READY=1')\nprint(os.getpid(), flush=True)\n"], ep,
                           stdout=subprocess.PIPE)
        assert proc.stdout is not None
        member = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        await asyncio.wait_for(proc.stdout.readline(), 10)  # python has exited (and was reaped by sh)
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        await heard.until(lambda: bool(heard.ignored))
        assert heard.ignored == [f"datagram ignored: sender pid {member} is gone: "
                                 f"its process group cannot be checked"]
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        ep.close()
    asyncio.run(main())


# (d) -------------------------------------------------------------------------

def test_bad_datagrams_are_ignored_with_reasons_and_the_endpoint_goes_on(
        short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "bad")
        heard = Heard()
        code = SEND + """
send(b"\\xff\\xfegarbage")
send(b"STATUS=" + b"x" * 5000)
send(b"STATUS=" + b"x" * 4090)
send(b"READY=1\\nhello")
send(b"READY=1", list(range(3)) * 7)
send(b"STATUS=boom")
send(b"READY=1\\nSTATUS=fine")
"""
        proc = await spawn(python(code), ep)
        pid = proc.pid

        def on_notice(n: Notice) -> None:
            heard.notice(n)
            if n.status == "boom":
                raise RuntimeError("a handler bug")
        ep.watch(asyncio.get_running_loop(), pid, on_notice, heard.ignore)
        await heard.until(lambda: len(heard.notices) == 2)
        assert heard.ignored == [
            f"datagram from pid {pid} ignored: not UTF-8 (byte 0)",
            f"datagram from pid {pid} ignored: longer than 4096 bytes",
            f"datagram from pid {pid} ignored: datagram of 4097 bytes: longer than 4096",
            f"datagram from pid {pid} ignored: line 2 is not NAME=VALUE: 'hello'",
            f"datagram from pid {pid} ignored: more than 16 file descriptors (all closed)",
        ]
        # The handler's exception is logged; the next datagram is still handed over.
        assert heard.notices == [Notice(status="boom"), Notice(ready=True, status="fine")]
        assert "the handler of a datagram failed" in caplog.text
        assert "RuntimeError: a handler bug" in caplog.text
        assert await finish(proc) == 0
        ep.close()
    with caplog.at_level(logging.ERROR, logger="taskmasterd"):
        asyncio.run(main())


def test_every_received_fd_is_closed(short_dir: Path) -> None:
    """Kept, accepted or refused: nothing a program sends stays open here."""
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "fds")
        heard = Heard()
        before = open_fds()
        code = SEND + """
send(b"FDSTORE=1", [0, 1, 2])
send(b"STATUS=fds but no FDSTORE", [0])
send(b"not an assignment", [0, 1])
send(b"READY=1", [0] * 20)
send(b"STATUS=done")
"""
        proc = await spawn(python(code), ep)
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        await heard.until(lambda: any(n.status == "done" for n in heard.notices))
        assert len(heard.notices) == 3 and len(heard.ignored) == 2
        assert heard.notices[0] == Notice(ignored=("FDSTORE",))
        assert open_fds() == before
        assert await finish(proc) == 0
        ep.close()
    asyncio.run(main())


# (e) -------------------------------------------------------------------------

def test_datagrams_sent_before_watch_wait_for_it(short_dir: Path) -> None:
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "early")
        proc = await spawn(python(SEND + "\nsend(b'STATUS=early')\nsend(b'READY=1')\n"), ep)
        assert await finish(proc) == 0  # sent, and gone, before anyone reads
        heard = Heard()
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        await heard.until(lambda: len(heard.notices) == 2)
        assert heard.notices == [Notice(status="early"), Notice(ready=True)]
        assert heard.ignored == []
        ep.close()
    asyncio.run(main())


# (f) -------------------------------------------------------------------------

def test_close_unlinks_the_socket_and_is_idempotent(short_dir: Path) -> None:
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "closing")
        heard = Heard()
        ep.watch(asyncio.get_running_loop(), os.getpid(), heard.notice, heard.ignore)
        assert stat.S_ISSOCK(os.lstat(ep.path).st_mode)
        before = open_fds()
        ep.close()
        assert not os.path.lexists(ep.path)
        assert len(open_fds()) == len(before) - 1
        ep.close()
        with pytest.raises(RuntimeError, match="closed"):
            ep.watch(asyncio.get_running_loop(), os.getpid(), heard.notice, heard.ignore)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, pytest.raises(FileNotFoundError):
            s.sendto(b"READY=1", ep.path)
    asyncio.run(main())


def test_a_handler_may_close_its_endpoint(short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing more is read then (nor tried: no error logged)."""
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir), "selfclose")
        heard = Heard()

        def on_notice(n: Notice) -> None:
            heard.notice(n)
            ep.close()
        proc = await spawn(python(SEND + "\nsend(b'READY=1')\nsend(b'STATUS=after')\n"), ep)
        assert await finish(proc) == 0  # both are queued
        ep.watch(asyncio.get_running_loop(), proc.pid, on_notice, heard.ignore)
        await heard.until(lambda: bool(heard.notices))
        # The rest of that wake-up's drain ran before this waiter resumed: had
        # the endpoint read on after close(), it would show by now.
        assert heard.notices == [Notice(ready=True)]
        assert not os.path.lexists(ep.path)
    with caplog.at_level(logging.DEBUG, logger="taskmasterd"):
        asyncio.run(main())
    assert caplog.records == []


def test_closing_an_old_endpoint_spares_a_newer_one_of_the_same_name(short_dir: Path) -> None:
    """A stale file is replaced; the replaced endpoint's close() must not
    remove its successor's socket."""
    async def main() -> None:
        Path(short_dir, file_name("same")).write_text("stale")
        old = NotifyEndpoint.open(str(short_dir), "same")
        new = NotifyEndpoint.open(str(short_dir), "same")
        assert old.path == new.path
        old.close()
        assert stat.S_ISSOCK(os.lstat(new.path).st_mode)
        heard = Heard()
        proc = await spawn(python(SEND + "\nsend(b'READY=1')\n"), new)
        new.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        await heard.until(lambda: bool(heard.notices))
        assert heard.notices == [Notice(ready=True)]
        await finish(proc)
        new.close()
        assert not os.path.lexists(new.path)
    asyncio.run(main())


# (g) and setup ---------------------------------------------------------------

def test_a_too_long_path_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(NotifySetupError) as err:
        NotifyEndpoint.open(str(deep), "web")
    message = str(err.value)
    assert str(deep / "web.sock") in message
    assert f"longer than the {SUN_PATH_MAX}" in message
    assert not deep.exists()  # nothing made on the way


def test_a_path_of_exactly_the_limit_is_usable(short_dir: Path) -> None:
    directory = short_dir / ("d" * (SUN_PATH_MAX - len(str(short_dir)) - len("/") - len("/w.sock")))
    ep = NotifyEndpoint.open(str(directory), "w")
    assert len(os.fsencode(ep.path)) == SUN_PATH_MAX
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", ep.path)
    ep.close()
    with pytest.raises(NotifySetupError):
        NotifyEndpoint.open(str(directory) + "d", "w")


def test_file_names_are_short_stable_and_distinct() -> None:
    assert file_name("web") == "web.sock"
    assert file_name("web:3") == "web:3.sock"
    long = "a-very-long-program-name-for-a-service:0123456789"
    assert file_name(long) == file_name(long)
    assert len(file_name(long)) < 40 and file_name(long).startswith("a-very-long")
    names = ["a/b", "a_b", "a b", "../x", "é", "", long, long + "x"]
    assert len({file_name(n) for n in names}) == len(names)
    assert all("/" not in file_name(n) and file_name(n) not in (".", "..") for n in names)


def test_the_directory_is_made_and_the_socket_is_private(short_dir: Path) -> None:
    ep = NotifyEndpoint.open(os.path.relpath(short_dir / "run" / "notify"), "web")
    assert os.path.isabs(ep.path)  # sd_notify accepts nothing else
    assert stat.S_IMODE(os.stat(short_dir / "run" / "notify").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(ep.path).st_mode) == 0o600
    assert os.lstat(ep.path).st_uid == os.geteuid()
    ep.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown and switching user need root")
def test_the_programs_user_owns_the_socket_and_can_send(short_dir: Path) -> None:
    async def main() -> None:
        ep = NotifyEndpoint.open(str(short_dir / "n"), "web", owner_uid=65534)
        assert os.lstat(ep.path).st_uid == 65534
        heard = Heard()
        proc = await spawn(python(SEND + "\nsend(b'READY=1')\n"), ep, user=65534, group=65534,
                           extra_groups=[])
        ep.watch(asyncio.get_running_loop(), proc.pid, heard.notice, heard.ignore)
        assert await finish(proc) == 0
        await heard.until(lambda: bool(heard.notices))
        assert heard.notices == [Notice(ready=True)]
        # And another unprivileged user cannot (mode 0600).
        other = await spawn(python(SEND + "\nsend(b'READY=1')\n"), ep, user=65533, group=65534,
                            extra_groups=[], stderr=subprocess.PIPE)
        assert await finish(other) == 1
        assert other.stderr is not None
        assert b"PermissionError" in await other.stderr.read()
        ep.close()
    asyncio.run(main())
