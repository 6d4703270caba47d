"""A caller allowed to call ListProcesses sends it huge bodies of the wrong
signature (issue 11, section 3): the daemon refuses each call without
decoding its body, and its memory stays where it was.

The daemon runs on its embedded bus (the limits under test are that bus's);
the caller is uid 65534 with no groups, who may call ListProcesses only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmasterd.bus.embedded import MAX_MESSAGE_SIZE
from tests.dbus_fixtures import bus_directory
from tests.harness import Daemon, event

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the caller runs as uid 65534 "
                       "(setpriv), as an unprivileged caller would"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("dbus-daemon", "setpriv")),
                       reason="needs dbus-daemon and setpriv"),
]

AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
CALLS = 30  # 480 MB of bodies (decoding them, the bug, peaked at 3.9 GB)
MiB = 1024 * 1024

# Run as uid 65534: CALLS ListProcesses calls with the signature 'as' and a
# body as large as the bus allows, made of short strings (the costliest to
# decode), each waited for; prints one error name per call.
CALLER = textwrap.dedent("""
    import struct, sys
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    address, calls, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal = len(sys.argv) > 4  # unicast signals instead of method calls
    conn = open_dbus_connection(bus=address)
    target = DBusAddress("/org/taskmaster/Taskmaster1", bus_name="org.taskmaster.Taskmaster1",
                         interface="org.taskmaster.Taskmaster1.Manager")
    if signal:
        from jeepney import HeaderFields, new_signal
        from jeepney.bus_messages import message_bus
        owner = conn.send_and_get_reply(message_bus.GetNameOwner(target.bus_name)).body[0]
        msg = new_signal(target, "Noise", "as", ([],))
        msg.header.fields[HeaderFields.destination] = owner  # to the daemon alone
        probe = msg.serialise(serial=1)
    else:
        probe = new_method_call(target, "ListProcesses", "as", ([],)).serialise(serial=1)
    header = probe[:-4]  # without the empty array's length
    n = (size - len(header) - 4) // 8
    body = struct.pack("<I", 8 * n) + b"\\x03\\x00\\x00\\x00abc\\x00" * n
    raw = bytearray(header + body)
    struct.pack_into("<I", raw, 4, len(body))
    for serial in range(1000, 1000 + calls):
        struct.pack_into("<I", raw, 8, serial)
        conn.sock.sendall(raw)
        if signal:  # no reply: a Ping to the daemon comes back once it read the signal
            ping = new_method_call(DBusAddress(target.object_path, bus_name=owner,
                                               interface="org.freedesktop.DBus.Peer"), "Ping")
            assert conn.send_and_get_reply(ping, timeout=60).header.message_type.name == \
                "method_return"
            print("pong", flush=True)
            continue
        while True:
            reply = conn.receive(timeout=60)
            if reply.header.fields.get(5) == serial:  # REPLY_SERIAL
                print(reply.header.fields.get(4), flush=True)  # ERROR_NAME
                break
    # a well-formed call still works afterwards
    reply = conn.send_and_get_reply(new_method_call(target, "ListProcesses"), timeout=30)
    error = reply.header.fields.get(4)
    print(f"error {error}: {reply.body}" if error else f"rows {len(reply.body[0])}", flush=True)
""")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Sampler:
    """The highest RSS of a process, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@pytest.fixture
def private_daemon() -> Iterator[tuple[Daemon, str]]:
    with bus_directory("tm-mem-") as runtime:
        cfg = runtime / "taskmaster.yaml"
        cfg.write_text(f"taskmasterd:\n  logfile: {runtime / 'taskmasterd.log'}\n"
                       f"  logdir: {runtime / 'logs'}\nprograms:\n"
                       "  web: {cmd: sleep 100000, numprocs: 3, starttime: 0}\n")
        d = Daemon(cfg, "--bus", "private", env={"TASKMASTER_RUNTIME_DIR": str(runtime)})
        try:
            d.wait_for(event("DAEMON_START"), timeout=30)
            d.wait_count(event("RUNNING"), 3)
            yield d, Path(runtime, "bus").read_text().strip()
        finally:
            d.terminate()


