"""argparse value types shared by taskctl's commands: a bad value is bad
usage (exit 2) with one line saying what was expected."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def signal_name(text: str) -> str:
    """A signal name or number as taskmasterd reads it (checked here: a bad one
    is bad usage, exit 2, not a reply from the daemon); sent as typed."""
    from taskmasterd import signames

    try:
        signames.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more seconds: {text}")
    return value


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= minimum (a count: -n, --bytes)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more: {text}")
        return value

    return parse


def env_pair(text: str) -> tuple[str, str]:
    """K=V (an environment variable for a task); the name is checked by the
    task checker, with the others."""
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def host(text: str) -> object:
    """`taskctl -H [user@]host[:port]`: a `taskctl.hosts.Host`."""
    from taskctl.hosts import Host

    try:
        return Host.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def detach_keys(text: str) -> bytes:
    """`attach --detach-keys`: docker's syntax (`taskctl.detachkeys`), as bytes."""
    from taskctl import detachkeys

    try:
        return detachkeys.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
