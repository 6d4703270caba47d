"""A real OpenSSH server on 127.0.0.1 for tests, and the ssh client set up to reach it.

`sshd()` runs `/usr/sbin/sshd -D -e` as root on a free loopback port with a
host key and a client key it makes with ssh-keygen; public key login only,
for the users given a key with `SSHServer.authorize(user)`. The client side
is a wrapper script named `ssh` (in `SSHServer.bin_dir`, put first on PATH by
`SSHServer.env()`) that runs /usr/bin/ssh with the test's ssh_config: that key,
known_hosts holding the server's host key (StrictHostKeyChecking yes),
BatchMode. A program that spawns `ssh` from PATH (`taskctl -H`, as
`systemctl -H`) reaches the server without knowing it is a test.

`local_user(name, groups)` makes a system user for such logins if missing.

Readiness is the "Server listening on" line sshd prints once it listens,
read with a timeout; never a sleep. Needs root (sshd drops privileges to the
logged in user), /usr/sbin/sshd (openssh-server) and ssh-keygen.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import terminate

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be run by its absolute path
SSH = "/usr/bin/ssh"
HOST = "127.0.0.1"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it (systemd's RuntimeDirectory)


def missing_tools() -> list[str]:
    """What `sshd()` needs that this machine lacks (empty: it can run)."""
    missing = [p for p in (SSHD, SSH) if not os.access(p, os.X_OK)]
    if not shutil.which("ssh-keygen"):
        missing.append("ssh-keygen")
    return missing


# ---- users --------------------------------------------------------------------------------


def ensure_group(name: str) -> int:
    """The gid of group `name`, created (groupadd --system) if missing. Left in place."""
    with contextlib.suppress(KeyError):
        return grp.getgrnam(name).gr_gid
    subprocess.run(["groupadd", "--system", name], check=False, capture_output=True)
    return grp.getgrnam(name).gr_gid  # KeyError if groupadd failed (and nobody else made it)


def local_user(name: str, groups: Sequence[str] = ()) -> pwd.struct_passwd:
    """System user `name` (shell /bin/sh, home /, no home made), created if
    missing, and a member of every group in `groups` (created if missing).
    Idempotent; the user is left in place for the next run (see `leave_group`
    to take it out of a group).

    The password field is `*`, not useradd's `!`: sshd without PAM refuses a
    login to an account whose password starts with `!` (locked), even with a
    key. Home `/`: sshd prints "Could not chdir to home directory" on the
    session's stderr when the home is missing."""
    for group in groups:
        ensure_group(group)
    if not _exists(name):
        cmd = ["useradd", "--system", "--no-create-home", "--home-dir", "/",
               "--shell", "/bin/sh", "--password", "*"]
        if groups:
            cmd += ["--groups", ",".join(groups)]
        r = subprocess.run([*cmd, name], capture_output=True, text=True)
        if r.returncode != 0 and not _exists(name):  # another run may have made it meanwhile
            raise RuntimeError(f"useradd {name} failed: {r.stderr.strip()}")
    entry = pwd.getpwnam(name)
    if _locked(name):
        subprocess.run(["usermod", "--password", "*", name], check=True, capture_output=True)
    for group in groups:
        if name not in grp.getgrnam(group).gr_mem and grp.getgrnam(group).gr_gid != entry.pw_gid:
            subprocess.run(["usermod", "--append", "--groups", group, name], check=True,
                           capture_output=True)
    return entry


def leave_group(name: str, group: str) -> None:
    """Take user `name` out of `group` if it is a (supplementary) member."""
    with contextlib.suppress(KeyError):
        if name in grp.getgrnam(group).gr_mem:
            subprocess.run(["gpasswd", "--delete", name, group], check=True, capture_output=True)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _locked(name: str) -> bool:
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        user, _, rest = line.partition(":")
        if user == name:
            return rest.startswith("!")
    return False


# ---- the server ---------------------------------------------------------------------------


@dataclass
class SSHServer:
    """A running sshd and the files of its client side."""

    port: int
    directory: Path  # everything below is in it (mode 0755)
    host_key: Path  # the server's private host key
    client_key: Path  # the private key the wrapper logs in with (public: .pub)
    known_hosts: Path
    ssh_config: Path
    bin_dir: Path  # holds the `ssh` wrapper
    keys_dir: Path  # AuthorizedKeysFile <keys_dir>/%u
    _log: list[str] = field(default_factory=list, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def host(self) -> str:
        return HOST

    def destination(self, user: str, port: int | None = None) -> str:
        """`user@127.0.0.1:PORT`, the form `taskctl -H` (and `systemctl -H`) take."""
        return f"{user}@{HOST}:{self.port if port is None else port}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default os.environ) with the wrapper's directory first on PATH."""
        environ = dict(os.environ if base is None else base)
        environ["PATH"] = f"{self.bin_dir}:{environ.get('PATH') or '/usr/bin:/bin'}"
        return environ

    def authorize(self, user: str, public_key: str | None = None) -> None:
        """Let `user` log in with `public_key` (default: the wrapper's key)."""
        key = public_key or Path(f"{self.client_key}.pub").read_text()
        path = self.keys_dir / user
        path.write_text(key if key.endswith("\n") else key + "\n")
        path.chmod(0o644)  # sshd reads it as the user

    def ssh(self, user: str, *command: str, timeout: float = 30.0
            ) -> subprocess.CompletedProcess[str]:
        """Run `command` as `user` through the wrapper (a check of the set-up)."""
        return subprocess.run([str(self.bin_dir / "ssh"), "-T", "-p", str(self.port), "-l", user,
                               "--", HOST, *command], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def log(self) -> str:
        """What sshd printed so far (its log, -e)."""
        with self._cond:
            return "\n".join(self._log)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port where nothing listens, for as long as the context lasts:
    bound but not listening, so nobody else can take it meanwhile, and a
    connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        yield int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)


def _quote_setenv(key: str, value: str) -> str:
    pair = f"{key}={value}"
    if any(c in pair for c in ' \t"\\#'):
        if '"' in pair or "\\" in pair:
            raise ValueError(f"SetEnv {pair!r}: sshd_config cannot quote this")
        return f'"{pair}"'
    return pair


def sshd_config(directory: Path, port: int, host_key: Path, keys_dir: Path,
                setenv: Mapping[str, str]) -> str:
    lines = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        "AddressFamily inet",
        f"HostKey {host_key}",
        "PidFile none",
        f"AuthorizedKeysFile {keys_dir}/%u",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin no",
        # The key files are under /tmp (mode 1777): StrictModes would refuse
        # them for a directory on the way writable by others.
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "PermitUserEnvironment no",
        "MaxStartups 100:30:200",  # a benchmark may open many sessions at once
        "LogLevel VERBOSE",
    ]
    if setenv:
        lines.append("SetEnv " + " ".join(_quote_setenv(k, v) for k, v in setenv.items()))
    return "\n".join(lines) + "\n"