def caller(address: str, calls: int, size: int) -> list[str]:
    r = subprocess.run([*AS_NOBODY, sys.executable, "-c", CALLER, address, str(calls), str(size)],
                       capture_output=True, text=True, timeout=600, cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_huge_calls_of_the_wrong_signature_cost_no_memory(
        private_daemon: tuple[Daemon, str]) -> None:
    d, address = private_daemon
    size = MAX_MESSAGE_SIZE - 4096  # as large as the embedded bus lets through
    assert caller(address, 1, 4096)[-1] == "rows 3"  # warm-up: every code path once
    baseline = rss(d.pid)
    sampler = Sampler(d.pid)
    out = caller(address, CALLS, size)
    peak = sampler.stop()
    assert out == ["org.freedesktop.DBus.Error.UnknownMethod"] * CALLS + ["rows 3"]
    after = rss(d.pid)
    assert peak <= baseline + 50 * MiB, (baseline, peak)
    assert after <= baseline + 10 * MiB, (baseline, after)
    assert d.proc.poll() is None and "Traceback" not in d.text()


def test_huge_unicast_signals_cost_no_memory(private_daemon: tuple[Daemon, str]) -> None:
    # Sent by root: the policy lets no one else send the daemon anything but
    # the calls it allows. On a session bus (--user), any process of the user
    # may send the daemon such signals; it subscribes to none of them.
    d, address = private_daemon
    assert caller(address, 1, 4096)[-1] == "rows 3"
    baseline = rss(d.pid)
    sampler = Sampler(d.pid)
    r = subprocess.run([sys.executable, "-c", CALLER, address, "30",
                        str(MAX_MESSAGE_SIZE - 4096), "signal"],
                       capture_output=True, text=True, timeout=600, cwd="/")
    peak = sampler.stop()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["pong"] * 30 + ["rows 3"]
    assert peak <= baseline + 50 * MiB, (baseline, peak)
    assert rss(d.pid) <= baseline + 10 * MiB
    assert d.proc.poll() is None and "Traceback" not in d.text()


def test_the_embedded_bus_refuses_a_message_over_its_limit(
        private_daemon: tuple[Daemon, str]) -> None:
    d, address = private_daemon
    r = subprocess.run([*AS_NOBODY, sys.executable, "-c", CALLER, address, "1",
                        str(MAX_MESSAGE_SIZE + MiB)], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert r.returncode != 0  # the bus drops a connection that sends it too much
    assert d.proc.poll() is None
    assert caller(address, 1, 4096)[-1] == "rows 3"


# Sends ListProcesses with N fds (signature 'h' * N) as root; prints the
# error name of the answer, or 'dropped' when the bus closes the connection.
FD_CALLER = textwrap.dedent("""
    import os, sys
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    address, n = sys.argv[1], int(sys.argv[2])
    conn = open_dbus_connection(bus=address, enable_fds=True)
    target = DBusAddress("/org/taskmaster/Taskmaster1", bus_name="org.taskmaster.Taskmaster1",
                         interface="org.taskmaster.Taskmaster1.Manager")
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(n)]
    try:
        reply = conn.send_and_get_reply(new_method_call(target, "ListProcesses", "h" * n, tuple(fds)),
                                        timeout=20)
        print(reply.header.fields.get(4, "ok"))  # 4: the error name field
    except (ConnectionError, OSError, EOFError):
        print("dropped")
""")


def test_the_embedded_bus_passes_at_most_4_fds_per_message(
        private_daemon: tuple[Daemon, str]) -> None:
    _d, address = private_daemon

    def call(n: int) -> str:
        r = subprocess.run([sys.executable, "-c", FD_CALLER, address, str(n)],
                           capture_output=True, text=True, timeout=60, cwd="/")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    # 4 fds reach the daemon, which has no such method (and closes them);
    # 5 are refused by the bus itself (max_message_unix_fds).
    assert call(4) == "org.freedesktop.DBus.Error.UnknownMethod"
    assert call(5) == "dropped"  # dbus-daemon closes the connection that sent it
