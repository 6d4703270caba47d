"""Private dbus-daemon instances for tests.

Each bus listens on a unix socket inside a directory the caller gives and
is killed when its context manager exits. Two flavours:

- `session_bus(directory)`: like the session bus — everything is allowed, but
  only connections of the uid running the tests are accepted.
- `system_bus(directory, policy_file)`: like the system bus (modelled on
  /usr/share/dbus-1/system.conf): any user may connect, nobody may own a name
  or send a method call unless a policy file punches the hole;
  `policy_file` is included, as /usr/share/dbus-1/system.d/*.conf would be.

Both yield the address printed by dbus-daemon (``unix:path=...,guid=...``).
For another uid (e.g. 65534) to connect, `directory` must be reachable by it:
use `bus_directory()` (a 0755 temporary directory), not pytest's 0700 tmp_path.

Readiness is waited for by reading the address line dbus-daemon prints once it
listens (select with a timeout), never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.procs import terminate

DBUS_DAEMON = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"

_DOCTYPE = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
"""


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def session_config(socket_path: str | os.PathLike[str]) -> str:
    """A session-like configuration: everything allowed, our uid only (EXTERNAL auth)."""
    return f"""{_DOCTYPE}<busconfig>
  <type>session</type>
  <listen>unix:path={_esc(os.fspath(socket_path))}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_message_size">1000000000</limit>
  <limit name="max_replies_per_connection">50000</limit>
</busconfig>
"""


def system_config(socket_path: str | os.PathLike[str],
                  policy_file: str | os.PathLike[str] | None = None) -> str:
    """A system-like configuration (system.conf's default policy) including `policy_file`."""
    include = ""
    if policy_file is not None:
        include = f"  <include>{_esc(os.path.abspath(os.fspath(policy_file)))}</include>\n"
    return f"""{_DOCTYPE}<busconfig>
  <type>system</type>
  <listen>unix:path={_esc(os.fspath(socket_path))}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
{include}</busconfig>
"""


@contextlib.contextmanager
def dbus_daemon(directory: str | os.PathLike[str], config_text: str, *,
                name: str = "bus", timeout: float = 10.0) -> Iterator[str]:
    """Run `dbus-daemon --nofork --print-address=1 --config-file=<directory>/<name>.conf`.

    Yields the address once the daemon listens; terminates it (then kills it
    if needed) and removes the config file on exit.
    """
    conf = Path(directory) / f"{name}.conf"
    conf.write_text(config_text)
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [DBUS_DAEMON, "--nofork", "--print-address=1", f"--config-file={conf}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        try:
            assert proc.stdout is not None
            address = _read_line(proc.stdout.fileno(), timeout)
            if not address:
                proc.kill()
                proc.wait()
                stderr.seek(0)
                raise RuntimeError(f"dbus-daemon did not start (exit status {proc.returncode}): "
                                   f"{stderr.read().decode(errors='replace').strip()}")
            yield address
        finally:
            terminate(proc)
            if proc.stdout is not None:
                proc.stdout.close()
            conf.unlink(missing_ok=True)


def _read_line(fd: int, timeout: float) -> str:
    """First line written on `fd` ('' if it closes or `timeout` passes first)."""
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            return ""
        data += chunk
    return data.split(b"\n", 1)[0].decode().strip()


@contextlib.contextmanager
def session_bus(directory: str | os.PathLike[str], *, timeout: float = 10.0) -> Iterator[str]:
    """A session-like private bus (socket `<directory>/session.socket`); yields its address."""
    sock = Path(directory) / "session.socket"
    with dbus_daemon(directory, session_config(sock), name="session", timeout=timeout) as address:
        yield address


@contextlib.contextmanager
def system_bus(directory: str | os.PathLike[str], policy_file: str | os.PathLike[str] | None = None,
               *, timeout: float = 10.0) -> Iterator[str]:
    """A system-like private bus including `policy_file` (socket `<directory>/system.socket`)."""
    sock = Path(directory) / "system.socket"
    with dbus_daemon(directory, system_config(sock, policy_file), name="system",
                     timeout=timeout) as address:
        yield address


@contextlib.contextmanager
def bus_directory(prefix: str = "tm-bus-") -> Iterator[Path]:
    """A temporary directory with mode 0755 (other uids can reach a socket in it)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        os.chmod(d, 0o755)
        yield Path(d)


__all__ = ["DBUS_DAEMON", "bus_directory", "dbus_daemon", "session_bus",
           "session_config", "system_bus", "system_config"]
