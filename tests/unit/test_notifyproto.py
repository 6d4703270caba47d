"""notifyproto: one sd_notify datagram -> a Notice, or why it is refused."""

from __future__ import annotations

import pytest

from taskmasterd.notifyproto import MAX_DATAGRAM, MAX_STATUS, REPLACEMENT, Notice, clean_status, parse


def notice(data: bytes) -> Notice:
    result = parse(data)
    assert isinstance(result, Notice), result
    return result


def refusal(data: bytes) -> str:
    result = parse(data)
    assert isinstance(result, str), result
    return result


@pytest.mark.parametrize(("data", "expected"), [
    (b"READY=1", Notice(ready=True)),
    (b"RELOADING=1", Notice(reloading=True)),
    (b"STOPPING=1", Notice(stopping=True)),
    (b"WATCHDOG=1", Notice(watchdog=True)),
    (b"WATCHDOG=trigger", Notice(watchdog_trigger=True)),
    (b"WATCHDOG_USEC=20000000", Notice(watchdog_usec=20_000_000)),
    (b"WATCHDOG_USEC=0", Notice(watchdog_usec=0)),
    (b"STATUS=warming up", Notice(status="warming up")),
    (b"STATUS=", Notice(status="")),
    (b"STATUS=a=b", Notice(status="a=b")),  # only the first '=' separates
    (b"MAINPID=4242", Notice(mainpid=4242)),
    (b"ERRNO=2", Notice(errno=2)),
    (b"ERRNO=0", Notice(errno=0)),
    (b"BARRIER=1", Notice(barrier=True)),
    ("STATUS=prêt à 50 %".encode(), Notice(status="prêt à 50 %")),
])
def test_each_field(data: bytes, expected: Notice) -> None:
    assert parse(data) == expected


def test_a_bare_notice_sets_nothing() -> None:
    assert Notice() == Notice(ready=False, reloading=False, stopping=False, watchdog=False,
                              watchdog_trigger=False, watchdog_usec=None, status=None, mainpid=None,
                              errno=None, barrier=False, ignored=())


def test_multi_line_datagram_as_systemd_notify_sends_it() -> None:
    assert notice(b"READY=1\nSTATUS=warming up\nMAINPID=77\n") == \
        Notice(ready=True, status="warming up", mainpid=77)


def test_blank_lines_and_a_trailing_newline_assign_nothing() -> None:
    assert notice(b"\nWATCHDOG=1\n\n") == Notice(watchdog=True)


def test_later_assignments_win() -> None:
    assert notice(b"STATUS=one\nSTATUS=two") == Notice(status="two")
    assert notice(b"READY=1\nREADY=0") == Notice(ready=False)
    assert notice(b"READY=0\nREADY=1") == Notice(ready=True)
    assert notice(b"WATCHDOG=1\nWATCHDOG=trigger") == Notice(watchdog_trigger=True)
    assert notice(b"WATCHDOG=trigger\nWATCHDOG=1") == Notice(watchdog=True)
    assert notice(b"WATCHDOG=1\nWATCHDOG=0") == Notice()
    assert notice(b"MAINPID=1\nMAINPID=2") == Notice(mainpid=2)
    assert notice(b"WATCHDOG_USEC=5\nWATCHDOG_USEC=6") == Notice(watchdog_usec=6)


