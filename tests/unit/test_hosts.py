"""taskctl -H: host specs, the ssh command lines, ssh's failures in one line,
hosts for completion, the command words run there (pure: taskctl.hosts)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from taskctl.hosts import (
    RUN_THERE,
    Host,
    bridge_command,
    known_hosts,
    quiet_ssh,
    remote_argv,
    ssh_failure,
    taskctl_command,
    wants_tty,
    words_there,
)
from taskctl.parser import build_parser, command_words
from taskctl.shell import complete_words
from taskmasterd.busaddr import BusChoice


@pytest.mark.parametrize(("spec", "host", "user", "port"), [
    ("web1", "web1", None, None),
    ("tm@web1", "web1", "tm", None),
    ("tm@127.0.0.1:2222", "127.0.0.1", "tm", 2222),
    ("[::1]:2200", "::1", None, 2200),
    ("root@[::1]", "::1", "root", None),
    ("::1", "::1", None, None),            # bare IPv6: no port, as ssh reads it
    ("a@b@host", "host", "a@b", None),     # the last @ separates, as ssh does
])
def test_host_specs(spec: str, host: str, user: str | None, port: int | None) -> None:
    h = Host.parse(spec)
    assert (h.host, h.user, h.port) == (host, user, port)
    assert Host.parse(str(h)) == h


@pytest.mark.parametrize(("spec", "says"), [
    ("", "empty host"),
    ("@web", "empty user"),
    ("web:", "empty port"),
    ("web:0", "1 to 65535"),
    ("web:65536", "1 to 65535"),
    ("web:22x", "1 to 65535"),
    ("web:٣", "1 to 65535"),              # a non-ASCII digit is no port
    ("[::1", "unclosed"),
    ("[::1]x", "after ']'"),
    ("-oProxyCommand=x", "cannot start with '-'"),
    ("-l@web", "cannot start with '-'"),
    ("we b", "space"),
    ("tm@", "empty host name"),
])
def test_bad_host_specs_say_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Host.parse(spec)


def test_ssh_argv_ends_options_before_the_host() -> None:
    h = Host.parse("tm@web1:2222")
    assert h.ssh_argv() == ["ssh", "-xT", "-p", "2222", "-l", "tm", "--", "web1"]
    assert Host.parse("web1").ssh_argv(tty=True) == ["ssh", "-xt", "--", "web1"]


def test_ssh_command_as_a_person_types_it() -> None:
    assert Host.parse("tm@web1:2222").ssh_command() == "ssh -p 2222 tm@web1"
    assert Host.parse("[::1]:22").ssh_command() == "ssh -p 22 ::1"
    assert Host.parse("web1").ssh_command() == "ssh web1"


def test_bridge_commands_per_bus() -> None:
    assert bridge_command(None)[-1] == "systemd-stdio-bridge"
    assert bridge_command(BusChoice("system"))[-1] == "systemd-stdio-bridge"
    assert bridge_command(BusChoice("user"))[-2:] == ["systemd-stdio-bridge", "--user"]
    assert bridge_command(BusChoice("address", "unix:path=/run/x"))[-1] == \
        "--bus-path=unix:path=/run/x"
    with pytest.raises(ValueError, match="cannot reach private"):
        bridge_command(BusChoice("private"))


def test_remote_words_are_quoted_for_the_shell_there() -> None:
    words = ["taskctl", "--address", "unix:path=/tmp/a b;rm -rf x", "tail", "web:0"]
    argv = remote_argv(Host.parse("h"), words)
    assert argv[:-1] == ["ssh", "-xT", "--", "h"]
    assert shlex.split(argv[-1]) == words  # what the login shell there splits it into


def test_taskctl_there_gets_the_same_bus() -> None:
    assert taskctl_command(None, ["tail", "web"]) == ["taskctl", "--system", "tail", "web"]
    assert taskctl_command(BusChoice("user"), ["history", "web"])[:2] == ["taskctl", "--user"]
    assert taskctl_command(BusChoice("address", "unix:path=/b"), ["tail", "-f", "w"]) == \
        ["taskctl", "--address", "unix:path=/b", "tail", "-f", "w"]


def test_ssh_failures_in_one_line() -> None:
    h = Host.parse("tm@127.0.0.1:1")
    said = ("Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\r\n"
            "ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n")
    assert ssh_failure(255, said, h) == "ssh: connect to host 127.0.0.1 port 1: Connection refused"
    assert ssh_failure(255, "", h) == "ssh failed (exit status 255)"
    assert "not installed on 127.0.0.1" in ssh_failure(
        127, "bash: line 1: systemd-stdio-bridge: command not found\n", h)
    assert ssh_failure(1, "Failed to start bus client: No such file or directory\n", h) == \
        "systemd-stdio-bridge on 127.0.0.1: Failed to start bus client: No such file or directory"
    assert ssh_failure(None, "", h) == "ssh ended"
    assert "\n" not in ssh_failure(255, "a\nb\nc\n", h)


def test_known_hosts_for_completion(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text("Host web1 web2\n  User tm\nHost *.internal !x\nHost db\n")
    (ssh / "known_hosts").write_text(
        "web1,10.0.0.1 ssh-ed25519 AAAA\n"
        "[127.0.0.1]:2222 ssh-ed25519 AAAA\n"
        "|1|hashed= ssh-ed25519 AAAA\n"
        "# a comment\n"
        "@cert-authority *.example ssh-ed25519 AAAA\n")
    assert known_hosts(str(tmp_path)) == ["10.0.0.1", "127.0.0.1:2222", "db", "web1", "web2"]
    assert known_hosts(str(tmp_path / "nobody")) == []


def test_command_words_skip_the_global_options() -> None:
    parser = build_parser()
    for argv, words in [
        (["-H", "tm@h", "tail", "-f", "web"], ["tail", "-f", "web"]),
        (["--host=h", "--address", "tail", "tail", "web"], ["tail", "web"]),
        (["--json", "-H", "history", "history", "web"], ["history", "--json", "web"]),
        (["-Hh", "--system", "history", "--since", "1h", "web"], ["history", "--since", "1h", "web"]),
    ]:
        args = parser.parse_args(argv)
        assert command_words(argv, args) == words, argv


def test_shell_completes_hosts_after_connect() -> None:
    hosts = lambda: ["web1", "web2", "db"]  # noqa: E731
    assert complete_words("connect ", "we", list, list, hosts) == ["web1", "web2"]
    assert complete_words("connect ", "lo", list, list, hosts) == ["local"]
    assert complete_words("connect web1 ", "", list, list, hosts) == []
    assert complete_words("connect --address ", "", list, list, hosts) == []
    assert "--address" in complete_words("connect ", "--a", list, list, hosts)
    assert "connect" in complete_words("", "con", list)


def test_attach_runs_there_in_a_terminal() -> None:
    """Descriptors do not cross ssh: attach runs taskctl there, with a
    terminal (-t) whenever taskctl's stdin is one (raw mode, the window
    size and SIGWINCH then reach it there); from a pipe, -T."""
    assert {"tail", "history", "attach"} <= RUN_THERE
    assert wants_tty("attach", follow=False, stdin_tty=True, stdout_tty=False)
    assert wants_tty("attach", follow=False, stdin_tty=True, stdout_tty=True)
    assert not wants_tty("attach", follow=False, stdin_tty=False, stdout_tty=True)
    assert wants_tty("tail", follow=True, stdin_tty=True, stdout_tty=True)
    assert not wants_tty("tail", follow=True, stdin_tty=True, stdout_tty=False)
    assert not wants_tty("tail", follow=False, stdin_tty=True, stdout_tty=True)
    assert not wants_tty("history", follow=False, stdin_tty=True, stdout_tty=True)
    words = taskctl_command(None, words_there(["attach", "web:0"], {}))
    assert remote_argv(Host.parse("h"), words, tty=True) == \
        ["ssh", "-xt", "--", "h", "taskctl --system attach web:0"]


def test_detach_keys_of_the_environment_go_there() -> None:
    env = {"TASKCTL_DETACH_KEYS": "ctrl-a,d"}
    assert words_there(["attach", "web:0"], env) == ["attach", "--detach-keys=ctrl-a,d", "web:0"]
    assert words_there(["attach", "--detach-keys", "ctrl-q", "web:0"], env) == \
        ["attach", "--detach-keys", "ctrl-q", "web:0"]  # its own wins
    assert words_there(["attach", "--detach-keys=ctrl-q", "w"], env)[1] == "--detach-keys=ctrl-q"
    assert words_there(["attach", "web:0"], {}) == ["attach", "web:0"]
    assert words_there(["tail", "web:0"], env) == ["tail", "web:0"]
    argv = remote_argv(Host.parse("h"), taskctl_command(None, words_there(["attach", "w"], {
        "TASKCTL_DETACH_KEYS": "ctrl-],d"})), tty=True)
    assert shlex.split(argv[-1]) == ["taskctl", "--system", "attach", "--detach-keys=ctrl-],d", "w"]


def test_ssh_goodbye_is_not_news() -> None:
    said = "web:0 exited\r\nConnection to web1 closed.\r\n"
    assert quiet_ssh(said) == "web:0 exited\r\n"
    assert quiet_ssh("Connection to 10.0.0.1 closed.\n") == ""
    assert quiet_ssh("Connection to web1 closed by remote host.\n") == \
        "Connection to web1 closed by remote host.\n"  # that one is news