def ssh_config(client_key: Path, known_hosts: Path) -> str:
    return "\n".join([
        "Host *",
        f"    IdentityFile {client_key}",
        "    IdentitiesOnly yes",
        "    IdentityAgent none",
        f"    UserKnownHostsFile {known_hosts}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    CheckHostIP no",
        "    UpdateHostKeys no",
        "    BatchMode yes",
        "    ConnectTimeout 10",
        "    ControlMaster no",
        "    ControlPath none",
        "    LogLevel ERROR",
    ]) + "\n"


def _drain(proc: subprocess.Popen[bytes], server: SSHServer) -> None:
    assert proc.stderr is not None
    for raw in proc.stderr:
        with server._cond:
            server._log.append(raw.decode(errors="replace").rstrip("\n"))
            server._cond.notify_all()
    with server._cond:
        server._log.append("")  # EOF marker: sshd has exited
        server._cond.notify_all()


def _wait_listening(proc: subprocess.Popen[bytes], server: SSHServer, timeout: float) -> bool:
    """True once sshd says it listens; False if it exited first. Raises on timeout."""
    want = f"Server listening on {HOST} port {server.port}."
    deadline = time.monotonic() + timeout
    with server._cond:
        while True:
            if any(want in line for line in server._log):
                return True
            if server._log and server._log[-1] == "" and proc.poll() is not None:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"sshd did not listen within {timeout}s; its log:\n"
                                   + "\n".join(server._log))
            server._cond.wait(left)


def _stop(proc: subprocess.Popen[bytes], reader: threading.Thread) -> None:
    terminate(proc, timeout=10)
    reader.join(5)
    if proc.stderr is not None and not reader.is_alive():
        proc.stderr.close()


@contextlib.contextmanager
def sshd(*, setenv: Mapping[str, str] | None = None, users: Sequence[str] = (),
         timeout: float = 15.0, attempts: int = 5) -> Iterator[SSHServer]:
    """Run sshd on a free port of 127.0.0.1 until the context exits.

    `setenv`: the environment of every session (sshd_config SetEnv; PATH
    there replaces sshd's default); `users`: authorized at once with the
    wrapper's key (more later with `authorize`). Yields the SSHServer.
    """
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"sshd fixture: missing {', '.join(missing)} (install openssh-server)")
    if os.geteuid() != 0:
        raise RuntimeError("sshd fixture: needs root")
    if not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tm-sshd-") as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # the logged in users read their authorized keys below it
        host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
        _keygen(host_key, "taskmaster-test-host")
        _keygen(client_key, "taskmaster-test-client")
        keys_dir = directory / "authorized_keys"
        keys_dir.mkdir(mode=0o755)
        keys_dir.chmod(0o755)
        bin_dir = directory / "bin"
        bin_dir.mkdir(mode=0o755)
        known_hosts, config = directory / "known_hosts", directory / "ssh_config"
        config.write_text(ssh_config(client_key, known_hosts))
        wrapper = bin_dir / "ssh"
        wrapper.write_text(f"#!/bin/sh\nexec {SSH} -F {shlex.quote(str(config))} \"$@\"\n")
        wrapper.chmod(0o755)
        host_public = Path(f"{host_key}.pub").read_text().split()
        for attempt in range(attempts):
            port = free_port()
            known_hosts.write_text(f"[{HOST}]:{port},[localhost]:{port} "
                                   f"{host_public[0]} {host_public[1]}\n")
            server = SSHServer(port, directory, host_key, client_key, known_hosts, config,
                               bin_dir, keys_dir)
            for user in users:
                server.authorize(user)
            conf = directory / "sshd_config"
            conf.write_text(sshd_config(directory, port, host_key, keys_dir, setenv or {}))
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            reader = threading.Thread(target=_drain, args=(proc, server), daemon=True)
            reader.start()
            try:
                listening = _wait_listening(proc, server, timeout)
            except BaseException:
                _stop(proc, reader)
                raise
            if not listening:
                _stop(proc, reader)
                # The port found free was taken before sshd bound it: another one.
                if "Address already in use" in server.log() and attempt + 1 < attempts:
                    continue
                raise RuntimeError(f"sshd exited ({proc.returncode}) before listening; its log:\n"
                                   + server.log())
            try:
                yield server
            finally:
                _stop(proc, reader)
            return


__all__ = ["HOST", "SSHServer", "closed_port", "ensure_group", "free_port", "leave_group",
           "local_user", "missing_tools", "sshd"]
