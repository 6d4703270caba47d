"""taskmaster-web's guard: the token file, bearer headers, sessions with a
fake clock, CSRF tokens (pure: taskweb.auth)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskweb.auth import MAX_SESSIONS, SESSION_SECONDS, Guard, TokenError, read_token

TOKEN = "s3cret-token-of-24-chars"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_file_must_be_private_and_long(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n# the rest is ignored\n")
    f.chmod(0o600)
    assert read_token(str(f)) == TOKEN
    f.chmod(0o604)
    with pytest.raises(TokenError, match=r"readable by every user.*chmod 600"):
        read_token(str(f))
    f.chmod(0o600)
    f.write_text("short\n")
    with pytest.raises(TokenError, match="at least 16 characters"):
        read_token(str(f))
    f.write_text("")
    with pytest.raises(TokenError, match="at least 16"):
        read_token(str(f))
    with pytest.raises(TokenError, match="cannot read the token file"):
        read_token(str(tmp_path / "missing"))
    link = tmp_path / "link"
    os.symlink(f, link)
    with pytest.raises(TokenError, match="cannot read"):  # O_NOFOLLOW: no symlink games
        read_token(str(link))
    with pytest.raises(TokenError, match="not a regular file"):
        read_token(str(tmp_path))


def test_bearer_headers() -> None:
    g = Guard(TOKEN)
    assert g.bearer_ok(f"Bearer {TOKEN}") and g.bearer_ok(f"bearer  {TOKEN} ")
    for bad in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "):
        assert not g.bearer_ok(bad), bad


def test_sessions_expire_and_are_bounded() -> None:
    clock = Clock()
    g = Guard(TOKEN, clock=clock)
    assert g.login("wrong") is None and g.sessions == {}
    opened = g.login(TOKEN)
    assert opened is not None
    sid, session = opened
    assert g.session(sid) is session and g.session("other") is None and g.session(None) is None
    assert g.csrf_ok(session, session.csrf)
    assert not g.csrf_ok(session, None) and not g.csrf_ok(session, session.csrf + "x")
    clock.now += SESSION_SECONDS
    assert g.session(sid) is None and sid not in g.sessions  # expired, forgotten
    first = g.login(TOKEN)
    assert first is not None
    for _ in range(MAX_SESSIONS + 10):
        g.login(TOKEN)
    assert len(g.sessions) == MAX_SESSIONS and first[0] not in g.sessions  # the oldest went
    last = next(reversed(g.sessions))
    g.logout(last)
    assert g.session(last) is None