def test_assignments_not_acted_on_are_named_once_in_order() -> None:
    got = notice(b"FDSTORE=1\nEXTEND_TIMEOUT_USEC=5000000\nREADY=1\nX_MINE=a\nFDSTORE=1\nFDNAME=x")
    assert got == Notice(ready=True, ignored=("FDSTORE", "EXTEND_TIMEOUT_USEC", "X_MINE", "FDNAME"))
    # Their values are not ours to check.
    assert notice(b"EXTEND_TIMEOUT_USEC=soon") == Notice(ignored=("EXTEND_TIMEOUT_USEC",))
    assert notice(b"lower_case_name=1") == Notice(ignored=("lower_case_name",))


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty datagram"),
    (b"\n\n", "no NAME=VALUE assignment"),
    (b"READY=1\0STATUS=x", "NUL byte at offset 7"),
    (b"STATUS=\xff\xfe", "not UTF-8 (byte 7)"),
    (b"STATUS=\xed\xa0\x80", "not UTF-8 (byte 7)"),  # an encoded surrogate is not UTF-8
    (b"READY=1\nhello", "line 2 is not NAME=VALUE: 'hello'"),
    (b"=1", "line 1 is not NAME=VALUE: '=1'"),
    (b"READY =1", "line 1 is not NAME=VALUE: 'READY =1'"),
    (b"9LIVES=1", "line 1 is not NAME=VALUE: '9LIVES=1'"),
    (b"READY=yes", "READY='yes': not 1 or 0"),
    (b"STOPPING=2", "STOPPING='2': not 1 or 0"),
    (b"RELOADING=", "RELOADING='': not 1 or 0"),
    (b"BARRIER=true", "BARRIER='true': not 1 or 0"),
    (b"WATCHDOG=ping", "WATCHDOG='ping': not 1, trigger or 0"),
    (b"MAINPID=0", "MAINPID='0': not a number from 1 to 2147483647"),
    (b"MAINPID=-5", "MAINPID='-5': not a number from 1 to 2147483647"),
    (b"MAINPID=+5", "MAINPID='+5': not a number from 1 to 2147483647"),
    (b"MAINPID= 5", "MAINPID=' 5': not a number from 1 to 2147483647"),
    (b"MAINPID=1_000", "MAINPID='1_000': not a number from 1 to 2147483647"),  # int() would take it
    (b"MAINPID=2147483648", "MAINPID='2147483648': not a number from 1 to 2147483647"),
    (b"ERRNO=abc", "ERRNO='abc': not a number from 0 to 2147483647"),
    (b"WATCHDOG_USEC=18446744073709551616",
     "WATCHDOG_USEC='18446744073709551616': not a number from 0 to 18446744073709551615"),
    (b"WATCHDOG_USEC=1e6", "WATCHDOG_USEC='1e6': not a number from 0 to 18446744073709551615"),
    ("MAINPID=١٢".encode(), "MAINPID='١٢': not a number from 1 to 2147483647"),  # int() takes Arabic digits
])
def test_each_refusal_reason(data: bytes, reason: str) -> None:
    assert refusal(data) == reason


def test_one_bad_line_refuses_the_whole_datagram() -> None:
    # Nothing of it is half-applied.
    assert isinstance(parse(b"READY=1\nSTATUS=up\nMAINPID=x"), str)


def test_numbers_at_their_bounds_are_accepted() -> None:
    assert notice(b"MAINPID=2147483647").mainpid == 2**31 - 1
    assert notice(b"WATCHDOG_USEC=18446744073709551615").watchdog_usec == 2**64 - 1


def test_size_limit_is_systemds() -> None:
    just = b"STATUS=" + b"x" * (MAX_DATAGRAM - len(b"STATUS="))
    assert len(just) == MAX_DATAGRAM == 4096
    assert isinstance(parse(just), Notice)
    assert refusal(just + b"x") == "datagram of 4097 bytes: longer than 4096"
    # The size is checked before anything else: a huge datagram is not scanned.
    assert refusal(b"\0" * 100_000) == "datagram of 100000 bytes: longer than 4096"


def test_status_is_capped() -> None:
    status = notice(b"STATUS=" + b"y" * 4000).status
    assert status is not None
    assert len(status) == MAX_STATUS == 1024
    assert status == "y" * 1023 + "…"
    exact = notice(b"STATUS=" + b"z" * MAX_STATUS).status
    assert exact == "z" * MAX_STATUS  # not cut when it fits
    # Characters, not bytes: multi-byte text is capped at as many characters.
    wide = notice(("STATUS=" + "é" * 2000).encode()).status
    assert wide is not None and len(wide) == MAX_STATUS


@pytest.mark.parametrize("control", ["\t", "\r", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029",
                                    "\u202e", "\u2066", "\u200f"])
def test_status_control_characters_are_replaced(control: str) -> None:
    assert notice(f"STATUS=a{control}b".encode()).status == f"a{REPLACEMENT}b"


def test_status_terminal_escape_cannot_recolour_a_display() -> None:
    assert notice(b"STATUS=\x1b[31mred\x1b[0m").status == f"{REPLACEMENT}[31mred{REPLACEMENT}[0m"


def test_status_keeps_ordinary_unicode() -> None:
    text = "démarrage 3/4 ✓ 準備中 👍🏽"
    assert clean_status(text) == text
