"""The pure side of probes (taskmasterd/probeplan.py): the readiness
backoff, the failures-in-a-row count, and the checks the config reader
runs on a probe's target."""

from __future__ import annotations

import pytest

from taskmasterd.probeplan import (
    READY_FIRST_DELAY,
    READY_MAX_DELAY,
    HealthCount,
    ProbeSpec,
    check_target,
    check_url,
    parse_command,
    parse_hostport,
    ready_delay,
    url_target,
)

# ---- ready_delay ----------------------------------------------------------------------


def test_ready_delay_doubles_from_50_ms_up_to_the_2_s_cap() -> None:
    assert [ready_delay(n) for n in range(1, 10)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert (READY_FIRST_DELAY, READY_MAX_DELAY) == (0.05, 2.0)


def test_ready_delay_stays_at_the_cap_for_any_attempt_number() -> None:
    assert ready_delay(10**6) == READY_MAX_DELAY


def test_ready_delay_refuses_attempt_zero() -> None:
    with pytest.raises(ValueError, match="from 1"):
        ready_delay(0)


def test_a_never_ready_process_costs_about_one_probe_per_cap() -> None:
    # Attempts made within a 60 s readytimeout: the load the cap bounds.
    elapsed, attempts = 0.0, 1
    while elapsed + ready_delay(attempts) <= 60:
        elapsed += ready_delay(attempts)
        attempts += 1
    assert attempts == 35  # 7 by 3.15 s, then one per 2 s: 28 more by 59.15 s


# ---- HealthCount ----------------------------------------------------------------------


def test_health_count_fires_when_the_run_of_failures_reaches_n() -> None:
    count = HealthCount(3)
    assert [count.record(False, f"f{i}") for i in range(1, 4)] == [False, False, True]
    assert (count.failures, count.last_detail) == (3, "f3")


def test_health_count_fires_once_per_run_not_every_n_failures() -> None:
    count = HealthCount(2)
    fired = [count.record(False, "down") for _ in range(7)]
    assert fired == [False, True, False, False, False, False, False]
    assert count.failures == 7


def test_a_success_resets_the_run_and_rearms_the_count() -> None:
    count = HealthCount(2)
    assert not count.record(False, "a")
    assert not count.record(True, "ok")  # breaks the run: a, ok, b is not 2 in a row
    assert (count.failures, count.last_detail) == (0, "ok")
    assert not count.record(False, "b")
    assert count.record(False, "c")
    assert not count.record(True, "ok")
    assert [count.record(False, "d"), count.record(False, "e")] == [False, True]


def test_health_count_of_one_fires_on_each_first_failure() -> None:
    count = HealthCount(1)
    assert [count.record(ok, "") for ok in (False, False, True, False)] == [True, False, False, True]


def test_health_count_refuses_a_threshold_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HealthCount(0)


# ---- ProbeSpec -------------------------------------------------------------------------


def test_probe_spec_describes_itself_and_refuses_unknown_kinds() -> None:
    assert ProbeSpec("tcp", "127.0.0.1:80").describe() == "tcp 127.0.0.1:80"
    assert ProbeSpec("cmd", "pg_isready -q").describe() == "cmd pg_isready -q"
    with pytest.raises(ValueError, match="unknown probe kind 'notify'"):
        ProbeSpec("notify", "")


# ---- parse_hostport --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("localhost:1", ("localhost", 1)),
    ("db.example.org:65535", ("db.example.org", 65535)),
    ("[::1]:80", ("::1", 80)),
    ("[fe80::1%eth0]:443", ("fe80::1%eth0", 443)),
])
def test_parse_hostport_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("127.0.0.1", "no port: HOST:PORT expected"),
    ("::1:80", "an IPv6 address goes in brackets, e.g. [::1]:8080"),
    ("[::1]80", "no port after the address"),
    ("[::1:80", "no ']' closes the IPv6 address"),
    ("[localhost]:80", "'localhost' in brackets is not an IPv6 address"),
    (":80", "no host before the port"),
    ("127.0.0.1:0", "the port 0 is out of range (1-65535)"),
    ("127.0.0.1:65536", "the port 65536 is out of range (1-65535)"),
    ("127.0.0.1:http", "the port 'http' is not a number (1-65535)"),
    ("127.0.0.1:-1", "the port '-1' is not a number"),
    ("127.0.0.1:", "the port '' is not a number"),
    ("127.0.0.1: 80", "holds a space"),
    ("http://x:80", "a host, not a URL or path"),
    ("127.0.0.1:\u0661", "is not a number"),  # an Arabic-Indic digit: isdigit(), not a port
])
def test_parse_hostport_refuses_with_a_reason(text: str, why: str) -> None:
    result = parse_hostport(text)
    assert isinstance(result, str)
    assert why in result
    assert repr(text) in result  # the value is named in the message


