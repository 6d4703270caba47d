"""Who may change anything through taskmaster-web: holders of the token.

The choice (docs/web.md): a token file readable by root only, not PAM.
- The service needs no privilege of its own to check it: systemd hands the
  file to it (`LoadCredential=`), so it runs as the system user
  `taskmaster-web` with the group `taskmaster` (for the D-Bus policy) and
  nothing else. PAM would need it to read /etc/shadow or to run as root,
  for a service facing a browser.
- A token works the same for a person (the login form), a script (`curl
  -H "Authorization: Bearer ..."`) and a Tessia-style client of /v1/tasks.
- Rotating it is replacing the file and restarting the service.

A browser logs in once (POST /login with the token) and gets a session
cookie (HttpOnly, SameSite=Strict); every state-changing request it makes
carries the session's CSRF token in `X-CSRF-Token` (double submit is not
enough: the token is compared with the one stored for the session).
Requests with `Authorization: Bearer` are not cookie-borne, so no CSRF
applies to them. Without a session the page is read-only: state, output
and events, as the D-Bus policy gives everyone.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import time
from dataclasses import dataclass, field

COOKIE = "taskmaster_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 256  # the oldest goes first: logins cannot make the service grow
MIN_TOKEN_LENGTH = 16


class TokenError(Exception):
    """The token file cannot serve: the message says what is wrong and where."""


def read_token(path: str) -> str:
    """The token in `path` (its first line, stripped). Refused when other
    users may read it (it would be no secret) or it is too short to guess."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise TokenError(f"{path}: cannot read the token file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"{path}: not a regular file")
        if st.st_mode & 0o007:
            raise TokenError(f"{path}: readable by every user (mode {st.st_mode & 0o777:o}): "
                             "chmod 600 it")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    token = data.decode("utf-8", "replace").splitlines()[0].strip() if data.strip() else ""
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{path}: the token must be at least {MIN_TOKEN_LENGTH} characters "
                         "(make one: head -c 24 /dev/urandom | base64)")
    return token


@dataclass
class Session:
    csrf: str
    expires: float


@dataclass
class Guard:
    """The token and the browser sessions opened with it (in memory only:
    a restart of the service logs everyone out)."""

    token: str
    sessions: dict[str, Session] = field(default_factory=dict)
    clock: object = time.monotonic

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator,no-any-return]

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())

    def bearer_ok(self, header: str | None) -> bool:
        """An `Authorization: Bearer TOKEN` header with the token."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def login(self, given: str) -> tuple[str, Session] | None:
        """A new session (its id for the cookie) for the right token, else None."""
        if not self.token_ok(given):
            return None
        self._expire()
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        sid = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), self._now() + SESSION_SECONDS)
        self.sessions[sid] = session
        return sid, session

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self.sessions.get(sid)
        if session is None or session.expires <= self._now():
            self.sessions.pop(sid, None)
            return None
        return session

    def logout(self, sid: str | None) -> None:
        if sid:
            self.sessions.pop(sid, None)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest((given or "").encode(), session.csrf.encode())

    def _expire(self) -> None:
        now = self._now()
        for sid in [s for s, v in self.sessions.items() if v.expires <= now]:
            del self.sessions[sid]
