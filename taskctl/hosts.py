"""`taskctl -H [user@]host[:port]`: which host, and the ssh command lines
that reach it (pure: no sockets, no processes here; `taskctl.sshlink` runs them).

As `systemctl -H` does, D-Bus travels over ssh to `systemd-stdio-bridge` on
the host, which connects to the bus there as the ssh user: authentication
is ssh's (keys, agent, known_hosts, ~/.ssh/config all apply), authorization
is the host's D-Bus policy for that user. No new port, no new credentials.

Commands that need what a bridge cannot carry run `taskctl` itself on the
host, over the same ssh: `tail` and `attach` (the daemon passes descriptors
of the output file, of the console, and descriptors do not cross ssh) and
`history` and `maintail` (they read the host's journal or log file). See
docs/remote.md.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from taskctl.detachkeys import ENV as DETACH_KEYS_ENV
from taskmasterd.busaddr import BusChoice

BRIDGE = "systemd-stdio-bridge"  # /usr/bin in Debian 12 (package systemd)
# Commands that run as `taskctl` on the host instead of over the bridge.
RUN_THERE = frozenset({"tail", "history", "attach", "maintail"})
# ... and of those, the ones that read the keyboard: ssh passes them its
# standard input, and allocates a terminal there (-t) when taskctl has one.
KEYBOARD_THERE = frozenset({"attach"})


@dataclass(frozen=True)
class Host:
    """A host to reach over ssh; user and port None: ssh's defaults (and ~/.ssh/config)."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, spec: str) -> Host:
        """`[user@]host[:port]`, an IPv6 address as `[addr]` or `[addr]:port`
        (bare, it takes no port: `::1`). ValueError says what is wrong."""
        text = spec.strip()
        if not text:
            raise ValueError("empty host; expected [user@]host[:port]")
        if any(c.isspace() or ord(c) < 32 for c in text):
            raise ValueError(f"{spec!r} has a space or a control character; "
                             "expected [user@]host[:port]")
        user: str | None = None
        if "@" in text:
            user, _, text = text.rpartition("@")
            if not user:
                raise ValueError(f"{spec!r}: empty user before '@'; expected [user@]host[:port]")
        port_text = ""
        if text.startswith("["):
            inside, bracket, rest = text[1:].partition("]")
            if not bracket or not inside:
                raise ValueError(f"{spec!r}: unclosed or empty '[...]'; expected [ADDRESS]:PORT")
            if rest and not rest.startswith(":"):
                raise ValueError(f"{spec!r}: {rest!r} after ']'; expected [ADDRESS]:PORT")
            host, port_text = inside, rest[1:]
            if rest and not port_text:
                raise ValueError(f"{spec!r}: empty port after ':'")
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            if not port_text:
                raise ValueError(f"{spec!r}: empty port after ':'")
        else:
            host = text  # a name, an IPv4 address, or a bare IPv6 address
        if not host:
            raise ValueError(f"{spec!r}: empty host name; expected [user@]host[:port]")
        if host.startswith("-") or (user or "").startswith("-"):
            raise ValueError(f"{spec!r}: a host or user cannot start with '-'")
        port = None
        if port_text:
            if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"{spec!r}: port {port_text!r} is not a number from 1 to 65535")
            port = int(port_text)
        return cls(host, user, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port is not None else self.host
        return (f"{self.user}@" if self.user else "") + host + \
            (f":{self.port}" if self.port is not None else "")

    def ssh_command(self) -> str:
        """How a person would type ssh to it (ssh takes no `host:port`)."""
        port = f"-p {self.port} " if self.port is not None else ""
        return f"ssh {port}" + (f"{self.user}@" if self.user else "") + self.host

    def ssh_argv(self, *, tty: bool = False) -> list[str]:
        """`ssh` and its options up to the host (the remote command follows).
        -x: no X11 forwarding; -T/-t: no terminal there, or one (a followed
        `tail` then stops on Ctrl-C there, and ends when ssh does)."""
        argv = ["ssh", "-xt" if tty else "-xT"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        return [*argv, "--", self.host]


def bridge_command(choice: BusChoice | None) -> list[str]:
    """The command run on the host: the bridge to the bus taskctl's flags
    name there (none or --system: the system bus, as systemctl -H)."""
    # Its errors go to the journal by default; on stderr they reach taskctl
    # through ssh and say why (`env`: whatever the login shell there is).
    bridge = ["env", "SYSTEMD_LOG_TARGET=console", BRIDGE]
    kind = choice.kind if choice is not None else "system"
    if kind == "system":
        return bridge
    if kind == "user":
        return [*bridge, "--user"]
    if kind == "address" and choice is not None and choice.address:
        return [*bridge, f"--bus-path={choice.address}"]
    raise ValueError(f"taskctl -H cannot reach {kind} buses; use --system, --user or --address")


def taskctl_command(choice: BusChoice | None, words: Sequence[str]) -> list[str]:
    """`taskctl` on the host with the same bus and the command `words`."""
    kind = choice.kind if choice is not None else "system"
    if kind == "address" and choice is not None and choice.address:
        flags = ["--address", choice.address]
    elif kind in ("system", "user"):
        flags = [f"--{kind}"]
    else:
        raise ValueError(f"taskctl -H cannot reach {kind} buses; use --system, --user or --address")
    return ["taskctl", *flags, *words]


def wants_tty(command: str, *, follow: bool, stdin_tty: bool, stdout_tty: bool) -> bool:
    """Whether ssh allocates a terminal there (-t instead of -T): `attach`
    whenever taskctl's stdin is a terminal (raw mode, window size and
    SIGWINCH then reach taskctl there through ssh); a followed `tail` when
    both ends are (Ctrl-C then stops it there)."""
    if command in KEYBOARD_THERE:
        return stdin_tty
    return follow and stdin_tty and stdout_tty


def words_there(words: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The command words run there, with what this environment chooses and
    ssh does not carry: `attach` gets $TASKCTL_DETACH_KEYS as --detach-keys
    (unless it has its own)."""
    words = list(words)
    keys = environ.get(DETACH_KEYS_ENV)
    if words and words[0] == "attach" and keys and not any(
            w == "--detach-keys" or w.startswith("--detach-keys=") for w in words):
        words[1:1] = [f"--detach-keys={keys}"]
    return words


def quiet_ssh(said: str) -> str:
    """What ssh printed on stderr without its "Connection to HOST closed."
    (said at the end of every session with a terminal: not news)."""
    lines = said.splitlines(keepends=True)
    return "".join(line for line in lines
                   if not (line.startswith("Connection to ") and line.rstrip().endswith(" closed.")))


def remote_argv(host: Host, command: Sequence[str], *, tty: bool = False) -> list[str]:
    """The whole ssh command line. ssh joins the remote words with spaces for
    the login shell there to split again: each word is quoted for it."""
    return [*host.ssh_argv(tty=tty), " ".join(shlex.quote(w) for w in command)]


def ssh_failure(code: int | None, stderr: str, host: Host) -> str:
    """Why ssh ended before D-Bus could start, in one line, from its exit
    status and what it (or the command there) printed."""
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    # ssh's warnings ("Warning: Permanently added ...") come first; the cause last.
    said = next((line for line in reversed(lines) if not line.startswith("Warning:")), "")
    if code == 127 or ("not found" in said and BRIDGE in said):
        return f"{BRIDGE} is not installed on {host.host} ({said or 'command not found'})"
    if code == 255:
        return said or "ssh failed (exit status 255)"
    if said:  # the bridge there: "Failed to start bus client: No such file or directory"
        return f"{BRIDGE} on {host.host}: {said}"
    return "ssh ended" + (f" with exit status {code}" if code is not None else "")


def known_hosts(home: str | None = None) -> list[str]:
    """Host names for completion: ~/.ssh/config `Host` entries without
    patterns and ~/.ssh/known_hosts names that are not hashed ("[h]:p" as
    "h:p"). Unreadable files give nothing."""
    ssh = os.path.join(home if home is not None else os.path.expanduser("~"), ".ssh")
    names: set[str] = set()
    for line in _lines(os.path.join(ssh, "config")):
        key, _, value = line.strip().partition(" ")
        if key.lower() == "host":
            names.update(n for n in value.split() if not any(c in n for c in "*?!"))
    for line in _lines(os.path.join(ssh, "known_hosts")):
        field = line.split(" ", 1)[0]
        if not field or field.startswith(("|", "#", "@")):
            continue  # hashed, a comment, a marker line
        for name in field.split(","):
            if name.startswith("[") and "]:" in name:
                name = name[1:].replace("]:", ":", 1)
            if name and not any(c in name for c in "*?!"):
                names.add(name)
    return sorted(names)


def _lines(path: str) -> Iterable[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20).splitlines()
    except OSError:
        return []