# ---- check_url ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/health",
    "http://localhost/",
    "http://[::1]:8080/x?y=1",
    "https://example.org/health",
])
def test_check_url_accepts_http_and_https(url: str) -> None:
    assert check_url(url) is None


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://127.0.0.1/", "only http:// and https:// URLs can be probed"),
    ("127.0.0.1:8080/health", "only http:// and https://"),
    ("http:///health", "no host"),
    ("http://127.0.0.1:99999/", "the port is not a number in 1-65535"),
    ("http://127.0.0.1:0/", "the port 0 is out of range"),
    ("http://127.0.0.1:x/", "the port is not a number"),
    ("http://user:pw@127.0.0.1/", "credentials in the URL are not supported"),
    ("http://127.0.0.1/a b", "spaces and control characters must be percent-encoded"),
    ("http://127.0.0.1/a\r\nX-Injected: 1", "control characters"),
    ("http://127.0.0.1/caf\u00e9", "beyond ASCII must be percent-encoded"),
    ("http://[::1/", "Invalid IPv6 URL"),
])
def test_check_url_refuses_with_a_reason(url: str, why: str) -> None:
    result = check_url(url)
    assert result is not None
    assert why in result


def test_url_target_gives_the_connection_and_the_request_target() -> None:
    assert url_target("http://127.0.0.1:8080/health?full=1#x") == ("127.0.0.1", 8080, False,
                                                                   "/health?full=1")
    assert url_target("https://example.org") == ("example.org", 443, True, "/")
    assert url_target("http://[::1]/") == ("::1", 80, False, "/")


# ---- commands and check_target -----------------------------------------------------------


def test_parse_command_splits_like_a_shell_without_one() -> None:
    assert parse_command("pg_isready -h '/run/pg sock' -q") == ("pg_isready", "-h", "/run/pg sock", "-q")
    assert parse_command("sh -c 'exit 0'") == ("sh", "-c", "exit 0")


@pytest.mark.parametrize(("command", "why"), [
    ("", "the command is empty"),
    ("   ", "the command is empty"),
    ("sh -c 'exit 0", "no closing quotation"),
    ("a\0b", "a NUL byte"),
])
def test_parse_command_refuses_with_a_reason(command: str, why: str) -> None:
    result = parse_command(command)
    assert isinstance(result, str)
    assert why in result


def test_check_target_dispatches_on_the_kind() -> None:
    assert check_target(ProbeSpec("tcp", "127.0.0.1:80")) is None
    assert "no port" in (check_target(ProbeSpec("tcp", "127.0.0.1")) or "")
    assert check_target(ProbeSpec("unix", "/run/app.sock")) is None
    assert check_target(ProbeSpec("unix", "")) == "the socket path is empty"
    assert "at most 107 bytes" in (check_target(ProbeSpec("unix", "/" + "x" * 107)) or "")
    assert check_target(ProbeSpec("unix", "/" + "x" * 106)) is None
    assert check_target(ProbeSpec("cmd", "true")) is None
    assert "no closing quotation" in (check_target(ProbeSpec("cmd", "'")) or "")
    assert check_target(ProbeSpec("http", "http://127.0.0.1/")) is None
    assert "only http://" in (check_target(ProbeSpec("http", "gopher://x/")) or "")
