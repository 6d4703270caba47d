"""`taskmaster-web`: the web service beside taskmasterd (a D-Bus client of
it; the daemon itself never speaks HTTP). See docs/web.md.

    taskmaster-web [--listen HOST:PORT] [--token-file FILE]
                   [--system | --user | --address ADDR]

Listens on 127.0.0.1:9737 unless told otherwise; a listen address that is
not loopback is refused without --public (the service speaks plain HTTP:
put it behind a TLS proxy for a network). Under systemd (Type=notify) it
says READY=1 once it listens; SIGTERM and SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence

DEFAULT_LISTEN = "127.0.0.1:9737"
DEFAULT_TOKEN_FILE = "/etc/taskmaster/web.token"
log = logging.getLogger("taskweb")


def listen_address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_file(given: str | None) -> str:
    """--token-file, else the credential systemd loaded (LoadCredential=token:...),
    else /etc/taskmaster/web.token."""
    if given:
        return given
    creds = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if creds and os.path.exists(os.path.join(creds, "token")):
        return os.path.join(creds, "token")
    return DEFAULT_TOKEN_FILE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskmaster-web", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=listen_address, default=listen_address(DEFAULT_LISTEN),
                   metavar="HOST:PORT", help=f"where to listen (default {DEFAULT_LISTEN})")
    p.add_argument("--public", action="store_true",
                   help="allow a listen address that is not loopback (plain HTTP: use a TLS "
                        "proxy in front)")
    p.add_argument("--token-file", metavar="FILE",
                   help="the token that allows control (default: systemd's credential 'token', "
                        f"else {DEFAULT_TOKEN_FILE}); must not be readable by other users")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--system", dest="bus", action="store_const", const="system",
                       help="taskmasterd on the system bus (the default)")
    where.add_argument("--user", dest="bus", action="store_const", const="user",
                       help="taskmasterd on the session bus")
    where.add_argument("--address", metavar="ADDR", help="taskmasterd on the bus at ADDR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:  # the package only recommends them
        print(f"taskmaster-web: {exc.name} is not installed (Debian: apt install "
              "python3-aiohttp python3-prometheus-client)", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="taskmaster-web: %(message)s")
    host, port = args.listen
    if not is_loopback(host) and not args.public:
        print(f"taskmaster-web: {host} is not a loopback address; the service speaks plain "
              "HTTP: add --public to listen there anyway (behind a TLS proxy)", file=sys.stderr)
        return 2
    from taskweb.auth import Guard, TokenError, read_token

    path = token_file(args.token_file)
    try:
        guard = Guard(read_token(path))
    except TokenError as exc:
        print(f"taskmaster-web: {exc}", file=sys.stderr)
        return 1
    from taskctl.parser import bus_choice

    choice = bus_choice(args)  # the same flags as taskctl's
    try:
        return asyncio.run(serve(host, port, choice, guard))
    except OSError as exc:
        print(f"taskmaster-web: cannot listen on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1


async def serve(host: str, port: int, choice: object, guard: object) -> int:
    from aiohttp import web

    from taskmasterd.notify import Notifier
    from taskweb.app import make_app
    from taskweb.link import DaemonLink

    link = DaemonLink(choice)  # type: ignore[arg-type]
    await link.start()
    app = make_app(link, guard)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("listening on http://%s:%d/ (taskmasterd %s)", host, port,
                 "found" if link.present else "not found yet")
        notifier = Notifier()
        notifier.notify("READY=1\nSTATUS=listening on " + f"{host}:{port}")
        await stop.wait()
        notifier.notify("STOPPING=1")
        return 0
    finally:
        await runner.cleanup()
        await link.close()
