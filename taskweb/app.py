"""taskmaster-web's aiohttp application: who is asking (token or session),
errors as JSON, login and logout; the routes of each part come from its
module's `setup(app)` (ROUTE_MODULES)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from taskweb.auth import COOKIE, CSRF_HEADER, SESSION_SECONDS, Guard
from taskweb.link import DaemonError, DaemonLink, Unavailable

# Application keys: plain strings, as aiohttp 3.8 (Debian 12) knows no AppKey.
LINK = "taskweb.link"
GUARD = "taskweb.guard"
# Each part of the service: a module of taskweb with setup(app) adding its routes.
ROUTE_MODULES: tuple[str, ...] = ("api", "metrics", "page")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What a daemon's error reply becomes: HTTP status by its short name.
# (taskmasterd/errors.py; AccessDenied and InvalidArgs are the bus's own.)
ERROR_STATUS = {
    "NoSuchProgram": 404, "NoSuchTask": 404, "BadName": 400, "TaskInvalid": 400,
    "InvalidArgs": 400, "AccessDenied": 403, "AlreadyStarted": 409, "NotRunning": 409,
    "NotAFile": 409, "NoOutput": 409, "NoConsole": 409, "ConfigInvalid": 422, "QueueFull": 503,
    "ShuttingDown": 503,
}


def error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error body: {"error": message, ...}."""
    return web.json_response({"error": message, **extra}, status=status)


def link_of(request: web.Request) -> DaemonLink:
    link: DaemonLink = request.app[LINK]
    return link


def guard_of(request: web.Request) -> Guard:
    guard: Guard = request.app[GUARD]
    return guard


def who(request: web.Request) -> str | None:
    """"token" (Authorization: Bearer), "session" (a browser logged in), or None."""
    auth: str | None = request.get("auth")
    return auth


def require_control(request: web.Request) -> None:
    """Raise 401 unless the request may change things; 403 for a session's
    state-changing request without its CSRF token."""
    auth = who(request)
    if auth is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "authentication required: Authorization: Bearer TOKEN "
                                      "(the token file), or log in"}),
            content_type="application/json", headers={"WWW-Authenticate": 'Bearer realm="taskmaster"'})
    if auth == "session" and request.method not in SAFE_METHODS:
        session = request["session"]
        if not guard_of(request).csrf_ok(session, request.headers.get(CSRF_HEADER)):
            raise web.HTTPForbidden(text=json.dumps({"error": f"missing or wrong {CSRF_HEADER}"}),
                                    content_type="application/json")


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = guard_of(request)
    request["auth"] = None
    request["session"] = None
    if guard.bearer_ok(request.headers.get("Authorization")):
        request["auth"] = "token"
    else:
        session = guard.session(request.cookies.get(COOKIE))
        if session is not None:
            request["auth"], request["session"] = "session", session
    return await handler(request)


@web.middleware
async def daemon_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The daemon's answers as HTTP: unreachable 503, its errors by name."""
    try:
        return await handler(request)
    except Unavailable as exc:
        return error(503, f"taskmasterd unreachable: {exc.text}")
    except DaemonError as exc:
        return error(ERROR_STATUS.get(exc.short, 502), exc.text or exc.short, name=exc.short)


async def login(request: web.Request) -> web.StreamResponse:
    """POST /login: the token from a form (then back to the page) or JSON
    ({"token": ...} → {"csrf": ...}); a session cookie either way."""
    is_json = request.content_type == "application/json"
    try:
        data: Any = await request.json() if is_json else await request.post()
    except (ValueError, UnicodeDecodeError):
        return error(400, "the body is not valid JSON")
    given = data.get("token") if hasattr(data, "get") else None
    if not isinstance(given, str):
        return error(400, "no token given (field 'token')")
    opened = guard_of(request).login(given)
    if opened is None:
        if is_json:
            return error(401, "wrong token")
        raise web.HTTPSeeOther("/?login=failed")
    sid, session = opened
    response: web.StreamResponse = web.json_response({"csrf": session.csrf}) if is_json \
        else web.HTTPSeeOther("/")
    response.set_cookie(COOKIE, sid, max_age=SESSION_SECONDS, httponly=True, samesite="Strict",
                        path="/", secure=request.secure)
    if not is_json:
        raise response  # type: ignore[misc]
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    guard_of(request).logout(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/")
    response.del_cookie(COOKIE, path="/")
    raise response


def make_app(link: DaemonLink, guard: Guard, modules: tuple[str, ...] = ROUTE_MODULES
             ) -> web.Application:
    app = web.Application(middlewares=[identify, daemon_errors], client_max_size=1 << 20)
    app[LINK] = link
    app[GUARD] = guard
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    for name in modules:
        importlib.import_module(f"taskweb.{name}").setup(app)
    return app
