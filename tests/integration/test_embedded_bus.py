"""taskmasterd.bus.embedded: the daemon's own dbus-daemon."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmasterd.bus.embedded import EmbeddedBus, bus_config, read_address_file
from taskmasterd.bus.messagebus import close
from tests.dbus_fixtures import bus_directory

pytestmark = pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="needs dbus-daemon")

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "dbus" / "org.taskmaster.Taskmaster1.conf"
TIMEOUT = 20.0
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT):
            await main()

    asyncio.run(bounded())


@pytest.fixture
def base() -> Iterator[Path]:
    with bus_directory("tm-embedded-") as d:
        yield d


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_publish_connect_stop(base: Path) -> None:
    runtime = base / "run" / "taskmaster"  # missing: created 0755

    async def main() -> None:
        from dbus_next import RequestNameReply
        from dbus_next.aio import MessageBus

        bus = await EmbeddedBus.start(str(runtime), str(POLICY))
        try:
            assert stat.S_IMODE(runtime.stat().st_mode) == 0o755
            sock = runtime / "bus.socket"
            assert bus.address.startswith(f"unix:path={sock},guid=")
            assert sock.is_socket()
            assert bus.address_file == str(runtime / "bus")
            assert Path(bus.address_file).read_text() == bus.address + "\n"
            assert stat.S_IMODE(os.stat(bus.address_file).st_mode) == 0o644
            assert read_address_file(str(runtime)) == bus.address
            assert alive(bus.pid)

            client = await MessageBus(bus_address=bus.address).connect()
            try:
                # the uid running the bus may own any name, ours included
                for name in ("org.taskmaster.Test.Anything", "org.taskmaster.Taskmaster1"):
                    assert await client.request_name(name) == RequestNameReply.PRIMARY_OWNER
            finally:
                await close(client)
        finally:
            await bus.stop()
        assert not Path(bus.address_file).exists()
        assert not (runtime / "bus.socket").exists()
        assert not (runtime / "bus.conf").exists()
        assert not alive(bus.pid)
        assert read_address_file(str(runtime)) is None
        await bus.stop()  # idempotent

    run(main)


def test_missing_binary_is_a_clear_error(base: Path) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"cannot run '/nonexistent/dbus-daemon'.*No such file"):
            await EmbeddedBus.start(str(base), None, binary="/nonexistent/dbus-daemon")
        assert sorted(os.listdir(base)) == []

    run(main)


def test_daemon_exiting_at_once_is_a_clear_error(base: Path) -> None:
    policy = base / "broken.conf"
    policy.write_text("<busconfig><this is not xml")

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"exited without printing its address.*exit status 1"
                                               r".*broken.conf.*not well-formed") as info:
            await EmbeddedBus.start(str(base), str(policy))
        assert "dbus-daemon" in str(info.value)
        assert sorted(os.listdir(base)) == ["broken.conf"]

    run(main)


def test_daemon_printing_nothing_times_out(base: Path) -> None:
    mute = base / "mute-daemon"
    mute.write_text("#!/bin/sh\necho 'mute: not saying anything' >&2\nexec sleep 60\n")
    mute.chmod(0o755)

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"printed no address within 0\.5 s.*mute: not saying"):
            await EmbeddedBus.start(str(base), None, binary=str(mute), timeout=0.5)
        assert sorted(os.listdir(base)) == ["mute-daemon"]

    run(main)


def test_stale_socket_is_replaced_live_one_refused(base: Path) -> None:
    (base / "bus.socket").write_text("stale")

    async def main() -> None:
        bus = await EmbeddedBus.start(str(base), None)
        try:
            assert (base / "bus.socket").is_socket()
            with pytest.raises(RuntimeError, match="already listens"):
                await EmbeddedBus.start(str(base), None)
            # the refused start left the running bus alone
            assert read_address_file(str(base)) == bus.address
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(base / "bus.socket"))
        finally:
            await bus.stop()

    run(main)


def test_no_systemd_notification_leaks(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("TM_TEST_MARKER", "kept")

    async def main() -> None:
        bus = await EmbeddedBus.start(str(base), None)
        try:
            env = Path(f"/proc/{bus.pid}/environ").read_bytes().split(b"\0")
            assert b"TM_TEST_MARKER=kept" in env
            assert not any(v.startswith(b"NOTIFY_SOCKET=") for v in env)
            # same session as us (and cgroup), but a process group of its own:
            # Ctrl-C or `timeout` signal taskmasterd's group, and the bus must
            # stay up until the daemon has stopped its programs (test_shutdown.py)
            assert os.getpgid(bus.pid) == bus.pid != os.getpgid(0)
            assert os.getsid(bus.pid) == os.getsid(0)
        finally:
            await bus.stop()

    run(main)


def test_config_is_system_like() -> None:
    text = bus_config("/run/taskmaster/bus.socket", 0, "/etc/policy.conf")
    assert "<type>taskmaster</type>" in text
    assert "<listen>unix:path=/run/taskmaster/bus.socket</listen>" in text
    assert "<auth>EXTERNAL</auth>" in text
    assert '<deny own="*"/>' in text and '<deny send_type="method_call"/>' in text
    assert '<policy user="root">' in text
    assert '<include ignore_missing="yes">/etc/policy.conf</include>' in text
    assert "<include" not in bus_config("/x/bus.socket", 0, None)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("busctl") or not shutil.which("setpriv"),
                    reason="needs root, busctl and setpriv (to call as uid 65534)")
def test_other_users_connect_but_only_through_the_policy(base: Path) -> None:
    async def main() -> None:
        from dbus_next.aio import MessageBus

        bus = await EmbeddedBus.start(str(base), str(POLICY))
        service = await MessageBus(bus_address=bus.address).connect()
        try:
            await service.request_name("org.taskmaster.Taskmaster1")

            async def as_nobody(*args: str) -> tuple[int, str]:
                proc = await asyncio.create_subprocess_exec(
                    *NOBODY, "busctl", f"--address={bus.address}", *args,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                out, _ = await proc.communicate()
                assert proc.returncode is not None
                return proc.returncode, out.decode()

            rc, out = await as_nobody("call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                      "org.freedesktop.DBus", "ListNames")
            assert rc == 0 and "org.taskmaster.Taskmaster1" in out, out
            # an unlisted call is refused by the bus; a listed one reaches the service
            rc, out = await as_nobody("call", "org.taskmaster.Taskmaster1", "/org/taskmaster/Taskmaster1",
                                      "org.taskmaster.Taskmaster1.Manager", "Shutdown")
            assert rc != 0 and "Access denied" in out, out
            rc, out = await as_nobody("call", "org.taskmaster.Taskmaster1", "/org/taskmaster/Taskmaster1",
                                      "org.freedesktop.DBus.Peer", "Ping")
            assert rc == 0, out
        finally:
            await close(service)
            await bus.stop()

    run(main)


KILLED_PARENT = """
import asyncio, os, sys
from taskmasterd.bus.embedded import EmbeddedBus

async def main():
    bus = await EmbeddedBus.start(sys.argv[1], None)
    print(bus.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_dbus_daemon_does_not_outlive_a_killed_daemon(base: Path) -> None:
    """taskmasterd SIGKILLed, stop() never runs: dbus-daemon still goes (PR_SET_PDEATHSIG)."""
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(base)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], TIMEOUT)
        assert ready, "no pid printed"
        line = parent.stdout.readline()
        assert line.strip().isdigit(), (line, parent.stderr.read() if parent.stderr else "")
        pid = int(line)
        pidfd = os.pidfd_open(pid)
        try:
            parent.kill()
            parent.wait()
            gone, _, _ = select.select([pidfd], [], [], TIMEOUT)
            assert gone, f"dbus-daemon {pid} outlived its parent"
        finally:
            os.close(pidfd)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for f in (parent.stdout, parent.stderr):
            if f is not None:
                f.close()
