"""taskctl -H at the process level: ssh run with one end of a socket pair as
its stdin and stdout, D-Bus spoken over the other end (what sd-bus's
`unixexec:` transport does for systemctl -H), and `taskctl` itself run on
the host for the commands in `hosts.RUN_THERE`. Used by `taskctl.link`
and `taskctl.commands` only; the command lines come from `taskctl.hosts`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, TextIO

from jeepney.auth import BEGIN, Authenticator
from jeepney.io.blocking import DBusConnection

from taskctl.connection import say_hello
from taskctl.hosts import Host, bridge_command, remote_argv, ssh_failure
from taskmasterd.busaddr import BusChoice

REAP_TIMEOUT = 5.0  # seconds ssh gets to leave once its socket is closed
# While ssh may be asking for a passphrase or a host key answer on the
# terminal, the wait for D-Bus is a person's; without a terminal, a machine's.
PROMPT_TIMEOUT = 300.0


class SshFailed(Exception):
    """ssh (or the bridge there) ended, or never spoke D-Bus: `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SshLink:
    """A running `ssh ... systemd-stdio-bridge`: `sock` is our end of its
    stdin/stdout; what it prints on stderr is kept (a file: never a full pipe)
    to say why it ended."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # lives as long as ssh: closed by close()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            with _sigint_ignored():
                self.proc = subprocess.Popen(self.argv, stdin=theirs.fileno(),
                                             stdout=theirs.fileno(), stderr=self.stderr)
        except OSError as exc:
            ours.close()
            self.stderr.close()
            raise SshFailed(f"cannot run ssh: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        self.sock = ours

    def failure(self, host: Host) -> str:
        """Why it ended (ssh's last words and exit status), once it has."""
        try:
            code: int | None = self.proc.wait(REAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        self.stderr.seek(0)
        said = self.stderr.read(64 * 1024).decode("utf-8", "replace")
        return ssh_failure(code, said, host)

    def close(self) -> None:
        """Close our end (ssh sees the end of its input and leaves), reap it."""
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(REAP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """ssh started with SIGINT ignored keeps it ignored (OpenSSH installs its
    handler only where SIGINT was not ignored): a Ctrl-C at the shell's prompt
    or one that stops `events` must not end the link under the next command.
    taskctl, which takes the Ctrl-C, closes the link when it means to. Only
    the main thread can change a disposition; elsewhere ssh gets the default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class SshConnection(DBusConnection):  # type: ignore[misc]
    """A jeepney connection whose close() also ends its ssh."""

    def __init__(self, sock: socket.socket, enable_fds: bool = False, *,
                 link: SshLink | None = None) -> None:
        self.link = link
        super().__init__(sock, enable_fds=enable_fds)

    def close(self) -> None:
        super().close()
        if self.link is not None:
            self.link.close()


def connect_timeout(default: float) -> float:
    """How long ssh may take to start speaking D-Bus: a person may be typing
    a passphrase when taskctl has a terminal."""
    try:
        return PROMPT_TIMEOUT if os.isatty(sys.stdin.fileno()) else default
    except (OSError, ValueError, AttributeError):
        return default


def _authenticate(sock: socket.socket, deadline: float) -> None:
    """The client side of the D-Bus SASL exchange, with the bridge there
    (EXTERNAL: it accepts any uid, having none to check on a pipe; the bus
    behind it knows the ssh user)."""
    auth = Authenticator(enable_fds=False)  # 0.8 and 0.9 both send the NUL byte first
    for request in auth:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(request)
        data = sock.recv(1024)
        if not data:
            raise EOFError("the connection ended during authentication")
        auth.feed(data)
    sock.sendall(BEGIN)
    sock.settimeout(None)


def open_remote(host: Host, choice: BusChoice | None, timeout: float) -> Any:
    """A jeepney connection to the bus on `host` (the one `choice` names
    there), Hello said; SshFailed says why not. No fd passing: descriptors
    do not cross ssh."""
    link = SshLink(remote_argv(host, bridge_command(choice)))
    try:
        _authenticate(link.sock, time.monotonic() + timeout)
    except (OSError, EOFError, ValueError) as exc:
        link.sock.close()  # ssh may still be trying: it ends now
        if link.proc.poll() is None and isinstance(exc, TimeoutError):
            link.close()
            raise SshFailed(f"no D-Bus from ssh within {timeout:g} s "
                            f"({' '.join(link.argv)})") from None
        reason = link.failure(host)
        link.close()
        raise SshFailed(reason) from None
    except BaseException:
        link.close()
        raise
    try:
        return say_hello(link.sock, timeout, enable_fds=False,
                         connection_class=lambda sock, enable_fds: SshConnection(
                             sock, enable_fds, link=link))
    except BaseException:
        link.close()
        raise


def _writable_fd(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def run_there(host: Host, command: Sequence[str], out: TextIO, err: TextIO, *,
              tty: bool = False, keyboard: bool = False) -> tuple[int, str]:
    """Run `command` on `host` over ssh, its output to `out`; returns ssh's
    exit status and what was printed on stderr (kept to tell ssh's own
    failures, status 255, from the command's). `tty` or `keyboard`: ssh
    reads taskctl's stdin (else /dev/null)."""
    argv = remote_argv(host, command, tty=tty)
    out.flush()
    err.flush()
    fd = _writable_fd(out)
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(argv, stdin=None if tty or keyboard else subprocess.DEVNULL,
                                    stdout=fd if fd is not None else subprocess.PIPE,
                                    stderr=stderr, preexec_fn=_die_with_parent())
        except OSError as exc:
            return 255, f"cannot run ssh: {exc.strerror or exc}"
        try:
            if fd is None:
                _copy(proc.stdout, out)
            code = proc.wait()
        except BaseException:  # Ctrl-C: ssh has had it too (same terminal); reap it
            proc.kill()
            proc.wait()
            raise
        stderr.seek(0)
        return code, stderr.read(64 * 1024).decode("utf-8", "replace")


def _die_with_parent() -> Callable[[], None] | None:
    """For ssh running a command there: SIGTERM when taskctl dies (killed by
    SIGTERM itself, say), so that ssh ends, sshd closes the command's output
    there and a followed tail stops instead of lingering. Only where no other
    thread runs (a child forked beside threads must not run Python code)."""
    if threading.active_count() > 1:
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # taskctl died before the line above
            os._exit(1)
    return arm


def _copy(source: IO[bytes] | None, out: TextIO) -> None:
    assert source is not None
    for chunk in iter(lambda: source.read1(65536), b""):  # type: ignore[attr-defined]
        out.write(chunk.decode("utf-8", "replace"))
        out.flush()


def run_command_there(host: Host, choice: BusChoice | None, words: Sequence[str],
                      out: TextIO, err: TextIO, *, follow: bool) -> int:
    """`taskctl` with `words` on `host` (same bus flags): its exit status;
    ssh's own failures (255) and a missing taskctl there (127) as taskctl's
    one line and exit 7. A followed tail gets a terminal there when we have
    one, so that Ctrl-C stops it there too; attach gets our stdin, and a
    terminal there when stdin is one (`hosts.wants_tty`)."""
    from taskctl.exitcodes import EXIT_UNREACHABLE
    from taskctl.hosts import KEYBOARD_THERE, quiet_ssh, taskctl_command, wants_tty, words_there

    command = words[0] if words else ""
    tty = wants_tty(command, follow=follow, stdin_tty=_isatty(sys.stdin), stdout_tty=_isatty(out))
    code, said = run_there(host, taskctl_command(choice, words_there(words, os.environ)), out,
                           err, tty=tty, keyboard=command in KEYBOARD_THERE)
    if code == 255 or (code == 127 and "taskctl" in said):
        why = ssh_failure(code, said, host) if code == 255 else \
            f"taskctl is not installed there ({said.strip().splitlines()[-1]})"
        err.write(f"taskctl: cannot run taskctl on {host} over ssh ({why})\n")
        err.flush()
        return EXIT_UNREACHABLE
    err.write(quiet_ssh(said) if tty else said)
    err.flush()
    return code


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
